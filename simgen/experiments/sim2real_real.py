"""The real side of sim2real: the annotated folder opened once (:class:`RealSet`) and detections on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.sources import Source
from simgen.errors import DataError
from simgen.experiments.common import StepClock
from simgen.experiments.sim2real_config import Sim2RealConfig
from simgen.train.baselines.log import LogParams, detect_log
from simgen.train.yolo.predict import YoloDetector

__all__ = ["RealSet", "RealPredictions", "load_real", "predict_real", "detect_real"]


@dataclass
class RealSet:
    """The annotated real folder, opened once and read by every step (see :func:`load_real`).

    ``gt`` holds every annotated box (``sample`` = image index, ``class`` 0: the real
    images are scored class-agnostically); ``classes`` are the folder's class names.
    """

    path: Path
    source: Source  # open; whoever opened it closes it
    names: list[str]
    shapes: list[tuple[int, int]]
    gt: pd.DataFrame
    classes: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def image(self, k: int) -> np.ndarray:
        return self.source.image(k)

    @property
    def megapixels(self) -> list[float]:
        return [h * w / 1e6 for h, w in self.shapes]


@dataclass
class RealPredictions:
    """Synthetic-only YOLO predictions on every real image (``sample`` = image index)."""

    pred: pd.DataFrame
    conf: float  # the threshold picked on the synthetic validation images
    n_images: int
    seconds: float
    megapixels: float
    path: Path
    detector: YoloDetector

    @property
    def fps(self) -> float:
        return self.n_images / max(self.seconds, 1e-9)

    @property
    def s_per_mpx(self) -> float:
        return self.seconds / max(self.megapixels, 1e-9)


def load_real(source: Source) -> RealSet:
    """Names, shapes and ground truth of an open annotated source (``open_source(folder)``)."""
    if not source.has_labels:
        raise DataError(f"{source.path} has no labels/ folder; sim2real needs annotated real images")
    if not len(source):
        raise DataError(f"{source.path} holds no images")
    names, shapes, parts = [], [], []
    for k in range(len(source)):
        names.append(source.name(k))
        shapes.append(tuple(int(v) for v in source.shape(k)))
        b = source.boxes(k)[["x0", "y0", "x1", "y1", "class"]].copy()
        b.insert(0, "sample", k)
        parts.append(b)
    gt = pd.concat(parts, ignore_index=True)
    gt["class"] = 0
    return RealSet(Path(source.path), source, names, shapes, gt, list(source.class_names) or ["loop"])


def predict_real(weights, real: RealSet, out, cfg: Sim2RealConfig, *, threads: int | None = None) -> RealPredictions:
    """Tiled prediction on every real image; also written to ``out/pred_synthetic_yolo.h5``."""
    det = YoloDetector(weights, device=cfg.device, threads=threads)
    clock = StepClock()
    pred = detect_real(det, real)
    preds = RealPredictions(pred, det.conf_f1, len(real), clock.elapsed(), sum(real.megapixels),
                            Path(out) / "pred_synthetic_yolo.h5", det)
    _write_predictions(preds.path, pred, real, {"weights": str(weights), "conf_f1": det.conf_f1, "fps": preds.fps})
    return preds


def detect_real(detector, real: RealSet, *, indices=None, noise: dict | None = None, seed: int = 0) -> pd.DataFrame:
    """Predictions of ``detector`` (a YoloDetector or LogParams) on the real images ``indices``
    (default all; ``sample`` = image index), optionally with ``noise`` (``random_noise`` keywords) added."""
    parts = []
    for k in range(len(real)) if indices is None else indices:
        img = real.image(k)
        if noise is not None:
            from skimage.util import random_noise

            img = random_noise(img, rng=np.random.default_rng([seed, k]), **noise).astype(np.float32)
        p = detect_log(img, detector) if isinstance(detector, LogParams) else detector.detect(img)
        p = p.copy()
        p.insert(0, "sample", k)
        parts.append(p)
    if not parts:
        return pd.DataFrame({c: [] for c in ("sample", "x0", "y0", "x1", "y1", "class", "score")})
    return pd.concat(parts, ignore_index=True)


def _write_predictions(path: Path, pred: pd.DataFrame, real: RealSet, attrs: dict) -> None:
    with DatasetWriter(path, kind="predictions", class_names=real.classes, overwrite=True, attrs=attrs) as w:
        for k, name in enumerate(real.names):
            rows = pred[pred["sample"] == k].drop(columns="sample")
            w.append(None, boxes=rows, name=name, shape=real.shapes[k])
