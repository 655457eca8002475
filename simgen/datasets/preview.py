"""Contact sheets of a dataset with its annotations drawn (PNG).

Points are drawn by charge (+1 red "+", −1 blue "o", other charges green), boxes
coloured by class, instance masks as outlines and tracks as trajectories up to
each frame.  Reads every input :func:`~simgen.datasets.sources.open_source` reads.
Used by ``simgen preview``.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import atomic_path
from simgen.datasets.h5io import Dataset
from simgen.datasets.sources import Source, open_source
from simgen.datasets.video_io import preview_pairs
from simgen.errors import ParameterError
from simgen.progress import track

__all__ = ["preview_sheet", "CLASS_COLOURS"]

CLASS_COLOURS = ["#ff3b30", "#0a84ff", "#ffd60a", "#30d158", "#bf5af2", "#ff9f0a", "#64d2ff", "#ff375f"]


def _draw_sample(ax, src: Source, k: int, boxes: bool, masks: bool, tracks_df: pd.DataFrame | None) -> None:
    from matplotlib.patches import Rectangle

    img = src.image(k)
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if masks:
        m = src.mask(k)
        if m is not None and m.any():
            from skimage.segmentation import find_boundaries

            edge = find_boundaries(m, mode="inner")
            overlay = np.zeros((*m.shape, 4), np.float32)
            overlay[edge] = (0.2, 1.0, 0.3, 0.9)
            ax.imshow(overlay, interpolation="nearest")
    if boxes:
        b = src.boxes(k)
        if b is not None:
            for x0, y0, x1, y1, c in b[["x0", "y0", "x1", "y1", "class"]].to_numpy():
                colour = CLASS_COLOURS[int(c) % len(CLASS_COLOURS)]
                # box coordinates are pixel edges; imshow puts pixel centres on integers
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=0.8, ec=colour))
    p = src.rows("points", k)
    if p is not None and len(p):
        # point coordinates are continuous (pixel centre at +0.5); imshow puts centres on integers
        x, y, q = p["x"].to_numpy() - 0.5, p["y"].to_numpy() - 0.5, p["charge"].to_numpy()
        ax.scatter(x[q > 0], y[q > 0], marker="+", s=60, c="#ff3b30", linewidths=1.5, label="+1")
        ax.scatter(x[q < 0], y[q < 0], marker="o", s=40, facecolors="none", edgecolors="#0a84ff", linewidths=1.5, label="−1")
        other = (q == 0) | (np.abs(q) > 1)
        if other.any():
            ax.scatter(x[other], y[other], marker="x", s=40, c="#30d158", linewidths=1.2)
    if tracks_df is not None and len(tracks_df):
        past = tracks_df[tracks_df["sample"] <= k]
        for tid, g in past.groupby("track_id"):
            colour = CLASS_COLOURS[int(tid) % len(CLASS_COLOURS)]
            ax.plot(g["x"].to_numpy() - 0.5, g["y"].to_numpy() - 0.5, "-", lw=0.8, c=colour)
            if g["sample"].iloc[-1] == k:
                ax.plot(g["x"].iloc[-1] - 0.5, g["y"].iloc[-1] - 0.5, ".", ms=3, c=colour)
    ax.set_axis_off()


def preview_sheet(
    source: str | PathLike | Source | Dataset,
    out: str | PathLike,
    *,
    n: int = 16,
    start: int = 0,
    cols: int | None = None,
    boxes: bool = True,
    masks: bool = True,
    overwrite: bool = False,
    dpi: int = 100,
    progress: bool = False,
) -> Path:
    """Render up to ``n`` samples from ``start`` as a grid PNG with annotations.

    Parameters
    ----------
    source : path-like, Source or Dataset
        Anything :func:`~simgen.datasets.sources.open_source` reads: a simgen HDF5 file,
        a sharded set (directory, ``manifest.json`` or ``virtual.h5``), a YOLO folder or
        an image folder.  Filament pair files are drawn as pairs with their change maps.
    out : path-like
        Output PNG (written atomically; must not exist unless ``overwrite``).
    n, start : int
        How many samples, from which sample number.
    cols : int, optional
        Grid columns (default: ceil(sqrt(n))).
    boxes, masks : bool
        Draw boxes / instance-mask outlines when present.
    overwrite : bool
        Replace an existing ``out``.
    dpi : int
        Resolution of the PNG.
    progress : bool
        Show a progress bar over the samples drawn on stderr (``"preview"``).

    Returns
    -------
    Path of the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if n < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    with open_source(source) as src:
        ds = src.dataset
        if isinstance(ds, Dataset) and ds.has("pairs/change_a1"):  # filament change pairs: frames + maps
            return preview_pairs(ds, out, n=min(n, 8), start=start, overwrite=overwrite, dpi=dpi)
        if not 0 <= start < len(src):
            raise ParameterError(f"start {start} out of range for {len(src)} samples")
        idx = list(range(start, min(len(src), start + n)))
        cols = cols or int(np.ceil(np.sqrt(len(idx))))
        rows = int(np.ceil(len(idx) / cols))
        h, w = np.max([src.shape(k) for k in idx], axis=0)
        scale = 3.0 / max(h, w)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * w * scale, rows * h * scale + 0.4), squeeze=False)
        tracks_df = src.read_table("tracks")
        for ax in axes.flat:
            ax.set_axis_off()
        for k, ax in zip(track(idx, description="preview", enabled=progress), axes.flat):
            _draw_sample(ax, src, k, boxes, masks, tracks_df)
            ax.set_title(f"#{k}", fontsize=7, pad=2)
        title = f"{src.path.name}: {src.sample_kind}, {len(src)} samples"
        if src.class_names:
            title += "  classes: " + ", ".join(f"{c}={name}" for c, name in enumerate(src.class_names))
        fig.suptitle(title, fontsize=8)
        fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
        with atomic_path(out, overwrite) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
        plt.close(fig)
    return Path(out)
