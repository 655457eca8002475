"""Estimate TEM rendering parameters from one real micrograph (numpy in, dict out).

:func:`estimate` measures, from the image alone (no labels):

1. **Background level** — the median intensity.
2. **Noise spectrum and texture** — the radially averaged power spectrum
   ``P(k)`` of ``I / mean - 1`` (Hann-windowed 512² tiles, cycles/px) is fitted as
   ``P(k) = |H_σ(k)|² (v + Σ_i w_i² S_i(k))`` where ``|H_σ|²`` is the transfer of
   the renderer's detector blur (a sampled Gaussian, ≈ ``exp(-4π²σ²k²)``), ``v`` a white (shot) noise variance and ``S_i`` the
   unit-variance band spectra of the renderer's texture octaves ``ℓ_i = 3 … 96``
   px (``S_ℓ(k) = 16 ℓ⁴ k² e^{-4ℓ²k²} / π``).  For each σ on a grid the weights come
   from non-negative least squares in relative error; the best σ wins.  This
   gives ``blur = σ``, the display-referred dose ``1 / (v · level)`` (electrons per
   pixel at intensity 1 that reproduce the measured noise), ``read_noise = level √r`` and the texture
   spectrum ``w_i`` (its total ``texture_amp`` and power-weighted scale
   ``texture_scale``).  Anisotropy comes from the second moments of the 2-D
   spectrum in the texture band; the dark skew of the mottle from the skewness of the
   σ=2 smoothed image (``texture_skew = -skew / 6``).  These background statistics
   are measured after the defects are inpainted (:func:`inpaint_boxes`: the labelled
   boxes when given, else the significant blobs of step 3), so the texture does not
   absorb the defects' own power.
3. **Defects** — a normalised Laplacian-of-Gaussian scale space
   (``σ_s² ∇²(G_σs * I)``, positive on dark blobs) on σ_s = 1.5 … 24 px; local maxima
   in space and scale above 3 robust (MAD) standard deviations of the response at
   that scale are dark-blob candidates.  For each, the depth is the median of a
   ring (1.6 … 2.6 r, r = √2 σ_s) minus the mean of the central disc (0.7 r),
   relative to the level; candidates deeper than 0.15 and 8 noise standard errors
   of the disc mean (noise correlated over the blur area) are *significant*, and a
   significant blob centred inside a larger one is dropped (nested structure).
   ``defect_size_px`` is the median diameter ``2√2 σ_s`` (the LoG diameter of a
   disc) weighted by depth x diameter (prominent dark blobs dominate, as in human
   labels), ``contrast`` the same weighted median of the depths and
   ``density_per_mpx`` the number of blobs at least half that size per megapixel
   (a rough figure: deep mottle blobs count too).

5. **Streaks** — :func:`streak_statistics` fits the renderer's anisotropic streak band
   (direction, band scale, elongation, amplitude) to the 2-D spectrum of the inpainted
   image, with a free isotropic level per |k| bin.

Everything is numpy/scipy on arrays; the caller loads the image (e.g. with
:func:`simgen.datasets.imageio.read_image`).  See ``docs/tem.md`` for how well
these estimates agree with the labelled real sets.
"""

from __future__ import annotations

import math

import numpy as np

from simgen.errors import DataError
from simgen.simulate.tem_labels import label_noise
from simgen.simulate.tem_render import TEXTURE_SCALES

__all__ = [
    "TEXTURE_SCALES",
    "radial_psd",
    "texture_band",
    "fit_spectrum",
    "blur_transfer2",
    "gaussian_kernel_1d",
    "find_dark_blobs",
    "suppress_nested",
    "estimate",
    "intensity_stats",
    "box_depth",
    "label_statistics",
    "inpaint_boxes",
    "streak_statistics",
    "label_noise",
]

def _as_image(image) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise DataError(f"expected a 2-D greyscale image, got shape {img.shape}")
    if min(img.shape) < 64:
        raise DataError(f"image {img.shape} is too small to estimate statistics (need >= 64 px)")
    if not np.isfinite(img).all():
        raise DataError("image contains NaN or infinite values")
    return img


