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
from os import PathLike
from pathlib import Path

import numpy as np

from simgen.atomic import atomic_dir, check_output_dir
from simgen.datasets.formats.yolo_folder import (
    BOX_COLUMNS,
    YoloFolder,
    format_yolo_labels,
    open_yolo_folder,
    read_yolo_labels,
)
from simgen.datasets.normalize import to_uint8
from simgen.datasets.sources import Source, open_source
from simgen.errors import DataError, ParameterError

__all__ = [
    "read_yolo_labels",
    "format_yolo_labels",
    "YoloFolder",
    "open_yolo_folder",
    "export_yolo",
    "BOX_COLUMNS",
]


def export_yolo(
    source: str | PathLike | Source,
    out_dir: str | PathLike,
    *,
    val_fraction: float = 0.0,
    seed: int = 0,
    min_box: float = 1.0,
    overwrite: bool = False,
    table: str = "boxes",
) -> Path:
    """Export labelled images to a YOLO folder Ultralytics can train from.

    Layout: ``images/{train,val}/<name>.png`` (8-bit greyscale), ``labels/{train,val}/<name>.txt``,
    ``data.yaml`` (absolute ``path``, ``train``, ``val``, ``names``) and ``classes.txt``.
    With ``val_fraction = 0`` everything goes to ``train`` and ``val`` points at it too.

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
        Drop boxes smaller than this many pixels after clipping.
    overwrite : bool
        Replace an existing ``out_dir``.
    table : str
        Which table holds the boxes.

    Returns
    -------
    Path of ``data.yaml``.
    """
    import yaml
    from PIL import Image

    out_dir = Path(out_dir)
    if not 0.0 <= val_fraction < 1.0:
        raise ParameterError(f"val_fraction must be in [0, 1), got {val_fraction}")
    check_output_dir(out_dir, overwrite)
    with open_source(source, table=table) as src:
        if not src.has_labels:
            raise DataError(f"{src.path} has no {table!r} table (has {src.tables or 'none'})")
        n = len(src)
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0x9010,)))
        is_val = np.zeros(n, bool)
        n_val = int(round(val_fraction * n))
        if n_val:
            is_val[rng.choice(n, n_val, replace=False)] = True
        top_class = -1
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            for split in ("train", "val"):
                (tmp / "images" / split).mkdir(parents=True)
                (tmp / "labels" / split).mkdir(parents=True)
            for k in range(n):
                split = "val" if is_val[k] else "train"
                stem = _safe_stem(src.name(k))
                image = src.image(k)
                boxes = src.boxes(k)
                if boxes is not None and len(boxes):
                    top_class = max(top_class, int(boxes["class"].max()))
                Image.fromarray(to_uint8(image)).save(tmp / "images" / split / f"{stem}.png")
                h, w = image.shape
                (tmp / "labels" / split / f"{stem}.txt").write_text(format_yolo_labels(boxes, w, h, min_size=min_box))
            names = src.class_names or [str(c) for c in range(top_class + 1)] or ["0"]
            data = {
                "path": str(out_dir.resolve()),
                "train": "images/train",
                "val": "images/val" if n_val else "images/train",
                "names": {c: name for c, name in enumerate(names)},
            }
            (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            (tmp / "classes.txt").write_text("".join(f"{name}\n" for name in names))
            (tmp / "source.json").write_text(
                json.dumps({"source": str(src.path.resolve()), "n": n, "val": int(n_val), "seed": seed})
            )
    return out_dir / "data.yaml"


def _safe_stem(name: str) -> str:
    stem = Path(name).stem or name
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
