"""Contact sheets of a dataset with its annotations drawn (PNG).

Points are drawn by charge (+1 red "+", −1 blue "o", other charges green), boxes
coloured by class, instance masks as outlines and tracks as trajectories up to
each frame.  Used by ``simgen preview``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simgen.atomic import atomic_path
from simgen.datasets.h5io import Dataset, open_dataset
from simgen.errors import DataError, ParameterError

__all__ = ["preview_sheet", "CLASS_COLOURS"]

CLASS_COLOURS = ["#ff3b30", "#0a84ff", "#ffd60a", "#30d158", "#bf5af2", "#ff9f0a", "#64d2ff", "#ff375f"]


def _draw_sample(ax, ds: Dataset, i: int, boxes: bool, masks: bool, tracks_df) -> None:
    from matplotlib.patches import Rectangle

    img = ds.image(i)
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if masks:
        m = ds.mask(i)
        if m is not None and m.any():
            from skimage.segmentation import find_boundaries

            edge = find_boundaries(m, mode="inner")
            overlay = np.zeros((*m.shape, 4), np.float32)
            overlay[edge] = (0.2, 1.0, 0.3, 0.9)
            ax.imshow(overlay, interpolation="nearest")
    if boxes:
        b = ds.rows("boxes", i)
        if b is not None:
            for x0, y0, x1, y1, c in b[["x0", "y0", "x1", "y1", "class"]].to_numpy():
                colour = CLASS_COLOURS[int(c) % len(CLASS_COLOURS)]
                # box coordinates are pixel edges; imshow puts pixel centres on integers
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=0.8, ec=colour))
    p = ds.rows("points", i)
    if p is not None and len(p):
        # point coordinates are continuous (pixel centre at +0.5); imshow puts centres on integers
        x, y, q = p["x"].to_numpy() - 0.5, p["y"].to_numpy() - 0.5, p["charge"].to_numpy()
        ax.scatter(x[q > 0], y[q > 0], marker="+", s=60, c="#ff3b30", linewidths=1.5, label="+1")
        ax.scatter(x[q < 0], y[q < 0], marker="o", s=40, facecolors="none", edgecolors="#0a84ff", linewidths=1.5, label="−1")
        other = (q == 0) | (np.abs(q) > 1)
        if other.any():
            ax.scatter(x[other], y[other], marker="x", s=40, c="#30d158", linewidths=1.2)
    if tracks_df is not None and len(tracks_df):
        past = tracks_df[tracks_df["sample"] <= i]
        for tid, g in past.groupby("track_id"):
            colour = CLASS_COLOURS[int(tid) % len(CLASS_COLOURS)]
            ax.plot(g["x"].to_numpy() - 0.5, g["y"].to_numpy() - 0.5, "-", lw=0.8, c=colour)
            if g["sample"].iloc[-1] == i:
                ax.plot(g["x"].iloc[-1] - 0.5, g["y"].iloc[-1] - 0.5, ".", ms=3, c=colour)
    ax.set_axis_off()


def preview_sheet(
    source,
    out,
    *,
    n: int = 16,
    start: int = 0,
    cols: int | None = None,
    boxes: bool = True,
    masks: bool = True,
    overwrite: bool = False,
    dpi: int = 100,
) -> Path:
    """Render up to ``n`` samples from ``start`` as a grid PNG with annotations.

    Parameters
    ----------
    source : path-like or Dataset
    out : path-like
        Output PNG (written atomically; must not exist unless ``overwrite``).
    n, start : int
        How many samples, from which index.
    cols : int, optional
        Grid columns (default: ceil(sqrt(n))).
    boxes, masks : bool
        Draw boxes / instance-mask outlines when present.

    Returns
    -------
    Path of the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if n < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    own = not isinstance(source, Dataset)
    ds = open_dataset(source) if own else source
    try:
        if ds.has("pairs/change_a1"):  # filament change pairs: frames + change maps per pair
            from simgen.datasets.video_io import preview_pairs

            return preview_pairs(ds, out, n=min(n, 8), start=start, overwrite=overwrite, dpi=dpi)
        if ds.images is None:
            raise DataError(f"{ds.path} stores no images to preview")
        if not 0 <= start < ds.n:
            raise ParameterError(f"start {start} out of range for {ds.n} samples")
        idx = list(range(start, min(ds.n, start + n)))
        cols = cols or int(np.ceil(np.sqrt(len(idx))))
        rows = int(np.ceil(len(idx) / cols))
        h, w = ds.image_shape
        scale = 3.0 / max(h, w)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * w * scale, rows * h * scale + 0.4), squeeze=False)
        tracks_df = ds.table("tracks")
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, i in zip(axes.flat, idx):
            _draw_sample(ax, ds, i, boxes, masks, tracks_df)
            ax.set_title(f"#{i}", fontsize=7, pad=2)
        title = f"{ds.path.name}: {ds.kind}, {ds.n} samples"
        if ds.class_names:
            title += "  classes: " + ", ".join(
                f"{k}={name}" for k, name in enumerate(ds.class_names)
            )
        fig.suptitle(title, fontsize=8)
        fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
        with atomic_path(out, overwrite) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
        plt.close(fig)
    finally:
        if own:
            ds.close()
    return Path(out)
