"""Files of the LDM generator: training pairs in, generated pairs out.

* :func:`import_real` — a real YOLO folder with ``masks/`` (instance-id PNGs) →
  a simgen HDF5 *pairs* file: optionally rescaled, cut into equal tiles, with
  instance masks, boxes derived from the masks (class from the YOLO box that matches
  each instance) and per-tile provenance (source image, offset, scale).
* :func:`import_unlabeled` — a folder of unlabelled real images → a pairs file of tiles
  with all-background masks and no boxes (the LDM then learns the real look
  unconditionally, e.g. for SDEdit translation of renders).  Label files are never read.
* :func:`read_pairs` — any simgen HDF5 file with images and ``/labels/masks``
  (imported real data, TEM simulations, generated pairs) → :class:`TrainingPairs`
  (images, multi-class maps, instance masks, class names).
* :func:`write_generated` — samples from :meth:`TrainedLDM.sample` → a simgen HDF5
  file with images, instance masks, boxes derived from the masks and provenance.
* :func:`boxes_from_mask` — the box records of an instance mask.

Multi-class maps: 0 = background, ``c + 1`` = class ``c``.  The class of an instance
comes from the ``instance`` column of the ``boxes`` table when present, else from the
box whose extent best overlaps the instance's tight box, else class 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import check_output
from simgen.augment.ldm.data import TrainingPairs
from simgen.augment.ldm.masks import (
    class_map_from_instances,
    instance_properties,
    relabel_sequential,
)
from simgen.datasets.formats.yolo import open_yolo_folder
from simgen.datasets.h5io import Dataset, DatasetWriter, open_dataset
from simgen.datasets.imageio import image_shape, list_images, read_image
from simgen.errors import DataError, ParameterError
from simgen.progress import track
from simgen.spread import spread_indices

__all__ = [
    "boxes_from_mask",
    "copy_samples",
    "import_real",
    "import_unlabeled",
    "instance_classes_from_boxes",
    "read_pairs",
    "read_pairs_sample",
    "tile_origins",
    "write_generated",
]

BOX_RECORD_COLUMNS = ["x0", "y0", "x1", "y1", "class", "instance", "size"]


def boxes_from_mask(instance_mask: np.ndarray, classes: np.ndarray | None = None) -> pd.DataFrame:
    """Tight boxes of every instance: columns x0, y0, x1, y1, class, instance, size.

    ``size`` is the equivalent-circle diameter in pixels; ``classes`` as in
    :func:`simgen.augment.ldm.masks.class_map_from_instances` (default: all class 0).
    """
    props = instance_properties(instance_mask, classes)
    return pd.DataFrame({
        "x0": props["x0"], "y0": props["y0"], "x1": props["x1"], "y1": props["y1"],
        "class": props["class"].astype(np.int16), "instance": props["instance"].astype(np.int32),
        "size": props["diameter"].astype(np.float32),
    })


def instance_classes_from_boxes(instance_mask: np.ndarray, boxes: pd.DataFrame | None) -> np.ndarray:
    """Class of every instance ``1..max`` of a mask, from annotation boxes.

    Uses the ``instance`` column when the boxes have one; otherwise each instance takes
    the class of the box with the highest IoU with its tight box (class 0 if no box
    overlaps it).  Returns int16 of length ``instance_mask.max()``.
    """
    inst = np.asarray(instance_mask)
    top = int(inst.max(initial=0))
    out = np.zeros(top, np.int16)
    if boxes is None or len(boxes) == 0 or top == 0:
        return out
    if "instance" in boxes.columns:
        ids = boxes["instance"].to_numpy(np.int64)
        ok = (ids > 0) & (ids <= top)
        out[ids[ok] - 1] = boxes["class"].to_numpy()[ok]
        return out
    props = instance_properties(inst)
    if not len(props["instance"]):
        return out
    a = np.stack([props[c] for c in ("x0", "y0", "x1", "y1")], 1).astype(np.float64)
    b = boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    best = iou.argmax(axis=1)
    has = iou.max(axis=1) > 0
    cls = boxes["class"].to_numpy(np.int64)
    out[props["instance"][has] - 1] = cls[best[has]]
    return out


def tile_origins(length: int, tile: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``; the last one is flush with the end."""
    if tile >= length:
        return [0]
    starts = list(range(0, length - tile + 1, tile))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _rescale(image: np.ndarray, mask: np.ndarray | None, scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    if scale == 1.0:
        return image, mask
    from skimage.transform import resize

    h, w = image.shape
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    img = resize(image, shape, order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)
    if mask is None:
        return img, None
    msk = resize(mask, shape, order=0, anti_aliasing=False, preserve_range=True).astype(mask.dtype)
    return img, msk


def _check_tiling(tile, scale) -> None:
    if int(tile) != tile or tile < 0 or 0 < tile < 8:
        raise ParameterError(f"tile must be 0 (whole images) or an integer >= 8, got {tile}")
    if not (np.isfinite(scale) and 0 < scale <= 4):
        raise ParameterError(f"scale must be in (0, 4], got {scale}")


def _check_scaled_sizes(shapes: dict[str, tuple[int, int]], scale: float, tile: int, *, where) -> None:
    """Refuse, before anything is written, images smaller than ``tile`` after scaling, and
    untiled images of different sizes (one file holds one image size)."""
    scaled = {}
    for name, (h, w) in shapes.items():
        sh = (max(1, round(h * scale)), max(1, round(w * scale)))
        if tile and min(sh) < tile:
            raise DataError(f"{where}: {name} is {sh[0]}x{sh[1]} after scaling, smaller than tile {tile}")
        scaled[name] = sh
    if not tile and len(set(scaled.values())) > 1:
        raise DataError(f"{where}: images differ in size {sorted(set(scaled.values()))}; give --tile")


def import_real(
    folder: str | PathLike,
    output: str | PathLike,
    *,
    tile: int = 256,
    scale: float = 1.0,
    min_area: int = 4,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Build an LDM pairs file from a real YOLO folder with instance masks.

    Parameters
    ----------
    folder : path-like
        YOLO folder with ``images/``, ``labels/`` and ``masks/<stem>.png`` (instance ids).
    output : path-like
        New HDF5 file (not replaced unless ``overwrite``).
    tile : int
        Side of the square tiles every (rescaled) image is cut into (tiles cover the
        whole image; the last row/column of tiles is flush with the border and may
        overlap its neighbour).  ``0`` keeps whole images, which must then share one size.
    scale : float
        Resampling factor applied first (e.g. 0.25 turns 2048² frames into 512²);
        images bilinear with anti-aliasing, masks nearest-neighbour.
    min_area : int
        Instances smaller than this many pixels (after scaling and tiling) are dropped
        (their pixels become background).

    Returns
    -------
    dict with ``path``, ``n_tiles``, ``n_images``, ``n_instances``, ``skipped`` (images without a mask).

    Raises
    ------
    DataError
        If the folder has no masks, or an image is smaller than a tile.
    """

    _check_tiling(tile, scale)
    if min_area < 1:
        raise ParameterError(f"min_area must be >= 1, got {min_area}")
    output = check_output(output, overwrite)
    yolo = open_yolo_folder(folder)
    if not yolo.has_images:
        raise DataError(f"{folder} has no images/ folder")
    if yolo.masks_dir is None:
        raise DataError(f"{folder} has no masks/ folder; the LDM needs instance masks (boxes alone are not enough)")
    with_masks = [n for n in yolo.names if (yolo.masks_dir / f"{n}.png").exists()]
    skipped = [n for n in yolo.names if n not in with_masks]
    if not with_masks:
        raise DataError(f"{folder}: no image has a mask in masks/")
    _check_scaled_sizes({f"image {n}": yolo.shape(n) for n in with_masks}, scale, tile, where=folder)
    class_names = yolo.class_names or [str(c) for c in range(1 + max(
        [int(yolo.boxes(n)["class"].max()) for n in with_masks if len(yolo.boxes(n))] or [0]))]
    generator = {"function": "simgen.datasets.ldm_io.import_real", "source": str(Path(folder).resolve()),
                 "tile": int(tile), "scale": float(scale), "min_area": int(min_area)}
    n_tiles = n_inst = 0
    with DatasetWriter(output, kind="tem-real", class_names=class_names, generator=generator,
                       overwrite=overwrite) as writer:
        for name in track(with_masks, total=len(with_masks), description=f"import {Path(folder).name}",
                          enabled=progress):
            image = yolo.image(name)
            mask = yolo.mask(name)
            if mask is None:  # split layouts look for masks/<split>/<name>.png
                raise DataError(f"{folder}: no instance mask for image {name} in masks/")
            if mask.shape != image.shape:
                raise DataError(f"{folder}: mask of {name} is {mask.shape}, image {image.shape}")
            classes = instance_classes_from_boxes(mask, yolo.boxes(name))
            image, scaled = _rescale(image, mask, float(scale))
            mask = mask if scaled is None else scaled  # a mask in, a mask out
            h, w = image.shape
            rows = tile_origins(h, tile) if tile else [0]
            cols = tile_origins(w, tile) if tile else [0]
            t = tile or None
            for r in rows:
                for c in cols:
                    sub_img = image[r : r + t, c : c + t] if t else image
                    sub_msk = mask[r : r + t, c : c + t] if t else mask
                    sub_msk, old = relabel_sequential(sub_msk)
                    sub_cls = classes[old - 1] if len(old) else np.zeros(0, np.int16)
                    area = np.bincount(sub_msk.ravel().astype(np.int64), minlength=len(old) + 1)[1:]
                    small = np.nonzero(area < min_area)[0]
                    if len(small):
                        keep = np.ones(len(old) + 1, bool)
                        keep[small + 1] = False
                        sub_msk = np.where(keep[sub_msk], sub_msk, 0)
                        sub_msk, kept = relabel_sequential(sub_msk)
                        sub_cls = sub_cls[kept - 1] if len(kept) else np.zeros(0, np.int16)
                    boxes = boxes_from_mask(sub_msk, sub_cls)
                    writer.append(sub_img, mask=sub_msk.astype(np.uint16), boxes=boxes, name=f"{name}_y{r}_x{c}",
                                  provenance={"source_image": name, "row": int(r), "col": int(c), "scale": float(scale),
                                              "tile": int(tile)})
                    n_tiles += 1
                    n_inst += len(boxes)
    return {"path": str(output), "n_tiles": n_tiles, "n_images": len(with_masks), "n_instances": n_inst,
            "skipped": skipped, "class_names": class_names}


def import_unlabeled(
    folder: str | PathLike,
    output: str | PathLike,
    *,
    tile: int = 256,
    scale: float = 1.0,
    max_images: int | None = None,
    class_names: Sequence[str] = ("defect",),
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Build an LDM pairs file from unlabelled real images: tiles with all-background masks.

    Only image files are read (those directly in ``folder``, or in ``folder/images`` when
    it exists); label or mask files next to them are never opened.  The file is marked
    ``unlabeled`` (root attribute), so :func:`read_pairs` returns pairs that the trainer
    accepts without defects: the denoiser learns the real texture with no defect
    condition (the all-background mask, and the null condition of the mask dropout).

    Parameters
    ----------
    folder : path-like
        Folder of images (png, tif, jpg, bmp, mrc, dm3, dm4).
    output : path-like
        New HDF5 file (not replaced unless ``overwrite``).
    tile, scale : int, float
        As in :func:`import_real`.
    max_images : int, optional
        Use at most this many images, evenly spaced over the sorted names (video frames
        are strongly correlated).
    class_names : sequence of str
        Class names stored in the file (the model needs at least one; no pixel has one).

    Returns
    -------
    dict with ``path``, ``n_tiles``, ``n_images``.
    """
    _check_tiling(tile, scale)
    if max_images is not None and (int(max_images) != max_images or max_images < 1):
        raise ParameterError(f"max_images must be a positive integer, got {max_images}")
    if not list(class_names):
        raise ParameterError("need at least one class name")
    output = check_output(output, overwrite)
    folder = Path(folder)
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    files = list_images(image_dir)
    if not files:
        raise DataError(f"{image_dir} holds no images (png, tif, jpg, bmp, mrc, dm3, dm4)")
    if max_images is not None and len(files) > max_images:
        files = [files[i] for i in spread_indices(len(files), int(max_images))]
    _check_scaled_sizes({f.name: image_shape(f) for f in files}, scale, tile, where=image_dir)
    generator = {"function": "simgen.datasets.ldm_io.import_unlabeled", "source": str(image_dir.resolve()),
                 "tile": int(tile), "scale": float(scale), "max_images": max_images}
    n_tiles = 0
    with DatasetWriter(output, kind="real-unlabeled", class_names=list(class_names), generator=generator,
                       attrs={"unlabeled": True}, overwrite=overwrite) as writer:
        for f in track(files, total=len(files), description=f"import {image_dir.name}", enabled=progress):
            image, _ = _rescale(read_image(f), None, float(scale))
            h, w = image.shape
            t = tile or None
            for r in tile_origins(h, tile) if tile else [0]:
                for c in tile_origins(w, tile) if tile else [0]:
                    sub = image[r : r + t, c : c + t] if t else image
                    empty = np.zeros(sub.shape, np.uint16)
                    writer.append(sub, mask=empty, boxes=boxes_from_mask(empty), name=f"{f.stem}_y{r}_x{c}",
                                  provenance={"source_image": f.name, "row": int(r), "col": int(c),
                                              "scale": float(scale), "tile": int(tile), "unlabeled": True})
                    n_tiles += 1
    return {"path": str(output), "n_tiles": n_tiles, "n_images": len(files)}


def read_pairs(path: str | PathLike, indices: Iterable[int] | None = None) -> TrainingPairs:
    """Read images, instance masks and classes of a simgen HDF5 file as :class:`TrainingPairs`.

    Parameters
    ----------
    path : path-like
        Dataset with ``/images`` and ``/labels/masks``.
    indices : sequence of int, optional
        Read only these samples.

    Raises
    ------
    DataError
        If the file stores no images or no masks.
    """
    with open_dataset(path) as ds:
        if ds.images is None:
            raise DataError(f"{path} stores no images")
        if not ds.has("labels/masks"):
            raise DataError(f"{path} has no instance masks (/labels/masks); the LDM trains on image + mask pairs "
                            "(for a real YOLO folder with masks/ run `simgen ldm import-real`)")
        idx = range(ds.n) if indices is None else [int(i) for i in indices]
        has_boxes = "boxes" in ds.tables
        images, cmaps, insts, names, max_cls = [], [], [], [], -1
        for i in idx:
            inst = ds.mask(i)
            assert inst is not None  # the file has /labels/masks (checked above)
            boxes = ds.rows("boxes", i) if has_boxes else None
            classes = instance_classes_from_boxes(inst, boxes)
            max_cls = max(max_cls, int(classes.max(initial=-1)))
            images.append(ds.image(i))
            insts.append(inst)
            cmaps.append(class_map_from_instances(inst, classes))
            names.append(ds.name(i))
        class_names = list(ds.class_names) or [str(c) for c in range(max(max_cls, 0) + 1)]
        if max_cls >= len(class_names):
            raise DataError(f"{path}: class id {max_cls} but only {len(class_names)} class names")
        source = {"path": str(Path(path).resolve()), "kind": ds.kind, "n": len(images),
                  "indices": None if indices is None else list(idx)}
        unlabeled = bool(ds.attrs.get("unlabeled", False))
    return TrainingPairs(images, cmaps, insts, class_names, source, unlabeled)


def write_generated(
    path: str | PathLike,
    samples: Iterable[dict],
    *,
    class_names: Sequence[str] | None,
    generator: dict,
    seed: int | None = None,
    n: int | None = None,
    overwrite: bool = False,
    image_dtype: str = "uint8",
    progress: bool = False,
    attrs: dict | None = None,
) -> dict:
    """Write generated samples (dicts with ``image``, ``mask``, ``classes``, ``provenance``, ``name``).

    Boxes (x0, y0, x1, y1, class, instance, size) are derived from each instance mask.
    The file is written atomically (nothing appears at ``path`` if generation fails).

    Returns
    -------
    dict with ``path``, ``n``, ``n_defects`` and ``seconds``.
    """
    import time

    t0 = time.perf_counter()
    count = n_def = 0
    with DatasetWriter(path, kind="ldm", image_dtype=image_dtype, class_names=class_names, generator=generator,
                       seed=seed, overwrite=overwrite, attrs=attrs) as writer:
        for sample in track(samples, total=n, description=f"ldm → {Path(path).name}", enabled=progress):
            boxes = boxes_from_mask(sample["mask"], sample.get("classes"))
            writer.append(sample["image"], mask=np.asarray(sample["mask"]).astype(np.uint16), boxes=boxes,
                          provenance=sample.get("provenance"), name=sample.get("name"))
            count += 1
            n_def += len(boxes)
        if count == 0:
            raise ParameterError("no samples to write")
    return {"path": str(path), "n": count, "n_defects": n_def, "seconds": time.perf_counter() - t0}


def read_pairs_sample(path: str | PathLike, max_images: int | None = None) -> TrainingPairs:
    """:func:`read_pairs` of at most ``max_images`` samples, evenly spaced over the file."""
    with open_dataset(path) as ds:
        n = ds.n
    if max_images is None or n <= max_images:
        return read_pairs(path)
    return read_pairs(path, spread_indices(n, int(max_images)))


def copy_samples(output: str | PathLike, sources: Iterable[tuple[str | PathLike, Iterable[int] | None, str]], *,
                 kind: str, generator: dict | None = None, overwrite: bool = False,
                 class_names: Sequence[str] | None = None) -> dict:
    """Write selected samples of one or more datasets with masks into one new file.

    Used to assemble training / test sets (real tiles, + generated pairs, + simulated
    pairs).  All images must share one shape and the sources one class list.  Boxes
    are re-derived from each instance mask (class from the source's boxes); the
    provenance of every sample records its origin.

    Parameters
    ----------
    sources : sequence of ``(path, indices or None, label)``
    """
    check_output(output, overwrite)
    names = class_names
    opened: list[tuple[Dataset, Iterable[int] | None, str]] = []
    try:
        for path, indices, label in sources:
            ds = open_dataset(path)
            opened.append((ds, indices, label))
            if not ds.has("labels/masks") or ds.images is None:
                raise DataError(f"{path} needs images and /labels/masks")
            names = names if names is not None else list(ds.class_names)
            if list(ds.class_names) and list(ds.class_names) != list(names):
                raise DataError(f"{path} has classes {ds.class_names}, expected {names}")
        total = 0
        with DatasetWriter(output, kind=kind, class_names=names, generator=generator or {},
                           overwrite=overwrite) as writer:
            for ds, indices, label in opened:
                idx = range(ds.n) if indices is None else [int(i) for i in indices]
                has_boxes = "boxes" in ds.tables
                for i in idx:
                    inst = ds.mask(i)
                    assert inst is not None  # every source has /labels/masks (checked above)
                    classes = instance_classes_from_boxes(inst, ds.rows("boxes", i) if has_boxes else None)
                    writer.append(ds.image(i), mask=inst, boxes=boxes_from_mask(inst, classes),
                                  name=f"{label}/{ds.name(i)}",
                                  provenance={"origin": label, "source": str(ds.path), "index": int(i),
                                              **ds.provenance(i)})
                    total += 1
            if total == 0:
                raise ParameterError("no samples selected")
    finally:
        for ds, _, _ in opened:
            ds.close()
    return {"path": str(output), "n": total}
