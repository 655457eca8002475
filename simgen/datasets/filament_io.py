"""Filament sequences of any length in the pair-file layout; importing real labelled frames.

:func:`write_sequences` writes sequences with their own frame counts (real data, or
simulated sequences of several samplers in one file) in the layout of
:func:`simgen.datasets.video_io.write_filament`::

    /images                 (N, H, W) every frame of every sequence (one sample per frame)
    /filament/a1, /a2       (N, H, W) uint8 per-frame masks (A1 filament, A2 hollow core)
    /filament/sequence      (N,) sequence of each frame; /filament/frame (N,) its time index
    /filament/diameter      (N,) float, the sequence's filament diameter in px (NaN: unknown)
    /pairs/index            (M, 2) frame indices (first, second) of each pair
    /pairs/gap, /direction  (M,) |second - first| and +1 / -1 / 0 (forward, backward, self)
    /pairs/change_a1, _a2   (M, H, W) uint8 change maps: 0 absent in both, 1 appearing,
                            2 disappearing, 3 present in both

so that :func:`simgen.train.changedet.data.open_pairs` and every change-detection tool
read it.  :func:`import_filament_folder` builds such a file from a folder of real frames
with two mask folders.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.imageio import list_images, read_image
from simgen.datasets.video_io import write_pair_tables
from simgen.errors import DataError, ParameterError
from simgen.progress import track
from simgen.simulate.filament import FILAMENT_CLASSES, PAIRINGS, change_map, pair_list

__all__ = ["write_sequences", "import_filament_folder", "find_sequences", "natural_key"]


def natural_key(name: str) -> tuple:
    """Sort key that orders ``frame_2`` before ``frame_10`` (digit runs compared as numbers)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", str(name)) if part)


def _check_pairing(pairing, gaps) -> tuple[tuple[str, ...], tuple[int, ...]]:
    pairing = tuple(pairing)
    if not pairing:
        raise ParameterError(f"choose at least one pairing ({', '.join(PAIRINGS)})")
    for p in pairing:
        if p not in PAIRINGS:
            raise ParameterError(f"unknown pairing {p!r}; choose from {', '.join(PAIRINGS)}")
    gaps = tuple(int(g) for g in gaps)
    if {"forward", "backward"} & set(pairing) and (not gaps or min(gaps) < 1):
        raise ParameterError("forward/backward pairings need positive frame gaps")
    return pairing, gaps


