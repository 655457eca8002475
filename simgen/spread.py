"""Evenly spread picks: which ``k`` of ``n`` ordered items to read when reading all would cost too much.

Used wherever a step looks at a sample of images, tiles or samples (the realism judge's real images,
the look fit, backgrounds, calibration tiles, count thresholds ...).  Evenly spread rather than
random, so the sample covers the whole ordered range — the frames of a video from start to end —
and needs no seed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["spread_indices"]


def spread_indices(n: int, k: int | None) -> np.ndarray:
    """``min(n, k)`` indices spread evenly over ``range(n)``, first and last included.

    Parameters
    ----------
    n : int
        Number of items (``<= 0``: none).
    k : int or None
        How many to pick (``None`` or ``>= n``: all of them; ``<= 0``: none).

    Returns
    -------
    ndarray of int64, shape (min(n, k),)
        Sorted, distinct indices (``round`` of ``linspace(0, n - 1, k)``; distinct because the
        spacing is at least 1 when ``k <= n``).
    """
    n = int(n)
    if n <= 0 or (k is not None and int(k) <= 0):
        return np.zeros(0, np.int64)
    if k is None or int(k) >= n:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, int(k)).round().astype(np.int64))
