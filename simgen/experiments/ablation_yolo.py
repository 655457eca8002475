"""Default training hooks of ``simgen ablate --train``: a YOLO per generated dataset, scored on the evaluation set.

:func:`simgen.experiments.ablation.run_ablation` calls, per combination,
``train_for_ablation(train_h5, run_dir) -> weights`` and
``eval_for_ablation(weights, eval_on) -> {"peak_f1", "ap", "f1"}``.  Bind settings with
:func:`functools.partial` (the CLI passes ``config=`` from ``--train-preset`` / ``--epochs``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simgen.datasets.sources import open_source
from simgen.errors import DataError
from simgen.evaluate.matching import BOX_COLUMNS, box_side
from simgen.experiments.scoring import IOU, score_predictions
from simgen.train.yolo.config import PRESETS, YoloConfig
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.trainer import train_yolo

__all__ = ["train_for_ablation", "eval_for_ablation", "ablation_scores"]


def train_for_ablation(train_h5, run_dir, *, config: YoloConfig | None = None, progress: bool = False,
                       threads: int | None = None) -> Path:
    """Train YOLO (``config``, default ``PRESETS["full"]``) on one combination's dataset; ``run_dir/best.pt``.

    A finished run in ``run_dir`` is reused and an interrupted one resumed, so an interrupted
    ablation continues where it stopped.
    """
    run_dir = Path(run_dir)
    best = run_dir / "best.pt"
    if best.exists():
        return best
    resume = (run_dir / "ultralytics" / "weights" / "last.pt").exists()
    return train_yolo(train_h5, run_dir, config=config or PRESETS["full"], resume=resume, overwrite=not resume,
                      progress=progress, threads=threads)


def eval_for_ablation(weights, eval_on, *, device: str = "auto", threads: int | None = None) -> dict:
    """Peak F1, AP and F1 of a detector on the annotated images ``eval_on``.

    F1 is taken at the threshold picked on the training run's validation split.  Classes are
    ignored when the detector's class names differ from the evaluation set's (film ``plus``/
    ``minus`` against real images labelled ``loop``).  Matching: :func:`ablation_scores`.
    """
    det = YoloDetector(weights, device=device, threads=threads)
    with open_source(eval_on) as src:
        if not src.has_labels:
            raise DataError(f"evaluation set {eval_on} has no box labels to score detections against")
        agnostic = list(det.class_names) != list(src.class_names)
        film = src.sample_kind == "film"
        pred = det.predict(src)
        gt = src.read_table()[["sample", "x0", "y0", "x1", "y1", "class"]]
        n = len(src)
    return ablation_scores(pred, gt, det.conf_f1, n, film=film, agnostic=agnostic)


def ablation_scores(pred, gt, conf: float, n_frames: int, *, film: bool, agnostic: bool = False) -> dict:
    """``{"peak_f1", "ap", "f1", "match"}`` of ``pred`` against ``gt``.

    Film defects are points (a winding-number centre with a nominal box around it), so on film
    images a detection matches a defect whose centre lies within half the median ground-truth box
    side, classes ignored, as the film study scores; elsewhere boxes match at IoU 0.15 (the loop
    study's rule), classes ignored only when ``agnostic``.
    """
    if film or agnostic:
        pred, gt = pred.assign(**{"class": 0}), gt.assign(**{"class": 0})
    if film and len(gt):
        radius = 0.5 * float(np.median(box_side(gt[BOX_COLUMNS])))
        s = score_predictions(pred, gt, conf, n_frames, metric="distance", threshold=radius)
        match = f"centre distance <= {radius:.3g} px, class-agnostic"
    else:
        s = score_predictions(pred, gt, conf, n_frames)
        match = f"IoU >= {IOU:g}" + (", class-agnostic" if agnostic else "")
    return {"peak_f1": s["peak_f1"], "ap": s["ap"], "f1": s["f1"], "match": match}
