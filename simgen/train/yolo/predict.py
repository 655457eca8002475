"""Run a trained YOLO on large images: normalize, tile, predict, merge seams, write boxes."""

from __future__ import annotations

from collections.abc import Iterator
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import check_output
from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.normalize import NORMALIZE, normalize_image, resize_image, to_uint8
from simgen.datasets.sources import Source, open_source
from simgen.errors import DataError, ParameterError
from simgen.progress import Timer, track
from simgen.runtime import setup_threads
from simgen.train.tiling import Window, merge_tiles, pad_to, suppress_nested_boxes, tile_windows
from simgen.train.yolo.box_scale import BOX_SCALE_MODES, apply_box_scale, stored_box_scale
from simgen.train.yolo.checkpoint import load_detection_checkpoint
from simgen.train.yolo.config import _device_arg, nested_ok
from simgen.train.yolo.data import _scale_boxes
from simgen.train.yolo.exported import exported_detector, exported_model, require_runtime
from simgen.train.yolo.offline import import_ultralytics
from simgen.train.yolo.tta import flip_views, fuse_views

__all__ = [
    "YoloDetector",
    "predict_yolo",
    "read_predictions",
]


#: IoU at which boxes of the four views of ``tta`` fuse (the ensemble-boxes default).
_TTA_IOU = 0.55

