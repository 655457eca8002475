"""Image intensity normalization, resizing and 8-bit conversion (training, prediction, export, realism).

Every function takes and returns ``(H, W)`` arrays; float images are float32 in [0, 1].
"""

from __future__ import annotations

import numpy as np

from simgen.errors import ParameterError

__all__ = [
    "NORMALIZE",
    "normalize_image",
    "resize_image",
    "to_uint8",
]

#: Contrast normalization modes understood by :func:`normalize_image`.
NORMALIZE = ("percentile", "minmax", "none")


def normalize_image(image: np.ndarray, mode: str = "percentile", lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    """Contrast-normalise an image to float32 in [0, 1].

    Parameters
    ----------
    image : (H, W) array
        Any real dtype; usually float32 in [0, 1].
    mode : {"percentile", "minmax", "none"}
        ``percentile``: map the ``lo``/``hi`` percentiles to 0/1 (robust to hot pixels and
        to 16-bit data using a small part of its range); ``minmax``: full range; ``none``:
        clip to [0, 1] only.
    lo, hi : float
        Percentiles (0-100) for ``percentile``.

    Returns
    -------
    (H, W) float32 in [0, 1]; a flat image maps to 0.5.

    Raises
    ------
    ParameterError
        For an unknown ``mode``.
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


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize an image by ``scale`` (bilinear; anti-aliased when shrinking).

    Parameters
    ----------
    image : (H, W) float array
    scale : float
        Size factor; the output is ``(round(H * scale), round(W * scale))`` pixels (at least 1).
        ``1.0`` returns ``image`` itself.

    Returns
    -------
    (H', W') float32 array with the input's value range.
    """
    if scale == 1.0:
        return image
    if not scale > 0:
        raise ParameterError(f"scale must be > 0, got {scale}")
    from skimage.transform import resize

    h, w = image.shape
    shape = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    return resize(image, shape, order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] → uint8 in [0, 255] (clipped, rounded to nearest)."""
    return np.rint(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
