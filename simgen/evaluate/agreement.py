"""Machine against human: per-frame counts, densities and size quartiles of two annotations.

The loop study judged its detector the way a materials scientist would: not by box matching
but by the numbers that go into a paper — the defect density and the size distribution of
each frame — computed the same way from the machine's and from the human's boxes, and
compared in per cent (the study: within 12 % for the density and 13 % for the median size).
:func:`agreement_table` puts two :func:`~simgen.experiments.analyze.per_frame_table` results
side by side; :func:`agreement_summary` pools the frames.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simgen.errors import DataError

__all__ = ["AGREEMENT_COLUMNS", "agreement_table", "agreement_summary"]

#: Per-frame quantities compared (per-frame table columns).
AGREEMENT_COLUMNS = ("count", "size_median_nm", "size_q1_nm", "size_q3_nm")


def _pct(machine, human):
    machine, human = np.asarray(machine, np.float64), np.asarray(human, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(human > 0, 100.0 * (machine - human) / human, np.nan)


def agreement_table(machine: pd.DataFrame, human: pd.DataFrame) -> pd.DataFrame:
    """Per frame: each of :data:`AGREEMENT_COLUMNS` for machine and human and their difference in %.

    Parameters
    ----------
    machine, human : DataFrame
        Per-frame tables with ``sample`` and :data:`AGREEMENT_COLUMNS` (one row per frame, the
        same frames on both sides).

    Returns
    -------
    DataFrame
        ``sample`` (and ``name`` when present), ``<col>_machine``, ``<col>_human`` and
        ``<col>_diff_pct`` = 100 (machine − human) / human (NaN where the human value is 0).
        The density differs from the count only by per-frame constants, so
        ``count_diff_pct`` is also the density difference.
    """
    for side, t in (("machine", machine), ("human", human)):
        missing = [c for c in ("sample", *AGREEMENT_COLUMNS) if c not in t.columns]
        if missing:
            raise DataError(f"{side} per-frame table lacks {missing}")
    if sorted(machine["sample"]) != sorted(human["sample"]):
        raise DataError("machine and human tables cover different frames")
    keep = ["sample", "name"] if "name" in machine.columns else ["sample"]
    out = machine[keep].copy()
    h = human.set_index("sample").loc[machine["sample"]]
    for c in AGREEMENT_COLUMNS:
        out[f"{c}_machine"] = machine[c].to_numpy(np.float64)
        out[f"{c}_human"] = h[c].to_numpy(np.float64)
        out[f"{c}_diff_pct"] = _pct(out[f"{c}_machine"], out[f"{c}_human"])
    return out.reset_index(drop=True)


def agreement_summary(table: pd.DataFrame, machine_sizes, human_sizes) -> dict:
    """Pooled agreement: total counts (density) and the size quartiles of all defects.

    Parameters
    ----------
    table : DataFrame
        :func:`agreement_table`.
    machine_sizes, human_sizes : array_like
        Sizes (nm) of every measured machine and human defect of all frames.

    Returns
    -------
    dict
        ``density_diff_pct`` (total machine count vs total human count over the same frames),
        ``size_{median,q1,q3}_{machine,human}_nm`` and ``size_{median,q1,q3}_diff_pct`` of the
        pooled sizes, and ``per_frame_abs_diff_pct`` (mean |difference| over frames) for the
        count and the median size.
    """
    m = np.asarray(machine_sizes, np.float64)
    h = np.asarray(human_sizes, np.float64)
    m, h = m[np.isfinite(m)], h[np.isfinite(h)]
    out: dict = {"n_frames": int(len(table)), "count_machine": int(table["count_machine"].sum()),
                 "count_human": int(table["count_human"].sum())}
    out["density_diff_pct"] = float(_pct(out["count_machine"], out["count_human"]))
    for name, q in (("median", 50), ("q1", 25), ("q3", 75)):
        mv = float(np.percentile(m, q)) if len(m) else float("nan")
        hv = float(np.percentile(h, q)) if len(h) else float("nan")
        out[f"size_{name}_machine_nm"], out[f"size_{name}_human_nm"] = mv, hv
        out[f"size_{name}_diff_pct"] = float(_pct(mv, hv))
    out["per_frame_abs_diff_pct"] = {
        "count": float(np.nanmean(np.abs(table["count_diff_pct"]))) if len(table) else float("nan"),
        "size_median": float(np.nanmean(np.abs(table["size_median_nm_diff_pct"]))) if len(table) else float("nan"),
    }
    return out