#: The columns of :meth:`YoloDetector.detect` and their dtypes.
_COLUMNS = {"x0": np.float32, "y0": np.float32, "x1": np.float32, "y1": np.float32, "class": np.int16,
            "score": np.float32}


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
    runtime : {"torch", "onnx", "openvino", "openvino-int8"}
        ``onnx``: predict through ONNX Runtime, ``openvino``: through OpenVINO (the checkpoint
        exported once and cached, see :mod:`simgen.train.yolo.exported`; CPU, ``threads``
        threads); same pre- and post-processing, detections equal within float tolerance.
        ``openvino-int8``: OpenVINO on an INT8 quantization calibrated on synthetic images
        (:mod:`simgen.train.yolo.quantize`): faster, detections close to but not equal to fp32.
    agnostic_nms : bool
        Non-maximum suppression across classes (Ultralytics ``agnostic_nms`` inside each tile,
        :func:`~simgen.train.tiling.merge_tiles` ``agnostic`` across seams): of overlapping boxes
        of different classes only the best-scoring one is kept.  Off by default (class-wise NMS,
        as trained); on for two-class film models, whose ``plus`` and ``minus`` boxes land on the
        same defect (the sign is not identifiable from one frame, see :mod:`simgen.simulate.film`).
    tta : bool or "auto"
        Test-time augmentation: detect on the image and its three mirrors and fuse the boxes
        (:mod:`simgen.train.yolo.tta`; 4× the inference time).  ``"auto"`` (default): as stored
        in the checkpoint, which training picks on its validation data (``simgen.tta``; off when
        the checkpoint has none).
    nested : float, None or "auto"
        Drop every box lying mostly inside a higher-scoring one (intersection over the smaller
        area at least ``nested``; :func:`~simgen.train.tiling.suppress_nested`), after the seams
        are merged — the second, looser box a detector puts around a defect it already found.
        ``"auto"`` (default): the value stored in the checkpoint, which training picks on its
        *validation* data (``simgen.nested``; none when the checkpoint has none); ``None``: off.
    box_scale : {"auto", "off"}
        ``auto``: rescale every box about its centre by the width and height factors stored in
        the checkpoint by ``simgen train box-scale`` (:mod:`simgen.train.yolo.box_scale`;
        nothing when the checkpoint has none), then clip to the image; ``off``: raw boxes.
    """

    def __init__(self, weights, *, device: str = "auto", conf: float | None = None, iou: float | None = None,
                 tile: int | None = None, overlap: int | None = None, scale: float | None = None,
                 normalize: str | None = None, max_det: int | None = None, batch: int = 8, threads: int | None = None,
                 runtime: str = "torch", agnostic_nms: bool = False, box_scale: str = "auto",
                 nested: float | str | None = "auto", tta: bool | str = "auto"):
        weights = Path(weights)
        if box_scale not in BOX_SCALE_MODES:
            raise ParameterError(f"box scale must be one of {', '.join(BOX_SCALE_MODES)}, got {box_scale!r}")
        if not weights.is_file():
            raise DataError(f"weights {weights} do not exist")
        ckpt = load_detection_checkpoint(weights)
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
        self.agnostic_nms = bool(agnostic_nms)
        if tta not in (True, False, "auto"):
            raise ParameterError(f"tta must be True, False or 'auto', got {tta!r}")
        if meta.get("tta", False) not in (True, False) or not nested_ok(meta.get("nested")):
            raise DataError(f"{weights}: stored post-processing is malformed (tta {meta.get('tta')!r}, "
                            f"nested {meta.get('nested')!r})")
        self.tta = bool(meta.get("tta", False)) if tta == "auto" else bool(tta)
        stored = meta.get("nested")
        self.nested = (None if stored is None else float(stored)) if nested == "auto" else nested
        if not nested_ok(self.nested):
            raise ParameterError(f"nested must be in (0, 1], None or 'auto', got {nested!r}")
        #: ``(width, height)`` factors applied to every box, or ``None``
        self.box_scale = stored_box_scale(meta) if box_scale == "auto" else None
        if self.tile and not 0 <= self.overlap < self.tile:
            raise ParameterError(f"need 0 <= overlap < tile, got tile={self.tile}, overlap={self.overlap}")
        if self.normalize not in NORMALIZE:
            raise ParameterError(f"normalize must be one of {', '.join(NORMALIZE)}")
        if not 0.05 <= self.scale <= 20:
            raise ParameterError(f"scale must be in [0.05, 20], got {self.scale}")
        if self.batch < 1:
            raise ParameterError("batch must be >= 1")
        require_runtime(runtime)
        self.runtime = runtime
        self.threads = setup_threads(threads)

        ultralytics = import_ultralytics()
        from ultralytics.utils import torch_utils

        torch_utils.NUM_THREADS = self.threads
        self.device = _device_arg(device)
        self.model = ultralytics.YOLO(str(weights), task="detect")
        self.class_names = [self.model.names[k] for k in sorted(self.model.names)]
        self.predict_imgsz = self.tile if self.tile else self.imgsz
        if self.predict_imgsz % 32:
            self.predict_imgsz = int(np.ceil(self.predict_imgsz / 32) * 32)
        if runtime != "torch":  # an exported model on the CPU
            self.device = "cpu"
            path = exported_model(weights, self.predict_imgsz, runtime, normalize=self.normalize, scale=self.scale)
            self.model = exported_detector(path, self.predict_imgsz, self.threads, runtime)

    def describe(self) -> dict:
        return {"weights": str(self.weights), "tile": self.tile, "overlap": self.overlap, "scale": self.scale,
                "normalize": self.normalize, "conf": self.conf, "iou": self.iou, "max_det": self.max_det,
                "imgsz": self.predict_imgsz, "conf_f1": self.conf_f1, "runtime": self.runtime,
                "agnostic_nms": self.agnostic_nms, "nested": self.nested, "tta": self.tta,
                "box_scale": None if self.box_scale is None else list(self.box_scale)}

    def _run(self, crops: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Boxes of each crop (tile coordinates) as columns ``x0, y0, x1, y1, class, score``; ``batch`` crops per call."""
        out = []
        for start in range(0, len(crops), self.batch):
            chunk = crops[start : start + self.batch]
            results = self.model.predict(chunk, imgsz=self.predict_imgsz, conf=self.conf, iou=self.iou,
                                         max_det=self.max_det, device=self.device, verbose=False,
                                         batch=len(chunk), half=False, agnostic_nms=self.agnostic_nms)
            for r in results:
                b = r.boxes
                xyxy = b.xyxy.cpu().numpy().astype(np.float32).reshape(-1, 4)
                out.append({
                    "x0": xyxy[:, 0], "y0": xyxy[:, 1], "x1": xyxy[:, 2], "y1": xyxy[:, 3],
                    "class": b.cls.cpu().numpy().astype(np.int16),
                    "score": b.conf.cpu().numpy().astype(np.float32),
                })
        return out

    def _boxes(self, img: np.ndarray) -> pd.DataFrame:
        """Boxes of a normalized, resized image: tiled, run, seams merged (its own pixels)."""
        h, w = img.shape
        if self.tile:
            windows = tile_windows((h, w), self.tile, self.overlap)
            crops = []
            for win in windows:
                c = win.crop(img)
                if c.shape != (self.tile, self.tile):
                    c = pad_to(c, (max(c.shape[0], self.tile), max(c.shape[1], self.tile)))
                crops.append(to_uint8(c))
        else:
            windows = [Window(0, 0, h, w, (0.0, 0.0, float(w), float(h)))]
            crops = [to_uint8(img)]
        return merge_tiles(self._run(crops), windows, iou=self.iou, agnostic=self.agnostic_nms)

    def detect(self, image: np.ndarray) -> pd.DataFrame:
        """Boxes (x0, y0, x1, y1, class, score) of one float image ``(H, W)`` in [0, 1]."""
        image = np.asarray(image)
        if image.ndim == 3:
            image = image.mean(axis=2)
        if image.ndim != 2:
            raise DataError(f"expected a 2-D image, got shape {image.shape}")
        H, W = image.shape
        img = resize_image(normalize_image(image, self.normalize), self.scale)
        if self.tta:
            df = fuse_views(flip_views(self._boxes, img), img.shape, iou=_TTA_IOU)
        else:
            df = self._boxes(img)
        df = suppress_nested_boxes(df, self.nested, agnostic=self.agnostic_nms)
        if self.scale != 1.0 and len(df):
            df = _scale_boxes(df, 1.0 / self.scale)
        if self.box_scale is not None and len(df):
            df = apply_box_scale(df, *self.box_scale)
        cols = {c: df[c].to_numpy() for c in _COLUMNS}  # numpy from here: pandas' overhead per operation
        if len(df):
            for c, side in (("x0", W), ("x1", W), ("y0", H), ("y1", H)):
                cols[c] = np.clip(cols[c], 0, side)
            ok = (cols["x1"] > cols["x0"]) & (cols["y1"] > cols["y0"])
            cols = {c: v[ok] for c, v in cols.items()}
        return pd.DataFrame({c: v.astype(_COLUMNS[c]) for c, v in cols.items()})

    def predict_each(self, source: str | PathLike | Source, *, names: list[str] | None = None,
                     progress: bool = False) -> Iterator[tuple[int, pd.DataFrame]]:
        """``(k, boxes)`` for every sample ``k`` of ``source``, one at a time (see :meth:`detect`).

        ``source`` is a path :func:`~simgen.datasets.sources.open_source` reads or an open
        Source (left open); ``names`` restricts it to those samples (``k`` then counts them).
        """
        with open_source(source, names) as src:
            for k in track(range(len(src)), total=len(src), description=f"predict {src.path.name}",
                           enabled=progress):
                yield k, self.detect(src.image(k))

    def predict(self, source: str | PathLike | Source, *, names: list[str] | None = None,
                progress: bool = False) -> pd.DataFrame:
        """Boxes of every sample of ``source`` as one table ``sample, x0, y0, x1, y1, class, score``.

        ``sample`` is the sample number ``k`` in ``source`` (restricted to ``names`` when given);
        ``source`` is a path or an open Source (left open).
        """
        parts = [boxes.assign(sample=np.full(len(boxes), k, np.int64))
                 for k, boxes in self.predict_each(source, names=names, progress=progress)]
        columns = ["sample", "x0", "y0", "x1", "y1", "class", "score"]
        if not parts:
            return pd.DataFrame({c: np.zeros(0, np.int64 if c == "sample" else np.float32) for c in columns})
        return pd.concat(parts, ignore_index=True)[columns]


