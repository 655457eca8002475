"""YOLO run settings: :class:`YoloConfig`, named presets and model architecture files."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from simgen.datasets.normalize import NORMALIZE
from simgen.errors import ParameterError
from simgen.runtime import select_device

__all__ = [
    "YoloConfig",
    "PRESETS",
    "NESTED_CANDIDATES",
    "nested_ok",
    "model_yaml",
]


# -- configuration ------------------------------------------------------------------
@dataclass(frozen=True)
class YoloConfig:
    """Everything that defines a YOLO training run (see :data:`PRESETS`).

    Attributes
    ----------
    model : str
        Ultralytics model yaml: ``yolov8n``, ``yolo11n``, ``yolov8s.yaml``, ... or a path
        to a custom ``.yaml``.  Never a ``.pt`` name (that would download weights); to
        start from trained weights use ``weights=`` in :func:`train_yolo`.
    epochs, batch, imgsz : int
        Training length, batch size and network input size.  ``imgsz`` equals the tile
        side unless changed: tiles are seen at native resolution.
    tile, overlap : int
        Images larger than ``tile`` are cut into tiles with at least ``overlap`` pixels
        overlap (training and prediction).  ``tile=0``: never tile (whole images are
        letterboxed to ``imgsz``).
    min_box : float
        Boxes smaller than this (px) are grown to it around their centre.
    min_visible : float
        A box cut by a tile edge is kept when this fraction of it is inside.
    normalize : {"percentile", "minmax", "none"}
        Per-image contrast normalisation before 8-bit conversion (train and predict).
    scale : float
        Resize factor applied to every image before tiling (train and predict).
    max_det : int
        Maximum detections per tile (Ultralytics defaults to 300; dense black dots need more).
    conf : float
        Lowest confidence kept when predicting (low, so that PR curves and AP can be computed).
    iou : float
        NMS IoU threshold (inside tiles and across seams).
    val_fraction : float
        Share of the training samples held out for validation when no ``val`` data is given.
    patience : int
        Early stopping: epochs without validation improvement (0: off).
    save_period : int
        Also keep the checkpoint of every ``save_period``-th epoch
        (``ultralytics/weights/epoch<N>.pt``, N counted from 0 as Ultralytics does; 0: off), e.g. to
        score a training trajectory afterwards.
    workers : int
        Dataloader worker processes (0: in the main process).
    device : str
        ``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda:N``.
    seed : int
    optimizer, lr0 : str, float
        Ultralytics optimizer (``auto`` picks AdamW/SGD by run length) and initial LR.
    mosaic, close_mosaic, fliplr, flipud, degrees, translate, scale_aug, hsv_v : float/int
        Ultralytics augmentation (``scale_aug`` is Ultralytics' ``scale``).
    cache_images : bool
        Keep decoded training images in RAM (fast; fine for tiles).
    nbs : int
        Ultralytics' nominal batch size: gradients are accumulated until ``nbs`` images
        (Ultralytics' default 64 means one optimizer step every 4 batches of 16).  0 = ``batch``:
        one step per batch, which matters for short CPU runs.
    warmup_epochs : float
        Learning-rate warm-up (Ultralytics: at least 100 iterations).
    hours : float
        Wall-clock training budget in hours (0: off).  When set, Ultralytics re-plans the
        number of epochs after each epoch so that training ends within it.
    nested : "auto", float or None
        Suppression of boxes lying inside a higher-scoring box at prediction
        (:func:`~simgen.train.tiling.suppress_nested`, stored in the checkpoint).  ``"auto"``:
        picked with the confidence threshold on the validation tiles among
        :data:`NESTED_CANDIDATES` (best peak F1; off unless it helps there); a float in (0, 1]:
        that IoMin; ``None``: off.
    tta : "auto" or bool
        Flip test-time augmentation at prediction (:mod:`simgen.train.yolo.tta`, stored in the
        checkpoint).  ``"auto"``: picked on the validation tiles with the threshold and ``nested``
        (on only when it raises the peak F1 there); ``True`` / ``False``: always / never.
    """

    model: str = "yolov8n"
    epochs: int = 60
    batch: int = 16
    imgsz: int = 320
    tile: int = 320
    overlap: int = 64
    min_box: float = 5.0
    min_visible: float = 0.5
    normalize: str = "percentile"
    scale: float = 1.0
    max_det: int = 1000
    conf: float = 0.01
    iou: float = 0.5
    val_fraction: float = 0.1
    patience: int = 15
    workers: int = 0
    device: str = "auto"
    seed: int = 0
    optimizer: str = "auto"
    lr0: float = 0.01
    mosaic: float = 1.0
    close_mosaic: int = 5
    fliplr: float = 0.5
    flipud: float = 0.5
    degrees: float = 0.0
    translate: float = 0.1
    scale_aug: float = 0.3
    hsv_v: float = 0.3
    cache_images: bool = True
    nbs: int = 0
    warmup_epochs: float = 1.0
    save_period: int = 0
    hours: float = 0.0
    nested: str | float | None = "auto"
    tta: str | bool = "auto"

    def validate(self) -> "YoloConfig":
        """Raise :class:`ParameterError` on any bad value; returns self."""
        model_yaml(self.model)
        for name in ("epochs", "batch", "imgsz", "max_det"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.imgsz % 32:
            raise ParameterError(f"imgsz must be a multiple of 32 (the YOLO stride), got {self.imgsz}")
        if self.tile < 0 or (self.tile and not 0 <= self.overlap < self.tile):
            raise ParameterError(
                f"need tile >= 0 and 0 <= overlap < tile, got tile={self.tile}, overlap={self.overlap}")
        if self.tile and self.tile < 32:
            raise ParameterError(f"tile must be >= 32 pixels (or 0 for no tiling), got {self.tile}")
        if self.min_box < 0 or not 0 < self.min_visible <= 1:
            raise ParameterError("need min_box >= 0 and 0 < min_visible <= 1")
        if self.normalize not in NORMALIZE:
            raise ParameterError(f"normalize must be one of {', '.join(NORMALIZE)}, got {self.normalize!r}")
        if not 0.05 <= self.scale <= 20:
            raise ParameterError(f"scale must be in [0.05, 20], got {self.scale}")
        if not 0 <= self.conf < 1 or not 0 < self.iou <= 1:
            raise ParameterError("need 0 <= conf < 1 and 0 < iou <= 1")
        if not 0 <= self.val_fraction < 1:
            raise ParameterError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.nbs < 0 or self.warmup_epochs < 0:
            raise ParameterError("nbs and warmup_epochs must be >= 0")
        if self.hours < 0:
            raise ParameterError(f"hours must be >= 0, got {self.hours}")
        if not (self.nested == "auto" or nested_ok(self.nested)):
            raise ParameterError(f"nested must be 'auto', None or in (0, 1], got {self.nested!r}")
        if self.tta not in ("auto", True, False):
            raise ParameterError(f"tta must be 'auto', True or False, got {self.tta!r}")
        if self.patience < 0 or self.workers < 0 or self.seed < 0 or self.save_period < 0:
            raise ParameterError("patience, workers, seed and save_period must be >= 0")
        select_device(self.device)
        return self

    def replace(self, **changes) -> "YoloConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ParameterError(f"unknown YOLO setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def export_params(self) -> dict:
        """The settings that change the exported training data (part of the cache key)."""
        return {k: getattr(self, k) for k in ("tile", "overlap", "min_box", "min_visible", "normalize", "scale")}


#: IoMin values ``nested="auto"`` chooses among (``None`` = off).  Not below 0.6: the TEM renderer
#: keeps defect masks apart by default and lets them overlap by at most 30 % of a mask otherwise
#: (``TemConfig.overlap``, ``max_overlap``), so a box pair nested deeper than that is one defect
#: boxed twice, not two defects.
NESTED_CANDIDATES: tuple[float | None, ...] = (None, 0.9, 0.8, 0.7, 0.6)

def nested_ok(value) -> bool:
    """Whether ``value`` is a nested-suppression setting: ``None`` (off) or an IoMin in (0, 1]."""
    return value is None or (isinstance(value, (int, float)) and 0 < value <= 1)


#: Named configurations: ``small`` trains in seconds on a CPU (tests, smoke runs);
#: ``full`` is the default for real runs.
PRESETS: dict[str, YoloConfig] = {
    "small": YoloConfig(epochs=2, batch=4, imgsz=64, tile=64, overlap=16, patience=0, close_mosaic=0,
                        mosaic=0.0, val_fraction=0.25),
    "full": YoloConfig(),
}


def model_yaml(model: str) -> str:
    """Normalise a model name to a yaml Ultralytics builds from scratch (``yolov8n`` → ``yolov8n.yaml``).

    Raises :class:`ParameterError` for ``.pt`` names (they download weights).
    """
    model = str(model).strip()
    if not model:
        raise ParameterError("model name is empty")
    if model.endswith(".pt"):
        raise ParameterError(
            f"model {model!r} is a weights file; give a .yaml (e.g. yolov8n) — "
            "start from trained weights with --weights"
        )
    if model.endswith((".yaml", ".yml")):
        if os.sep in model and not Path(model).is_file():
            raise ParameterError(f"model yaml {model} does not exist")
        return model
    return f"{model}.yaml"


def _device_arg(device) -> str:
    dev = select_device(device)
    if dev.type == "cuda":
        return str(dev.index or 0)
    return dev.type
