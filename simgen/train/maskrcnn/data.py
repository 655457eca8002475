"""Instance-annotated training samples for Mask R-CNN: targets from label images, crops and flips."""

from __future__ import annotations

import math
from os import PathLike

import numpy as np

from simgen.datasets.normalize import normalize_image
from simgen.datasets.sources import Source, open_source
from simgen.errors import DataError
from simgen.evaluate.matching import box_iou
from simgen.rng import sample_rng
from simgen.train.maskrcnn.config import MaskRCNNConfig

__all__ = [
    "InstanceSource",
    "open_instances",
    "instance_target",
]


# -- data --------------------------------------------------------------------
#: Instance-annotated images: a :class:`~simgen.datasets.sources.Source` (``n``, ``path``,
#: ``image(i)``, ``mask(i)``, ``boxes(i)``, ``name(i)``, ``class_names``).
InstanceSource = Source


def open_instances(path: str | PathLike | Source, require_masks: bool = True) -> Source:
    """Open instance-annotated images: a simgen HDF5 file, a sharded set or a YOLO folder with ``masks/``.

    A :class:`~simgen.datasets.sources.Source` (see :func:`~simgen.datasets.sources.open_source`)
    checked for what Mask R-CNN needs; an open Source is used as is (not closed).

    Raises
    ------
    DataError, SchemaError
        If the source is unreadable, holds no images, or no instance masks while ``require_masks``.
    """
    src = open_source(path)
    if require_masks and not src.has_masks:
        src.close()
        where = "a masks/ folder" if src.kind in ("yolo", "images") else "/labels/masks (e.g. simgen simulate tem)"
        raise DataError(f"{src.path} has no instance masks; Mask R-CNN needs {where}")
    return src


def _instance_classes(ids: np.ndarray, boxes, mask: np.ndarray, n_classes: int) -> np.ndarray:
    """Class of every instance id: from the ``instance`` column, else best box overlap, else 0."""
    out = np.zeros(len(ids), np.int64)
    if boxes is None or len(boxes) == 0 or n_classes <= 1:
        return out
    cls = boxes["class"].to_numpy(np.int64)
    if "instance" in boxes.columns:
        lookup = dict(zip(boxes["instance"].to_numpy(np.int64).tolist(), cls.tolist()))
        return np.array([lookup.get(int(k), 0) for k in ids], np.int64)

    inst_boxes = _mask_boxes(mask, ids)
    iou = box_iou(inst_boxes, boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float64))
    best = iou.argmax(axis=1)
    return np.where(iou.max(axis=1) > 0, cls[best], 0)


