"""Unsupervised adaptation of a synthetic-trained YOLO to a user's unlabeled real micrographs.

Three levers, cheapest first (see ``docs/adapt.md``):

* :func:`adapt_batchnorm` — normalization-statistics adaptation (AdaBN): every BatchNorm layer's
  running mean and variance are re-estimated on tiles of the real images; no weight changes.
* :func:`pseudo_label` — the synthetic model labels the real images; only confident detections
  that survive horizontal and vertical flips are kept.
* :func:`self_train` — rounds of pseudo-labelling and fine-tuning on synthetic + pseudo-labelled
  real images, with drift guards; the student becomes the next teacher.

Honest sim-to-real: no real label is ever read, and every choice that shapes the model (the
pseudo-label threshold, the student's best epoch, early stopping and its confidence threshold) is
made on synthetic data.  Unlabeled real images are opened with :func:`open_unlabeled`, which reads
only image files: in a YOLO-layout folder only ``images/`` is listed and opened, never ``labels/``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import atomic_write_text, check_output, json_default_lenient
from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.imageio import IMAGE_SUFFIXES, read_image
from simgen.datasets.normalize import normalize_image, resize_image, to_uint8
from simgen.datasets.sources import Source, open_source
from simgen.errors import DataError, ParameterError
from simgen.evaluate.matching import box_iou, greedy_assign
from simgen.progress import ProgressLog, Timer, track
from simgen.rng import check_seed
from simgen.runtime import select_device, setup_threads
from simgen.train.tiling import pad_to, tile_windows
from simgen.train.yolo.checkpoint import load_yolo_checkpoint, save_yolo_checkpoint
from simgen.train.yolo.config import PRESETS, YoloConfig
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.trainer import train_yolo

__all__ = [
    "UnlabeledImages",
    "open_unlabeled",
    "adapt_batchnorm",
    "flip_consistent",
    "pseudo_label",
    "SelfTrainResult",
    "self_train",
    "box_limits",
    "count_change",
]

BOX_COLUMNS = ["x0", "y0", "x1", "y1", "class", "score"]
FLIPS = ("h", "v")
#: Seed-stream tags (``SeedSequence(seed, spawn_key=(tag, ...))``), one per random choice.
_TAG_BN_TILES, _TAG_BN_ORDER, _TAG_VAL, _TAG_RATIO = 0xAD0, 0xAD1, 0xAD2, 0xAD3


# -- unlabeled images ----------------------------------------------------------------------------
def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def _image_folder(path: Path) -> Path:
    """The folder whose image files are the unlabeled images: ``images/`` (a YOLO folder), the folder
    itself, or ``frames/`` (an unlabeled video).  Never a ``labels/`` folder."""
    for folder in (path / "images", path, path / "frames"):
        if folder.is_dir() and _has_images(folder):
            return folder
        if folder.is_dir() and folder != path and any(d.is_dir() and _has_images(d) for d in folder.iterdir()):
            raise DataError(f"{folder} holds split folders; give one of them (e.g. {folder / 'train'})")
    raise DataError(f"{path} holds no images (looked in images/, in it and in frames/)")


class UnlabeledImages:
    """Read-only access to images whose labels, if any, must never be read.

    Parameters
    ----------
    images : path, Source, sequence of paths, array or sequence of arrays
        A folder of images; a YOLO-layout folder (only its ``images/`` is read); a folder
        with a ``frames/`` subfolder (an unlabeled video); a simgen HDF5 dataset (images
        only: its tables are never read); an open :class:`~simgen.datasets.sources.Source`
        (only ``image()``/``shape()`` are called; left open); image files; or float arrays
        ``(H, W)`` / ``(N, H, W)`` in [0, 1].
    names : sequence of str, optional
        Keep only these samples (by name: the file stem, or the HDF5 sample name).
    exclude : sequence of str
        Drop these samples, e.g. frames that are scored later: adaptation images and
        scored images must be disjoint.

    Notes
    -----
    A folder is read through :func:`simgen.datasets.sources.open_source` on the image folder
    itself (``root/images``), which is a plain image folder: the YOLO reader, which pairs
    images with ``labels/``, is never involved.
    """

    def __init__(self, images, *, names: Sequence[str] | None = None, exclude: Sequence[str] = ()):
        if isinstance(exclude, str):
            exclude = [exclude]
        self._src = None
        self._arrays: list[np.ndarray] | None = None
        self._files: dict[str, Path] | None = None
        if isinstance(images, Source):  # an open source: a view of it (left open); image() only
            self._src = open_source(images)
            self.origin = str(images.path)
            all_names = list(self._src.names)
        elif isinstance(images, (str, Path)):
            path = Path(images)
            self.origin = str(path)
            if path.is_dir():
                self._src = open_source(_image_folder(path))
                all_names = [self._src.name(k) for k in range(len(self._src))]
            elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                self._files = {path.stem: path}
                all_names = [path.stem]
            elif path.is_file():
                self._src = open_source(path)  # HDF5: image() only; boxes() is never called
                all_names = [self._src.name(k) for k in range(len(self._src))]
            else:
                raise DataError(f"{path} does not exist (expected an image folder, a YOLO folder or an HDF5 file)")
        else:
            items = list(images) if not isinstance(images, np.ndarray) or images.ndim == 3 else [images]
            if not items:
                raise DataError("no images given")
            self.origin = "<in-memory>" if not isinstance(items[0], (str, Path)) else "<files>"
            if isinstance(items[0], (str, Path)):
                self._files = {}
                for p in map(Path, items):
                    if not p.is_file():
                        raise DataError(f"image {p} does not exist")
                    if p.stem in self._files:
                        raise DataError(f"two images are named {p.stem!r}; names must be unique")
                    self._files[p.stem] = p
                all_names = list(self._files)
            else:
                self._arrays = []
                for i, a in enumerate(items):
                    a = np.asarray(a, np.float32)
                    if a.ndim != 2:
                        raise DataError(f"image {i} has shape {a.shape}; expected (H, W)")
                    self._arrays.append(a)
                all_names = [f"{i:06d}" for i in range(len(self._arrays))]
        lookup = {n: i for i, n in enumerate(all_names)}
        if names is not None:
            missing = [n for n in names if n not in lookup]
            if missing:
                raise DataError(f"{self.origin}: no image(s) named {', '.join(map(str, missing[:5]))}")
            chosen = [lookup[n] for n in names]
        else:
            chosen = list(range(len(all_names)))
        drop = set(map(str, exclude))
        self.excluded = sorted(n for n in drop if n in lookup)
        self._index = [i for i in chosen if all_names[i] not in drop]
        self._all_names = all_names
        if not self._index:
            self.close()
            raise DataError(f"{self.origin}: no images left to adapt to (all excluded?)")

    def __len__(self) -> int:
        return len(self._index)

    @property
    def names(self) -> list[str]:
        return [self._all_names[i] for i in self._index]

    def name(self, k: int) -> str:
        return self._all_names[self._index[k]]

    def image(self, k: int) -> np.ndarray:
        """Image ``k`` as float32 ``(H, W)`` in [0, 1] (colour is averaged to grey)."""
        i = self._index[k]
        if self._arrays is not None:
            img = self._arrays[i]
        elif self._files is not None:
            img = read_image(self._files[self._all_names[i]])
        else:
            img = self._src.image(i)
        img = np.asarray(img, np.float32)
        return img.mean(axis=2) if img.ndim == 3 else img

    def shape(self, k: int) -> tuple[int, int]:
        i = self._index[k]
        if self._arrays is not None:
            return tuple(self._arrays[i].shape[:2])
        if self._files is not None:
            from PIL import Image

            with Image.open(self._files[self._all_names[i]]) as im:
                return (im.height, im.width)
        return tuple(int(s) for s in self._src.shape(i)[:2])

    def describe(self) -> dict:
        return {"origin": self.origin, "n": len(self), "names": self.names, "excluded": self.excluded}

    def close(self) -> None:
        if self._src is not None:
            self._src.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_unlabeled(images, *, names: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> UnlabeledImages:
    """Open unlabeled real images for adaptation (see :class:`UnlabeledImages`); labels are never read."""
    if isinstance(images, UnlabeledImages):
        if names is not None or exclude:
            raise ParameterError("names/exclude apply when opening; give them to open_unlabeled")
        return images
    return UnlabeledImages(images, names=names, exclude=exclude)


class _Opened:
    """Context manager: open ``images`` unless it is already an :class:`UnlabeledImages` (then leave it open)."""

    def __init__(self, images, exclude=()):
        self.owned = not isinstance(images, UnlabeledImages)
        self.src = open_unlabeled(images, exclude=exclude) if self.owned else open_unlabeled(images)
        if not self.owned and exclude:
            raise ParameterError("exclude applies when opening; give it to open_unlabeled")

    def __enter__(self) -> UnlabeledImages:
        return self.src

    def __exit__(self, *exc):
        if self.owned:
            self.src.close()
        return False


# -- what the detector sees ---------------------------------------------------------------------
def _detector_crops(det: YoloDetector, image: np.ndarray) -> list[np.ndarray]:
    """The uint8 tiles :meth:`YoloDetector.detect` feeds the network for ``image`` (same normalization, scale, tiling)."""
    img = resize_image(normalize_image(image, det.normalize), det.scale)
    if not det.tile:
        return [to_uint8(img)]
    crops = []
    for win in tile_windows(img.shape, det.tile, det.overlap):
        c = win.crop(img)
        if c.shape != (det.tile, det.tile):
            c = pad_to(c, (max(c.shape[0], det.tile), max(c.shape[1], det.tile)))
        crops.append(to_uint8(c))
    return crops


def _n_tiles(shape: tuple[int, int], tile: int, overlap: int, scale: float) -> int:
    h, w = (max(1, int(round(s * scale))) for s in shape) if scale != 1.0 else shape
    return len(tile_windows((h, w), tile, overlap)) if tile else 1


def _network_input(crops: list[np.ndarray], imgsz: int, stride: int, channels: int):
    """Ultralytics' predictor preprocessing of uint8 crops: letterbox, HWC→BCHW, /255 (float tensor)."""
    import torch
    from ultralytics.data.augment import LetterBox

    letterbox = LetterBox(imgsz, auto=len({c.shape for c in crops}) == 1, stride=stride)
    out = []
    for c in crops:
        x = np.atleast_3d(c)
        if channels != x.shape[2]:
            x = np.repeat(x[..., :1], channels, axis=2)
        x = np.atleast_3d(letterbox(image=x))
        out.append(x)
    t = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()
    return t.float().div_(255.0)


