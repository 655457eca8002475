"""Keep the images a model adapts to and the images it is scored on disjoint.

Leaving out the scored files by name is not enough: consecutive frames of an in-situ video are
near copies of each other, so a model adapted to frame 0481 has in effect seen scored frame 0480.
:func:`exclude_scored` leaves out a candidate image named like a scored image (file stem) or one
that has a scored image's shape and correlates with it at ≥ ``max_corr`` at quarter resolution.
Pixels only: no label is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from skimage.transform import downscale_local_mean

from simgen.datasets.imageio import read_image
from simgen.errors import DataError

__all__ = ["as_grey", "exclude_scored"]


def as_grey(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 (H, W): ``read_image`` and the real sources already give luminance."""
    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise DataError(f"expected a greyscale (H, W) image, got shape {img.shape}")
    return img


def _signature(image: np.ndarray) -> np.ndarray:
    """Quarter-resolution, zero-mean, unit-variance copy (for near-duplicate tests)."""
    small = downscale_local_mean(image, (4, 4)) if min(image.shape) >= 16 else image
    return (small - small.mean()) / (small.std() + 1e-6)


def exclude_scored(candidates: Iterable[tuple[str, object]], scored: Mapping[str, np.ndarray],
                   max_corr: float) -> tuple[list[tuple[str, object]], dict[str, str]]:
    """Split ``candidates`` into usable ones and those left out as (near) copies of a scored image.

    Parameters
    ----------
    candidates : iterable of (name, path or (H, W) array)
        Images that a model may adapt to; paths are read once for the test (not kept in memory).
    scored : mapping name → (H, W) array
        The scored images.
    max_corr : float
        Correlation (quarter resolution, same shape) at which a candidate counts as a near copy.

    Returns
    -------
    kept : list of (name, path or array)
        The usable candidates, in input order.
    left_out : dict
        name → reason, for the report.
    """
    sigs = {name: _signature(as_grey(img)) for name, img in scored.items()}
    left_out: dict[str, str] = {}
    kept: list[tuple[str, object]] = []
    for name, item in candidates:
        stem = Path(name).stem
        if stem in sigs:
            left_out[name] = f"named like scored image {stem}"
            continue
        sig = _signature(as_grey(read_image(item) if isinstance(item, (str, Path)) else np.asarray(item)))
        twin = next((n for n, s in sigs.items() if s.shape == sig.shape and float((s * sig).mean()) >= max_corr),
                    None)
        if twin is not None:
            left_out[name] = f"near copy of scored image {twin}"
            continue
        kept.append((name, item))
    return kept, left_out
