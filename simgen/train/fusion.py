"""Fusing detectors that fail differently: a synthetic-trained YOLO with the synthetic-tuned LoG.

A network trained on renders learns their look; a four-parameter blob filter tuned on the same
renders cannot learn much of it.  On real micrographs the two therefore fail in different places,
and their fusion can beat both (measured in the README's sim2real tables).  Their raw scores are
not comparable (a YOLO confidence vs a scale-normalised LoG response), so each detector's score is
first mapped to the probability that a detection at that score is a true positive *on the synthetic
validation images* (:class:`ScoreCalibration`, isotonic regression: monotone, no real label), then
the calibrated box sets are merged by weighted boxes fusion (:func:`simgen.train.yolo.tta.fuse_views`:
a defect both detectors find keeps the weighted mean probability, one found by one detector only
its weighted share).  :func:`fit_fusion` calibrates the members, picks the fusion IoU and the
confidence threshold by peak F1 on the same synthetic images, and returns a :class:`FusedDetector`,
which ``simgen predict`` applies from its ``fusion.json``.

Decision (recorded in the README): the member weights are **not** picked on synthetic validation.
There the network always wins — it is scored on the domain it was trained on — so a validation
choice would always drop the LoG, which is exactly the detector that transfers.  The weights are a
fixed prior (equal by default), reported as such.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simgen.atomic import atomic_write_text, check_output, read_json_object
from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.evaluate.detection import evaluate_detections, true_positive_flags
from simgen.progress import Timer, track
from simgen.train.baselines.log import LogParams, detect_log
from simgen.train.yolo.box_scale import require_simulated
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.tta import fuse_views

__all__ = ["ScoreCalibration", "FusionMember", "FusedDetector", "fit_fusion", "load_fusion", "predict_fused",
           "is_fusion_file", "fusion_summary", "FUSION_IOUS",
           "FUSION_VERSION"]

#: Cluster IoUs :func:`fit_fusion` tries (boxes of two detectors disagree in size more than boxes of
#: one detector under flips, so looser than TTA's 0.55).
FUSION_IOUS = (0.3, 0.5)
#: Schema version of ``fusion.json``.
FUSION_VERSION = 1
#: Scoring IoU of the threshold choice (the project's detection IoU).
SCORE_IOU = 0.15


@dataclass(frozen=True)
class ScoreCalibration:
    """Monotone map from a detector's raw score to the probability that the detection is right.

    Piecewise linear through the knots ``(scores[i], probability[i])``, constant outside them.
    """

    scores: tuple[float, ...]
    probability: tuple[float, ...]

    def __post_init__(self):
        s, p = np.asarray(self.scores, np.float64), np.asarray(self.probability, np.float64)
        if s.ndim != 1 or len(s) == 0 or s.shape != p.shape:
            raise DataError("a score calibration needs matching, non-empty score and probability lists")
        if not (np.isfinite(s).all() and np.isfinite(p).all()):
            raise DataError("score calibration knots must be finite")
        if (np.diff(s) < 0).any() or (np.diff(p) < 0).any() or p.min() < 0 or p.max() > 1:
            raise DataError("score calibration must be non-decreasing, with probabilities in [0, 1]")

    @classmethod
    def fit(cls, scores: np.ndarray, correct: np.ndarray) -> ScoreCalibration:
        """Isotonic regression of ``correct`` (bool per detection) on ``scores`` (scipy's PAVA)."""
        from scipy.optimize import isotonic_regression

        scores = np.asarray(scores, np.float64)
        correct = np.asarray(correct, np.float64)
        if scores.shape != correct.shape or scores.ndim != 1:
            raise ParameterError("scores and correct must be 1-D and of equal length")
        if len(scores) == 0:
            raise DataError("no detections to calibrate on: the detector found nothing on the validation images")
        knots, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
        means = np.bincount(inverse, weights=correct) / counts
        fitted = isotonic_regression(means, weights=counts.astype(np.float64), increasing=True).x
        fitted = np.clip(fitted, 0.0, 1.0)
        # Keep the ends of each constant block: the same piecewise-linear map with far fewer knots.
        change = np.r_[True, fitted[1:] != fitted[:-1]]
        keep = change | np.r_[change[1:], True]
        return cls(tuple(knots[keep].tolist()), tuple(np.maximum.accumulate(fitted[keep]).tolist()))

    def __call__(self, scores) -> np.ndarray:
        return np.interp(np.asarray(scores, np.float64), self.scores, self.probability)

    def to_dict(self) -> dict:
        return {"scores": list(self.scores), "probability": list(self.probability)}

    @classmethod
    def from_dict(cls, data) -> ScoreCalibration:
        if not isinstance(data, dict) or not {"scores", "probability"} <= set(data):
            raise DataError("a score calibration needs 'scores' and 'probability' lists")
        try:
            return cls(tuple(float(v) for v in data["scores"]), tuple(float(v) for v in data["probability"]))
        except (TypeError, ValueError):
            raise DataError("score calibration knots must be numbers") from None


@dataclass
class FusionMember:
    """One detector of a fusion: ``kind`` ``"yolo"`` (``weights``) or ``"log"`` (``params``).

    ``detector``: an already loaded detector (anything with ``detect(image)``, e.g. a
    :class:`~simgen.train.yolo.predict.YoloDetector` with its post-processing) used instead of
    loading ``weights``/``params``; it is not saved (``fusion.json`` records ``weights``/``params``).
    """

    kind: str
    weight: float = 1.0
    weights: Path | None = None
    params: LogParams | None = None
    calibration: ScoreCalibration | None = None
    detector: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in ("yolo", "log"):
            raise DataError(f"fusion member kind must be yolo or log, got {self.kind!r}")
        if not (np.isfinite(self.weight) and self.weight > 0):
            raise ParameterError(f"fusion member weight must be > 0, got {self.weight}")
        if (self.kind == "yolo") != (self.weights is not None) or (self.kind == "log") != (self.params is not None):
            raise DataError(f"a {self.kind} fusion member needs {'weights' if self.kind == 'yolo' else 'params'} only")

    def detect(self, image: np.ndarray) -> pd.DataFrame:
        """The member's raw boxes on ``image`` (H, W)."""
        if self.detector is not None:
            return self.detector.detect(image)
        if self.kind == "log":
            return detect_log(image, self.params)
        self.detector = YoloDetector(self.weights)  # loaded once, on first use
        return self.detector.detect(image)

    def to_dict(self, base: Path) -> dict:
        out: dict = {"kind": self.kind, "weight": self.weight}
        if self.weights is not None:
            out["weights"] = _relative(Path(self.weights), base)
        if self.params is not None:
            out["params"] = self.params.to_dict()
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        return out

    @classmethod
    def from_dict(cls, data, base: Path) -> FusionMember:
        if not isinstance(data, dict) or "kind" not in data:
            raise DataError("a fusion member needs a 'kind'")
        try:
            weight = float(data.get("weight", 1.0))
        except (TypeError, ValueError):
            raise DataError("fusion member weight must be a number") from None
        weights = None if data.get("weights") is None else base / str(data["weights"])
        params = None if data.get("params") is None else LogParams.from_dict(data["params"])
        cal = None if data.get("calibration") is None else ScoreCalibration.from_dict(data["calibration"])
        return cls(str(data["kind"]), weight, weights, params, cal)


@dataclass
class FusedDetector:
    """Calibrated members fused by weighted boxes fusion (see the module docstring).

    Attributes
    ----------
    members : list of FusionMember
        Each with its :class:`ScoreCalibration` (fitted by :func:`fit_fusion`).
    iou : float
        Cluster IoU of the fusion.
    conf_f1 : float
        Threshold with the best F1 on the synthetic validation images (on the fused probability).
    class_names : list of str
        The fused detector is class-agnostic: one class (a LoG member knows one kind of blob).
    """

    members: list[FusionMember]
    iou: float = 0.3
    conf_f1: float = 0.25
    fitted_on: str = ""
    class_names: list[str] = field(default_factory=lambda: ["defect"])

    def __post_init__(self):
        if len(self.members) < 2:
            raise ParameterError("a fusion needs at least two detectors")
        if not 0 < self.iou <= 1:
            raise ParameterError(f"fusion iou must be in (0, 1], got {self.iou}")

    def detect(self, image: np.ndarray) -> pd.DataFrame:
        """Fused boxes ``x0, y0, x1, y1, class, score`` (score = fused probability) on ``image`` (H, W)."""
        return fuse_calibrated([m.detect(image) for m in self.members], self.members, image.shape[:2], self.iou)

    def save(self, path, *, overwrite: bool = True) -> Path:
        """Write ``fusion.json`` (member weights paths relative to its folder), atomically."""
        path = Path(path)
        base = path.resolve().parent
        data = {"detector": "fusion", "version": FUSION_VERSION, "iou": self.iou, "conf_f1": self.conf_f1,
                "fitted_on": self.fitted_on, "class_names": self.class_names,
                "members": [m.to_dict(base) for m in self.members]}
        return atomic_write_text(path, json.dumps(data, indent=2) + "\n", overwrite=overwrite)

    def describe(self) -> dict:
        return {"detector": "fusion", "iou": self.iou, "conf_f1": self.conf_f1, "fitted_on": self.fitted_on,
                "members": ",".join(f"{m.kind}:{m.weight:g}" for m in self.members)}


def fuse_calibrated(parts: Sequence[pd.DataFrame], members: Sequence[FusionMember], shape, iou: float) -> pd.DataFrame:
    """Members' raw boxes on one image → calibrated, fused boxes (probability-0 boxes dropped first)."""
    views = []
    for boxes, m in zip(parts, members):
        if m.calibration is None:
            raise ParameterError("fusion member is not calibrated (use fit_fusion)")
        # class-agnostic: a LoG knows one kind of blob, so every member's boxes are class 0
        b = boxes.assign(score=m.calibration(boxes["score"]).astype(np.float32), **{"class": 0})
        views.append(b[b["score"] > 0])
    return fuse_views(views, tuple(shape), iou=iou, weights=[m.weight for m in members])


def fit_fusion(members: Sequence[FusionMember], source, *, ious: Sequence[float] = FUSION_IOUS,
               progress: bool = False) -> FusedDetector:
    """Calibrate ``members`` on a *synthetic* validation source and pick the fusion IoU and threshold.

    Parameters
    ----------
    members : sequence of FusionMember
        Two or more detectors with their fixed weights (calibrations are replaced).
    source : path or Source
        Simulated validation data with labels (refused otherwise: the fusion is chosen on
        synthetic data only, never on real labels).
    ious : sequence of float
        Cluster IoUs tried; the one with the best peak F1 at IoU 0.15 is kept.
    """
    members = list(members)
    with open_source(source) as src:
        require_simulated(src, src.path, "the fusion is calibrated")
        shapes: list[tuple[int, int]] = []
        gts: list[pd.DataFrame] = []
        raw: list[list[pd.DataFrame]] = [[] for _ in members]
        for k in track(range(len(src)), total=len(src), description="fusion", enabled=progress):
            img = src.image(k)
            boxes = src.boxes(k)
            if boxes is None:
                raise DataError(f"{src.path}: sample {k} has no boxes to calibrate on")
            shapes.append((int(img.shape[0]), int(img.shape[1])))
            gts.append(boxes[["x0", "y0", "x1", "y1"]].assign(sample=k, **{"class": 0}))
            for j, m in enumerate(members):
                raw[j].append(m.detect(img).assign(sample=k))
        gt = pd.concat(gts, ignore_index=True)
        fitted_on = str(src.path)
    for j, m in enumerate(members):
        pred = pd.concat(raw[j], ignore_index=True).assign(**{"class": 0})
        m.calibration = ScoreCalibration.fit(pred["score"].to_numpy(), true_positive_flags(pred, gt, by_class=False))
    best = None
    for iou in ious:
        fused = pd.concat([fuse_calibrated([raw[j][k] for j in range(len(members))], members, shapes[k], iou)
                           .assign(sample=k) for k in range(len(shapes))], ignore_index=True)
        s = evaluate_detections(fused.assign(**{"class": 0}), gt, threshold=SCORE_IOU, conf=0.25,
                                n_frames=len(shapes)).summary
        f1, conf = float(s["peak_f1"]), float(s["peak_f1_threshold"])
        if best is None or f1 > best[0]:
            best = (f1, float(iou), conf if np.isfinite(conf) and conf > 0 else 0.25)
    assert best is not None
    return FusedDetector(members, iou=best[1], conf_f1=best[2], fitted_on=fitted_on)


def is_fusion_file(path) -> bool:
    """Whether ``path`` is a JSON object with ``"detector": "fusion"`` (unreadable files: ``False``)."""
    try:
        return read_json_object(path, "fusion file").get("detector") == "fusion"
    except DataError:
        return False


def load_fusion(path) -> FusedDetector:
    """Read a ``fusion.json`` written by :meth:`FusedDetector.save` (every field validated)."""
    path = Path(path)
    data = read_json_object(path, "fusion file")
    if data.get("detector") != "fusion":
        raise DataError(f"{path}: not a fusion file (no 'detector': 'fusion')")
    if data.get("version") != FUSION_VERSION:
        raise DataError(f"{path}: fusion file version {data.get('version')!r}, this simgen reads {FUSION_VERSION}")
    members = data.get("members")
    if not isinstance(members, list):
        raise DataError(f"{path}: 'members' must be a list")
    base = path.resolve().parent
    try:
        iou, conf = float(data["iou"]), float(data["conf_f1"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: 'iou' and 'conf_f1' must be numbers") from None
    fused = FusedDetector([FusionMember.from_dict(m, base) for m in members], iou=iou, conf_f1=conf,
                          fitted_on=str(data.get("fitted_on", "")),
                          class_names=[str(c) for c in data.get("class_names") or ["defect"]])
    for m in fused.members:
        if m.calibration is None:
            raise DataError(f"{path}: every fusion member needs its calibration")
        if m.weights is not None and not Path(m.weights).is_file():
            raise DataError(f"{path}: member weights {m.weights} do not exist")
    return fused


def fusion_summary(path) -> dict:
    """What ``simgen info fusion.json`` prints: the members, their weights and calibration, the choice."""
    fused = load_fusion(path)
    members = []
    for m in fused.members:
        cal = m.calibration
        entry: dict = {"kind": m.kind, "weight": m.weight}
        if m.weights is not None:
            entry["weights"] = str(m.weights)
        if m.params is not None:
            entry["params"] = m.params.to_dict()
        if cal is not None:
            entry["calibration"] = {"knots": len(cal.scores), "scores": [cal.scores[0], cal.scores[-1]],
                                    "probability": [cal.probability[0], cal.probability[-1]]}
        members.append(entry)
    return {"detector": "fusion", "version": FUSION_VERSION, "iou": fused.iou, "conf_f1": fused.conf_f1,
            "fitted_on": fused.fitted_on, "class_names": fused.class_names, "members": members}


def predict_fused(fusion, source, output, *, overwrite: bool = False, progress: bool = True) -> Path:
    """Run a fused detector (object or ``fusion.json``) on every image of ``source``; write a
    ``predictions`` HDF5 like :func:`~simgen.train.yolo.predict.predict_yolo` (``conf_f1`` stored)."""
    det = fusion if isinstance(fusion, FusedDetector) else load_fusion(fusion)
    check_output(output, overwrite)
    with open_source(source) as src:
        with DatasetWriter(output, kind="predictions", class_names=det.class_names, overwrite=overwrite,
                           generator={"function": "simgen.train.fusion.predict_fused", **det.describe()},
                           attrs={"source": str(Path(src.path).resolve()), "conf_f1": det.conf_f1}) as w:
            with Timer() as t:
                for k in track(range(len(src)), total=len(src), description="fused", enabled=progress):
                    img = src.image(k)
                    w.append(None, boxes=det.detect(img), name=src.name(k), shape=img.shape)
            w.set_attrs(fps=len(src) / max(t.seconds, 1e-9), seconds=round(t.seconds, 3))
    return Path(output)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path.resolve())