def _mask_boxes(mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Tight boxes ``(x0, y0, x1, y1)`` of instance ids in a label image (pixel-edge frame)."""
    from scipy import ndimage

    out = np.zeros((len(ids), 4), np.float32)
    if not len(ids):
        return out
    lab = np.asarray(mask)
    slices = ndimage.find_objects(lab.astype(np.int64), max_label=int(ids.max()))
    for k, i in enumerate(ids):
        sl = slices[int(i) - 1]
        out[k] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    return out


def instance_target(mask: np.ndarray, classes: np.ndarray | None = None, min_area: int = 1) -> dict:
    """Instance-id label image → per-instance binary masks, boxes and labels (numpy).

    Parameters
    ----------
    mask : (H, W) integer array
        0 = background, every other value one instance.
    classes : (K,) int array, optional
        simgen class of each id in ``np.unique(mask[mask > 0])`` order (default all 0).
    min_area : int
        Instances with fewer pixels are dropped.

    Returns
    -------
    dict with ``ids`` (K,), ``masks`` (K, H, W) uint8, ``boxes`` (K, 4) float32 in the
    pixel-edge frame, ``labels`` (K,) int64 = class + 1 (torchvision's 0 is background).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"instance masks must be 2-D label images, got shape {mask.shape}")
    ids, areas = np.unique(mask[mask > 0], return_counts=True)
    classes = np.zeros(len(ids), np.int64) if classes is None else np.asarray(classes, np.int64)
    keep = areas >= max(int(min_area), 1)
    ids, classes = ids[keep], classes[keep]
    masks = (mask[None, :, :] == ids[:, None, None]).astype(np.uint8)
    return {"ids": ids, "masks": masks, "boxes": _mask_boxes(mask, ids), "labels": classes + 1}


def _augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop: int = 0, flips: bool = True):
    """Random ``crop``² window of larger images, then random flips and (square) 90° rotations."""
    h, w = image.shape
    if crop and (h > crop or w > crop):
        ch, cw = min(crop, h), min(crop, w)
        y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        image, mask = image[y:y + ch, x:x + cw], mask[y:y + ch, x:x + cw]
    if flips:
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        if image.shape[0] == image.shape[1]:
            k = int(rng.integers(4))
            image, mask = np.rot90(image, k), np.rot90(mask, k)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


class _Samples:
    """Training/validation samples of an :class:`InstanceSource`, cached in memory as compact arrays
    (normalised images as float16, masks as uint8/uint16: ~2-3 bytes per pixel)."""

    def __init__(self, source: Source, cfg: MaskRCNNConfig, n_classes: int, select_empty: bool):
        self.normalize = cfg.normalize
        self.images, self.masks, self.classes, self.names = [], [], [], []
        empty = []
        for i in range(source.n):
            m = source.mask(i)
            if m is None:
                raise DataError(f"{source.path}: sample {source.name(i)} has no instance mask")
            img = source.image(i)
            if m.shape != img.shape:
                raise DataError(f"{source.path}: mask of {source.name(i)} has shape {m.shape}, image {img.shape}")
            ids, areas = np.unique(m[m > 0], return_counts=True)
            ids = ids[areas >= max(cfg.min_instance_area, 1)]
            if not len(ids):
                empty.append(i)
                continue
            self._add(source, i, img, m, ids, n_classes)
        self.n_with = len(self.images)
        n_empty = len(empty)
        if select_empty and empty:
            n_keep = min(n_empty, math.floor(cfg.max_empty_fraction * max(self.n_with, 1)))
            chosen = sorted(sample_rng(cfg.seed, 0, 7).choice(n_empty, n_keep, replace=False).tolist())
            empty = [empty[k] for k in chosen]
        for i in empty:
            m = source.mask(i)
            self._add(source, i, source.image(i), m, np.zeros(0, np.int64), n_classes)
        self.n_empty_kept = len(empty)
        self.n_empty_skipped = n_empty - len(empty)

    def _add(self, source, i, img, m, ids, n_classes):
        cls = _instance_classes(ids, source.boxes(i), m, n_classes)
        self.images.append(normalize_image(img, self.normalize).astype(np.float16))  # half the memory
        self.masks.append(m.astype(np.uint16 if m.max(initial=0) > 255 else np.uint8))
        self.classes.append(dict(zip(ids.tolist(), cls.tolist())))
        self.names.append(source.name(i))

    def __len__(self):
        return len(self.images)

    def item(self, k: int, cfg: MaskRCNNConfig, rng: np.random.Generator | None, device):
        import torch

        img, m = self.images[k].astype(np.float32), self.masks[k]
        if rng is not None:  # training: crop + augmentation; validation: whole image
            img, m = _augment(img, m, rng, cfg.crop, cfg.augment)
        ids = np.unique(m[m > 0])
        cls = np.array([self.classes[k].get(int(i), 0) for i in ids], np.int64)
        t = instance_target(m, cls, cfg.min_instance_area)
        target = {
            "boxes": torch.from_numpy(t["boxes"]).to(device),
            "labels": torch.from_numpy(t["labels"]).to(device),
            "masks": torch.from_numpy(t["masks"]).to(device),
        }
        return torch.from_numpy(img[None]).to(device), target


# -- training ----------------------------------------------------------------
def _check_classes(train_names: list, val_names: list | None) -> list:
    names = list(train_names) or ["object"]
    if val_names and list(val_names) != list(train_names):
        raise DataError(f"validation classes {val_names} differ from training classes {train_names}")
    return names