def radial_psd(image, tile: int = 512, n_bins: int = 40, return_counts: bool = False):
    """Radially averaged power spectrum of ``image / mean - 1``.

    Averaged over non-overlapping ``tile``² tiles (one centred tile of the shorter
    side when the image is smaller), Hann window, normalised so that white noise of
    variance ``v`` has ``P = v`` (``∫ P d²k`` = variance, ``k`` in cycles/px).

    Returns
    -------
    (k, P) : bin centres (log-spaced from 2/tile to 0.5) and mean power per bin; with
    ``return_counts`` also the number of Fourier modes averaged per bin (over all tiles).
    """
    img = _as_image(image)
    h, w = img.shape
    t = min(tile, h, w)
    win = np.hanning(t)[:, None] * np.hanning(t)[None, :]
    wnorm = float((win**2).sum())
    ky = np.fft.fftfreq(t)[:, None]
    kx = np.fft.rfftfreq(t)[None, :]
    kk = np.hypot(kx, ky)
    edges = np.geomspace(2.0 / t, 0.5, n_bins + 1)
    idx = np.digitize(kk, edges) - 1
    valid = (idx >= 0) & (idx < n_bins)
    acc = np.zeros(n_bins)
    count = 0
    rows = range(0, h - t + 1, t) if h >= t else [0]
    cols = range(0, w - t + 1, t) if w >= t else [0]
    for r in rows:
        for c in cols:
            sub = img[r: r + t, c: c + t]
            m = sub.mean()
            if m <= 0:
                continue
            f = np.abs(np.fft.rfft2((sub / m - 1.0) * win)) ** 2 / wnorm
            acc += np.bincount(idx[valid], weights=f[valid], minlength=n_bins)
            count += 1
    if count == 0:
        raise DataError("image has no positive-mean region to analyse")
    nper = np.bincount(idx[valid], minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = acc / count / nper
    k = np.sqrt(edges[:-1] * edges[1:])
    ok = nper > 0
    if return_counts:
        return k[ok], p[ok], nper[ok] * count
    return k[ok], p[ok]


def gaussian_kernel_1d(sigma: float, truncate: float = 3.0) -> np.ndarray:
    """The sampled, normalised 1-D Gaussian kernel of ``scipy.ndimage.gaussian_filter``."""
    if sigma <= 0:
        return np.ones(1)
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def blur_transfer2(k, sigma: float, truncate: float = 3.0, n_angles: int = 16) -> np.ndarray:
    """Radially averaged ``|H(k)|²`` of the renderer's (discrete, separable) Gaussian blur."""
    g = gaussian_kernel_1d(sigma, truncate)
    r = (len(g) - 1) // 2
    n = np.arange(-r, r + 1)
    k = np.asarray(k, float)
    th = (np.arange(n_angles) + 0.5) * (np.pi / 2) / n_angles
    kx = k[:, None] * np.cos(th)[None, :]
    ky = k[:, None] * np.sin(th)[None, :]
    hx = np.cos(2 * np.pi * kx[..., None] * n) @ g
    hy = np.cos(2 * np.pi * ky[..., None] * n) @ g
    return np.mean((hx * hy) ** 2, axis=1)


def texture_band(k, scale: float) -> np.ndarray:
    """Unit-variance band spectrum ``S_ℓ(k) = 16 ℓ⁴ k² exp(-4ℓ²k²) / π`` of the renderer's texture."""
    k = np.asarray(k, float)
    a = 4.0 * scale * scale
    return a * a * k * k * np.exp(-a * k * k) / math.pi


def fit_spectrum(k, p, scales=TEXTURE_SCALES, sigmas=None, counts=None) -> dict:
    """Fit ``P(k) = |H_σ|² (v + Σ w_i² S_i) + r`` (see module docstring).

    Bins are weighted by ``sqrt(counts)`` (the number of Fourier modes averaged in each,
    so the statistical weight of its relative error) when ``counts`` is given.

    Returns
    -------
    dict with ``blur`` (σ px), ``noise_var`` (v, blurred shot noise), ``read_var`` (r,
    unblurred read noise), ``weights`` (w_i, texture std per octave), ``scales`` and
    ``residual`` (rms relative error of the fit).
    """
    from scipy.optimize import nnls

    k = np.asarray(k, float)
    p = np.asarray(p, float)
    wts = np.ones_like(p) if counts is None else np.sqrt(np.asarray(counts, float))
    ok = np.isfinite(p) & (p > 0)
    k, p, wts = k[ok], p[ok], wts[ok]
    wts = wts / wts.mean()
    if len(k) < 6:
        raise DataError("too few spectrum bins to fit")
    sigmas = np.arange(0.0, 3.01, 0.05) if sigmas is None else np.asarray(sigmas, float)
    bands = np.stack([texture_band(k, s) for s in scales], axis=1)
    best = None
    for sg in sigmas:
        h2 = blur_transfer2(k, sg)
        a = np.concatenate([h2[:, None], np.ones((len(k), 1)), bands * h2[:, None]], axis=1) / p[:, None]
        coef, _ = nnls(a * wts[:, None], wts, maxiter=2000)
        rms = float(np.sqrt(np.mean((wts * (a @ coef - 1.0)) ** 2)))
        if best is None or rms < best[0]:
            best = (rms, float(sg), coef)
    rms, sg, coef = best
    return {
        "blur": sg,
        "noise_var": float(coef[0]),
        "read_var": float(coef[1]),
        "weights": [float(math.sqrt(max(c, 0.0))) for c in coef[2:]],
        "scales": list(scales),
        "residual": rms,
    }


def _gauss_spectrum(shape, sigma: float) -> np.ndarray:
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2 * math.pi**2 * sigma**2 * (kx * kx + ky * ky))


