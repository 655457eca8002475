"""YOLO detectors (Ultralytics) trained on simgen data, fully offline.

Three steps, each a documented function and a CLI command:

1. :func:`prepare_yolo_data` bridges simgen HDF5 files (and real YOLO folders) to
   Ultralytics: images are contrast-normalised (robust percentiles, so 16-bit or
   dim TEM data is not simply cut to 8 bits), cut into tiles when larger than
   ``tile``, written as 8-bit greyscale PNG with YOLO labels (tiny boxes padded to
   ``min_box`` pixels, because Ultralytics drops boxes under ~2-3 px) and a
   ``data.yaml`` with ``channels: 1``.  The export is cached under a key made of the
   sources' content checksums and every export parameter, so training again on the
   same data never re-exports.
2. :func:`train_yolo` builds a model from a ``.yaml`` (no pretrained weights, no
   downloads), trains with ``pretrained=False, amp=False`` through
   :func:`simgen.train.offline.import_ultralytics`, writes checkpoints atomically
   (a run killed at any point resumes from ``last.pt`` with ``resume=True``), picks
   the confidence threshold that maximises F1 at IoU 0.15 on the *validation*
   data, and writes ``<out>/best.pt``: a standard Ultralytics checkpoint (``YOLO(path)``
   loads it) that also carries simgen's settings (tile, normalisation, scale,
   threshold) under the key ``"simgen"``.
3. :class:`YoloDetector` / :func:`predict_yolo` run a trained model on large
   images: normalise, optionally rescale, tile with overlap, predict every tile,
   keep detections whose centre is in the tile core, NMS across seams, and write
   boxes + score as a label-only ``predictions`` HDF5 dataset.

The model sees greyscale images (1 input channel); ``YOLO(best.pt).predict()`` converts
colour inputs itself.  Scale: the model detects objects of the sizes it was trained
on (see ``docs/train.md``); use ``scale`` to bring other images to that scale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, ParameterError
from .common import (
    EarlyStopping,  # noqa: F401 - re-exported for trainers that import from here
    ProgressLog,
    Timer,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    select_device,
    setup_threads,
)
from .tiling import Window, crop_boxes, merge_tiles, pad_to, tile_windows

__all__ = [
    "YoloConfig",
    "PRESETS",
    "normalize_image",
    "open_source",
    "prepare_yolo_data",
    "cache_root",
    "train_yolo",
    "YoloDetector",
    "predict_yolo",
    "predict_frame",
    "read_predictions",
    "model_yaml",
    "track_video",
]

NORMALIZE = ("percentile", "minmax", "none")


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
    hours: float = 0.0

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
        if self.patience < 0 or self.workers < 0 or self.seed < 0:
            raise ParameterError("patience, workers and seed must be >= 0")
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


# -- images and sources -----------------------------------------------------------------
def normalize_image(image: np.ndarray, mode: str = "percentile", lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    """Contrast-normalise a float image to [0, 1].

    ``percentile``: map the ``lo``/``hi`` percentiles to 0/1 (robust to hot pixels and
    to 16-bit data using a small part of its range); ``minmax``: full range; ``none``:
    clip only.  Flat images map to 0.5.
    """
    image = np.asarray(image, np.float32)
    if mode == "none":
        return np.clip(image, 0.0, 1.0)
    if mode == "percentile":
        a, b = np.percentile(image, [lo, hi])
    elif mode == "minmax":
        a, b = float(image.min()), float(image.max())
    else:
        raise ParameterError(f"normalize must be one of {', '.join(NORMALIZE)}, got {mode!r}")
    if not b > a:
        return np.full_like(image, 0.5)
    return np.clip((image - a) / (b - a), 0.0, 1.0).astype(np.float32)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    from skimage.transform import resize

    h, w = image.shape
    shape = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    return resize(image, shape, order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


class _Source:
    """Uniform read access to an HDF5 dataset, a YOLO folder or a plain image folder."""

    def __init__(self, path, names=None, table: str = "boxes"):
        self.path = Path(path)
        self.table = table
        self._ds = None
        self._folder = None
        if self.path.is_dir():
            if (self.path / "images").is_dir():
                from ..datasets.formats.yolo import open_yolo_folder

                self._folder = open_yolo_folder(self.path)
                self.names = list(self._folder.names)
                self.class_names = self._folder.class_names
                self.has_labels = (self.path / "labels").is_dir()
            else:
                from ..datasets.imageio import list_images

                self._files = {p.stem: p for p in list_images(self.path)}
                if not self._files:
                    raise DataError(f"{self.path} holds no images (png, tif, jpg)")
                self.names = sorted(self._files)
                self.class_names = []
                self.has_labels = False
            self.kind = "folder"
        elif self.path.is_file():
            from ..datasets.h5io import open_dataset

            self._ds = open_dataset(self.path)
            if self._ds.images is None:
                self._ds.close()
                raise DataError(f"{self.path} stores no images")
            self.names = [self._ds.name(i) if self._ds.has("names") else f"{i:06d}" for i in range(self._ds.n)]
            self.class_names = list(self._ds.class_names)
            self.has_labels = table in self._ds.tables
            self.kind = "hdf5"
        else:
            raise DataError(f"{self.path} does not exist (expected an HDF5 file, a YOLO folder or an image folder)")
        self.index = list(range(len(self.names)))
        if names is not None:
            lookup = {n: i for i, n in enumerate(self.names)}
            missing = [n for n in names if n not in lookup]
            if missing:
                raise DataError(f"{self.path}: no sample(s) named {', '.join(missing[:5])}")
            self.index = [lookup[n] for n in names]

    def __len__(self) -> int:
        return len(self.index)

    def name(self, k: int) -> str:
        return self.names[self.index[k]]

    def image(self, k: int) -> np.ndarray:
        i = self.index[k]
        if self._ds is not None:
            return self._ds.image(i)
        if self._folder is not None:
            return self._folder.image(i)
        from ..datasets.imageio import read_image

        return read_image(self._files[self.names[i]])

    def shape(self, k: int) -> tuple[int, int]:
        i = self.index[k]
        if self._ds is not None:
            return tuple(self._ds.image_shape)
        if self._folder is not None:
            return tuple(self._folder.shape(i))
        from PIL import Image

        with Image.open(self._files[self.names[i]]) as im:
            return (im.height, im.width)

    def boxes(self, k: int) -> pd.DataFrame | None:
        if not self.has_labels:
            return None
        i = self.index[k]
        if self._ds is not None:
            return self._ds.rows(self.table, i)
        return self._folder.boxes(i)

    def checksum(self) -> str:
        """Content hash of the underlying file(s) (plus the selected sample names)."""
        h = hashlib.sha256()
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        for p in files:
            h.update(str(p.relative_to(self.path) if p != self.path else p.name).encode())
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        h.update(json.dumps([self.names[i] for i in self.index]).encode())
        return h.hexdigest()

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_source(path, names=None, table: str = "boxes") -> _Source:
    """Open an HDF5 dataset, a YOLO folder (``images/`` + ``labels/``) or an image folder for reading.

    ``names`` selects samples by name (e.g. the images of one cross-validation fold).
    The returned object has ``len()``, ``name(k)``, ``image(k)`` (float32 in [0, 1]),
    ``shape(k)``, ``boxes(k)`` (DataFrame or ``None``) and ``class_names``.
    """
    return _Source(path, names=names, table=table)


# -- export for Ultralytics ----------------------------------------------------------------
def cache_root() -> Path:
    """Where prepared YOLO exports are cached (``$SIMGEN_CACHE_DIR/yolo-data`` or ``~/.cache/simgen/yolo-data``)."""
    env = os.environ.get("SIMGEN_CACHE_DIR", "").strip()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(env).expanduser() if env else (Path(xdg) if xdg else Path.home() / ".cache") / "simgen"
    return base / "yolo-data"


def _grow_boxes(df: pd.DataFrame, min_box: float) -> pd.DataFrame:
    if min_box <= 0 or len(df) == 0:
        return df
    df = df.copy()
    for a, b in (("x0", "x1"), ("y0", "y1")):
        lo, hi = df[a].to_numpy(np.float64), df[b].to_numpy(np.float64)
        c, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, min_box / 2)
        df[a], df[b] = (c - half).astype(np.float32), (c + half).astype(np.float32)
    return df


def _scale_boxes(df: pd.DataFrame, scale: float) -> pd.DataFrame:
    if scale == 1.0 or df is None or len(df) == 0:
        return df
    df = df.copy()
    for c in ("x0", "y0", "x1", "y1"):
        df[c] = (df[c].to_numpy(np.float64) * scale).astype(np.float32)
    return df


def _prepare_image(image: np.ndarray, config: YoloConfig) -> np.ndarray:
    return _resize(normalize_image(image, config.normalize), config.scale)


def _export_split(sources: list[_Source], out: Path, split: str, config: YoloConfig, select=None) -> int:
    """Write the tiles of ``sources`` to ``out/images/<split>`` and ``out/labels/<split>``; returns tile count."""
    from PIL import Image

    from ..datasets.formats.yolo import format_yolo_labels

    img_dir, lab_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for s, src in enumerate(sources):
        for k in range(len(src)):
            if select is not None and not select(s, k):
                continue
            image = _prepare_image(src.image(k), config)
            boxes = src.boxes(k)
            if boxes is None:
                boxes = pd.DataFrame({c: np.zeros(0, np.float32) for c in ("x0", "y0", "x1", "y1", "class")})
            boxes = _grow_boxes(_scale_boxes(boxes[["x0", "y0", "x1", "y1", "class"]], config.scale), config.min_box)
            h, w = image.shape
            windows = tile_windows((h, w), config.tile, config.overlap) if config.tile else [
                Window(0, 0, h, w, (0.0, 0.0, float(w), float(h)))]
            stem = _safe(f"s{s}_{src.name(k)}")
            for t, win in enumerate(windows):
                crop = win.crop(image)
                tb = crop_boxes(boxes, win, config.min_visible)
                th, tw = crop.shape
                if config.tile and (th < config.tile or tw < config.tile):
                    crop = pad_to(crop, (max(th, config.tile), max(tw, config.tile)))
                    th, tw = crop.shape
                name = f"{stem}_t{t:03d}" if len(windows) > 1 else stem
                Image.fromarray(_to_uint8(crop)).save(img_dir / f"{name}.png")
                (lab_dir / f"{name}.txt").write_text(format_yolo_labels(tb, tw, th, min_size=0.5))
                count += 1
    return count


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


def prepare_yolo_data(train, val=None, *, config: YoloConfig | None = None, cache_dir=None,
                      train_names=None, val_names=None, progress: ProgressLog | None = None) -> Path:
    """Export training (and validation) data to a cached Ultralytics YOLO folder; returns ``data.yaml``.

    Parameters
    ----------
    train, val : path or list of paths
        HDF5 datasets with a ``boxes`` table and/or YOLO folders (``images/`` + ``labels/``).
        Without ``val``, ``config.val_fraction`` of the training *images* is held out
        (seeded); with ``val_fraction = 0`` validation runs on the training data.
    config : YoloConfig
        Export settings: tile, overlap, min_box, min_visible, normalize, scale.
    cache_dir : path, optional
        Cache root (default :func:`cache_root`).
    train_names, val_names : list of list of str, optional
        Per source, the sample names to use (cross-validation folds of real folders).

    Returns
    -------
    Path of ``data.yaml`` inside ``<cache>/<key>/``.  The key hashes the sources' content,
    the selected names and the export settings; an existing complete export is reused.
    """
    import yaml

    config = (config or YoloConfig()).validate()
    train = [train] if isinstance(train, (str, Path)) else list(train)
    val = [] if val is None else ([val] if isinstance(val, (str, Path)) else list(val))
    if not train:
        raise ParameterError("no training data given")
    train_names = train_names or [None] * len(train)
    val_names = val_names or [None] * len(val)
    tr = [open_source(p, n) for p, n in zip(train, train_names)]
    va = [open_source(p, n) for p, n in zip(val, val_names)]
    try:
        for src in tr + va:
            if not src.has_labels:
                raise DataError(f"{src.path} has no box labels to train on")
        class_names = next((s.class_names for s in tr if s.class_names), None)
        if not class_names:
            n_cls = 1 + max(int(s.boxes(k)["class"].max(initial=0)) for s in tr for k in range(min(len(s), 50)))
            class_names = [str(c) for c in range(n_cls)]
        key_data = {
            "format": 2,
            "train": [s.checksum() for s in tr],
            "val": [s.checksum() for s in va],
            "export": config.export_params(),
            "val_fraction": config.val_fraction if not va else None,
            "seed": config.seed if not va else None,
            "classes": list(class_names),
        }
        key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:20]
        root = Path(cache_dir) if cache_dir is not None else cache_root()
        final = root / key
        if (final / "data.yaml").is_file():
            if progress:
                progress.message(f"using cached YOLO export {final}")
            return final / "data.yaml"
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root))
        try:
            with Timer() as t:
                if va:
                    n_train = _export_split(tr, tmp, "train", config)
                    n_val = _export_split(va, tmp, "val", config)
                    val_dir = "images/val"
                else:
                    total = [(s, k) for s, src in enumerate(tr) for k in range(len(src))]
                    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0x7A1,)))
                    n_hold = int(round(config.val_fraction * len(total)))
                    if config.val_fraction > 0 and len(total) > 1:
                        n_hold = min(max(n_hold, 1), len(total) - 1)
                    held = {total[i] for i in rng.choice(len(total), n_hold, replace=False)} if n_hold else set()
                    n_train = _export_split(tr, tmp, "train", config, select=lambda s, k: (s, k) not in held)
                    if held:
                        n_val = _export_split(tr, tmp, "val", config, select=lambda s, k: (s, k) in held)
                        val_dir = "images/val"
                    else:
                        n_val, val_dir = n_train, "images/train"
            data = {
                "path": str(final.resolve()),
                "train": "images/train",
                "val": val_dir,
                "names": {i: n for i, n in enumerate(class_names)},
                "channels": 1,
            }
            (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            (tmp / "source.json").write_text(json.dumps(
                {**key_data, "train_paths": [str(s.path) for s in tr], "val_paths": [str(s.path) for s in va],
                 "n_train_tiles": n_train, "n_val_tiles": n_val}, indent=2))
            try:
                os.replace(tmp, final)
            except OSError:  # another process finished the same export first
                shutil.rmtree(tmp, ignore_errors=True)
            if progress:
                progress.message(f"exported {n_train} train / {n_val} val tiles to {final} in {t.seconds:.1f}s")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final / "data.yaml"
    finally:
        for src in tr + va:
            src.close()


# -- training ---------------------------------------------------------------------------------
def _atomic_trainer_class():
    """DetectionTrainer whose checkpoints are written atomically (temp file + rename)."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    class AtomicDetectionTrainer(DetectionTrainer):
        def save_model(self):
            final_last, final_best = self.last, self.best
            tmp_last = final_last.with_name(f".{final_last.name}.{os.getpid()}.tmp")
            tmp_best = final_best.with_name(f".{final_best.name}.{os.getpid()}.tmp")
            self.last, self.best = tmp_last, tmp_best
            try:
                result = super().save_model()
            finally:
                self.last, self.best = final_last, final_best
            from ..datasets.atomic import fsync_path

            for tmp, final in ((tmp_last, final_last), (tmp_best, final_best)):
                if tmp.exists():
                    fsync_path(tmp)
                    os.replace(tmp, final)
            return result

    return AtomicDetectionTrainer


