"""What the synthetic-only model is compared with: the tuned LoG baseline, noise, real-trained YOLO.

Steps of :func:`simgen.experiments.sim2real_tem.run_sim2real` (each can be run alone on a
:class:`~simgen.experiments.sim2real_real.RealSet`): :func:`tune_baseline`,
:func:`robustness_study` and :func:`kfold_study`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.datasets.sources import open_source
from simgen.experiments.common import StepClock
from simgen.experiments.scoring import pooled_scores, pr_curve, relative_drop, score_predictions
from simgen.experiments.sim2real_config import Sim2RealConfig
from simgen.experiments.sim2real_real import RealPredictions, RealSet, detect_real
from simgen.progress import ProgressLog
from simgen.spread import spread_indices
from simgen.train.baselines.log import (
    DEFAULT_GRID,
    QUICK_GRID,
    LogParams,
    _grid_points,
    log_blobs,
    save_params,
    tune_log,
)
from simgen.train.fusion import FusedDetector, FusionMember, fit_fusion
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.trainer import train_yolo

__all__ = ["NOISES", "BaselineResult", "tune_baseline", "log_fusion", "fused_log_study", "robustness_study",
           "kfold_study"]

#: Noise models of the robustness study (``skimage.util.random_noise`` modes, default strengths).
NOISES = {"poisson": {"mode": "poisson"}, "salt_pepper": {"mode": "s&p"}, "gaussian": {"mode": "gaussian"}}


@dataclass
class BaselineResult:
    """The tuned LoG baseline: parameters (``None`` when skipped), scores, speed, notes."""

    params: LogParams | None
    methods: dict[str, dict]
    s_per_mpx: float = 0.0
    notes: list[str] = field(default_factory=list)


def tune_baseline(real: RealSet, out, cfg: Sim2RealConfig, *, seconds_left: float | None = None,
                  yolo_s_per_mpx: float = 0.0) -> BaselineResult:
    """Tune the LoG detector on the real images (``out/log_params.json``) and score it leave-one-image-out.

    ``seconds_left`` (time budget only): fall back to the quick grid, or skip, when the
    tuning would not fit (keeping ``yolo_s_per_mpx`` worth of time for the robustness study).
    """
    grid = QUICK_GRID if cfg.baseline_grid == "quick" else DEFAULT_GRID
    notes: list[str] = []
    log_s_per_mpx = 0.0
    if seconds_left is not None:
        mpx = real.megapixels
        smallest = int(np.argmin(mpx))
        clock = StepClock()
        log_blobs(real.image(smallest), LogParams(min_sigma=1.0, max_sigma=8.0, threshold=0.03))
        log_s_per_mpx = clock.elapsed() / max(mpx[smallest], 1e-9)
        total = sum(mpx)
        robust_need = 3 * min(total, cfg.robust_mpx) * (yolo_s_per_mpx + log_s_per_mpx) if cfg.robustness else 0.0

        def need(g):
            return 2.0 * _grid_passes(g) * total * log_s_per_mpx + 30

        if grid is DEFAULT_GRID and need(grid) > seconds_left - robust_need:
            grid = QUICK_GRID
            notes.append("LoG tuned on the quick grid to stay within the time budget")
        if need(grid) > seconds_left:
            notes.append("LoG baseline skipped: not enough time left in the budget")
            return BaselineResult(None, {}, log_s_per_mpx, notes)
    res = tune_log(real.source, grid=grid, base=LogParams(threshold=0.03), cv="loo")
    save_params(Path(out) / "log_params.json", res.params, extra={"tuning": res.to_dict()}, overwrite=True)
    cv_pred = _detect_cv_log(res, real)
    cv = {**res.cv, "ap": res.cv.get("mAP"), "scheme": "leave-one-image-out"}
    cv.pop("mAP", None)
    cv["_curve"] = pr_curve(cv_pred, real.gt, len(real))
    insample = {k: v for k, v in res.insample.items() if k != "mAP"}
    insample["ap"] = res.insample["mAP"]
    return BaselineResult(res.params, {"log_baseline": cv, "log_baseline_insample": insample}, log_s_per_mpx, notes)


def synthetic_log_baseline(real: RealSet, val_h5, cfg: Sim2RealConfig, *, max_images: int = 48) -> dict[str, dict]:
    """The zero-label classical baseline: LoG tuned on *synthetic* validation images (their labels are
    simgen's), then scored on the real images at the threshold chosen on the synthetic ones."""
    grid = QUICK_GRID if cfg.baseline_grid == "quick" else DEFAULT_GRID
    with open_source(val_h5) as src:
        names = [src.name(int(k)) for k in spread_indices(len(src), max_images)]
    res = tune_log(val_h5, grid=grid, base=LogParams(threshold=0.03), cv=None, names=sorted(set(names)))
    pred = detect_real(res.params.replace(threshold=0.03), real)
    scores = score_predictions(pred, real.gt, res.params.threshold, len(real))
    return {"log_synthetic": {**scores, "params": res.params.to_dict(), "tuned_on": str(val_h5),
                              "synthetic_peak_f1": res.insample.get("peak_f1")}}


def log_fusion(detector: YoloDetector, log_params: dict, val_h5) -> FusedDetector:
    """``detector`` and the LoG of ``log_params`` (its candidates down to 0.03), equal weights, fitted
    on the synthetic validation images ``val_h5`` (:func:`simgen.train.fusion.fit_fusion`)."""
    members = [FusionMember("yolo", 1.0, weights=Path(detector.weights), detector=detector),
               FusionMember("log", 1.0, params=LogParams.from_dict(log_params).replace(threshold=0.03))]
    return fit_fusion(members, val_h5)


def fused_log_study(real: RealSet, val_h5, detector: YoloDetector, log_params: dict, out) -> dict[str, dict]:
    """The synthetic-only YOLO fused with the synthetic-tuned LoG (:func:`log_fusion`), scored on the
    real images at the threshold picked on the synthetic validation images; ``out/fusion.json``."""
    fused = log_fusion(detector, log_params, val_h5)
    path = fused.save(Path(out) / "fusion.json")
    scores = score_predictions(detect_real(fused, real), real.gt, fused.conf_f1, len(real))
    return {"fused_log": {**scores, "fusion": str(path), "iou": fused.iou,
                          "weights": [m.weight for m in fused.members]}}


def robustness_study(real: RealSet, preds: RealPredictions, baseline: LogParams | None, cfg: Sim2RealConfig, *,
                     seconds_left: float | None = None, log_s_per_mpx: float = 0.0) -> tuple[dict, list[str]]:
    """F1 of the synthetic model (and of the LoG ``baseline``) on noised real images: ``({noise: scores}, notes)``.

    Evenly spread images totalling at most ``cfg.robust_mpx`` megapixels; with
    ``seconds_left`` (time budget only) fewer, so that the study fits.
    """
    mpx = real.megapixels
    subset = _robust_subset(mpx, cfg.robust_mpx)
    if seconds_left is not None:
        per_mpx = 3 * (preds.s_per_mpx + (log_s_per_mpx if baseline is not None else 0.0)) * 1.5
        while subset and sum(mpx[k] for k in subset) * per_mpx > seconds_left - 20:
            subset = subset[:-1]
        if not subset:
            return {}, ["robustness study skipped: not enough time left in the budget"]
    n = len(real)
    gt = real.gt[real.gt["sample"].isin(subset)]
    pred = preds.pred[preds.pred["sample"].isin(subset)]
    clean = score_predictions(pred, gt, preds.conf, n)["f1"] or 0.0
    log_clean = None
    if baseline is not None:
        log_clean = score_predictions(detect_real(baseline, real, indices=subset), gt, baseline.threshold, n)["f1"] or 0.0
    out = {}
    for name, noise in NOISES.items():
        s = score_predictions(detect_real(preds.detector, real, indices=subset, noise=noise, seed=cfg.seed), gt,
                              preds.conf, n)
        entry = {"f1_clean": clean, "f1": s["f1"], "ap": s["ap"], "drop": relative_drop(clean, s["f1"]),
                 "images": len(subset)}
        if baseline is not None:
            ls = score_predictions(detect_real(baseline, real, indices=subset, noise=noise, seed=cfg.seed), gt,
                                   baseline.threshold, n)
            entry.update(log_f1_clean=log_clean, log_f1=ls["f1"], log_drop=relative_drop(log_clean, ls["f1"]))
        out[name] = entry
    return out, []


def kfold_study(real: RealSet, cfg: Sim2RealConfig, synthetic_weights, out, *, threads: int | None = None,
                progress: bool = True, log: ProgressLog | None = None) -> dict[str, dict]:
    """YOLO trained on the real images (``cfg.kfold`` folds over images, ``cfg.kfold_epochs``) and, with
    ``cfg.few_real``, the synthetic model fine-tuned on that many real images of each training fold;
    both scored on the held-out folds (``out/kfold/fold<i>``, ``out/few_real/fold<i>``)."""
    n = len(real)
    folds = _folds(n, cfg.kfold)
    real_parts, few_parts, confs_real, confs_few = [], [], [], []
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(0xFE,)))
    for i, held in enumerate(folds):
        train_idx = [k for k in range(n) if k not in held]
        best = Path(out) / "kfold" / f"fold{i}" / "best.pt"
        if not best.exists():
            train_yolo(real.source.subset([real.names[k] for k in train_idx]), best.parent,
                       config=cfg.yolo_config(epochs=cfg.kfold_epochs), overwrite=True, progress=progress,
                       threads=threads)
        det = YoloDetector(best, device=cfg.device, threads=threads)
        p = detect_real(det, real, indices=held)
        real_parts.append((p, p[p["score"] >= det.conf_f1]))
        confs_real.append(det.conf_f1)
        if log is not None:
            log.message(f"fold {i + 1}/{len(folds)}: real-trained model done")
        if cfg.few_real:
            chosen = sorted(rng.choice(train_idx, size=min(cfg.few_real, len(train_idx)), replace=False).tolist())
            best = Path(out) / "few_real" / f"fold{i}" / "best.pt"
            if not best.exists():
                fcfg = cfg.yolo_config(epochs=cfg.few_real_epochs, lr0=0.002, optimizer="AdamW", close_mosaic=0,
                                       patience=0)
                train_yolo(real.source.subset([real.names[k] for k in chosen]), best.parent, config=fcfg,
                           weights=synthetic_weights, overwrite=True, progress=progress, threads=threads)
            det = YoloDetector(best, device=cfg.device, threads=threads)
            p = detect_real(det, real, indices=held)
            few_parts.append((p, p[p["score"] >= det.conf_f1]))
            confs_few.append(det.conf_f1)
    res = {}
    if real_parts:
        res["real_kfold_yolo"] = {**pooled_scores(real_parts, real.gt, n), "folds": len(folds),
                                  "conf_per_fold": confs_real}
    if few_parts:
        res["synthetic_plus_few_real"] = {**pooled_scores(few_parts, real.gt, n), "folds": len(folds),
                                          "n_real": cfg.few_real, "conf_per_fold": confs_few}
    return res