def find_dark_blobs(image, sigmas=None, threshold: float = 3.0, max_side: int = 1024,
                    noise_std: float | None = None, noise_blur: float = 0.0) -> np.ndarray:
    """Dark-blob candidates from a normalised LoG scale space.

    Local maxima of ``σ² ∇²(G_σ * I)`` (positive on dark blobs) over space and scale (σ = 1.5 … 24 px) whose
    response exceeds ``threshold`` robust standard deviations (MAD) of the response
    at that scale.  Returns a structured array ``x, y, sigma, response, depth, z``:
    ``depth`` = (median of the ring 1.6r … 2.6r) − (mean of the disc 0.7r), relative to
    the median level, with ``r = √2 σ``; ``z`` = depth in units of the noise standard
    error of the disc mean (``noise_std`` per pixel, correlated over the area
    ``4π noise_blur²`` of blurred white noise; ``inf`` when not given).
    Images larger than ``max_side`` are block-averaged first and mapped back.
    """
    from scipy import ndimage as ndi

    img = _as_image(image)
    level = float(np.median(img))
    factor = 1
    while max(img.shape) / factor > max_side:
        factor *= 2
    if factor > 1:
        h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
        work = img[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    else:
        work = img
    sigmas = np.geomspace(1.5, 24.0, 13) if sigmas is None else np.asarray(sigmas, float)
    sigmas = sigmas / factor
    sigmas = sigmas[sigmas >= 0.7]
    spec = np.fft.rfft2(work - work.mean())
    ky = np.fft.fftfreq(work.shape[0])[:, None]
    kx = np.fft.rfftfreq(work.shape[1])[None, :]
    k2 = (2 * math.pi) ** 2 * (kx * kx + ky * ky)
    stack = []
    for s in sigmas:
        # σ² ∇²(G_σ * I): transfer -σ² k² exp(-σ² k² / 2); the Laplacian of a dark dip is positive
        resp = np.fft.irfft2(spec * (-s * s * k2 * np.exp(-0.5 * s * s * k2)), s=work.shape)
        mad = float(np.median(np.abs(resp - np.median(resp)))) * 1.4826 + 1e-12
        stack.append(resp / mad)
    cube = np.stack(stack)
    peaks = (cube == ndi.maximum_filter(cube, size=(3, 5, 5), mode="nearest")) & (cube > threshold)
    si, yy, xx = np.nonzero(peaks)
    dtype = [("x", "f4"), ("y", "f4"), ("sigma", "f4"), ("response", "f4"), ("depth", "f4"), ("z", "f4")]
    out = np.zeros(len(si), dtype=dtype)
    if len(si) == 0:
        return out
    depth = np.empty(len(si))
    zval = np.empty(len(si))
    pix_noise = (noise_std / math.sqrt(factor * factor)) if noise_std else None
    corr_area = max(1.0, 4 * math.pi * (noise_blur / factor) ** 2)
    for j, (s_i, y, x) in enumerate(zip(si, yy, xx)):
        r = sigmas[s_i] * math.sqrt(2)
        r_in, r_out = int(math.ceil(1.6 * r)) + 1, int(math.ceil(2.6 * r)) + 2
        y0, y1 = max(0, y - r_out), min(work.shape[0], y + r_out + 1)
        x0, x1 = max(0, x - r_out), min(work.shape[1], x + r_out + 1)
        yy_, xx_ = np.mgrid[y0:y1, x0:x1]
        dist = np.hypot(yy_ - y, xx_ - x)
        patch = work[y0:y1, x0:x1]
        ring = patch[(dist >= r_in) & (dist <= r_out)]
        disc = patch[dist <= max(0.7 * r, 1.0)]
        depth[j] = (np.median(ring) - disc.mean()) / level if ring.size else 0.0
        if pix_noise:
            zval[j] = depth[j] * level / (pix_noise / math.sqrt(max(1.0, disc.size / corr_area)))
        else:
            zval[j] = np.inf
    out["x"] = (xx + 0.5) * factor
    out["y"] = (yy + 0.5) * factor
    out["sigma"] = sigmas[si] * factor
    out["response"] = cube[si, yy, xx]
    out["depth"] = depth
    out["z"] = zval
    return out


def suppress_nested(blobs: np.ndarray, shape) -> np.ndarray:
    """Keep the largest of nested blobs: a blob whose centre lies inside a larger kept one is dropped."""
    if len(blobs) == 0:
        return blobs
    covered = np.zeros(shape, bool)
    keep = []
    h, w = shape
    for j in np.argsort(-blobs["sigma"], kind="stable"):
        x, y = int(blobs["x"][j]), int(blobs["y"][j])
        if covered[min(y, h - 1), min(x, w - 1)]:
            continue
        keep.append(j)
        r = math.sqrt(2) * float(blobs["sigma"][j])
        ri = int(math.ceil(r))
        y0, y1, x0, x1 = max(0, y - ri), min(h, y + ri + 1), max(0, x - ri), min(w, x + ri + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        covered[y0:y1, x0:x1] |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    return blobs[np.sort(np.array(keep, int))]


def _weighted_median(values, weights) -> float:
    values = np.asarray(values, float)
    weights = np.asarray(weights, float)
    order = np.argsort(values)
    c = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(c, c[-1] / 2)])


