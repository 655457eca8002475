"""Writing in-situ videos and filament change pairs to the simgen HDF5 schema.

Videos (``kind = "video"``): one sample per frame with its image, instance mask
(ids = track ids), ``boxes`` and ``tracks`` rows (``sample`` = frame, ``track_id``,
``x, y`` centre, ``x0, y0, x1, y1`` tight box of the mask, ``class``, ``size``);
exact lifetimes under ``/video/lifetimes/{track_id, birth, death, cause,
merged_into}`` (frames inclusive; ``cause`` indexes ``/video/lifetimes``'s
``causes`` attribute).

Filament sequences (``kind = "filament"``): every frame of every sequence is a
sample (image; ``labels/masks`` = filament instance ids; ``boxes`` of filaments and
catalyst particles); per-frame binary areas ``/filament/a1`` (filament) and
``/filament/a2`` (hollow core), ``/filament/sequence`` and ``/filament/frame``; the
pairs under ``/pairs``: ``index`` (M, 2) sample indices ``(first, second)``,
``gap`` (M,), ``direction`` (M,) (+1 forward, -1 backward), ``change_a1`` and
``change_a2`` (M, H, W) uint8 with classes 0 background, 1 appearing,
2 disappearing, 3 unchanged-present (names in the ``classes`` attribute).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simgen.atomic import atomic_path
from simgen.datasets.generate import append_sample
from simgen.datasets.h5io import Dataset, DatasetWriter, open_dataset
from simgen.errors import ParameterError
from simgen.progress import track
from simgen.simulate.video import END_CAUSES

if TYPE_CHECKING:
    import pandas as pd

    from simgen.simulate.filament import FilamentSampler
    from simgen.simulate.film_video import FilmVideoSampler
    from simgen.simulate.video import VideoSampler

__all__ = ["write_video", "write_filament", "write_pair_tables", "read_lifetimes", "read_pairs", "preview_pairs", "CHANGE_CLASSES"]

#: Per-pixel change classes of filament pairs.
CHANGE_CLASSES = ("background", "appearing", "disappearing", "unchanged")


def write_video(path: str | PathLike, sampler: VideoSampler | FilmVideoSampler, *, overwrite: bool = False,
                image_dtype: str = "uint8", progress: bool = False) -> Path:
    """Write every frame of a video sampler to one HDF5 file, atomically.

    ``sampler`` is a :class:`~simgen.simulate.video.VideoSampler` (TEM) or a
    :class:`~simgen.simulate.film_video.FilmVideoSampler` (coarsening film): the lifetimes'
    ``causes`` attribute comes from its ``end_causes`` (default :data:`END_CAUSES`) and its
    ``video_arrays`` (film: ``step``, ``time`` per frame) go under ``/video``.
    """

    with DatasetWriter.for_sampler(
        path, sampler, image_dtype=image_dtype, overwrite=overwrite,
        attrs={"n_frames": int(sampler.n_frames), "n_tracks": int(sampler.n_tracks)},
    ) as writer:
        for t in track(range(sampler.n_frames), total=sampler.n_frames, description=f"video → {Path(path).name}",
                       enabled=progress):
            append_sample(writer, sampler(t))
        for name, values in sampler.lifetimes.items():
            writer.create_array(f"video/lifetimes/{name}", np.asarray(values))
        writer.set_group_attrs("video/lifetimes", causes=list(getattr(sampler, "end_causes", END_CAUSES)))
        for name, values in getattr(sampler, "video_arrays", {}).items():
            writer.create_array(f"video/{name}", np.asarray(values))
    return Path(path)


def read_lifetimes(ds: Dataset) -> pd.DataFrame:
    """Lifetimes table of an open video dataset (``track_id, birth, death, cause, merged_into``)."""
    import pandas as pd

    if not ds.has("video/lifetimes/track_id"):
        raise ParameterError(f"{ds.path} has no /video/lifetimes (not a simgen video)")
    cols = ("track_id", "birth", "death", "cause", "merged_into")
    return pd.DataFrame({c: ds.array(f"video/lifetimes/{c}") for c in cols})


def write_filament(path: str | PathLike, sampler: FilamentSampler, n: int, *, overwrite: bool = False,
                   image_dtype: str = "uint8", progress: bool = False) -> tuple[Path, int]:
    """Write ``n`` sequences of a :class:`~simgen.simulate.filament.FilamentSampler` and their pairs.

    Returns
    -------
    (path, number of pairs)
    """
    if int(n) != n or n < 1:
        raise ParameterError(f"number of sequences must be a positive integer, got {n}")
    cfg = sampler.config
    h, w = cfg.shape
    pairs_template = sampler.pairs()
    m_per = len(pairs_template)
    total_pairs = m_per * n
    with DatasetWriter.for_sampler(
        path, sampler, image_dtype=image_dtype, overwrite=overwrite,
        attrs={"n_sequences": int(n), "frames_per_sequence": int(cfg.frames), "n_pairs": int(total_pairs)},
    ) as writer:
        comp: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "chunks": (1, h, w)}
        a1 = writer.create_array("filament/a1", shape=(n * cfg.frames, h, w), dtype="u1", **comp)
        a2 = writer.create_array("filament/a2", shape=(n * cfg.frames, h, w), dtype="u1", **comp)
        c1 = writer.create_array("pairs/change_a1", shape=(total_pairs, h, w), dtype="u1", **comp)
        c2 = writer.create_array("pairs/change_a2", shape=(total_pairs, h, w), dtype="u1", **comp)
        index = np.zeros((total_pairs, 2), np.int64)
        gap = np.zeros(total_pairs, np.int64)
        direction = np.zeros(total_pairs, np.int8)
        seq_of = np.repeat(np.arange(n), cfg.frames)
        frame_of = np.tile(np.arange(cfg.frames), n)
        for s in track(range(n), total=n, description=f"filament → {Path(path).name}", enabled=progress):
            seq = sampler(s)
            base = s * cfg.frames
            for t, frame in enumerate(seq["frames"]):
                append_sample(writer, frame)
                a1[base + t] = seq["a1"][t]
                a2[base + t] = seq["a2"][t]
            for j, pr in enumerate(seq["pairs"]):
                k = s * m_per + j
                index[k] = (base + pr["first"], base + pr["second"])
                gap[k] = pr["gap"]
                direction[k] = pr["direction"]
                c1[k] = pr["change_a1"]
                c2[k] = pr["change_a2"]
        write_pair_tables(writer, sequence=seq_of, frame=frame_of, index=index, gap=gap, direction=direction)
    return Path(path), total_pairs


def write_pair_tables(writer: DatasetWriter, *, sequence: np.ndarray, frame: np.ndarray, index: np.ndarray,
                      gap: np.ndarray, direction: np.ndarray) -> None:
    """Write the tables of a filament pair file and the ``/pairs`` attributes (change classes, targets).

    Parameters
    ----------
    writer : DatasetWriter
    sequence, frame : (N,) int
        ``/filament/sequence`` and ``/filament/frame``: the sequence and time index of every frame.
    index : (M, 2) int
        ``/pairs/index``: the frames (first, second) of every pair.
    gap, direction : (M,) int
        ``/pairs/gap`` and ``/pairs/direction`` (+1 forward, -1 backward, 0 self).
    """
    writer.create_array("filament/sequence", sequence)
    writer.create_array("filament/frame", frame)
    writer.create_array("pairs/index", index)
    writer.create_array("pairs/gap", gap)
    writer.create_array("pairs/direction", direction)
    writer.set_group_attrs("pairs", classes=list(CHANGE_CLASSES), targets=["a1 filament area", "a2 hollow core"])


def read_pairs(ds: Dataset) -> dict[str, Any]:
    """Pair arrays of an open filament dataset: ``index, gap, direction`` (change maps stay lazy)."""
    if not ds.has("pairs/index"):
        raise ParameterError(f"{ds.path} has no /pairs (not a simgen filament dataset)")
    return {
        "index": ds.array("pairs/index"),
        "gap": ds.array("pairs/gap"),
        "direction": ds.array("pairs/direction"),
        "change_a1": ds.file["pairs/change_a1"],
        "change_a2": ds.file["pairs/change_a2"],
    }


#: Colours of the change classes in previews (background transparent).
CHANGE_COLOURS = {1: (0.19, 0.82, 0.35, 0.85), 2: (1.0, 0.23, 0.19, 0.85), 3: (0.04, 0.52, 1.0, 0.45)}


def preview_pairs(source: str | PathLike | Dataset, out: str | PathLike, *, n: int = 6, start: int = 0,
                  overwrite: bool = False, dpi: int = 100) -> Path:
    """Contact sheet of filament pairs: first frame, second frame, A1 and A2 change maps.

    Change colours: green appearing, red disappearing, blue unchanged-present.  Used by
    ``simgen preview`` for filament datasets.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch


    if n < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    own = not isinstance(source, Dataset)
    ds = source if isinstance(source, Dataset) else open_dataset(source)
    try:
        pairs = read_pairs(ds)
        m = len(pairs["index"])
        if not 0 <= start < m:
            raise ParameterError(f"start {start} out of range for {m} pairs")
        rows = list(range(start, min(m, start + n)))
        fig, axes = plt.subplots(len(rows), 4, figsize=(8, 2.1 * len(rows) + 0.5), squeeze=False)
        for r, k in enumerate(rows):
            i, j = (int(v) for v in pairs["index"][k])
            gap, direction = int(pairs["gap"][k]), int(pairs["direction"][k])
            second = f"#{j} (second, k={gap}, {'fwd' if direction > 0 else 'bwd'})"
            panels = [(ds.image(i), f"#{i} (first)"), (ds.image(j), second)]
            for c, (img, title) in enumerate(panels):
                axes[r, c].imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                axes[r, c].set_title(title, fontsize=7, pad=2)
            for c, (name, target) in enumerate((("change_a1", "A1 filament"), ("change_a2", "A2 core")), start=2):
                cm = pairs[name][k]
                rgba = np.zeros((*cm.shape, 4), np.float32)
                for cls, colour in CHANGE_COLOURS.items():
                    rgba[cm == cls] = colour
                axes[r, c].imshow(ds.image(i), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                axes[r, c].imshow(rgba, interpolation="nearest")
                counts = np.bincount(cm.ravel(), minlength=4)
                axes[r, c].set_title(f"{target}: +{counts[1]} -{counts[2]} ={counts[3]}", fontsize=7, pad=2)
        for ax in axes.flat:
            ax.set_axis_off()
        handles = [Patch(color=CHANGE_COLOURS[c][:3], label=CHANGE_CLASSES[c]) for c in (1, 2, 3)]
        fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=7, frameon=False)
        fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
        with atomic_path(out, overwrite) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
        plt.close(fig)
    finally:
        if own:
            ds.close()
    return Path(out)
