"""Intensity normalization of images before a detector sees them (shared by training, prediction and realism)."""

from __future__ import annotations

import numpy as np

from simgen.errors import ParameterError

__all__ = [
    "normalize_image",
]


NORMALIZE = ("percentile", "minmax", "none")


# -- images and sources -----------------------------------------------------------------
def normalize_image(image: np.ndarray, mode: str = "percentile", lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    """Contrast-normalise a float image to [0, 1].

    ``percentile``: map the ``lo``/``hi`` percentiles to 0/1 (robust to hot pixels and
    to 16-bit data using a small part of its range); ``minmax``: full range; ``none``:
    clip only.  Flat images map to 0.5.
    """
    image = np.asarray(image, np.float32)
    if mode == "none":
        return np.clip(image, 0.0, 1.0)
    if mode == "percentile":
        a, b = np.percentile(image, [lo, hi])
    elif mode == "minmax":
        a, b = float(image.min()), float(image.max())
    else:
        raise ParameterError(f"normalize must be one of {', '.join(NORMALIZE)}, got {mode!r}")
    if not b > a:
        return np.full_like(image, 0.5)
    return np.clip((image - a) / (b - a), 0.0, 1.0).astype(np.float32)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    from skimage.transform import resize

    h, w = image.shape
    shape = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    return resize(image, shape, order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)