def _device_arg(device) -> str:
    dev = select_device(device)
    if dev.type == "cuda":
        return str(dev.index or 0)
    return dev.type


def train_yolo(train, output, *, val=None, config: YoloConfig | None = None, weights=None, resume: bool = False,
               overwrite: bool = False, progress: bool = True, cache_dir=None, threads: int | None = None,
               train_names=None, val_names=None, select_conf: bool = True) -> Path:
    """Train a YOLO detector on simgen data; returns the path of ``<output>/best.pt``.

    Parameters
    ----------
    train, val : path or list of paths
        HDF5 datasets and/or YOLO folders (see :func:`prepare_yolo_data`).
    output : path
        Run folder.  Holds ``best.pt`` (standard Ultralytics checkpoint + simgen settings),
        ``simgen.json``, ``metrics.jsonl`` and Ultralytics' own run in ``ultralytics/``.
    config : YoloConfig
        Settings (default: ``PRESETS["full"]``).
    weights : path, optional
        Start from these trained weights (a local ``.pt``, e.g. a synthetic-only model to
        fine-tune on a few real images) instead of random initialisation.
    resume : bool
        Continue an interrupted run from ``ultralytics/weights/last.pt``.
    overwrite : bool
        Start afresh in a folder holding a finished or interrupted run.
    select_conf : bool
        Pick the confidence threshold with the best F1 (IoU 0.15) on the validation tiles
        and store it in the checkpoint (``simgen.conf_f1``).
    """
    config = (config or PRESETS["full"]).validate()
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output {out} is a file; give a run folder")
    ul_dir = out / "ultralytics"
    last = ul_dir / "weights" / "last.pt"
    has_run = (out / "best.pt").exists() or ul_dir.exists()
    if resume and not last.exists():
        raise ParameterError(f"nothing to resume in {out} (no {last})")
    if has_run and not (resume or overwrite):
        raise ParameterError(f"run folder {out} holds a run; pass --resume to continue it or --overwrite")
    if weights is not None and not Path(weights).is_file():
        raise ParameterError(f"weights {weights} do not exist")
    out.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume:
        shutil.rmtree(ul_dir, ignore_errors=True)
        for name in ("best.pt", "simgen.json", "metrics.jsonl"):
            (out / name).unlink(missing_ok=True)

    log = ProgressLog(out / "metrics.jsonl", total_epochs=config.epochs, enabled=progress, prefix="[yolo] ")
    threads = setup_threads(threads)
    seed_everything(config.seed)
    data_yaml = prepare_yolo_data(train, val, config=config, cache_dir=cache_dir, train_names=train_names,
                                  val_names=val_names, progress=log)

    from .offline import import_ultralytics

    ultralytics = import_ultralytics()
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = threads
    warnings.filterwarnings("ignore", message="The image is already gray")
    if resume:
        model = ultralytics.YOLO(str(last))
    elif weights is not None:
        model = ultralytics.YOLO(str(weights))
    else:
        model = ultralytics.YOLO(model_yaml(config.model))

    state = {"stopped": False}  # set once the last training epoch was logged

    def on_fit_epoch_end(trainer):
        m = {k.split("/")[-1].replace("(B)", ""): float(v) for k, v in (trainer.metrics or {}).items()}
        if state["stopped"]:  # Ultralytics' final validation of best.pt (after the last epoch)
            log.message(f"best.pt on validation: P {m.get('precision', float('nan')):.3f}  "
                        f"R {m.get('recall', float('nan')):.3f}  mAP50 {m.get('mAP50', float('nan')):.3f}")
            return
        losses = {}
        if getattr(trainer, "tloss", None) is not None:
            items = trainer.label_loss_items(trainer.tloss, prefix="train")
            losses = {k.split("/")[-1]: float(v) for k, v in items.items()} if isinstance(items, dict) else {}
        state["stopped"] = bool(getattr(trainer, "stop", False))
        log.epoch(trainer.epoch, **losses, P=m.get("precision", float("nan")), R=m.get("recall", float("nan")),
                  mAP50=m.get("mAP50", float("nan")))

    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    args = dict(
        data=str(data_yaml), epochs=config.epochs, imgsz=config.imgsz, batch=config.batch,
        workers=config.workers, device=_device_arg(config.device), amp=False, plots=False,
        # pretrained=True only re-uses the weights already loaded from the local --weights file (no download);
        # with pretrained=False Ultralytics would re-initialise them
        pretrained=weights is not None,
        project=str(out.resolve()), name="ultralytics", exist_ok=True, seed=config.seed,
        patience=config.patience or 10**6,
        max_det=config.max_det, optimizer=config.optimizer, lr0=config.lr0, mosaic=config.mosaic,
        close_mosaic=config.close_mosaic, fliplr=config.fliplr, flipud=config.flipud, degrees=config.degrees,
        translate=config.translate, scale=config.scale_aug, hsv_h=0.0, hsv_s=0.0, hsv_v=config.hsv_v,
        cache="ram" if config.cache_images else False, verbose=False, val=True, save=True,
        nbs=config.nbs or config.batch, warmup_epochs=config.warmup_epochs,
    )
    if config.hours > 0:
        args["time"] = float(config.hours)
    if resume:
        args = {"resume": True, "workers": config.workers, "device": args["device"]}
    log.message(f"training {config.model} on {data_yaml.parent.name} for {config.epochs} epochs "
                f"(imgsz {config.imgsz}, batch {config.batch}, device {args['device']}, {threads} thread(s))")
    with Timer() as t:
        model.train(trainer=_atomic_trainer_class(), **args)
    best_ul = ul_dir / "weights" / "best.pt"
    if not best_ul.exists():
        best_ul = last
    meta = {
        "simgen_version": _version(),
        "config": config.to_dict(),
        "tile": config.tile, "overlap": config.overlap, "imgsz": config.imgsz, "normalize": config.normalize,
        "scale": config.scale, "min_box": config.min_box, "iou": config.iou, "max_det": config.max_det,
        "train": [str(p) for p in ([train] if isinstance(train, (str, Path)) else train)],
        "val": [str(p) for p in ([val] if isinstance(val, (str, Path)) else (val or []))],
        "data_yaml": str(data_yaml), "train_seconds": round(t.seconds, 1), "threads": threads,
        "conf_f1": 0.25,
    }
    ckpt = load_checkpoint(best_ul, weights_only=False)
    ckpt["simgen"] = meta
    best = save_checkpoint(out / "best.pt", ckpt)
    if select_conf:
        conf, f1 = _select_conf(best, data_yaml, config)
        meta.update(conf_f1=conf, val_f1=f1)
        ckpt["simgen"] = meta
        save_checkpoint(best, ckpt)
        log.message(f"validation: best F1@IoU0.15 {f1:.3f} at confidence {conf:.3f}")
    from ..datasets.atomic import atomic_write_text

    atomic_write_text(out / "simgen.json", json.dumps(meta, indent=2, default=str) + "\n", overwrite=True)
    log.message(f"done in {t.seconds:.0f}s: {best}")
    return best