def _input_channels(net) -> int:
    import torch

    first = next((m for m in net.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


def _plain(obj):
    """JSON round trip: checkpoint metadata must hold plain containers only (``weights_only`` loading)."""
    return json.loads(json.dumps(obj, default=json_default_lenient))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# -- lever 1: normalization statistics ----------------------------------------------------------
def adapt_batchnorm(weights, images, output, *, tile: int | None = None, overlap: int | None = None,
                    passes: int = 1, batch: int = 16, max_tiles: int = 1024, weight: float = 1.0, seed: int = 0,
                    exclude: Sequence[str] = (), device: str = "auto", threads: int | None = None,
                    overwrite: bool = False, progress: bool = False) -> Path:
    """Re-estimate every BatchNorm layer's running statistics on real tiles (AdaBN); write a new checkpoint.

    The network sees the real images exactly as :class:`YoloDetector` shows them at prediction
    time (same contrast normalization, resize, tiles, letterbox and ``/255``).  All BatchNorm
    layers are reset and put in training mode with ``momentum=None`` (a cumulative average over
    all batches); every other layer stays in evaluation mode and no weight changes (no gradients).

    Parameters
    ----------
    weights : path
        A YOLO checkpoint (``best.pt`` from :func:`train_yolo`, read safely).
    images : path, sequence or UnlabeledImages
        Unlabeled real images (see :class:`UnlabeledImages`; labels are never read).
    output : path
        The new checkpoint (``.pt``).  A standard Ultralytics checkpoint: ``ultralytics.YOLO(output)``
        and :class:`YoloDetector` load it.  It keeps the source's ``simgen`` metadata (including
        ``conf_f1``, the threshold picked on *synthetic* validation) and appends a record of this
        adaptation to ``simgen["adaptation"]``.
    tile, overlap : int, optional
        Tiling of the real images (default: as the detector predicts).
    passes : int
        Passes over the tiles.  The first sees the tiles as the detector does; each further pass
        shuffles the batches anew and flips every tile at random (horizontal/vertical), which
        averages the statistics over the flips training used.
    batch : int
        Tiles per forward pass.  The running variance is the mean of per-batch variances, so
        larger batches (of tiles from different images: batches are shuffled) estimate it better.
    max_tiles : int
        At most this many tiles (a seeded random subset) are used per pass.
    weight : float in (0, 1]
        Share of the real statistics in the result: ``(1 - weight) * synthetic + weight * real``
        (1 = plain AdaBN).
    seed : int
        Seeds the tile subset, the batch order and the flips.
    exclude : sequence of str
        Image names to leave out (e.g. the frames that will be scored).
    device : str
        ``auto`` (CUDA when present), ``cpu``, ``cuda:N``.
    overwrite : bool
        Replace an existing ``output`` (never the input ``weights``).

    Returns
    -------
    Path of the new checkpoint.

    Raises
    ------
    ParameterError
        Bad parameters, ``output`` exists (without ``overwrite``) or is the input.
    DataError
        Unreadable checkpoint or images, or a model without BatchNorm layers (fused).
    """
    import torch

    seed = check_seed(seed)
    if int(passes) < 1 or int(batch) < 1 or int(max_tiles) < 1:
        raise ParameterError("passes, batch and max_tiles must be >= 1")
    if not 0 < float(weight) <= 1:
        raise ParameterError(f"weight must be in (0, 1], got {weight}")
    weights, out = Path(weights), Path(output)
    if not weights.is_file():
        raise ParameterError(f"weights {weights} do not exist")
    if out.exists() and out.resolve() == weights.resolve():
        raise ParameterError(f"output {out} is the input checkpoint; write the adapted model elsewhere")
    check_output(out, overwrite)
    dev = select_device(device)
    threads = setup_threads(threads)

    det = YoloDetector(weights, device="cpu", tile=tile, overlap=overlap, threads=threads)  # settings only
    ckpt = load_yolo_checkpoint(weights)
    key = "ema" if ckpt.get("ema") is not None else "model"
    net = ckpt.get(key)
    if not isinstance(net, torch.nn.Module):
        raise DataError(f"{weights} holds no model")
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise DataError(f"{weights} has no BatchNorm layers (a fused model?); nothing to adapt")
    dtype = next(net.parameters()).dtype
    stride = int(max(getattr(net, "stride", torch.tensor([32.0])).max().item(), 32))
    channels = _input_channels(net)

    with _Opened(images, exclude) as src, Timer() as t:
        # every tile the detector would see, then a seeded subset of at most max_tiles
        plan = [(k, j) for k in range(len(src))
                for j in range(_n_tiles(src.shape(k), det.tile, det.overlap, det.scale))]
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAG_BN_TILES,)))
        if len(plan) > max_tiles:
            plan = [plan[i] for i in np.sort(rng.choice(len(plan), int(max_tiles), replace=False))]
        wanted: dict[int, list[int]] = {}
        for k, j in plan:
            wanted.setdefault(k, []).append(j)
        crops = []
        for k in track(sorted(wanted), total=len(wanted), description="read real tiles", enabled=progress):
            all_crops = _detector_crops(det, src.image(k))
            crops += [all_crops[j] for j in wanted[k]]
        source_info = src.describe()

        old = [(m.running_mean.detach().float().clone(), m.running_var.detach().float().clone(), m.momentum)
               for m in bns]
        net.float().to(dev).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over every batch
            m.train()
        order_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAG_BN_ORDER,)))
        n_batches = 0
        with torch.no_grad():
            for p in range(int(passes)):
                order = order_rng.permutation(len(crops))
                for start in range(0, len(order), int(batch)):
                    chunk = []
                    for i in order[start : start + int(batch)]:
                        c = crops[i]
                        if p > 0:
                            fh, fv = order_rng.integers(0, 2, 2)
                            c = c[:, ::-1] if fh else c
                            c = c[::-1] if fv else c
                        chunk.append(np.ascontiguousarray(c))
                    x = _network_input(chunk, det.predict_imgsz, stride, channels).to(dev)
                    net(x)
                    n_batches += 1
        for m, (mean0, var0, momentum) in zip(bns, old):
            m.eval()
            m.momentum = momentum
            if weight < 1:
                m.running_mean.copy_((1 - weight) * mean0.to(dev) + weight * m.running_mean)
                m.running_var.copy_((1 - weight) * var0.to(dev) + weight * m.running_var)
    net.to("cpu").to(dtype)
    ckpt[key] = net
    meta = dict(ckpt.get("simgen") or {})
    record = {
        "method": "batchnorm", "date": _now(), "source_weights": str(weights.resolve()),
        "images": source_info, "n_tiles": len(crops), "passes": int(passes), "batch": int(batch),
        "n_batches": n_batches, "weight": float(weight), "seed": seed, "layers": len(bns),
        "tile": det.tile, "overlap": det.overlap, "scale": det.scale, "normalize": det.normalize,
        "imgsz": det.predict_imgsz, "seconds": round(t.seconds, 2),
        "threshold": "conf_f1 kept from the source model's synthetic validation",
    }
    meta["adaptation"] = [*meta.get("adaptation", []), record]
    ckpt["simgen"] = _plain(meta)
    return save_yolo_checkpoint(out, ckpt)


