"""napari reader: a simgen dataset as image, labels, shapes, points and tracks layers.

``napari film.h5`` (or a shard folder) opens, with the ``[napari]`` extra installed:

* **image**: the image stack ``(N, H, W)``;
* **labels**: instance masks, when stored;
* **shapes**: boxes as rectangles, coloured by class;
* **points**: film defects, coloured by winding-number charge (+1 red, -1 blue);
* **tracks**: ground-truth tracks of a video.

Coordinates: simgen puts pixel ``(r, c)`` on ``[c, c+1) x [r, r+1)`` (centre ``c + 0.5``); napari puts
its centre at ``c``.  Every coordinate is therefore shifted by -0.5 px, so a box drawn over a pixel
block covers exactly those pixels.  The reader returns plain layer-data tuples and needs no display
(it is tested headless, without napari).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simgen.datasets.shards.read import open_any
from simgen.errors import SimgenError

__all__ = ["get_reader", "read_dataset"]

#: simgen's continuous pixel frame → napari's pixel-centre frame.
HALF_PIXEL = 0.5
CLASS_COLORS = ("#ff8c00", "#00bfff", "#7fff00", "#ff1493", "#ffd700", "#9370db")


def get_reader(path):
    """npe2 reader hook: a function that reads ``path``, or ``None`` when it is not a simgen dataset."""
    if isinstance(path, list):
        return None
    p = Path(path)
    if p.is_dir():
        if not (p / "manifest.json").is_file():
            return None
    elif p.suffix.lower() not in (".h5", ".hdf5") and p.name != "manifest.json":
        return None
    return read_dataset


def read_dataset(path, max_images: int | None = None) -> list[tuple]:
    """Layer-data tuples ``(data, kwargs, layer_type)`` for one simgen dataset.

    Parameters
    ----------
    path : path-like
        A simgen HDF5 file, a shard folder or its ``manifest.json``.
    max_images : int, optional
        Read only the first images (large sets).

    Returns
    -------
    list of tuple
        image ``(N, H, W)`` float32, then labels ``(N, H, W)`` int32, shapes (``(4, 3)`` rectangles
        ``(frame, row, col)``), points ``(K, 3)`` and tracks ``(K, 4)`` ``(track_id, frame, row, col)``,
        each only when the dataset has it.
    """
    path = Path(path)
    if path.name == "manifest.json":
        path = path.parent
    try:
        ds = open_any(path)
    except SimgenError:
        raise
    with ds:
        n = ds.n if max_images is None else min(ds.n, int(max_images))
        name = path.stem
        layers: list[tuple] = []
        if ds.images is not None:
            stack = np.stack([ds.image(i) for i in range(n)]).astype(np.float32)
            layers.append((stack, {"name": name, "colormap": "gray", "contrast_limits": (0.0, 1.0)}, "image"))
        if ds.has("labels/masks"):
            masks = np.stack([np.asarray(ds.mask(i), np.int32) for i in range(n)])
            layers.append((masks, {"name": f"{name} masks", "opacity": 0.4}, "labels"))
        class_names = list(ds.class_names or [])
        if "boxes" in ds.tables:
            layers.append(_shapes([ds.rows("boxes", i) for i in range(n)], class_names, name))
        if "points" in ds.tables:
            layers.append(_points([ds.rows("points", i) for i in range(n)], name))
        if "tracks" in ds.tables:
            tracks = _tracks(ds.table("tracks"), n, name)
            if tracks is not None:
                layers.append(tracks)
    return [layer for layer in layers if layer is not None]


def _shapes(per_frame: list[pd.DataFrame | None], class_names: list[str], name: str) -> tuple:
    rects, classes = [], []
    for i, rows in enumerate(per_frame):
        if rows is None or not len(rows):
            continue
        x0, y0, x1, y1 = (rows[c].to_numpy(np.float64) - HALF_PIXEL for c in ("x0", "y0", "x1", "y1"))
        cls = rows["class"].to_numpy(np.int64) if "class" in rows else np.zeros(len(rows), np.int64)
        for k in range(len(rows)):
            rects.append(np.array([[i, y0[k], x0[k]], [i, y0[k], x1[k]], [i, y1[k], x1[k]], [i, y1[k], x0[k]]]))
            classes.append(int(cls[k]))
    labels = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in classes]
    colors = [CLASS_COLORS[c % len(CLASS_COLORS)] for c in classes]
    kwargs = {"name": f"{name} boxes", "shape_type": "rectangle", "edge_color": colors or "yellow",
              "face_color": "transparent", "edge_width": 1, "properties": {"class": labels}}
    return rects, kwargs, "shapes"


def _points(per_frame: list[pd.DataFrame | None], name: str) -> tuple:
    coords, charge = [], []
    for i, rows in enumerate(per_frame):
        if rows is None or not len(rows):
            continue
        y = rows["y"].to_numpy(np.float64) - HALF_PIXEL
        x = rows["x"].to_numpy(np.float64) - HALF_PIXEL
        coords.append(np.column_stack([np.full(len(rows), i, np.float64), y, x]))
        charge.append(rows["charge"].to_numpy(np.int64) if "charge" in rows else np.zeros(len(rows), np.int64))
    data = np.concatenate(coords) if coords else np.zeros((0, 3))
    q = np.concatenate(charge) if charge else np.zeros(0, np.int64)
    colors = np.where(q[:, None] > 0, [[1.0, 0.2, 0.2, 1.0]], np.where(q[:, None] < 0, [[0.2, 0.4, 1.0, 1.0]],
                                                                         [[1.0, 1.0, 0.2, 1.0]]))
    kwargs = {"name": f"{name} defects", "size": 6, "face_color": colors, "properties": {"charge": q}}
    return data, kwargs, "points"


def _tracks(table: pd.DataFrame | None, n: int, name: str) -> tuple | None:
    if table is None or not len(table):
        return None
    frame_col = "frame" if "frame" in table else "sample"
    id_col = "track_id" if "track_id" in table else "id"
    t = table[table[frame_col] < n].sort_values([id_col, frame_col])
    data = np.column_stack([t[id_col].to_numpy(np.float64), t[frame_col].to_numpy(np.float64),
                            t["y"].to_numpy(np.float64) - HALF_PIXEL, t["x"].to_numpy(np.float64) - HALF_PIXEL])
    return data, {"name": f"{name} tracks", "tail_length": 20}, "tracks"