def _version() -> str:
    from .. import __version__

    return __version__


def _select_conf(weights: Path, data_yaml: Path, config: YoloConfig) -> tuple[float, float]:
    """Confidence threshold with the best F1 at IoU 0.15 on the validation tiles."""
    import yaml

    from ..datasets.formats.yolo import read_yolo_labels
    from ..evaluate.detection import evaluate_detections

    data = yaml.safe_load(Path(data_yaml).read_text())
    img_dir = Path(data["path"]) / data["val"]
    lab_dir = Path(data["path"]) / data["val"].replace("images", "labels", 1)
    files = sorted(img_dir.glob("*.png"))[:400]
    if not files:
        return 0.25, float("nan")
    det = YoloDetector(weights, device=config.device, normalize="none", tile=0, scale=1.0)
    preds, gts = [], []
    from ..datasets.imageio import read_image

    for i, f in enumerate(files):
        img = read_image(f)
        p = det.detect(img)
        p.insert(0, "sample", i)
        preds.append(p)
        g = read_yolo_labels(lab_dir / f"{f.stem}.txt", img.shape[1], img.shape[0])
        g.insert(0, "sample", i)
        gts.append(g)
    res = evaluate_detections(pd.concat(preds, ignore_index=True), pd.concat(gts, ignore_index=True),
                              threshold=0.15, conf=0.25, n_frames=len(files))
    conf = float(res.summary["peak_f1_threshold"])
    f1 = float(res.summary["peak_f1"])
    if not np.isfinite(conf) or conf <= 0:
        conf = 0.25
    return conf, f1