# -- lever 2: flip-consistent pseudo-labels -----------------------------------------------------
def _empty_boxes() -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0, np.int16 if c == "class" else np.float32) for c in BOX_COLUMNS})


def _flip_image(image: np.ndarray, flip: str) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1] if flip == "h" else image[::-1])


def _unflip_boxes(df: pd.DataFrame, flip: str, shape: tuple[int, int]) -> pd.DataFrame:
    """Boxes found on the flipped image, mapped back to the original frame."""
    df = df.copy()
    h, w = shape
    a, b, size = ("x0", "x1", w) if flip == "h" else ("y0", "y1", h)
    lo, hi = df[a].to_numpy(np.float64), df[b].to_numpy(np.float64)
    df[a], df[b] = (size - hi).astype(np.float32), (size - lo).astype(np.float32)
    return df


def flip_consistent(boxes: pd.DataFrame, others: Sequence[pd.DataFrame], iou: float = 0.5) -> pd.DataFrame:
    """The boxes of ``boxes`` that every table of ``others`` also holds (same class, IoU >= ``iou``).

    Parameters
    ----------
    boxes : DataFrame
        ``x0, y0, x1, y1, class, score`` found on the image.
    others : sequence of DataFrame
        The boxes found on transformed views (e.g. flips), already mapped back to the image frame.
    iou : float
        Minimum IoU of a match.  Matching is one-to-one, greedy by IoU (highest first).

    Returns
    -------
    The consistent rows of ``boxes`` (coordinates of ``boxes``), with ``score`` = the minimum of
    the matched scores over all views, sorted by decreasing score.
    """
    if not 0 < iou <= 1:
        raise ParameterError(f"iou must be in (0, 1], got {iou}")
    df = boxes.reset_index(drop=True)
    keep = np.ones(len(df), bool)
    score = df["score"].to_numpy(np.float32).copy() if len(df) else np.zeros(0, np.float32)
    xyxy = df[["x0", "y0", "x1", "y1"]].to_numpy(np.float64) if len(df) else np.zeros((0, 4))
    cls = df["class"].to_numpy() if len(df) else np.zeros(0, int)
    for other in others:
        if not keep.any():
            break
        o = other.reset_index(drop=True)
        if len(o) == 0:
            keep[:] = False
            break
        m = box_iou(xyxy, o[["x0", "y0", "x1", "y1"]].to_numpy(np.float64))
        m[cls[:, None] != o["class"].to_numpy()[None, :]] = 0.0
        rows, cols = np.nonzero(m >= iou)
        order = np.argsort(-m[rows, cols], kind="stable")
        row_match, _ = greedy_assign(rows[order], cols[order], len(df), len(o))
        matched = row_match >= 0
        keep &= matched
        other_score = o["score"].to_numpy(np.float32)
        score[matched] = np.minimum(score[matched], other_score[row_match[matched]])
    out = df.loc[keep].copy()
    out["score"] = score[keep]
    return out.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def _threshold(detector, conf: float | None) -> tuple[float, str]:
    """The pseudo-label threshold and where it came from (synthetic validation unless given)."""
    if conf is not None:
        if not 0 <= float(conf) < 1:
            raise ParameterError(f"conf must be in [0, 1), got {conf}")
        return float(conf), "given"
    meta = getattr(detector, "meta", None)
    if isinstance(meta, dict) and "conf_f1" in meta:
        return float(meta["conf_f1"]), "synthetic validation (checkpoint simgen.conf_f1)"
    if meta is None and getattr(detector, "conf_f1", None) is not None:
        return float(detector.conf_f1), "detector.conf_f1"
    raise ParameterError("the checkpoint records no threshold from synthetic validation (simgen.conf_f1); "
                         "give conf= explicitly (never pick it on real labels)")