def box_depth(image, boxes) -> np.ndarray:
    """Darkness of labelled defects: (ring median − mean of the darker half of the box) / level.

    The ring is the box grown by ``max(3, size/2)`` px minus the box itself; ``level``
    is the image median.  Works for tight and loose boxes alike, so real (box-only)
    and synthetic labels are measured the same way.  ``boxes`` is an ``(n, 4)`` array
    of ``x0, y0, x1, y1``; boxes with no pixels inside the image are skipped.
    """
    img = _as_image(image)
    level = float(np.median(img))
    h, w = img.shape
    out = []
    for x0, y0, x1, y1 in np.asarray(boxes, float).reshape(-1, 4):
        c0, r0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
        c1, r1 = min(int(math.ceil(x1)), w), min(int(math.ceil(y1)), h)
        if c1 <= c0 or r1 <= r0:
            continue
        m = max(3, int(0.5 * max(c1 - c0, r1 - r0)))
        rr0, rr1, cc0, cc1 = max(0, r0 - m), min(h, r1 + m), max(0, c0 - m), min(w, c1 + m)
        patch = img[rr0:rr1, cc0:cc1]
        ring = np.ones(patch.shape, bool)
        ring[r0 - rr0: r1 - rr0, c0 - cc0: c1 - cc0] = False
        if not ring.any():
            continue
        inner = np.sort(img[r0:r1, c0:c1].ravel())
        dark = inner[: max(1, inner.size // 2)].mean()
        out.append((np.median(patch[ring]) - dark) / level)
    return np.asarray(out, float)


def label_statistics(images, boxes_list) -> dict:
    """Dataset-level label statistics used to derive presets and to compare realism.

    Parameters
    ----------
    images : sequence of (H, W) arrays
    boxes_list : sequence of (n_i, 4) arrays ``x0, y0, x1, y1`` (pixels)

    Returns
    -------
    dict with the box longer-side percentiles (5, 25, 50, 75, 95) ``major_pct``, the
    per-image median longer side ``image_median_major`` (min, median, max), the
    log-sd of the longer side within images ``log_sd``, the box aspect ratio median,
    densities per megapixel (min, median, max) and the box-depth percentiles
    (10, 25, 50, 75, 90) of :func:`box_depth`.
    """
    majors, per_image, logsd, aspect, dens, depth = [], [], [], [], [], []
    for img, b in zip(images, boxes_list):
        b = np.asarray(b, float).reshape(-1, 4)
        img = np.asarray(img)
        dens.append(len(b) / (img.size / 1e6))
        if not len(b):
            continue
        wd, ht = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        mj = np.maximum(wd, ht)
        majors.append(mj)
        per_image.append(float(np.median(mj)))
        if len(b) > 2:
            logsd.append(float(np.log(np.maximum(mj, 1e-3)).std()))
        aspect.append(np.minimum(wd, ht) / np.maximum(mj, 1e-9))
        depth.append(box_depth(img, b))
    allm = np.concatenate(majors) if majors else np.zeros(0)
    alld = np.concatenate(depth) if depth else np.zeros(0)
    pct = lambda v, q: [float(x) for x in np.percentile(v, q)] if len(v) else [float("nan")] * len(q)  # noqa: E731
    return {
        "n_images": len(dens),
        "n_boxes": int(allm.size),
        "major_pct": pct(allm, [5, 25, 50, 75, 95]),
        "image_median_major": pct(per_image, [0, 50, 100]),
        "log_sd": float(np.median(logsd)) if logsd else float("nan"),
        "aspect_median": float(np.median(np.concatenate(aspect))) if aspect else float("nan"),
        "density_per_mpx": pct(dens, [0, 50, 100]),
        "depth_pct": pct(alld, [10, 25, 50, 75, 90]),
    }


def intensity_stats(image) -> dict:
    """Median, spread and percentiles of the intensities (for realism reports)."""
    img = _as_image(image)
    q = np.percentile(img, [1, 5, 25, 50, 75, 95, 99])
    return {
        "mean": float(img.mean()),
        "std": float(img.std()),
        "percentiles": {str(p): float(v) for p, v in zip((1, 5, 25, 50, 75, 95, 99), q)},
    }


def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing through the FFT (periodic boundaries)."""
    spec = np.fft.rfft2(img)
    return np.fft.irfft2(spec * _gauss_spectrum(img.shape, sigma), s=img.shape)


def _anisotropy(img: np.ndarray, kmin: float = 0.01, kmax: float = 0.12) -> tuple[float, float]:
    t = min(512, *img.shape)
    sub = img[:t, :t]
    f = np.abs(np.fft.fft2(sub / sub.mean() - 1)) ** 2
    ky = np.fft.fftfreq(t)[:, None] * np.ones((1, t))
    kx = np.fft.fftfreq(t)[None, :] * np.ones((t, 1))
    kk = np.hypot(kx, ky)
    sel = (kk > kmin) & (kk < kmax)
    wgt = f[sel]
    m = np.array([[np.sum(wgt * kx[sel] ** 2), np.sum(wgt * kx[sel] * ky[sel])],
                  [np.sum(wgt * kx[sel] * ky[sel]), np.sum(wgt * ky[sel] ** 2)]]) / wgt.sum()
    ev, vec = np.linalg.eigh(m)
    an = 1.0 - math.sqrt(max(ev[0], 0) / max(ev[1], 1e-30))
    angle = math.atan2(vec[1, 0], vec[0, 0]) % math.pi  # blobs elongated along the narrow k axis
    return float(an), float(angle)


def inpaint_boxes(image, boxes, grow: int = 2) -> np.ndarray:
    """Remove defects from an image for background statistics.

    Inside every box (grown by ``grow`` px) the low-frequency content is replaced by
    the surrounding background (normalised Gaussian convolution of the pixels outside
    all boxes, σ = the median box side), while the high-frequency residual
    ``I − G_1.5 * I`` (the noise) is kept, so noise statistics are unchanged.
    """
    img = _as_image(image)
    b = np.asarray(boxes, float).reshape(-1, 4)
    if not len(b):
        return img
    h, w = img.shape
    keep = np.ones(img.shape, bool)
    for x0, y0, x1, y1 in b:
        r0, r1 = max(int(math.floor(y0)) - grow, 0), min(int(math.ceil(y1)) + grow, h)
        c0, c1 = max(int(math.floor(x0)) - grow, 0), min(int(math.ceil(x1)) + grow, w)
        keep[r0:r1, c0:c1] = False
    if keep.all() or not keep.any():
        return img
    sigma = max(3.0, float(np.median(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))))
    m = keep.astype(float)
    bg = _smooth(img * m, sigma) / np.maximum(_smooth(m, sigma), 1e-3)
    high = img - _smooth(img, 1.5)
    return np.where(keep, img, bg + high)


def estimate(image, *, boxes=None, max_side: int = 1024) -> dict:
    """Rendering parameters estimated from one real image (see module docstring).

    Parameters
    ----------
    boxes : (n, 4) array, optional
        Labelled defects ``x0, y0, x1, y1``.  Background statistics (spectrum, skew,
        anisotropy) are measured on the image with the defects inpainted
        (:func:`inpaint_boxes`) — the labelled ones when given, else the significant
        dark blobs found — so that the texture does not absorb the defects' power.

    Returns
    -------
    dict with ``level``, ``blur``, ``dose``, ``read_noise``, ``noise_std`` (per-pixel,
    after blur), ``texture`` (octave weights), ``texture_scales``, ``texture_amp``,
    ``texture_scale``, ``anisotropy``, ``anisotropy_angle``, ``skewness``,
    ``texture_skew``, ``defect_size_px``, ``contrast``, ``density_per_mpx``,
    ``n_blobs``, ``streak_amp``, ``streak_angle``, ``streak_scale``, ``streak_length``
    (:func:`streak_statistics` of the inpainted image), ``spectrum_residual`` and the
    measured spectrum ``psd_k`` / ``psd``.
    """
    img = _as_image(image)
    level = float(np.median(img))
    if level <= 0:
        raise DataError("image median is zero; cannot estimate relative statistics")
    # pass 1: noise model of the whole image -> significant dark blobs
    k, p, counts = radial_psd(img, return_counts=True)
    fit = fit_spectrum(k, p, counts=counts)
    sg, v = fit["blur"], max(fit["noise_var"], 1e-8)
    noise_std = level * math.sqrt(v * float(np.sum(gaussian_kernel_1d(sg) ** 2)) ** 2) if sg > 0 else level * math.sqrt(v)
    blobs = find_dark_blobs(img, max_side=max_side, noise_std=noise_std, noise_blur=sg)
    size_px, contrast, density = float("nan"), float("nan"), 0.0
    sig = blobs[(blobs["z"] > 8.0) & (blobs["depth"] > 0.15)] if len(blobs) else blobs
    sig = suppress_nested(sig, img.shape)
    if len(sig):
        diam = 2 * math.sqrt(2) * sig["sigma"].astype(float)
        size_px = _weighted_median(diam, sig["depth"] * diam)
        contrast = _weighted_median(sig["depth"].astype(float), sig["depth"] * diam)
        density = float(np.sum(diam >= 0.5 * size_px) / (img.size / 1e6))
    # pass 2: background statistics with the defects inpainted
    if boxes is None and len(sig):
        half = math.sqrt(2) * sig["sigma"].astype(float)
        boxes = np.stack([sig["x"] - half, sig["y"] - half, sig["x"] + half, sig["y"] + half], 1)
    bg_img = inpaint_boxes(img, boxes) if boxes is not None and len(boxes) else img
    k, p, counts = radial_psd(bg_img, return_counts=True)
    fit = fit_spectrum(k, p, counts=counts)
    tex_w = np.asarray(fit["weights"])
    tex_amp = float(np.sqrt(np.sum(tex_w**2)))
    scales = np.asarray(fit["scales"])
    tex_scale = float(np.exp(np.sum(tex_w**2 * np.log(scales)) / max(np.sum(tex_w**2), 1e-30))) if tex_amp > 0 else 8.0
    v = max(fit["noise_var"], 1e-8)
    dose = 1.0 / (v * level)
    # per-pixel std of blurred white noise: sqrt(v Σ g²) with g the 2-D blur kernel
    sg = fit["blur"]
    noise_std = level * math.sqrt(v * float(np.sum(gaussian_kernel_1d(sg) ** 2)) ** 2) if sg > 0 else level * math.sqrt(v)
    an, an_angle = _anisotropy(bg_img)
    streaks = streak_statistics(bg_img)
    sm = _smooth(bg_img, 2.0)
    skew = float(np.mean((sm - sm.mean()) ** 3) / max(sm.std(), 1e-12) ** 3)
    out = {
        "level": level,
        "blur": float(sg),
        "dose": float(dose),
        "read_noise": float(level * math.sqrt(max(fit["read_var"], 0.0))),
        "noise_std": float(noise_std),
        "texture": [float(x) for x in tex_w],
        "texture_scales": [float(s) for s in scales],
        "texture_amp": tex_amp,
        "texture_scale": tex_scale,
        "anisotropy": an,
        "anisotropy_angle": an_angle,
        "skewness": skew,
        "texture_skew": float(min(max(-skew / 6.0, 0.0), 0.3)),
        "defect_size_px": size_px,
        "contrast": contrast,
        "density_per_mpx": density,
        "n_blobs": int(len(blobs)),
        **streaks,
        "spectrum_residual": float(fit["residual"]),
        "psd_k": [float(x) for x in k],
        "psd": [float(x) for x in p],
        "shape": list(img.shape),
    }
    return out


# ---------------------------------------------------------------------------
# diffraction-contrast structures (simgen.simulate.tem_structures): streaks, dark patches, lines
def streak_statistics(image, tile: int = 256, k_range=(1 / 96, 1 / 5), n_angles: int = 36,
                      scales=(4.0, 6.0, 8.0, 11.0, 16.0, 22.0), lengths=(1.5, 2.0, 3.0, 4.0, 6.0, 9.0, 14.0)) -> dict:
    """Streaks (anisotropic mottle) from the 2-D power spectrum, fitted with the renderer's own model.

    The periodogram of ``I / mean - 1`` (Hann-windowed ``tile``² tiles, averaged) is
    binned in |k| (10 log bins over ``k_range`` cycles/px) × direction (``n_angles`` bins).
    Model per cell: ``B_r + A T(k)`` with a free isotropic level ``B_r`` per |k| bin and
    ``T = L S_ℓ(√(L² k_u² + k_v²))`` the unit-variance streak band of
    :func:`simgen.simulate.tem_render.texture_field` (``u`` along the streaks);
    the direction comes from the excess over the per-|k| median, ``(ℓ, L)`` from a grid
    search, ``A = streak_amp²`` from weighted linear least squares (relative errors).

    Returns ``streak_amp`` (0 when the fit finds no anisotropic power), ``streak_angle``
    (rad), ``streak_scale`` (ℓ, px) and ``streak_length`` (L).
    """
    img = _as_image(image)
    h, w = img.shape
    t = min(tile, h, w)
    win = np.hanning(t)[:, None] * np.hanning(t)[None, :]
    wnorm = float((win**2).sum())
    acc = np.zeros((t, t))
    count = 0
    for r in range(0, h - t + 1, t):
        for c in range(0, w - t + 1, t):
            sub = img[r: r + t, c: c + t]
            m = sub.mean()
            if m <= 0:
                continue
            acc += np.abs(np.fft.fft2((sub / m - 1.0) * win)) ** 2 / wnorm
            count += 1
    if count == 0:
        raise DataError("image has no positive-mean region to analyse")
    p = acc / count
    ky = np.fft.fftfreq(t)[:, None] * np.ones((1, t))
    kx = np.fft.fftfreq(t)[None, :] * np.ones((t, 1))
    kk = np.hypot(kx, ky)
    sel = (kk >= k_range[0]) & (kk <= k_range[1])
    kx, ky, kk, pw = kx[sel], ky[sel], kk[sel], p[sel]
    th = np.mod(np.arctan2(ky, kx), np.pi)
    n_r = 10
    rb = np.minimum((np.log(kk / k_range[0]) / np.log(k_range[1] / k_range[0]) * n_r).astype(int), n_r - 1)
    ab = np.minimum((th / np.pi * n_angles).astype(int), n_angles - 1)
    cell = rb * n_angles + ab
    n_cell = np.bincount(cell, minlength=n_r * n_angles)
    ok = n_cell > 0
    mean = np.bincount(cell, weights=pw, minlength=n_r * n_angles)[ok] / n_cell[ok]
    r_of = (np.arange(n_r * n_angles) // n_angles)[ok]
    a_of = (np.arange(n_r * n_angles) % n_angles)[ok]
    # direction: circular mean (of 2θ) of the excess over the per-|k| median
    iso = np.zeros(n_r)
    for r in range(n_r):
        v = mean[r_of == r]
        iso[r] = np.median(v) if v.size else 0.0
    excess = np.maximum(mean - iso[r_of], 0.0) * n_cell[ok]
    ang_c = (a_of + 0.5) * np.pi / n_angles
    z = np.sum(excess * np.exp(2j * ang_c))
    theta_k = (np.angle(z) / 2) % np.pi if abs(z) > 0 else 0.0
    streak = (theta_k + np.pi / 2) % np.pi
    cu, su = math.cos(streak), math.sin(streak)
    ku, kv = kx * cu + ky * su, ky * cu - kx * su
    wts = np.sqrt(n_cell[ok] * count) / np.maximum(mean, 1e-30)  # 1 / (std of a cell mean)
    onehot = (r_of[:, None] == np.arange(n_r)[None, :]).astype(float)
    best = None
    for ell in scales:
        for L in lengths:
            k2 = (L * ku) ** 2 + kv * kv
            a4 = 4.0 * ell * ell
            tm = L * a4 * a4 * k2 * np.exp(-a4 * k2) / math.pi
            tcell = np.bincount(cell, weights=tm, minlength=n_r * n_angles)[ok] / n_cell[ok]
            design = np.concatenate([onehot, tcell[:, None]], axis=1) * wts[:, None]
            coef, *_ = np.linalg.lstsq(design, mean * wts, rcond=None)
            if coef[-1] < 0:
                coef = np.concatenate([np.linalg.lstsq(design[:, :-1], mean * wts, rcond=None)[0], [0.0]])
            res = float(np.sum((design @ coef - mean * wts) ** 2))
            if best is None or res < best[0]:
                best = (res, ell, L, max(float(coef[-1]), 0.0))
    _, ell, L, amp2 = best
    return {"streak_amp": math.sqrt(amp2), "streak_angle": float(streak), "streak_scale": float(ell),
            "streak_length": float(L)}

