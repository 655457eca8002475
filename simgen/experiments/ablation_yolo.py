"""Default training hooks of ``simgen ablate --train``: a YOLO per generated dataset, scored on the evaluation set.

:func:`simgen.experiments.ablation.run_ablation` calls, per combination,
``train_for_ablation(train_h5, run_dir) -> weights`` and
``eval_for_ablation(weights, eval_on) -> {"peak_f1", "ap", "f1"}``.  Bind settings with
:func:`functools.partial` (the CLI passes ``config=`` from ``--train-preset`` / ``--epochs``).
"""

from __future__ import annotations

from pathlib import Path

from simgen.datasets.sources import open_source
from simgen.errors import DataError
from simgen.experiments.scoring import score_predictions
from simgen.train.yolo.config import PRESETS, YoloConfig
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.trainer import train_yolo

__all__ = ["train_for_ablation", "eval_for_ablation"]


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
    """Peak F1, AP and F1 of a detector on the annotated images ``eval_on`` (IoU 0.15).

    F1 is taken at the threshold picked on the training run's validation split.  Classes are
    ignored when the detector's class names differ from the evaluation set's (film ``plus``/
    ``minus`` against real images labelled ``loop``).
    """
    det = YoloDetector(weights, device=device, threads=threads)
    with open_source(eval_on) as src:
        if not src.has_labels:
            raise DataError(f"evaluation set {eval_on} has no box labels to score detections against")
        agnostic = list(det.class_names) != list(src.class_names)
        pred = det.predict(src)
        gt = src.read_table()[["sample", "x0", "y0", "x1", "y1", "class"]]
        n = len(src)
    if agnostic:
        pred, gt = pred.assign(**{"class": 0}), gt.assign(**{"class": 0})
    s = score_predictions(pred, gt, det.conf_f1, n)
    return {"peak_f1": s["peak_f1"], "ap": s["ap"], "f1": s["f1"]}