def write_sequences(
    path: str | PathLike,
    counts: Sequence[int],
    get_sequence: Callable[[int], dict],
    *,
    pairing=("all",),
    gaps=(),
    generator: dict | None = None,
    seed: int | None = None,
    image_dtype: str = "uint8",
    overwrite: bool = False,
    progress: bool = False,
    attrs: dict | None = None,
) -> tuple[Path, int]:
    """Write sequences of ``counts[s]`` frames each, with the pairs of ``pairing``, atomically.

    Parameters
    ----------
    path : path-like
        Output HDF5 file.
    counts : sequence of int
        Frames of every sequence (each >= 2 for pairs of distinct frames); known up front
        so the pair arrays are sized before any pixel is read.
    get_sequence : callable
        ``get_sequence(s)`` → dict with ``images`` (T, H, W) float in [0, 1], ``a1`` and
        ``a2`` (T, H, W) binary masks, optional ``names`` (T file names), ``masks``
        (T, H, W instance ids), ``boxes`` (T records), ``provenance`` (T dicts) and
        ``diameter`` (px).  Every frame of the file has one shape.
    pairing, gaps
        As :func:`simgen.simulate.filament.pair_list` (default: all pairs ``i < j``).

    Returns
    -------
    (path, number of pairs)
    """
    counts = [int(c) for c in counts]
    if not counts or min(counts) < 1:
        raise ParameterError(f"every sequence needs at least one frame, got counts {counts}")
    pairing, gaps = _check_pairing(pairing, gaps)
    templates = [pair_list(c, gaps, pairing) for c in counts]
    n_pairs = sum(len(t) for t in templates)
    if n_pairs == 0:
        raise DataError(f"pairing {','.join(pairing)} gives no pairs for sequences of {counts} frames")
    n_frames = sum(counts)
    generator = {"pairing": list(pairing), "gaps": list(gaps), **(generator or {})}
    with DatasetWriter(path, kind="filament", image_dtype=image_dtype, class_names=FILAMENT_CLASSES,
                       generator=generator, seed=seed, overwrite=overwrite,
                       attrs={"n_sequences": len(counts), "n_pairs": n_pairs, **(attrs or {})}) as writer:
        arrays = None
        index = np.zeros((n_pairs, 2), np.int64)
        gap = np.zeros(n_pairs, np.int64)
        direction = np.zeros(n_pairs, np.int8)
        seq_of = np.repeat(np.arange(len(counts)), counts)
        frame_of = np.concatenate([np.arange(c) for c in counts])
        diameter = np.full(n_frames, np.nan)
        base, k = 0, 0
        for s in track(range(len(counts)), total=len(counts), description=f"filament → {Path(path).name}",
                       enabled=progress):
            seq = get_sequence(s)
            images = np.asarray(seq["images"])
            a1 = np.asarray(seq["a1"]).astype(bool)
            a2 = np.asarray(seq["a2"]).astype(bool)
            t_count = counts[s]
            if images.ndim != 3 or len(images) != t_count or a1.shape != images.shape or a2.shape != images.shape:
                raise DataError(f"sequence {s}: expected {t_count} frames with two masks of one shape, got images "
                                f"{images.shape}, a1 {a1.shape}, a2 {a2.shape}")
            if arrays is None:
                h, w = images.shape[1:]
                comp = {"compression": "gzip", "compression_opts": 1, "chunks": (1, h, w), "dtype": "u1"}
                arrays = {name: writer.create_array(name, shape=(size, h, w), **comp) for name, size in
                          (("filament/a1", n_frames), ("filament/a2", n_frames), ("pairs/change_a1", n_pairs),
                           ("pairs/change_a2", n_pairs))}
            elif images.shape[1:] != (h, w):
                raise DataError(f"sequence {s} has {images.shape[2]}x{images.shape[1]} px frames, the first had "
                                f"{w}x{h}; crop them to one size")
            names = seq.get("names")
            for t in range(t_count):
                writer.append(images[t], mask=None if seq.get("masks") is None else seq["masks"][t],
                              boxes=None if seq.get("boxes") is None else seq["boxes"][t],
                              provenance=(seq.get("provenance") or [{}] * t_count)[t],
                              name=None if names is None else names[t])
                arrays["filament/a1"][base + t] = a1[t]
                arrays["filament/a2"][base + t] = a2[t]
            if seq.get("diameter") is not None:
                diameter[base: base + t_count] = float(seq["diameter"])
            for pr in templates[s]:
                i, j = pr["first"], pr["second"]
                index[k] = (base + i, base + j)
                gap[k] = pr["gap"]
                direction[k] = pr["direction"]
                arrays["pairs/change_a1"][k] = change_map(a1[i], a1[j])
                arrays["pairs/change_a2"][k] = change_map(a2[i], a2[j])
                k += 1
            base += t_count
        writer.create_array("filament/diameter", diameter)
        write_pair_tables(writer, sequence=seq_of, frame=frame_of, index=index, gap=gap, direction=direction)
    return Path(path), n_pairs


def find_sequences(root: str | PathLike, images: str = "images", a1: str = "a1", a2: str = "a2") -> list[dict]:
    """The sequences of a folder of labelled frames: ``[{"name", "images", "a1", "a2"}]`` (lists of paths).

    ``root`` holds either ``images/``, ``a1/`` and ``a2/`` (one sequence) or one sub-folder
    per sequence, each with those three folders (sequences in natural order).  Frames are
    ordered naturally by file name (``f2`` before ``f10``); a mask has the frame's file
    stem, any image suffix.

    Raises
    ------
    DataError
        A missing folder, a frame without its two masks, an empty sequence.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory")
    if (root / images).is_dir():
        folders = [root]
    else:
        folders = sorted((p for p in root.iterdir() if p.is_dir() and (p / images).is_dir()),
                         key=lambda p: natural_key(p.name))
        if not folders:
            raise DataError(f"{root} has no {images}/ folder and no sequence sub-folders with one")
    out = []
    for folder in folders:
        frames = sorted(list_images(folder / images), key=lambda p: natural_key(p.name))
        if not frames:
            raise DataError(f"{folder / images} holds no images")
        seq = {"name": folder.name if folder != root else root.name, "images": frames}
        for key, sub in (("a1", a1), ("a2", a2)):
            if not (folder / sub).is_dir():
                raise DataError(f"{folder} has no mask folder {sub}/")
            by_stem = {p.stem: p for p in list_images(folder / sub)}
            missing = [p.name for p in frames if p.stem not in by_stem]
            if missing:
                raise DataError(f"{folder / sub} has no mask for {len(missing)} frame(s), e.g. {missing[0]}")
            seq[key] = [by_stem[p.stem] for p in frames]
        out.append(seq)
    return out


def _center_crop(a: np.ndarray, crop: int | None, what: str) -> np.ndarray:
    if not crop:
        return a
    h, w = a.shape
    if h < crop or w < crop:
        raise DataError(f"{what} is {w}x{h} px, smaller than the {crop}² crop")
    y, x = (h - crop) // 2, (w - crop) // 2
    return a[y: y + crop, x: x + crop]


def _binary(mask: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground of a label image: values above ``threshold`` x its maximum (0/1, 0/255 and
    anti-aliased masks alike); an all-zero mask is empty."""
    top = float(mask.max()) if mask.size else 0.0
    return mask > threshold * top if top > 0 else np.zeros(mask.shape, bool)


