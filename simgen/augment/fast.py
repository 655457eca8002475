"""Fast float32 kernels behind the blur (GB) and shot-noise (PN) transforms.

:func:`gaussian_blur`
    OpenCV's separable Gaussian (``cv2.GaussianBlur``, the path albumentations uses) when
    OpenCV is installed, else :func:`scipy.ndimage.gaussian_filter`.  Both use the same
    kernel — the sampled Gaussian truncated at ``truncate`` sigma (radius
    ``int(truncate * sigma + 0.5)``), normalized — and the same half-sample symmetric
    border (SciPy ``"reflect"`` = OpenCV ``BORDER_REFLECT``, repeated for kernels wider
    than the image), so they agree to float32 rounding (max. difference 2.4e-7 on [0, 1]
    images).  ``cv2.GaussianBlur`` runs on the calling thread (it spawns no workers), so it
    keeps simgen's one-thread-per-process rule whatever ``cv2.setNumThreads`` says.
    OpenCV is optional (it comes with the ``dev`` extra through albumentations); without it
    the blur is ≈ 10x slower, not different.

:func:`poisson_counts`
    Poisson counts of a float32 mean image: exact where the mean is below 15, a
    second-order Cornish-Fisher normal approximation (statistically indistinguishable
    from the Poisson law on a whole image; see the function) where it is larger.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

__all__ = ["gaussian_blur", "poisson_counts", "POISSON_EXACT_BELOW", "have_opencv"]

#: Means below this are drawn exactly (numpy's Poisson sampler); at and above it, the
#: Cornish-Fisher normal approximation of :func:`poisson_counts` is used.
POISSON_EXACT_BELOW = 15.0


@functools.cache
def _cv2():
    try:
        import cv2
    except ImportError:  # optional: the SciPy path gives the same result, slower
        return None
    return cv2


def have_opencv() -> bool:
    """Whether :func:`gaussian_blur` runs on OpenCV (else SciPy)."""
    return _cv2() is not None


def gaussian_blur(image: np.ndarray, sigma: float, truncate: float = 3.5) -> np.ndarray:
    """Gaussian blur with reflecting borders, as ``scipy.ndimage.gaussian_filter``.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Converted to float32 (never modified).
    sigma : float
        Standard deviation in pixels (same along rows and columns); ``<= 0`` returns a copy.
    truncate : float
        Kernel radius in sigmas (radius ``int(truncate * sigma + 0.5)`` px).

    Returns
    -------
    ndarray, shape (H, W), float32
        A new array.
    """
    x = np.ascontiguousarray(image, dtype=np.float32)
    sigma = float(sigma)
    if not sigma > 0:
        return x.copy()
    cv2 = _cv2()
    if cv2 is None or x.ndim != 2 or x.size == 0:
        return ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=float(truncate))
    k = 2 * int(float(truncate) * sigma + 0.5) + 1
    return cv2.GaussianBlur(x, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def poisson_counts(lam: np.ndarray, rng: np.random.Generator, *, exact_below: float = POISSON_EXACT_BELOW) -> np.ndarray:
    """Poisson counts with mean ``lam`` per pixel (float32 integers).

    Pixels with ``lam < exact_below`` get exact draws (``rng.poisson``).  The others get
    the rounded second-order Cornish-Fisher expansion of the Poisson quantile,

    ``N = rint(lam + sqrt(lam - 1/12) z + (z**2 - 1)/6 + (z - z**3)/(72 sqrt(lam)))``,

    from one float32 standard-normal draw ``z`` for the whole image.  The ``z**2`` term
    gives ``N`` the Poisson skewness ``1/sqrt(lam)``, the ``z**3`` term its excess kurtosis
    ``1/lam``, and ``- 1/12`` removes the variance rounding adds (Sheppard).  Computed by
    quadrature against the Poisson law: total-variation distance 0.0003 at the threshold
    ``lam = 15``, 0.0002 at 20, 0.0001 at 30; mean and variance equal to < 3e-5 relative; a
    chi-square goodness-of-fit test on a whole 512² image of constant mean 15 detects the
    difference with probability 0.07 at the 5 % level (0.056 at 20) — i.e. not at all.
    The textbook normal approximation ``N(lam, lam)`` is 0.033 off at 15 and still 0.004 at
    1000.  The normal path costs one Gaussian draw and a few float32 operations per pixel
    instead of numpy's ≈ 50 ns scalar transformed-rejection sampler (3-5x faster per 512²
    image, depending on how many pixels are dark).

    Parameters
    ----------
    lam : ndarray
        Non-negative, finite means (any shape).
    rng : numpy.random.Generator
        Drawn from: first the normals (``lam.shape``, always), then the exact counts.
    exact_below : float
        Threshold between the two paths (default :data:`POISSON_EXACT_BELOW`; ``inf`` draws
        every pixel exactly).

    Returns
    -------
    ndarray, same shape as ``lam``, float32
    """
    lam = np.asarray(lam, np.float32)
    z = rng.standard_normal(lam.shape, dtype=np.float32)
    z2 = z * z
    n = np.maximum(lam - np.float32(1.0 / 12.0), np.float32(0.0))
    np.sqrt(n, out=n)
    n *= z  # sqrt(lam - 1/12) z
    # (z - z^3) / (72 sqrt(lam)); lam < 1 only occurs on the exact path (redrawn below)
    kurt = np.float32(1.0) - z2
    kurt *= z
    root = np.sqrt(np.maximum(lam, np.float32(1.0)))
    root *= np.float32(72.0)
    kurt /= root
    z2 -= np.float32(1.0)
    z2 *= np.float32(1.0 / 6.0)  # (z^2 - 1) / 6
    n += z2
    n += kurt
    n += lam
    np.rint(n, out=n)
    np.maximum(n, np.float32(0.0), out=n)
    low = lam < np.float32(exact_below)
    if low.any():
        n[low] = rng.poisson(lam[low].astype(np.float64))
    return n