# -- prediction ---------------------------------------------------------------------------------
class YoloDetector:
    """A trained YOLO model applied to whole images of any size (tiling + seam merging).

    Parameters
    ----------
    weights : path
        A ``best.pt`` from :func:`train_yolo` (or any Ultralytics detection checkpoint;
        then the defaults below apply).
    device : str
        ``auto``, ``cpu``, ``cuda:N``.
    conf : float, optional
        Lowest confidence kept (default: the training config's ``conf``, 0.01).
    iou : float, optional
        NMS IoU inside tiles and across seams.
    tile, overlap : int, optional
        Tiling (default: as trained).  ``tile=0``: whole image letterboxed to ``imgsz``.
    scale : float, optional
        Resize factor applied before detection (default: as trained); boxes are
        returned in original pixel coordinates.
    normalize : str, optional
        Contrast normalisation (default: as trained).
    max_det : int, optional
        Maximum detections per tile.
    batch : int
        Tiles per forward pass.
    """

    def __init__(self, weights, *, device: str = "auto", conf: float | None = None, iou: float | None = None,
                 tile: int | None = None, overlap: int | None = None, scale: float | None = None,
                 normalize: str | None = None, max_det: int | None = None, batch: int = 8, threads: int | None = None):
        weights = Path(weights)
        if not weights.is_file():
            raise DataError(f"weights {weights} do not exist")
        ckpt = load_checkpoint(weights, weights_only=False)
        if not isinstance(ckpt, dict) or not (ckpt.get("ema") or ckpt.get("model")):
            raise DataError(f"{weights} is not an Ultralytics detection checkpoint")
        meta = ckpt.get("simgen") or {}
        train_args = ckpt.get("train_args") or {}
        del ckpt
        self.meta = meta
        self.weights = weights
        self.imgsz = int(meta.get("imgsz") or train_args.get("imgsz") or 640)
        self.tile = int(meta.get("tile", 0) if tile is None else tile)
        self.overlap = int(meta.get("overlap", self.tile // 5) if overlap is None else overlap)
        self.scale = float(meta.get("scale", 1.0) if scale is None else scale)
        self.normalize = str(meta.get("normalize", "percentile") if normalize is None else normalize)
        self.conf = float((meta.get("config") or {}).get("conf", 0.01) if conf is None else conf)
        self.iou = float(meta.get("iou", 0.5) if iou is None else iou)
        self.max_det = int(meta.get("max_det", 1000) if max_det is None else max_det)
        self.conf_f1 = float(meta.get("conf_f1", 0.25))
        self.batch = int(batch)
        if self.tile and not 0 <= self.overlap < self.tile:
            raise ParameterError(f"need 0 <= overlap < tile, got tile={self.tile}, overlap={self.overlap}")
        if self.normalize not in NORMALIZE:
            raise ParameterError(f"normalize must be one of {', '.join(NORMALIZE)}")
        if not 0.05 <= self.scale <= 20:
            raise ParameterError(f"scale must be in [0.05, 20], got {self.scale}")
        if self.batch < 1:
            raise ParameterError("batch must be >= 1")
        self.threads = setup_threads(threads)
        from .offline import import_ultralytics

        ultralytics = import_ultralytics()
        from ultralytics.utils import torch_utils

        torch_utils.NUM_THREADS = self.threads
        self.device = _device_arg(device)
        self.model = ultralytics.YOLO(str(weights), task="detect")
        self.class_names = [self.model.names[k] for k in sorted(self.model.names)]
        self.predict_imgsz = self.tile if self.tile else self.imgsz
        if self.predict_imgsz % 32:
            self.predict_imgsz = int(np.ceil(self.predict_imgsz / 32) * 32)

    def describe(self) -> dict:
        return {"weights": str(self.weights), "tile": self.tile, "overlap": self.overlap, "scale": self.scale,
                "normalize": self.normalize, "conf": self.conf, "iou": self.iou, "max_det": self.max_det,
                "imgsz": self.predict_imgsz, "conf_f1": self.conf_f1}

    def _run(self, crops: list[np.ndarray]) -> list[pd.DataFrame]:
        out = []
        for start in range(0, len(crops), self.batch):
            chunk = crops[start : start + self.batch]
            results = self.model.predict(chunk, imgsz=self.predict_imgsz, conf=self.conf, iou=self.iou,
                                         max_det=self.max_det, device=self.device, verbose=False,
                                         batch=len(chunk), half=False)
            for r in results:
                b = r.boxes
                xyxy = b.xyxy.cpu().numpy().astype(np.float32).reshape(-1, 4)
                out.append(pd.DataFrame({
                    "x0": xyxy[:, 0], "y0": xyxy[:, 1], "x1": xyxy[:, 2], "y1": xyxy[:, 3],
                    "class": b.cls.cpu().numpy().astype(np.int16),
                    "score": b.conf.cpu().numpy().astype(np.float32),
                }))
        return out

    def detect(self, image: np.ndarray) -> pd.DataFrame:
        """Boxes (x0, y0, x1, y1, class, score) of one float image ``(H, W)`` in [0, 1]."""
        image = np.asarray(image)
        if image.ndim == 3:
            image = image.mean(axis=2)
        if image.ndim != 2:
            raise DataError(f"expected a 2-D image, got shape {image.shape}")
        H, W = image.shape
        img = _resize(normalize_image(image, self.normalize), self.scale)
        h, w = img.shape
        if self.tile:
            windows = tile_windows((h, w), self.tile, self.overlap)
            crops = []
            for win in windows:
                c = win.crop(img)
                if c.shape != (self.tile, self.tile):
                    c = pad_to(c, (max(c.shape[0], self.tile), max(c.shape[1], self.tile)))
                crops.append(_to_uint8(c))
        else:
            windows = [Window(0, 0, h, w, (0.0, 0.0, float(w), float(h)))]
            crops = [_to_uint8(img)]
        df = merge_tiles(self._run(crops), windows, iou=self.iou)
        if self.scale != 1.0 and len(df):
            df = _scale_boxes(df, 1.0 / self.scale)
        if len(df):
            df["x0"] = df["x0"].clip(0, W)
            df["x1"] = df["x1"].clip(0, W)
            df["y0"] = df["y0"].clip(0, H)
            df["y1"] = df["y1"].clip(0, H)
            df = df[(df["x1"] > df["x0"]) & (df["y1"] > df["y0"])]
        return df[["x0", "y0", "x1", "y1", "class", "score"]].reset_index(drop=True).astype(
            {"x0": np.float32, "y0": np.float32, "x1": np.float32, "y1": np.float32, "class": np.int16,
             "score": np.float32})


def predict_frame(detector: YoloDetector, image: np.ndarray) -> pd.DataFrame:
    """Alias of ``detector.detect(image)`` (kept for callers that prefer a function)."""
    return detector.detect(image)


def predict_yolo(weights, source, output, *, overwrite: bool = False, progress: bool = True,
                 detector: YoloDetector | None = None, **detector_kwargs) -> Path:
    """Run a trained detector on every image of ``source`` and write a ``predictions`` dataset.

    Parameters
    ----------
    weights : path
        ``best.pt`` from :func:`train_yolo` (or any Ultralytics detection checkpoint).
    source : path
        HDF5 dataset, YOLO folder or folder of images.
    output : path
        HDF5 file: label-only samples (``names``, ``shapes``) with a ``boxes`` table
        ``x0, y0, x1, y1, class, score`` and root attributes ``weights``, ``source``,
        ``conf_f1`` (the threshold picked on validation data) and ``fps``.
    **detector_kwargs
        Passed to :class:`YoloDetector` (``conf``, ``tile``, ``scale``, ``device`` ...).
    """
    from ..datasets.atomic import check_output
    from ..datasets.h5io import DatasetWriter
    from ..progress import track

    check_output(output, overwrite)
    src = open_source(source)
    try:
        det = detector or YoloDetector(weights, **detector_kwargs)
        with DatasetWriter(output, kind="predictions", class_names=det.class_names, generator={
            "function": "simgen.train.yolo.predict_yolo", **det.describe()}, overwrite=overwrite,
                attrs={"source": str(Path(source).resolve()), "weights": str(Path(weights).resolve()),
                       "conf_f1": det.conf_f1}) as w:
            with Timer() as t:
                for k in track(range(len(src)), total=len(src), description=f"predict {Path(source).name}",
                               enabled=progress):
                    img = src.image(k)
                    w.append(None, boxes=det.detect(img), name=src.name(k), shape=img.shape)
            w.set_attrs(fps=len(src) / max(t.seconds, 1e-9), seconds=round(t.seconds, 3))
    finally:
        src.close()
    return Path(output)


def read_predictions(path) -> pd.DataFrame:
    """The ``boxes`` table of a predictions file (columns sample, x0, y0, x1, y1, class, score)."""
    from ..datasets.h5io import open_dataset

    with open_dataset(path) as ds:
        df = ds.table("boxes")
        if df is None:
            cols = ("sample", "x0", "y0", "x1", "y1", "class", "score")
            df = pd.DataFrame({c: np.zeros(0, np.float32) for c in cols})
        return df


# -- video ------------------------------------------------------------------------------------------
def track_video(weights, video, output, *, conf: float | None = None, search_range: float = 5.0, memory: int = 2,
                class_agnostic: bool | None = None, mot_iou: float = 0.5, device: str = "auto",
                threads: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Detect defects in every frame of a video, link them with trackpy and score against true tracks.

    Parameters
    ----------
    weights : path
        YOLO ``best.pt`` (or a LoG parameter ``.json`` from ``simgen baseline log tune``).
    video : path
        HDF5 video (frames = samples; a ``tracks`` table is the ground truth) or a folder
        of frames sorted by name.
    output : path
        Folder receiving ``detections.h5`` (boxes + score per frame, ``fps`` attribute),
        ``tracks.csv`` (linked detections), ``summary.json`` and, when the video has true
        tracks, ``report/`` from :func:`simgen.evaluate.report.evaluate` (MOTA, IDF1, MT,
        IDSW, lifetime χ² and KS, plots).
    conf : float, optional
        Confidence threshold for linking and scoring (default: the detector's F1-optimal
        threshold picked on its validation data).
    class_agnostic : bool, optional
        Ignore classes when scoring.  Default: only when the detector's class names differ
        from the video's (a one-class "loop" detector on a video labelled dot/⟨111⟩/⟨100⟩
        would otherwise be scored against the first class only); always for LoG, which has
        no classes.
    mot_iou : float
        IoU threshold of the MOT metrics (MOTChallenge uses 0.5; small defects may want
        the detection cut-off, 0.15).

    Returns
    -------
    dict with ``n_frames``, ``fps`` (detector frames per second, tiling included),
    ``n_tracks``, ``conf`` and ``tracking`` (MOT summary) when scored.
    """
    from ..datasets.atomic import atomic_write_text
    from ..evaluate.report import evaluate, to_jsonable, track

    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output {out} is a file; give a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ParameterError(f"output {out} exists; pass --overwrite to replace it")
    if not (np.isfinite(search_range) and search_range > 0):
        raise ParameterError(f"search range must be > 0 pixels, got {search_range}")
    if int(memory) != memory or memory < 0:
        raise ParameterError(f"memory must be a non-negative integer, got {memory}")
    with open_source(video) as src:
        n_frames = len(src)
        has_truth = src._ds is not None and "tracks" in src._ds.tables
    out.mkdir(parents=True, exist_ok=True)
    det_path = out / "detections.h5"
    if Path(weights).suffix.lower() == ".json":
        from .baseline_log import load_params, predict_log

        params = load_params(weights)
        predict_log(video, det_path, params, overwrite=True, progress=progress)
        conf_default = params.threshold
        detector_classes = None  # LoG finds blobs of one kind, whatever the file calls class 0
    else:
        det = YoloDetector(weights, device=device, threads=threads)
        predict_yolo(weights, video, det_path, overwrite=True, progress=progress, detector=det)
        conf_default = det.conf_f1
        detector_classes = list(det.class_names)
    conf = float(conf_default if conf is None else conf)
    from ..datasets.h5io import open_dataset

    with open_dataset(det_path) as ds:
        fps = float(ds.attrs.get("fps", float("nan")))
    tracks = track(det_path, out / "tracks.csv", search_range=search_range, memory=memory, conf=conf, overwrite=True)
    result = {"n_frames": n_frames, "fps": fps, "n_tracks": int(tracks["track_id"].nunique()) if len(tracks) else 0,
              "conf": conf, "search_range": search_range, "memory": memory, "weights": str(weights),
              "video": str(video)}
    if has_truth:
        if class_agnostic is None:
            with open_source(video) as src:
                class_agnostic = detector_classes != list(src.class_names)
        rep = evaluate(det_path, video, out / "report", conf=conf, tracking=True, search_range=search_range,
                       memory=memory, class_agnostic=class_agnostic, mot_iou=mot_iou, overwrite=True)
        result["class_agnostic"] = bool(class_agnostic)
        result["mot_iou"] = float(mot_iou)
        result["detection"] = {k: rep["detection"].get(k) for k in ("precision", "recall", "f1", "mAP", "peak_f1")}
        if "tracking" in rep:
            result["tracking"] = rep["tracking"]
    atomic_write_text(out / "summary.json", json.dumps(to_jsonable(result), indent=2) + "\n", overwrite=True)
    return result
