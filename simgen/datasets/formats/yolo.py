"""YOLO folders: exporting simgen data to the layout Ultralytics trains from.

A YOLO folder is ``root/images/<stem>.<ext>`` + ``root/labels/<stem>.txt`` with one
line per object, ``class xc yc w h [confidence]`` normalised by the image width
and height (reading: :mod:`simgen.datasets.formats.yolo_folder`, whose names are
re-exported here).

Export writes exactly that layout plus a ``data.yaml`` that Ultralytics trains
from.  The whole folder is written under a temporary name and renamed at the
end, so an interrupted export never leaves a half folder under the final name.
"""

from __future__ import annotations

import json
import math
from os import PathLike
from pathlib import Path

import numpy as np

from simgen.atomic import atomic_dir, check_output_dir
from simgen.datasets.formats.names import export_stems
from simgen.datasets.formats.yolo_folder import (
    BOX_COLUMNS,
    DROP_REASONS,
    YoloFolder,
    format_yolo_labels,
    open_yolo_folder,
    read_yolo_labels,
    yolo_drop_reasons,
)
from simgen.datasets.normalize import NORMALIZE, normalize_image, to_uint8
from simgen.datasets.sources import Source, open_source
from simgen.errors import DataError, ParameterError
from simgen.progress import track

__all__ = [
    "read_yolo_labels",
    "format_yolo_labels",
    "YoloFolder",
    "open_yolo_folder",
    "export_yolo",
    "read_export_summary",
    "BOX_COLUMNS",
]


