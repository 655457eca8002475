"""The ``judge`` step of sim2real: how well a small CNN tells the synthetic training images from the real ones.

The realism judge (:func:`simgen.evaluate.realism_judge.judge_realism`, a classifier
two-sample test) reads the synthetic training set and the real set's pixels (labels never
read) and writes its own report into ``<output>/realism/``; the sim2real report carries
its held-out AUC and the two distances (:func:`judge_synthetic`).
"""

from __future__ import annotations

import json
from pathlib import Path

from simgen.evaluate.realism_judge import REPORT_FILES, judge_realism, write_report
from simgen.experiments.sim2real_config import Sim2RealConfig
from simgen.experiments.sim2real_real import RealSet
from simgen.experiments.sim2real_report import realism_line
from simgen.progress import ProgressLog
from simgen.spread import spread_indices

__all__ = ["REALISM_DIR", "judge_synthetic", "realism_summary"]

#: The judge's report folder inside the experiment folder.
REALISM_DIR = "realism"
MIN_PATCH = 16  # the smallest patch JudgeSettings accepts


def judge_synthetic(train, real: RealSet, out, cfg: Sim2RealConfig, *, threads: int | None = None,
                    resume: bool = False, log: ProgressLog | None = None) -> tuple[dict | None, list[str]]:
    """Judge the synthetic training set ``train`` (HDF5) against the real pixels; report in ``out/realism/``.

    At most ``cfg.judge_images`` images per side are read (evenly spaced).  The folds
    (split by source image) are lowered to the images of the smaller side and the patch
    side to the smallest image side.  With ``resume`` an existing ``realism/realism.json``
    is reused (the judge does not run again).

    Returns
    -------
    summary : dict or None
        ``auc``, ``auc_std`` (held-out, over folds; 0.5 = cannot tell), ``spectrum_distance``
        (RMS log10 PSD, decades), ``histogram_distance`` (W1), ``folds``, ``n_images`` (per
        side) and ``report`` (the judge's ``realism.md``, relative to ``out``); ``None``
        when the judge cannot run on these images (then ``notes`` says why).
    notes : list of str
    """
    folder = Path(out) / REALISM_DIR
    stored = folder / REPORT_FILES[0]
    if resume and stored.exists():
        return realism_summary(json.loads(stored.read_text())), []
    n_real = min(len(real), cfg.judge_images)
    fewest = min(n_real, cfg.n_train)  # images on the smaller side
    smallest = min(cfg.size, *(min(shape) for shape in real.shapes))
    if fewest < 2:
        return None, [f"realism judge skipped: it reads {fewest} image(s) on one side and needs 2 "
                      "(folds split by source image)"]
    if smallest < MIN_PATCH:
        return None, [f"realism judge skipped: the smallest image side is {smallest} px, under the "
                      f"{MIN_PATCH} px patch minimum"]
    base = cfg.judge_config()
    settings = cfg.judge_config(threads=threads, folds=min(base.folds, fewest), patch=min(base.patch, smallest))
    picks = spread_indices(len(real), n_real)
    real_images = [real.image(int(k)) for k in picks]  # pixels only: the labels stay in real.gt
    result = judge_realism(train, real_images, settings, log=log.message if log is not None else None)
    write_report(folder, result, str(train), str(real.path), overwrite=True)
    summary = realism_summary(result.to_dict())
    if log is not None:
        log.message(realism_line(summary))
    return summary, []


def realism_summary(report: dict) -> dict:
    """The sim2real report's ``realism`` entry from the judge's report (``realism.json`` or ``JudgeResult.to_dict()``)."""
    return {"auc": report["auc"], "auc_std": report["auc_std"], "spectrum_distance": report["distance"]["psd"],
            "histogram_distance": report["distance"]["histogram"], "folds": report["settings"]["folds"],
            "n_images": dict(report["n_images"]), "report": f"{REALISM_DIR}/{REPORT_FILES[1]}"}
