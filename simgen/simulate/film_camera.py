"""Microscope and camera imperfections of the held-out film renderer (:mod:`.film_holdout`).

Independent of the training artifacts of :mod:`simgen.augment` on purpose: the held-out set
must not share the code (or the noise models) a detector was trained with.

* :func:`terrace_layers` — piecewise-constant film thickness (integer smectic layers) with
  sharp steps between terraces;
* :func:`dust_transmission` — dark specks (in focus) and faint blurred discs (out of focus);
* :func:`vignetting` — quadratic illumination fall-off around an off-centre optical axis;
* :func:`camera` — auto-exposure, Poisson shot noise, Gaussian read noise, 8-bit
  quantisation and JPEG compression (OpenCV, in memory).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import zoom

from simgen.errors import ParameterError

__all__ = ["terrace_layers", "dust_transmission", "vignetting", "camera"]


def terrace_layers(rng: np.random.Generator, shape: tuple[int, int], base: int, n_steps: int,
                   step: int = 1, length: float = 64.0) -> np.ndarray:
    """Film thickness in smectic layers: ``base`` plus up to ``n_steps`` terraces of ``step`` layers.

    A smooth random field (cubic zoom of white noise on a grid of spacing ``length`` px) is cut at
    ``n_steps`` random levels, so terraces are large connected regions with sharp edges.

    Returns
    -------
    (H, W) int32 array, all >= ``base``
    """
    h, w = shape
    if base < 1 or n_steps < 0 or step < 1 or not length > 0:
        raise ParameterError("terraces need base >= 1 layer, n_steps >= 0, step >= 1 and length > 0")
    gh, gw = max(int(np.ceil(h / length)) + 3, 4), max(int(np.ceil(w / length)) + 3, 4)
    coarse = rng.standard_normal((gh, gw))
    field = zoom(coarse, (h / (gh - 3), w / (gw - 3)), order=3, grid_mode=True, mode="nearest")[:h, :w]
    levels = np.sort(rng.uniform(-1.0, 1.0, size=n_steps))
    return (base + step * np.searchsorted(levels, field)).astype(np.int32)


def dust_transmission(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """Transmission ``Π_k (1 − a_k g_k)`` of ``n`` dust specks, each a Gaussian ``g_k``.

    Two thirds are sharp dark specks (σ 0.7–3 px, opacity 0.3–0.9), the rest blurred
    out-of-focus discs (σ 5–14 px, opacity 0.05–0.25).

    Returns
    -------
    (H, W) float32 array in (0, 1]
    """
    h, w = shape
    out = np.ones(shape, np.float32)
    if n <= 0:
        return out
    sharp = rng.uniform(size=n) < 2 / 3
    sigma = np.where(sharp, rng.uniform(0.7, 3.0, n), rng.uniform(5.0, 14.0, n))
    opacity = np.where(sharp, rng.uniform(0.3, 0.9, n), rng.uniform(0.05, 0.25, n))
    cx, cy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    xs = np.arange(w, dtype=np.float32) + 0.5
    ys = np.arange(h, dtype=np.float32) + 0.5
    for k in range(n):  # separable Gaussians: one outer product per speck
        gx = np.exp(-0.5 * ((xs - cx[k]) / sigma[k]) ** 2)
        gy = np.exp(-0.5 * ((ys - cy[k]) / sigma[k]) ** 2)
        out *= 1 - np.float32(opacity[k]) * np.outer(gy, gx).astype(np.float32)
    return out


def vignetting(shape: tuple[int, int], strength: float, centre: tuple[float, float]) -> np.ndarray:
    """Illumination ``1 − strength · r² / R²`` around ``centre`` (x, y in px), ``R`` the half-diagonal.

    Returns
    -------
    (H, W) float32 array
    """
    h, w = shape
    if not 0 <= strength < 1:
        raise ParameterError(f"vignetting strength must be in [0, 1), got {strength}")
    xs = np.arange(w, dtype=np.float32) + 0.5 - np.float32(centre[0])
    ys = np.arange(h, dtype=np.float32) + 0.5 - np.float32(centre[1])
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2
    return np.clip(1 - np.float32(strength) * r2 / np.float32((h * h + w * w) / 4), 0, 1).astype(np.float32)


def camera(rng: np.random.Generator, intensity: np.ndarray, *, full_well: float, read_noise: float,
           black: float, fill: float, jpeg_quality: int | None) -> np.ndarray:
    """Record an intensity map with a noisy 8-bit camera and optionally JPEG-compress it.

    Parameters
    ----------
    intensity : (H, W) array
        Light on the sensor (any non-negative units).
    full_well : float
        Electrons of a saturated pixel (sets the shot noise).
    read_noise : float
        Read noise standard deviation in electrons.
    black : float
        Black level as a fraction of the full range.
    fill : float
        Auto-exposure: the 99.5th intensity percentile is mapped to this fraction of the full well.
    jpeg_quality : int or None
        JPEG quality 1–95 (None: no compression).

    Returns
    -------
    (H, W) float32 array in [0, 1]
    """
    import cv2

    intensity = np.asarray(intensity, np.float64)
    if full_well <= 0 or read_noise < 0 or not 0 <= black < 1 or not 0 < fill <= 1:
        raise ParameterError("camera needs full_well > 0, read_noise >= 0, 0 <= black < 1, 0 < fill <= 1")
    ref = max(float(np.percentile(intensity, 99.5)), 1e-12)
    electrons = rng.poisson(np.clip(intensity, 0, None) * (fill * full_well / ref))
    signal = electrons + rng.normal(0.0, read_noise, intensity.shape)
    dn = np.clip(np.rint(255 * (black + (1 - black) * signal / full_well)), 0, 255).astype(np.uint8)
    if jpeg_quality is not None:
        if not 1 <= int(jpeg_quality) <= 95:
            raise ParameterError(f"jpeg quality must be in 1-95, got {jpeg_quality}")
        ok, buf = cv2.imencode(".jpg", dn, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
            raise ParameterError("JPEG encoding failed")
        dn = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return (dn.astype(np.float32) / np.float32(255)).astype(np.float32)