def predict_yolo(weights, source: str | PathLike | Source, output, *, overwrite: bool = False,
                 progress: bool = True, detector: YoloDetector | None = None, **detector_kwargs) -> Path:
    """Run a trained detector on every image of ``source`` and write a ``predictions`` dataset.

    Parameters
    ----------
    weights : path
        ``best.pt`` from :func:`train_yolo` (or any Ultralytics detection checkpoint).
    source : path or Source
        Anything :func:`~simgen.datasets.sources.open_source` reads (HDF5 dataset, sharded
        set, YOLO folder, folder of images), or a source the caller opened (left open).
    output : path
        HDF5 file: label-only samples (``names``, ``shapes``) with a ``boxes`` table
        ``x0, y0, x1, y1, class, score`` and root attributes ``weights``, ``source``,
        ``conf_f1`` (the threshold picked on validation data) and ``fps``.
    overwrite, progress : bool
        Replace an existing ``output``; show a progress bar.
    detector : YoloDetector, optional
        An already loaded detector (then ``weights`` is only recorded).
    **detector_kwargs
        Passed to :class:`YoloDetector` (``conf``, ``tile``, ``scale``, ``device`` ...).
    """

    check_output(output, overwrite)
    with open_source(source) as src:
        det = detector or YoloDetector(weights, **detector_kwargs)
        with DatasetWriter(output, kind="predictions", class_names=det.class_names, generator={
            "function": "simgen.train.yolo.predict.predict_yolo", **det.describe()}, overwrite=overwrite,
                attrs={"source": str(src.path.resolve()), "weights": str(Path(weights).resolve()),
                       "conf_f1": det.conf_f1}) as w:
            with Timer() as t:
                for k, boxes in det.predict_each(src, progress=progress):
                    w.append(None, boxes=boxes, name=src.name(k), shape=src.shape(k))
            w.set_attrs(fps=len(src) / max(t.seconds, 1e-9), seconds=round(t.seconds, 3))
    return Path(output)


def read_predictions(path) -> pd.DataFrame:
    """The ``boxes`` table of a predictions file (columns sample, x0, y0, x1, y1, class, score)."""

    with open_dataset(path) as ds:
        df = ds.table("boxes")
        if df is None:
            cols = ("sample", "x0", "y0", "x1", "y1", "class", "score")
            df = pd.DataFrame({c: np.zeros(0, np.float32) for c in cols})
        return df