def import_filament_folder(
    root: str | PathLike,
    out: str | PathLike,
    *,
    images: str = "images",
    a1: str = "a1",
    a2: str = "a2",
    pairing=("all",),
    gaps=(),
    crop: int | None = None,
    threshold: float = 0.5,
    diameters: dict | None = None,
    image_dtype: str = "uint8",
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Import real labelled filament frames into a pair file for ``simgen train deltanet`` and the study.

    Parameters
    ----------
    root : path-like
        ``images/`` + ``a1/`` + ``a2/`` (one sequence) or one sub-folder per sequence holding
        them (see :func:`find_sequences`).  Masks are label images, foreground bright.
    out : path-like
        Output HDF5 pair file (layout of :func:`write_sequences`).
    images, a1, a2 : str
        Folder names of the frames, the filament masks and the hollow-core masks.
    pairing, gaps
        Pairs per sequence (default: every pair ``i < j``, as the study).
    crop : int, optional
        Centre-crop every frame and mask to ``crop``² px (the study used 256² crops); frames
        of different sizes need it.
    threshold : float
        A mask pixel is foreground above ``threshold`` x the mask's maximum.
    diameters : dict, optional
        ``{sequence name: diameter in px}`` stored in ``/filament/diameter`` (for
        leave-one-diameter-out studies).

    Returns
    -------
    dict with ``path``, ``sequences`` (names), ``frames`` (per sequence) and ``pairs``.
    """
    if crop is not None and (isinstance(crop, bool) or int(crop) != crop or crop < 8):
        raise ParameterError(f"crop must be an integer >= 8 px, got {crop!r}")
    if not 0.0 <= float(threshold) < 1.0:
        raise ParameterError(f"threshold must be in [0, 1), got {threshold}")
    pairing, gaps = _check_pairing(pairing, gaps)
    seqs = find_sequences(root, images, a1, a2)
    diameters = dict(diameters or {})
    unknown = sorted(set(diameters) - {s["name"] for s in seqs})
    if unknown:
        raise ParameterError(f"diameters given for unknown sequence(s): {', '.join(unknown)}")

    def get(s: int) -> dict:
        seq = seqs[s]
        imgs, m1, m2 = [], [], []
        for p, q1, q2 in zip(seq["images"], seq["a1"], seq["a2"]):
            img = _center_crop(read_image(p), crop, str(p))
            k1 = _binary(_center_crop(read_image(q1), crop, str(q1)), threshold)
            k2 = _binary(_center_crop(read_image(q2), crop, str(q2)), threshold)
            if k1.shape != img.shape or k2.shape != img.shape:
                raise DataError(f"{p.name}: frame {img.shape} and masks {k1.shape}, {k2.shape} differ in size")
            imgs.append(img)
            m1.append(k1)
            m2.append(k2)
        shapes = {a.shape for a in imgs}
        if len(shapes) > 1:
            raise DataError(f"sequence {seq['name']} mixes frame sizes {sorted(shapes)}; pass a crop")
        return {"images": np.stack(imgs), "a1": np.stack(m1), "a2": np.stack(m2),
                "names": [f"{seq['name']}/{p.name}" for p in seq["images"]],
                "provenance": [{"sequence": seq["name"], "frame": t, "file": p.name} for t, p in enumerate(seq["images"])],
                "diameter": diameters.get(seq["name"])}

    path, n_pairs = write_sequences(
        out, [len(s["images"]) for s in seqs], get, pairing=pairing, gaps=gaps, image_dtype=image_dtype,
        overwrite=overwrite, progress=progress,
        generator={"function": "simgen.datasets.filament_io.import_filament_folder", "root": str(root),
                   "folders": [images, a1, a2], "crop": crop, "threshold": threshold,
                   "sequences": [s["name"] for s in seqs]},
        attrs={"source": "real"})
    return {"path": path, "sequences": [s["name"] for s in seqs], "frames": [len(s["images"]) for s in seqs],
            "pairs": n_pairs}