def _pseudo_one(detector, image: np.ndarray, conf: float, flips: Sequence[str], iou: float) -> pd.DataFrame:
    base = detector.detect(image)
    base = base[base["score"] >= conf]
    if not len(base) or not flips:
        return base[BOX_COLUMNS].sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    others = []
    for f in flips:
        d = detector.detect(_flip_image(image, f))
        others.append(_unflip_boxes(d[d["score"] >= conf], f, image.shape))
    return flip_consistent(base[BOX_COLUMNS], others, iou)


def _label_stream(detector, src: UnlabeledImages, conf: float, flips, iou: float,
                  progress: bool) -> Iterator[tuple[int, np.ndarray, pd.DataFrame]]:
    for k in track(range(len(src)), total=len(src), description="pseudo-label", enabled=progress):
        img = src.image(k)
        yield k, img, _pseudo_one(detector, img, conf, flips, iou)


def _check_flips(flip_consistency: bool, flips) -> tuple[str, ...]:
    if not flip_consistency:
        return ()
    flips = (flips,) if isinstance(flips, str) else tuple(flips)
    bad = [f for f in flips if f not in FLIPS]
    if bad or not flips:
        raise ParameterError(f"flips must be a non-empty subset of {FLIPS}, got {flips}")
    return flips


def pseudo_label(detector, images, *, conf: float | None = None, flip_consistency: bool = True,
                 iou: float = 0.5, flips: Sequence[str] = FLIPS, exclude: Sequence[str] = (),
                 progress: bool = False) -> list[pd.DataFrame]:
    """Pseudo-label unlabeled real images with a synthetic-trained detector.

    A detection is kept when its confidence is at least ``conf`` and, with ``flip_consistency``,
    when the detector also finds it (same class, IoU >= ``iou`` after mapping back) with
    confidence >= ``conf`` on every flipped copy of the image (horizontal and vertical by
    default).  Its score becomes the minimum of the matched scores; its box is the one found on
    the original image.

    Parameters
    ----------
    detector : YoloDetector or path
        The teacher (a path is opened as ``YoloDetector(path)``).  Any object with
        ``detect(image) -> DataFrame`` and ``meta["conf_f1"]`` works.
    images : path, sequence or UnlabeledImages
        Unlabeled real images (labels are never read; see :class:`UnlabeledImages`).
    conf : float, optional
        Confidence threshold.  Default: the threshold that maximised F1 on the *synthetic*
        validation data (``detector.meta["conf_f1"]``); never a threshold tuned on real labels.
    flip_consistency : bool
        Require agreement under flips (``False``: confidence only).
    iou : float
        IoU needed to match a box with its flipped counterpart.
    flips : sequence of {"h", "v"}
        The flips checked.
    exclude : sequence of str
        Image names to leave out.

    Returns
    -------
    One DataFrame ``x0, y0, x1, y1, class, score`` per image, in image order (sorted by
    decreasing score).
    """
    if not 0 < iou <= 1:
        raise ParameterError(f"iou must be in (0, 1], got {iou}")
    flips = _check_flips(flip_consistency, flips)
    if isinstance(detector, (str, Path)):
        detector = YoloDetector(detector)
    conf, _ = _threshold(detector, conf)
    with _Opened(images, exclude) as src:
        return [df for _, _, df in _label_stream(detector, src, conf, flips, iou, progress)]


