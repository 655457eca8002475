"""COCO JSON: reading detection annotations/results and exporting simgen datasets.

Conventions
-----------
* ``bbox`` is ``[x, y, width, height]`` in pixels with the simgen origin (top-left
  corner of the top-left pixel), so ``x0 = x, x1 = x + width``; no ``+1``.
* Category ids are written 1-based (``category_id = class + 1``); on reading,
  categories sorted by id become classes ``0..K-1``.
* Image ids are written 1-based in sample order (``image_id = sample + 1``); on
  reading, the order of the ``images`` list defines the samples.
* A *results* file (a JSON list of ``{image_id, category_id, bbox, score}``, what
  detectors and pycocotools' ``loadRes`` use) has no image or category list; it is
  read against a dataset's ``image_ids`` / ``category_ids``.
* Instance masks, when a dataset has them and its boxes carry an ``instance``
  column, are exported as compressed RLE ``segmentation`` (pycocotools format).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simgen.atomic import atomic_dir, atomic_write_text, check_output_dir
from simgen.datasets.formats.names import export_stems
from simgen.datasets.formats.text import read_text
from simgen.datasets.normalize import to_uint8
from simgen.datasets.sources import Source, open_source
from simgen.errors import DataError, ParameterError
from simgen.progress import track

__all__ = ["CocoData", "read_coco", "coco_dict", "coco_results", "write_coco_json", "export_coco"]


@dataclass
class CocoData:
    """Boxes of a COCO file as a simgen table.

    Attributes
    ----------
    boxes : DataFrame
        ``sample, x0, y0, x1, y1, class [, score]`` (float64 coordinates).
    names : list of str
        ``file_name`` of each image ('' when unknown).
    shapes : list of (H, W)
    class_names : list of str
    image_ids, category_ids : list of int
        COCO ids of samples and classes.
    is_results : bool
        Whether the file was a results list.
    """

    boxes: pd.DataFrame
    names: list = field(default_factory=list)
    shapes: list = field(default_factory=list)
    class_names: list = field(default_factory=list)
    image_ids: list = field(default_factory=list)
    category_ids: list = field(default_factory=list)
    is_results: bool = False


def _load_json(source):
    if isinstance(source, (dict, list)):
        return source, "<memory>"
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"not a COCO file: expected a path, an object or a results list, got {type(source).__name__}")
    path = Path(source)
    text = read_text(path, "COCO file", "text (JSON)")
    try:
        return json.loads(text), str(path)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


#: Largest id a results list may use when no id list is given (ids become a dense range).
MAX_ID = 10_000_000


def _top_id(anns, key: str, where: str) -> int:
    ids = [a.get(key, 0) for a in anns if isinstance(a, dict)]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise DataError(f"{where}: every {key} must be an integer")
    top = max(ids, default=0)
    if not 0 <= top <= MAX_ID:
        raise DataError(f"{where}: {key} {top} is outside 0..{MAX_ID}; pass the id list explicitly")
    return top


def _boxes_from_annotations(anns, img_index, cat_index, where) -> pd.DataFrame:
    rows, scores = [], []
    has_score = bool(anns) and all("score" in a for a in anns)
    for k, a in enumerate(anns):
        if not isinstance(a, dict):
            raise DataError(f"{where}: annotation {k} is not an object")
        try:
            bb = [float(v) for v in a["bbox"]]
            img, cat = a["image_id"], a["category_id"]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: annotation {k} needs image_id, category_id and a numeric bbox") from None
        if len(bb) != 4 or not np.all(np.isfinite(bb)):
            raise DataError(f"{where}: annotation {k} bbox must be 4 finite numbers [x, y, w, h], got {a['bbox']}")
        if bb[2] < 0 or bb[3] < 0:
            raise DataError(f"{where}: annotation {k} has a negative box size {bb}")
        if img not in img_index:
            raise DataError(f"{where}: annotation {k} refers to unknown image_id {img!r}")
        if cat not in cat_index:
            raise DataError(f"{where}: annotation {k} refers to unknown category_id {cat!r}")
        rows.append((img_index[img], bb[0], bb[1], bb[0] + bb[2], bb[1] + bb[3], cat_index[cat]))
        if has_score:
            try:
                scores.append(float(a["score"]))
            except (TypeError, ValueError):
                raise DataError(f"{where}: annotation {k} has a non-numeric score {a['score']!r}") from None
    arr = np.array(rows, np.float64).reshape(-1, 6)
    df = pd.DataFrame({
        "sample": arr[:, 0].astype(np.int64),
        "x0": arr[:, 1].astype(np.float64), "y0": arr[:, 2].astype(np.float64),
        "x1": arr[:, 3].astype(np.float64), "y1": arr[:, 4].astype(np.float64),
        "class": arr[:, 5].astype(np.int16),
    })
    if has_score:
        df["score"] = np.asarray(scores, np.float64)
    return df.sort_values("sample", kind="stable").reset_index(drop=True)


def read_coco(source: str | PathLike | dict | list, *, image_ids: Sequence[Any] | None = None,
              category_ids: Sequence[Any] | None = None) -> CocoData:
    """Read a COCO dataset JSON or a COCO results list.

    Parameters
    ----------
    source : path-like, dict or list
        ``{"images": [...], "annotations": [...], "categories": [...]}`` or a
        results list ``[{"image_id", "category_id", "bbox", "score"}, ...]``.
    image_ids, category_ids : sequence of int, optional
        For a results list: the COCO ids of the samples / classes (normally from
        the ground-truth dataset).  Default: ``image_id = sample + 1`` and
        ``category_id = class + 1`` (what :func:`export_coco` writes).

    Returns
    -------
    CocoData

    Raises
    ------
    DataError
        Malformed JSON, unknown image/category ids, negative box sizes.
    """
    data, where = _load_json(source)
    if isinstance(data, list):
        anns = data
        if image_ids is None:
            image_ids = list(range(1, _top_id(anns, "image_id", where) + 1))
        if category_ids is None:
            category_ids = list(range(1, _top_id(anns, "category_id", where) + 1))
        img_index = {i: k for k, i in enumerate(image_ids)}
        cat_index = {c: k for k, c in enumerate(category_ids)}
        boxes = _boxes_from_annotations(anns, img_index, cat_index, where)
        return CocoData(boxes, [""] * len(image_ids), [], [str(c) for c in category_ids], list(image_ids),
                        list(category_ids), is_results=True)
    if not isinstance(data, dict) or "images" not in data:
        raise DataError(f"{where}: not a COCO file (no 'images' list and not a results list)")
    images = data.get("images") or []
    cats = sorted(data.get("categories") or [], key=lambda c: c.get("id", 0))
    try:
        img_ids = [im["id"] for im in images]
        shapes = [(int(im.get("height", 0)), int(im.get("width", 0))) for im in images]
        names = [str(im.get("file_name", "")) for im in images]
        cat_ids = [c["id"] for c in cats]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: every image and category needs an 'id'") from None
    if len(set(img_ids)) != len(img_ids):
        raise DataError(f"{where}: duplicate image ids")
    anns = data.get("annotations") or []
    if not cat_ids:  # no category list: classes from the ids used
        cat_ids = sorted({a.get("category_id") for a in anns if isinstance(a, dict)})
        class_names = [str(c) for c in cat_ids]
    else:
        class_names = [str(c.get("name", c["id"])) for c in cats]
    boxes = _boxes_from_annotations(anns, {i: k for k, i in enumerate(img_ids)},
                                    {c: k for k, c in enumerate(cat_ids)}, where)
    return CocoData(boxes, names, shapes, class_names, img_ids, cat_ids)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def coco_dict(boxes: pd.DataFrame, names: Iterable[str], shapes: Iterable[tuple[int, int]], class_names: Sequence[str],
              *, masks: Callable[[int], np.ndarray | None] | None = None, info: dict | None = None,
              progress: bool = False) -> dict:
    """Build a COCO dataset dict from a simgen box table.

    Parameters
    ----------
    boxes : DataFrame
        ``sample, x0, y0, x1, y1, class [, score, instance]``.
    names : sequence of str
        ``file_name`` per sample.
    shapes : sequence of (H, W)
        Image size per sample.
    class_names : sequence of str
    masks : callable, optional
        ``masks(sample) -> instance label image or None``; with an ``instance``
        column, each box gets the RLE of its instance as ``segmentation``.  Every other
        box gets an empty RLE mask of its image's size, so ``segmentation`` is always there.
    info : dict, optional
        COCO ``info`` block.
    progress : bool
        Show a progress bar over the annotations on stderr (``"COCO annotations"``).
    """
    names, shapes = list(names), list(shapes)
    if len(names) != len(shapes):
        raise ParameterError("names and shapes must have one entry per sample")
    n_cls = int(boxes["class"].max()) + 1 if len(boxes) else 0
    class_names = list(class_names) + [str(c) for c in range(len(class_names), n_cls)]
    out: dict[str, Any] = {
        "info": info or {"description": "exported by simgen"},
        "images": [{"id": i + 1, "file_name": n, "height": int(s[0]), "width": int(s[1])}
                   for i, (n, s) in enumerate(zip(names, shapes))],
        "categories": [{"id": c + 1, "name": str(n), "supercategory": "defect"} for c, n in enumerate(class_names)],
        "annotations": [],
    }
    if len(boxes) == 0:
        return out
    b = boxes.sort_values("sample", kind="stable")
    s = b["sample"].to_numpy(np.int64)
    xy = b[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    cls = b["class"].to_numpy(np.int64)
    score = b["score"].to_numpy(np.float64) if "score" in b.columns else None
    inst = b["instance"].to_numpy(np.int64) if "instance" in b.columns and masks is not None else None
    current, mask = -1, None
    for k in track(range(len(b)), total=len(b), description="COCO annotations", enabled=progress):
        w, h = xy[k, 2] - xy[k, 0], xy[k, 3] - xy[k, 1]
        ann = {"id": k + 1, "image_id": int(s[k]) + 1, "category_id": int(cls[k]) + 1,
               "bbox": [round(float(xy[k, 0]), 4), round(float(xy[k, 1]), 4), round(float(w), 4), round(float(h), 4)],
               "area": round(float(w * h), 4), "iscrowd": 0}
        if score is not None:
            ann["score"] = round(float(score[k]), 6)
        if inst is not None and masks is not None:  # inst is only set with masks
            if s[k] != current:
                current, mask = s[k], masks(int(s[k]))
            if mask is not None and inst[k] > 0:
                region = mask == inst[k]
                if region.any():
                    ann["segmentation"] = _rle(region)
                    ann["area"] = int(region.sum())
        if "segmentation" not in ann:
            # always present, so COCOeval(..., "segm") runs on any export: a box without an
            # instance mask (catalysts, some video boxes) has an empty one
            h, w = (int(v) for v in shapes[int(s[k])])
            ann["segmentation"] = _rle(np.zeros((h, w), bool))
        out["annotations"].append(ann)
    return out


def coco_results(boxes: pd.DataFrame, *, image_ids: Sequence[Any] | None = None,
                 category_ids: Sequence[Any] | None = None) -> list:
    """Predictions as a COCO results list (``image_id, category_id, bbox, score``)."""
    out = []
    s = boxes["sample"].to_numpy(np.int64)
    xy = boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    cls = boxes["class"].to_numpy(np.int64) if "class" in boxes.columns else np.zeros(len(boxes), np.int64)
    score = boxes["score"].to_numpy(np.float64) if "score" in boxes.columns else np.ones(len(boxes))
    for k in range(len(boxes)):
        img = image_ids[s[k]] if image_ids is not None else int(s[k]) + 1
        cat = category_ids[cls[k]] if category_ids is not None else int(cls[k]) + 1
        out.append({"image_id": int(img), "category_id": int(cat),
                    "bbox": [float(xy[k, 0]), float(xy[k, 1]), float(xy[k, 2] - xy[k, 0]), float(xy[k, 3] - xy[k, 1])],
                    "score": float(score[k])})
    return out


def write_coco_json(data: dict | list, path: str | PathLike, overwrite: bool = False) -> Path:
    """Write a COCO dict or results list to ``path`` atomically."""

    return atomic_write_text(path, json.dumps(data, separators=(",", ":")), overwrite=overwrite)


def export_coco(source: str | PathLike | Source, out_dir: str | PathLike, *, table: str = "boxes",
                images: bool = True, overwrite: bool = False, progress: bool = False) -> Path:
    """Export labelled images as a COCO folder.

    Layout: ``out_dir/annotations.json`` and, with ``images``, ``out_dir/images/<name>.png``
    (8-bit greyscale; ``file_name`` in the JSON is ``<name>.png``).  The folder is
    written under a temporary name and renamed when complete.  ``<name>`` is the sample
    name made safe and unique by :func:`~simgen.datasets.formats.names.export_stems`
    (``a/x.png`` and ``b/x.png`` become ``x_<hash>.png`` each; ``..`` or absolute paths never
    leave the folder).

    Parameters
    ----------
    source : path-like, Source or Dataset
        Anything :func:`~simgen.datasets.sources.open_source` reads with a box table: a
        simgen HDF5 file (label-only ones with ``images=False``), a sharded set
        (directory, ``manifest.json`` or ``virtual.h5``) or a YOLO folder.
    out_dir : path-like
        Destination folder (must not exist unless ``overwrite``).
    table : str
        Table holding the boxes.
    images : bool
        Also write the images (otherwise only the JSON; ``file_name`` still set).
    overwrite : bool
    progress : bool
        Show progress bars on stderr: the annotations (``"COCO annotations"``, masks encoded
        there), then the images (``"export coco"``).

    Returns
    -------
    Path of ``annotations.json``.
    """

    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    with open_source(source, table=table, require_images=False) as src:
        if not src.has_labels:
            raise DataError(f"{src.path} has no {table!r} table (has {src.tables or 'none'})")
        if images and not src.has_images:
            raise DataError(f"{src.path} stores no images; export with images=False (--no-images)")
        boxes = src.read_table()
        names = [f"{s}.png" for s in export_stems(src.names)]
        shapes = [src.shape(k) for k in range(len(src))]
        data = coco_dict(boxes, names, shapes, src.class_names, masks=src.mask if src.has_masks else None,
                         info={"description": f"simgen export of {src.path.name}", "kind": src.sample_kind},
                         progress=progress)
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            if images:
                from PIL import Image

                (tmp / "images").mkdir()
                for k, name in track(list(enumerate(names)), description="export coco", enabled=progress):
                    Image.fromarray(to_uint8(src.image(k))).save(tmp / "images" / name)
            (tmp / "annotations.json").write_text(json.dumps(data, separators=(",", ":")))
    return out_dir / "annotations.json"