def _detect_cv_log(res, real: RealSet) -> pd.DataFrame:
    """Held-out LoG predictions of the cross-validation (each image with its fold's parameters)."""
    index = {name: k for k, name in enumerate(real.names)}
    parts = []
    for fold in res.folds:
        params = res.params.replace(**fold["params"], threshold=0.03)
        parts.append(detect_real(params, real, indices=sorted(index[n] for n in fold["held_out"])))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _grid_passes(grid: dict) -> int:
    """Scale-space passes per image of a LoG tuning grid (box_scale is applied afterwards)."""
    g = {k: v for k, v in grid.items() if k != "box_scale"}
    return len(_grid_points(g)) if g else 1


def _robust_subset(megapixels: list[float], max_mpx: float) -> list[int]:
    """Indices of evenly spread images totalling at most ``max_mpx`` megapixels (at least one image)."""
    chosen, total = [], 0.0
    for k in _spread(len(megapixels)):
        if chosen and total + megapixels[k] > max_mpx:
            continue
        chosen.append(k)
        total += megapixels[k]
    return sorted(chosen)


def _spread(n: int) -> list[int]:
    """0 .. n-1 in an order that spreads early picks over the range (0, n-1, mid, ...)."""
    out, seen = [], set()
    for step in range(1, n + 1):
        for k in np.linspace(0, n - 1, step).round().astype(int).tolist():
            if k not in seen:
                seen.add(k)
                out.append(k)
    return out


def _folds(n: int, k: int) -> list[list[int]]:
    k = min(k, n)
    return [list(range(n))[i::k] for i in range(k)]