# -- lever 3: self-training ---------------------------------------------------------------------
@dataclass
class SelfTrainResult:
    """Outcome of :func:`self_train`.

    Attributes
    ----------
    weights : Path
        ``<output>/best.pt``: the last accepted student (the input model when no round was
        accepted), with the adaptation record in ``simgen["adaptation"]``.
    output : Path
        The run folder.
    rounds : list of dict
        Per round: ``round``, ``status`` (``trained`` or ``stopped``), ``reason``, ``teacher``,
        ``conf`` and ``conf_source`` (threshold used for the pseudo-labels), ``n_images``,
        ``n_images_used``, ``n_boxes_raw`` (flip-consistent, before the cap), ``n_boxes`` (after
        the cap), ``n_capped``, ``mean_score``, ``change`` (relative change of ``n_boxes_raw``
        against the previous round), ``label_seconds``, ``train_seconds``, ``student``,
        ``student_conf_f1`` and ``student_val_f1`` (on synthetic validation), ``pseudo_files``,
        ``pseudo_repeats``, ``pseudo_images_trained``.
    stopped : str or None
        Why self-training stopped before ``rounds`` rounds, else ``None``.
    """

    weights: Path
    output: Path
    rounds: list[dict] = field(default_factory=list)
    stopped: str | None = None

    def to_dict(self) -> dict:
        return {"weights": str(self.weights), "output": str(self.output), "rounds": self.rounds,
                "stopped": self.stopped}


def _as_list(x) -> list[Path]:
    return [Path(x)] if isinstance(x, (str, Path)) else [Path(p) for p in x]