def export_yolo(
    source: str | PathLike | Source,
    out_dir: str | PathLike,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    min_box: float = 1.0,
    normalize: str = "percentile",
    overwrite: bool = False,
    table: str = "boxes",
    progress: bool = False,
) -> Path:
    """Export labelled images to a YOLO folder Ultralytics can train from.

    Layout: ``images/{train,val}/<name>.png`` (8-bit greyscale), ``labels/{train,val}/<name>.txt``,
    ``data.yaml``, ``classes.txt`` and ``source.json`` (input, split, counts, samples whose
    file name is not the stem of their name).

    * ``data.yaml`` has no ``path:`` key: Ultralytics then resolves ``train``/``val`` against the
      folder holding ``data.yaml``, so the folder can be moved or copied elsewhere.  It says
      ``channels: 1`` (greyscale), as the data ``simgen train yolo`` writes.
    * Images are contrast-normalised per image like ``simgen train yolo`` does
      (:func:`~simgen.datasets.normalize.normalize_image`, default percentiles 0.5/99.5) before the
      8-bit conversion, so 12- or 16-bit data that fills a small part of its range does not
      come out near-black; ``normalize="none"`` keeps stored levels (clipped to [0, 1]).
    * With ``val_fraction = 0`` (or a single sample) there is no validation split: only
      ``images/train`` is written and ``data.yaml`` says ``val: null`` with a comment.
      Ultralytics' ``check_det_dataset`` accepts that file; training refuses it ("'val:' images
      not found") instead of validating on the training images.  With ``val_fraction > 0`` at
      least one sample and at most ``n - 1`` go to ``val`` (seeded).
    * File names come from :func:`~simgen.datasets.formats.names.export_stems`: sanitised,
      unique across both splits and stable (``a/x.png`` and ``b/x.png`` get a short hash each).
    * Boxes are clipped to the image; boxes that are non-finite, outside the image or smaller
      than ``min_box`` after clipping are dropped and counted per reason in ``source.json``
      (``boxes.dropped``); class ids beyond the class names get names ``"<id>"``.

    Parameters
    ----------
    source : path-like or Source
        Anything :func:`~simgen.datasets.sources.open_source` reads with a box table: a
        simgen HDF5 file, a sharded set (directory, ``manifest.json`` or ``virtual.h5``)
        or a YOLO folder.
    out_dir : path-like
        Destination folder (must not exist unless ``overwrite``).
    val_fraction : float in [0, 1)
        Fraction of samples held out for validation (seeded random split).
    seed : int
        Seed of that split.
    min_box : float
        Drop boxes narrower or lower than this many pixels after clipping (finite, >= 0).
    normalize : {"percentile", "minmax", "none"}
        Per-image contrast normalisation before the 8-bit conversion (as ``simgen train yolo``).
    overwrite : bool
        Replace an existing ``out_dir``.
    table : str
        Which table holds the boxes.
    progress : bool
        Show a progress bar over the images on stderr (``"export yolo"``).

    Returns
    -------
    Path of ``data.yaml``.
    """
    import yaml
    from PIL import Image

    out_dir = Path(out_dir)
    if not 0.0 <= val_fraction < 1.0:
        raise ParameterError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not (math.isfinite(min_box) and min_box >= 0):
        raise ParameterError(f"min_box must be a finite number of pixels >= 0, got {min_box}")
    if normalize not in NORMALIZE:
        raise ParameterError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    check_output_dir(out_dir, overwrite)
    with open_source(source, table=table) as src:
        if not src.has_labels:
            raise DataError(f"{src.path} has no {table!r} table (has {src.tables or 'none'})")
        n = len(src)
        is_val = _split(n, val_fraction, seed)
        n_val = int(is_val.sum())
        names = src.names
        stems = export_stems(names)
        splits = ("train", "val") if n_val else ("train",)
        dropped = np.zeros(len(DROP_REASONS), np.int64)
        top_class = -1
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            for split in splits:
                (tmp / "images" / split).mkdir(parents=True)
                (tmp / "labels" / split).mkdir(parents=True)
            for k in track(range(n), total=n, description="export yolo", enabled=progress):
                split = "val" if is_val[k] else "train"
                image = normalize_image(src.image(k), normalize)
                boxes = src.boxes(k)
                h, w = image.shape
                if boxes is not None and len(boxes):
                    top_class = max(top_class, int(boxes["class"].max()))
                    dropped += np.bincount(yolo_drop_reasons(boxes, w, h, min_box), minlength=len(DROP_REASONS))
                Image.fromarray(to_uint8(image)).save(tmp / "images" / split / f"{stems[k]}.png")
                (tmp / "labels" / split / f"{stems[k]}.txt").write_text(
                    format_yolo_labels(boxes, w, h, min_size=min_box))
            class_names = list(src.class_names) or ["0"]
            class_names += [str(c) for c in range(len(class_names), top_class + 1)]
            data = {
                "train": "images/train",
                "val": "images/val" if n_val else None,
                "names": dict(enumerate(class_names)),
                "channels": 1,
            }
            header = "" if n_val else NO_VAL_COMMENT
            (tmp / "data.yaml").write_text(header + yaml.safe_dump(data, sort_keys=False))
            (tmp / "classes.txt").write_text("".join(f"{name}\n" for name in class_names))
            summary = {
                "source": str(src.path.resolve()), "n": n, "train": n - n_val, "val": n_val, "seed": seed,
                "normalize": normalize, "min_box": min_box,
                "boxes": {"written": int(dropped[0]),
                          "dropped": {r: int(c) for r, c in zip(DROP_REASONS[1:], dropped[1:]) if c}},
                "renamed": {s: name for s, name in zip(stems, names) if s != Path(name).stem},
            }
            (tmp / "source.json").write_text(json.dumps(summary, indent=1))
    return out_dir / "data.yaml"


#: First line of a ``data.yaml`` without a validation split.
NO_VAL_COMMENT = ("# no validation split (val_fraction 0): Ultralytics trains only with one; "
                  "re-export with --val-fraction > 0 or give it a val set\n")


def read_export_summary(out_dir: str | PathLike) -> dict:
    """The ``source.json`` of a folder written by :func:`export_yolo` (input, split, box counts, renames)."""
    path = Path(out_dir) / "source.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"{path} is missing or not JSON (not a folder written by simgen export yolo)") from None


def _split(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """``(n,)`` bool: which samples go to ``val`` (seeded; >= 1 and <= n - 1 of them when ``val_fraction > 0``)."""
    is_val = np.zeros(n, bool)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    if n_val:
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0x9010,)))
        is_val[rng.choice(n, n_val, replace=False)] = True
    return is_val
