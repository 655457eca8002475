"""Change-detector run settings (:class:`DeltaNetConfig`), change classes, fusion modes and networks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from simgen.errors import ParameterError
from simgen.rng import check_seed

__all__ = [
    "APPEARING",
    "ARCHS",
    "CHANGE_CLASSES",
    "DISAPPEARING",
    "FUSIONS",
    "MODEL_TYPE",
    "SEG_MODEL_TYPE",
    "NO_CHANGE",
    "OVERLAPPING",
    "PRESETS",
    "SCHEDULES",
    "DeltaNetConfig",
    "get_config",
]


MODEL_TYPE = "deltanet"

#: Checkpoint type of the single-frame segmentation U-Net (:mod:`simgen.train.changedet.segment`).
SEG_MODEL_TYPE = "filseg"


#: Class order of the change maps (same as :data:`simgen.evaluate.segmentation.CHANGE_CLASSES`).
CHANGE_CLASSES = ("no change", "appearing", "disappearing", "overlapping")


#: Class ids of :data:`CHANGE_CLASSES`.
NO_CHANGE, APPEARING, DISAPPEARING, OVERLAPPING = 0, 1, 2, 3


#: Ways to combine predictions of a pair (see :func:`simgen.train.changedet.predict.fuse_pair`).
FUSIONS = ("forward", "backward", "consecutive", "ensemble")


#: Networks: ``siamese`` (shared encoder, per-scale feature fusion), ``unet`` (baseline on stacked
#: frames), ``mtdn`` (MultiTaskDeltaNet: one U-Net shared by both frames, final feature maps
#: concatenated, one FCN head per task) and ``segunet`` (single-frame segmentation U-Net).
ARCHS = ("siamese", "unet", "mtdn", "segunet")

#: Learning-rate schedules: constant, or linear decay to 0 over the run's optimiser steps.
SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class DeltaNetConfig:
    """Model and training parameters (stored in every checkpoint).

    arch : {"siamese", "unet", "mtdn", "segunet"}
        Siamese U-Net with feature fusion, the baseline U-Net on stacked frames, the
        MultiTaskDeltaNet network of the study, or the single-frame segmentation U-Net
        (trained by :func:`simgen.train.changedet.segment.train_segmenter`).
    width : int
        Channels of the first encoder level (doubling per level).
    depth : int
        Number of 2x down-samplings (inputs must be multiples of ``2**depth``; prediction
        pads automatically).
    norm : {"batch", "group"}
    crop : int
        Side of the square training crops (0 = whole frames).
    epochs, batch_size, lr, weight_decay (AdamW), gamma (focal-loss focusing), alpha (per-class
    focal weights: ``"auto"`` = ``f_c**-0.5`` from the training maps' class frequencies ``f_c``,
    normalised to a pixel-weighted mean of 1 — appearing/disappearing are rare slivers;
    ``None`` = all 1; or four numbers), patience (0 = never stop early), min_delta, monitor
    ({"val_loss", "val_dice"}: mean Dice of the three change classes over both targets),
    normalize ({"percentile", "minmax", "none"}: one contrast stretch computed on both frames of
    a pair together, so brightness changes between them survive), augment (flips and 90°
    rotations), reverse (probability of training on the reversed
    pair with appearing/disappearing swapped), steps_per_epoch (0 = one pass over the
    pairs), seed.
    tasks : tuple of str
        Train only these targets (e.g. ``("a2",)``: single-task); empty = every target of the data.
    schedule : {"constant", "linear"}
        Learning rate constant, or decayed linearly to 0 over all optimiser steps of the run.
    blur : float
        Probability of a Gaussian blur (sigma uniform in [0.3, 1.5] px, the same for both frames).
    brightness : float
        Brightness/contrast jitter: each frame (after normalisation) becomes ``g x + o`` with
        ``g`` uniform in [1 - b, 1 + b] and ``o`` in [-b/2, b/2], drawn per frame, clipped to [0, 1].
    init : str
        ``mtdn`` only: a ``segunet`` checkpoint whose U-Net initialises the shared U-Net
        (same width, depth and norm); ``""`` = from scratch.
    """

    preset: str = "full"
    arch: str = "siamese"
    width: int = 32
    depth: int = 4
    norm: str = "batch"
    crop: int = 256
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    gamma: float = 2.0
    alpha: tuple | str | None = "auto"
    patience: int = 10
    min_delta: float = 0.0
    monitor: str = "val_loss"
    normalize: str = "percentile"
    augment: bool = True
    reverse: float = 0.0
    steps_per_epoch: int = 0
    seed: int = 0
    tasks: tuple = ()
    schedule: str = "constant"
    blur: float = 0.0
    brightness: float = 0.0
    init: str = ""

    def validate(self) -> "DeltaNetConfig":
        if self.arch not in ARCHS:
            raise ParameterError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.schedule not in SCHEDULES:
            raise ParameterError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if isinstance(self.tasks, str):
            object.__setattr__(self, "tasks", tuple(t.strip() for t in self.tasks.split(",") if t.strip()))
        object.__setattr__(self, "tasks", tuple(str(t) for t in self.tasks))
        if len(set(self.tasks)) != len(self.tasks):
            raise ParameterError(f"tasks must be distinct, got {self.tasks}")
        if not 0.0 <= float(self.blur) <= 1.0:
            raise ParameterError(f"blur must be a probability in [0, 1], got {self.blur}")
        if not 0.0 <= float(self.brightness) < 1.0:
            raise ParameterError(f"brightness must be in [0, 1), got {self.brightness}")
        if self.init and self.arch != "mtdn":
            raise ParameterError(f"init (a segmentation U-Net checkpoint) needs arch 'mtdn', got {self.arch!r}")
        if self.norm not in ("batch", "group"):
            raise ParameterError(f"norm must be 'batch' or 'group', got {self.norm!r}")
        if self.normalize not in ("percentile", "minmax", "none"):
            raise ParameterError(f"normalize must be percentile, minmax or none, got {self.normalize!r}")
        if self.monitor not in ("val_loss", "val_dice"):
            raise ParameterError(f"monitor must be 'val_loss' or 'val_dice', got {self.monitor!r}")
        for name in ("width", "depth", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ParameterError(f"{name} must be a positive integer, got {v!r}")
        if self.depth > 6:
            raise ParameterError(f"depth must be <= 6, got {self.depth}")
        if self.norm == "group" and self.width % 4:
            raise ParameterError(f"width must be a multiple of 4 with group norm, got {self.width}")
        for name in ("crop", "patience", "steps_per_epoch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ParameterError(f"{name} must be a non-negative integer, got {v!r}")
        if self.crop and self.crop % (2 ** self.depth):
            raise ParameterError(f"crop {self.crop} must be a multiple of 2**depth = {2 ** self.depth}")
        for name in ("lr", "weight_decay", "gamma", "min_delta"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0:
                raise ParameterError(f"{name} must be a non-negative number, got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise ParameterError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= float(self.reverse) <= 1.0:
            raise ParameterError(f"reverse must be a probability in [0, 1], got {self.reverse}")
        if isinstance(self.alpha, str):
            if self.alpha != "auto":
                raise ParameterError(f"alpha must be 'auto', None or {len(CHANGE_CLASSES)} class weights, got {self.alpha!r}")
        elif self.alpha is not None:
            a = np.asarray(self.alpha, np.float64)
            if a.shape != (len(CHANGE_CLASSES),) or not np.all(np.isfinite(a)) or np.any(a < 0):
                raise ParameterError(f"alpha must be {len(CHANGE_CLASSES)} non-negative class weights, got {self.alpha}")
        check_seed(self.seed)
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        d["alpha"] = self.alpha if self.alpha is None or isinstance(self.alpha, str) else [float(a) for a in self.alpha]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DeltaNetConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ParameterError(f"unknown DeltaNet config field(s): {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("alpha"), list):
            d["alpha"] = tuple(d["alpha"])
        if isinstance(d.get("tasks"), list):
            d["tasks"] = tuple(d["tasks"])
        return cls(**d).validate()


#: ``tiny``: 64² crops, 8 channels, 3 levels, lr 3e-3 (tests, seconds).  ``light``: 128² crops, 16
#: channels, 4 levels, batch 8 (CPU runs).  ``full``: 256² crops, 32 channels, 4 levels,
#: batch 16, AdamW 1e-3 (GPU runs).  ``study``: the MultiTaskDeltaNet setting — ``mtdn``, 256²
#: crops, 32 channels, 4 levels, batch 16, AdamW lr 9.5e-4 decayed linearly, focal loss,
#: flips/rotations + blur/brightness augmentation (GPU runs).
PRESETS: dict[str, DeltaNetConfig] = {
    "tiny": DeltaNetConfig(preset="tiny", width=8, depth=3, crop=64, epochs=20, batch_size=8, lr=3e-3, patience=0),
    "light": DeltaNetConfig(preset="light", width=16, depth=4, crop=128, epochs=60, batch_size=8),
    "full": DeltaNetConfig(preset="full"),
    "study": DeltaNetConfig(preset="study", arch="mtdn", lr=9.5e-4, schedule="linear", blur=0.5, brightness=0.2,
                            patience=0),
}


def get_config(preset: str = "full", **overrides) -> DeltaNetConfig:
    """A preset with fields replaced (``None`` values ignored), validated."""
    if preset not in PRESETS:
        raise ParameterError(f"config must be one of {', '.join(PRESETS)}, got {preset!r}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - {f.name for f in fields(DeltaNetConfig)})
    if unknown:
        raise ParameterError(f"unknown DeltaNet config field(s): {', '.join(unknown)}")
    if overrides.get("alpha") is not None and not isinstance(overrides["alpha"], str):
        overrides["alpha"] = tuple(overrides["alpha"])
    if overrides.get("tasks") is not None and not isinstance(overrides["tasks"], str):
        overrides["tasks"] = tuple(overrides["tasks"])
    return replace(PRESETS[preset], **overrides).validate()