def _cap(df: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The ``limit`` highest-scoring boxes (all when ``limit`` is None)."""
    if limit is None or len(df) <= limit:
        return df
    return df.sort_values("score", ascending=False, kind="stable").iloc[: max(int(limit), 0)].reset_index(drop=True)


def box_limits(first_counts: Sequence[int], max_box_growth: float | None) -> list[int | None]:
    """Per-image pseudo-box caps: ``ceil(max_box_growth * first-round count)`` (``None``: no cap)."""
    if max_box_growth is None:
        return [None] * len(first_counts)
    return [int(math.ceil(max_box_growth * int(n) - 1e-9)) for n in first_counts]


def count_change(previous: int, current: int) -> float:
    """Relative change of the pseudo-box count between two rounds: ``|current - previous| / max(previous, 1)``."""
    return abs(int(current) - int(previous)) / max(int(previous), 1)


def _is_8bit(image: np.ndarray) -> bool:
    v = np.asarray(image, np.float64) * 255.0
    return bool(np.all(np.abs(v - np.rint(v)) < 1e-3))


def _write_pseudo(src: UnlabeledImages, stream, rdir: Path, class_names: list[str], limits: list[int | None] | None,
                  skip_empty: bool, generator: dict) -> dict:
    """Write images + capped pseudo boxes as simgen HDF5 (one file per image shape); returns the statistics."""
    writers: dict[tuple[int, int], DatasetWriter] = {}
    raw, kept, used, scores, files = [], [], [], [], []
    dtype = None
    try:
        for k, img, df in stream:
            raw.append(len(df))
            df = _cap(df, limits[k] if limits is not None else None)
            kept.append(len(df))
            if skip_empty and len(df) == 0:
                continue
            if dtype is None:
                dtype = "uint8" if _is_8bit(img) else "uint16"
            shape = tuple(img.shape)
            if shape not in writers:
                name = "pseudo.h5" if not writers else f"pseudo_{shape[0]}x{shape[1]}.h5"
                writers[shape] = DatasetWriter(rdir / name, kind="pseudo_labels", image_dtype=dtype,
                                               class_names=class_names, generator=generator, overwrite=True,
                                               attrs={"source": src.origin, "labels": "pseudo (no real labels)"})
            writers[shape].append(img, boxes=df[BOX_COLUMNS], name=src.name(k))
            used.append(src.name(k))
            scores.append(df["score"].to_numpy(np.float64))
        for w in writers.values():
            files.append(str(w.close()))
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    return {"per_image_raw": raw, "per_image": kept, "names": src.names, "used": used, "files": files,
            "n_images": len(raw), "n_images_used": len(used), "n_boxes_raw": int(sum(raw)),
            "n_boxes": int(sum(kept)), "n_capped": int(sum(raw) - sum(kept)),
            "mean_score": float(all_scores.mean()) if len(all_scores) else None}


def _student_config(teacher_meta: dict, config: YoloConfig | None, epochs: int, seed: int, device: str) -> YoloConfig:
    if config is None:
        known = {f.name for f in dataclasses.fields(YoloConfig)}
        stored = {k: v for k, v in (teacher_meta.get("config") or {}).items() if k in known}
        config = YoloConfig(**stored) if stored else PRESETS["full"]
    return config.replace(epochs=int(epochs), seed=seed, device=device).validate()


def _synthetic_split(synthetic: list[Path], synthetic_val: list[Path] | None, config: YoloConfig, seed: int):
    """Training sources/names and a synthetic-only validation set (held out by name when none is given)."""
    if synthetic_val:
        return list(synthetic), [None] * len(synthetic), list(synthetic_val), [None] * len(synthetic_val)
    if config.val_fraction <= 0:  # validate on the synthetic training images (still synthetic only)
        return list(synthetic), [None] * len(synthetic), list(synthetic), [None] * len(synthetic)
    tr_names, va_names = [], []
    for s, path in enumerate(synthetic):
        with open_source(path) as src:
            names = [src.name(k) for k in range(len(src))]
        if len(names) < 2:
            raise ParameterError(f"{path} has {len(names)} sample(s); give synthetic_val to validate on")
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAG_VAL, s)))
        n_hold = min(max(int(round(config.val_fraction * len(names))), 1), len(names) - 1)
        held = set(rng.choice(len(names), n_hold, replace=False).tolist())
        tr_names.append([n for i, n in enumerate(names) if i not in held])
        va_names.append([n for i, n in enumerate(names) if i in held])
    return list(synthetic), tr_names, list(synthetic), va_names


def _synthetic_tiles(paths: list[Path], names: list, config: YoloConfig) -> int:
    total = 0
    for path, sel in zip(paths, names):
        with open_source(path, sel) as src:
            total += sum(_n_tiles(src.shape(k), config.tile, config.overlap, config.scale) for k in range(len(src)))
    return total


def _mix(stats: dict, shapes: dict[str, tuple[int, int]], syn_tiles: int, ratio: float | None, config: YoloConfig,
         seed: int, rnd: int) -> tuple[list[Path], list, int, int]:
    """Pseudo-labelled training sources so that pseudo tiles ≈ ``ratio`` × synthetic tiles.

    Too many pseudo tiles: a seeded subset of the pseudo images; too few: the pseudo files are
    listed several times (at most 20).  ``ratio=None``: every pseudo image once.
    """
    files = [Path(f) for f in stats["files"]]
    if ratio is None:
        return files, [None] * len(files), 1, stats["n_images_used"]
    tiles = {n: _n_tiles(shapes[n], config.tile, config.overlap, config.scale) for n in stats["used"]}
    have = sum(tiles.values())
    target = ratio * syn_tiles
    if have <= target:
        repeats = int(min(max(round(target / max(have, 1)), 1), 20))
        return files * repeats, [None] * (len(files) * repeats), repeats, stats["n_images_used"]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAG_RATIO, rnd)))
    chosen, acc = set(), 0
    for i in rng.permutation(len(stats["used"])):
        if acc >= target and chosen:
            break
        chosen.add(stats["used"][i])
        acc += tiles[stats["used"][i]]
    paths, names = [], []
    for f in files:
        with open_source(f) as src:
            sel = [src.name(k) for k in range(len(src)) if src.name(k) in chosen]
        if sel:
            paths.append(f)
            names.append(sel)
    return paths, names, 1, len(chosen)


def _student_done(run: Path) -> bool:
    return (run / "best.pt").is_file() and (run / "simgen.json").is_file()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=json_default_lenient) + "\n", overwrite=True)


def _stamp(weights: Path, out: Path, record: dict) -> Path:
    """Copy ``weights`` to ``out`` with ``record`` appended to ``simgen["adaptation"]``."""
    ckpt = load_yolo_checkpoint(weights)
    meta = dict(ckpt.get("simgen") or {})
    meta["adaptation"] = [*meta.get("adaptation", []), record]
    ckpt["simgen"] = _plain(meta)
    return save_yolo_checkpoint(out, ckpt)


def self_train(weights, synthetic, unlabeled, output, *, rounds: int = 2, epochs: int = 10,
               config: YoloConfig | None = None, synthetic_val=None, conf: float | None = None,
               iou: float = 0.5, flip_consistency: bool = True, flips: Sequence[str] = FLIPS,
               pseudo_ratio: float | None = 1.0, skip_empty: bool = True, max_box_growth: float | None = 1.5,
               max_count_change: float | None = 0.5, exclude: Sequence[str] = (), seed: int = 0,
               device: str = "auto", resume: bool = False, overwrite: bool = False, progress: bool = True,
               cache_dir=None, threads: int | None = None) -> SelfTrainResult:
    """Self-training on unlabeled real images: pseudo-label, fine-tune on synthetic + pseudo, repeat.

    Each round: (1) the current teacher pseudo-labels the unlabeled images (:func:`pseudo_label`;
    threshold = the teacher's synthetic-validation ``conf_f1`` unless ``conf`` is given); (2) the
    images and their pseudo boxes are written as simgen HDF5 in ``<output>/roundN/``; (3) a student
    starts from the teacher's weights and trains ``epochs`` epochs with :func:`train_yolo` on the
    synthetic data *and* the pseudo-labelled images in one training set (synthetic tiles are in
    every batch's pool); its validation set — which picks the best epoch, early stopping and the
    student's ``conf_f1`` — is synthetic only; (4) the student becomes the teacher.

    Drift guards: an image never gets more than ``ceil(max_box_growth × its first-round count)``
    pseudo boxes (highest scores kept), and self-training stops before training a round whose
    flip-consistent box count changed by more than ``max_count_change`` (relative) against the
    previous round, or that found no box at all; the last accepted student is the result.

    Parameters
    ----------
    weights : path
        The synthetic-trained teacher (``best.pt``; may be a :func:`adapt_batchnorm` output).
    synthetic : path or list of paths
        Synthetic training data with boxes (HDF5 datasets / YOLO folders of *synthetic* data).
    unlabeled : path, sequence or UnlabeledImages
        Unlabeled real images (labels are never read; see :class:`UnlabeledImages`).
    output : path
        Run folder: ``adapt.json`` (settings and per-round records), ``roundN/pseudo*.h5``,
        ``roundN/pseudo.json``, ``roundN/student/`` (a :func:`train_yolo` run), ``roundN/round.json``,
        and ``best.pt`` (the result).
    rounds : int
        Maximum number of rounds.
    epochs : int
        Training epochs per round (replaces ``config.epochs``).
    config : YoloConfig, optional
        Student settings; default: the teacher's stored training config.
    synthetic_val : path or list of paths, optional
        Synthetic validation data.  Default: ``config.val_fraction`` of the synthetic samples is
        held out by name (seeded) — never pseudo-labelled images.
    conf, iou, flip_consistency, flips
        Pseudo-labelling (see :func:`pseudo_label`).
    pseudo_ratio : float or None
        Target ratio of pseudo-labelled to synthetic training *tiles* per round (1.0: as many
        real as synthetic tiles; the pseudo images are subsampled or listed repeatedly).
        ``None``: every pseudo-labelled image once, whatever the synthetic set's size.
    skip_empty : bool
        Leave images without any pseudo box out of training (an empty pseudo label more
        often means a miss than an empty image).
    max_box_growth : float or None
        Per-image cap relative to the first round (``>= 1``; ``None``: no cap).
    max_count_change : float or None
        Stop when the pseudo-box count changes by more than this fraction between rounds
        (``None``: never).
    exclude : sequence of str
        Unlabeled image names to leave out (e.g. frames that will be scored).
    seed : int
        Seeds training, the validation hold-out and the ratio subsampling.
    device : str
        ``auto`` (CUDA when present), ``cpu``, ``cuda:N``.
    resume : bool
        Continue a run: finished rounds (``round.json``) are skipped, written pseudo-labels are
        reused and an interrupted student resumes from its last checkpoint.
    overwrite : bool
        Start afresh in a folder that holds a run (its rounds are deleted).
    progress : bool
        Progress lines on stderr.
    cache_dir : path, optional
        YOLO export cache (see :func:`prepare_yolo_data`).

    Returns
    -------
    SelfTrainResult
    """
    # -- validate everything before any output exists
    seed = check_seed(seed)
    if int(rounds) < 1 or int(epochs) < 1:
        raise ParameterError("rounds and epochs must be >= 1")
    if not 0 < iou <= 1:
        raise ParameterError(f"iou must be in (0, 1], got {iou}")
    flips = _check_flips(flip_consistency, flips)
    if pseudo_ratio is not None and not float(pseudo_ratio) > 0:
        raise ParameterError(f"pseudo_ratio must be > 0 (or None), got {pseudo_ratio}")
    if max_box_growth is not None and not float(max_box_growth) >= 1:
        raise ParameterError(f"max_box_growth must be >= 1 (or None), got {max_box_growth}")
    if max_count_change is not None and not float(max_count_change) > 0:
        raise ParameterError(f"max_count_change must be > 0 (or None), got {max_count_change}")
    weights, out = Path(weights), Path(output)
    if not weights.is_file():
        raise ParameterError(f"weights {weights} do not exist")
    synthetic = _as_list(synthetic)
    synthetic_val = _as_list(synthetic_val) if synthetic_val is not None else None
    for p in synthetic + (synthetic_val or []):
        if not p.exists():
            raise ParameterError(f"synthetic data {p} does not exist")
        with open_source(p) as s:
            if not s.has_labels:
                raise DataError(f"{p} has no box labels to train on")
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output {out} is a file; give a run folder")
    inputs = [weights, *synthetic, *(synthetic_val or [])]
    if isinstance(unlabeled, (str, Path)):
        inputs.append(Path(unlabeled))
    for p in inputs:
        if p.exists() and out.exists() and (p.resolve() == out.resolve() or out.resolve() in p.resolve().parents):
            raise ParameterError(f"output {out} holds the input {p}; choose another run folder")
    if isinstance(unlabeled, (str, Path)) and Path(unlabeled).is_dir() and (
            Path(unlabeled).resolve() in out.resolve().parents):
        raise ParameterError(f"output {out} is inside the unlabeled images {unlabeled}; choose another run folder")
    teacher_det = YoloDetector(weights, device=device, threads=threads)  # validates the checkpoint
    t_conf, t_source = _threshold(teacher_det, conf)
    cfg = _student_config(teacher_det.meta, config, epochs, seed, device)
    with _Opened(unlabeled, exclude) as probe:
        image_names = probe.names
    settings = _plain({
        "weights": str(weights.resolve()), "synthetic": [str(p.resolve()) for p in synthetic],
        "synthetic_val": [str(p.resolve()) for p in synthetic_val] if synthetic_val else None,
        "unlabeled": str(Path(unlabeled).resolve()) if isinstance(unlabeled, (str, Path)) else "<given>",
        "exclude": sorted(map(str, exclude)), "image_names": image_names, "epochs": int(epochs),
        "config": cfg.to_dict(), "conf": conf, "iou": iou, "flips": list(flips), "pseudo_ratio": pseudo_ratio, "skip_empty": skip_empty,
        "max_box_growth": max_box_growth, "max_count_change": max_count_change, "seed": seed,
    })
    state_file = out / "adapt.json"
    has_run = state_file.exists() or any(out.glob("round*")) if out.is_dir() else False
    if has_run and not (resume or overwrite):
        raise ParameterError(f"run folder {out} holds a self-training run; pass --resume to continue it or --overwrite")
    if resume and state_file.exists():
        before = _read_json(state_file).get("settings", {})
        diff = sorted(k for k in settings if k != "config" and before.get(k) != settings[k])
        diff += [f"config.{k}" for k in settings["config"]
                 if k != "device" and (before.get("config") or {}).get(k) != settings["config"][k]]
        if diff:
            raise ParameterError(f"cannot resume {out}: settings differ ({', '.join(diff[:5])}); use --overwrite")
    with _Opened(unlabeled, exclude) as src:
        shapes = {src.name(k): src.shape(k) for k in range(len(src))}
        # -- from here on, outputs are written
        out.mkdir(parents=True, exist_ok=True)
        if overwrite and not resume:
            for d in out.glob("round*"):
                if d.is_dir():
                    shutil.rmtree(d)
            for name in ("adapt.json", "best.pt"):
                (out / name).unlink(missing_ok=True)
        log = ProgressLog(None, enabled=progress, prefix="[self-train] ")
        threads = setup_threads(threads)
        tr_paths, tr_names, va_paths, va_names = _synthetic_split(synthetic, synthetic_val, cfg, seed)
        syn_tiles = _synthetic_tiles(tr_paths, tr_names, cfg)
        state = {"settings": settings, "images": src.describe(), "rounds": [], "result": None}
        _write_json(state_file, state)

        teacher, records, stopped = weights, [], None
        first_counts: list[int] | None = None
        for r in range(1, int(rounds) + 1):
            rdir = out / f"round{r}"
            done = rdir / "round.json"
            if resume and done.exists():
                record = _read_json(done)
                records.append(record)
                if first_counts is None:
                    first_counts = _read_json(rdir / "pseudo.json")["per_image_raw"]
                log.message(f"round {r}: {record['status']} (resumed: already done)")
                if record["status"] != "trained":
                    stopped = record["reason"]
                    break
                teacher = Path(record["student"])
                continue
            rdir.mkdir(parents=True, exist_ok=True)
            det = teacher_det if teacher == weights else YoloDetector(teacher, device=device, threads=threads)
            r_conf, r_source = (t_conf, t_source) if teacher == weights else _threshold(det, conf)
            stats_file = rdir / "pseudo.json"
            # 1-2. pseudo-label and write
            if resume and stats_file.exists():
                stats = _read_json(stats_file)
            else:
                limits = box_limits(first_counts, max_box_growth) if first_counts is not None else None
                generator = {"function": "simgen.train.yolo.adapt.self_train", "round": r,
                             "teacher": str(teacher), "conf": r_conf, "conf_source": r_source, "iou": iou,
                             "flips": list(flips), "max_box_growth": max_box_growth, "detector": det.describe()}
                with Timer() as t:
                    stats = _write_pseudo(src, _label_stream(det, src, r_conf, flips, iou, progress), rdir,
                                          list(det.class_names), limits, skip_empty, generator)
                stats.update(conf=r_conf, conf_source=r_source, teacher=str(teacher), label_seconds=round(t.seconds, 2))
                _write_json(stats_file, stats)
            if first_counts is None:
                first_counts = stats["per_image_raw"]
            prev = records[-1]["n_boxes_raw"] if records else None
            change = count_change(prev, stats["n_boxes_raw"]) if prev is not None else None
            record = {k: stats[k] for k in ("n_images", "n_images_used", "n_boxes_raw", "n_boxes", "n_capped",
                                            "mean_score", "conf", "conf_source", "teacher", "label_seconds")}
            record.update(round=r, change=change, pseudo_files=stats["files"])
            log.message(f"round {r}: {stats['n_boxes']} pseudo boxes on {stats['n_images_used']}/{stats['n_images']} "
                        f"images (raw {stats['n_boxes_raw']}, conf >= {r_conf:.3f}, mean score "
                        f"{stats['mean_score'] if stats['mean_score'] is not None else float('nan'):.3f})")
            reason = None
            if stats["n_boxes"] == 0:
                reason = f"round {r}: no pseudo box passed the threshold and the flip check"
            elif change is not None and max_count_change is not None and change > max_count_change:
                reason = (f"round {r}: pseudo-box count changed by {100 * change:.0f}% "
                          f"(> {100 * max_count_change:.0f}%) against round {r - 1}")
            if reason:
                record.update(status="stopped", reason=reason, train_seconds=0.0, student=None)
                _write_json(done, record)
                records.append(record)
                stopped = reason
                log.message(f"stopping: {reason}")
                break
            # 3. train the student on synthetic + pseudo, validate on synthetic only
            ps_paths, ps_names, repeats, n_used = _mix(stats, shapes, syn_tiles, pseudo_ratio, cfg, seed, r)
            run = rdir / "student"
            with Timer() as t:
                trained_now = not _student_done(run)
                if not trained_now:
                    best = run / "best.pt"
                else:
                    again = (run / "ultralytics" / "weights" / "last.pt").exists() and resume
                    best = train_yolo(tr_paths + ps_paths, run, val=va_paths, config=cfg, weights=teacher,
                                      resume=again, overwrite=not again, progress=progress, cache_dir=cache_dir,
                                      threads=threads, train_names=tr_names + ps_names, val_names=va_names)
            student_meta = _read_json(run / "simgen.json")
            seconds = t.seconds if trained_now else float(student_meta.get("train_seconds") or 0.0)
            record.update(status="trained", reason=None, train_seconds=round(seconds, 2), student=str(best),
                          student_conf_f1=student_meta.get("conf_f1"), student_val_f1=student_meta.get("val_f1"),
                          pseudo_repeats=repeats, pseudo_images_trained=n_used,
                          validation=[str(p) for p in va_paths])
            _write_json(done, record)
            records.append(record)
            state["rounds"] = records
            _write_json(state_file, state)
            log.message(f"round {r}: student trained in {seconds:.0f}s; synthetic-validation threshold "
                        f"{record['student_conf_f1']:.3f}")
            teacher = Path(best)

        final = {"method": "self_train", "date": _now(), "source_weights": str(weights.resolve()),
                 "images": src.describe(), "rounds_trained":
                 sum(rec["status"] == "trained" for rec in records), "stopped": stopped,
                 "rounds": [{k: v for k, v in rec.items() if k != "pseudo_files"} for rec in records],
                 "threshold": "conf_f1 from the final student's synthetic validation"}
        best_out = _stamp(teacher, out / "best.pt", final)
        result = SelfTrainResult(weights=best_out, output=out, rounds=records, stopped=stopped)
        state["rounds"], state["result"] = records, result.to_dict()
        _write_json(state_file, state)
        log.message(f"done: {best_out} ({final['rounds_trained']} round(s) trained)")
    return result
