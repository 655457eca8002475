"""What an annotator sees: defect visibility and label noise of (TEM) defect images.

A human annotator labels a dark blob when it stands out of the background around
it, at its own size.  The same yardstick, a normalised Laplacian-of-Gaussian
("matched filter" for a dark blob of radius ``r``, scale ``σ = r / √2``), serves two
purposes here:

* :func:`label_noise` measures the two kinds of label noise of an image with boxes
  (synthetic or real): **invisible labels** (a labelled box whose response at its
  own scale is below the local background fluctuation) and **unlabelled
  look-alikes** (blob-shaped dark maxima of defect size outside every box whose
  response is comparable to that of the labelled defects).
* :func:`visibility` gives the same signal-to-fluctuation ratio (SNR) for boxes
  and :func:`find_lookalikes` the same blobs, which :mod:`simgen.simulate.tem` uses
  to make its labels follow what an annotator sees (drop invisible defects, flatten
  or label look-alikes).

Definitions (all on the image as given, numpy only):

* Response ``R_σ = σ² ∇² (G_σ * I) / level`` (through the FFT of the reflect-padded
  image; positive on dark blobs; ``level`` the image median), on log-spaced scales
  ``σ_j`` (ratio ``√2``).
* Local background fluctuation ``F_σ``: the RMS of ``R_σ`` over the pixels outside
  every (grown) box, per block of ``block`` px (blocks with fewer than 20 % free pixels
  use the whole image), sigma-clipped once at 3× together with a 2σ surround (so a few
  strong unlabelled blobs do not raise the level they are compared with).  Noise, texture (heavy tails
  included), lines and patches all count: the busier the background, the stronger a
  defect must be to be seen.
* Box SNR: the largest ``R`` over the central half of the box at the box's scale
  ``σ = L / (2√2)`` (``L`` its longer side, nearest lattice scale) and the next larger
  one, divided by ``F`` at that scale in the box's block.  (The central half of a box is
  about one correlation cell of ``R`` at that scale, so the maximum does not inflate the
  background: an empty box scores ~1.)
* Look-alike: a local maximum of the SNR ``R / F`` over 5×5 px and the adjacent scales, at a
  scale in the defect size range (widened by one √2 step each side), a round peak
  (Hessian eigenvalues of ``R`` at the maximum with ratio ≥ ``min_roundness``: a blob,
  not a line), centre outside every box grown by
  ``grow`` px, SNR ≥ the look-alike threshold (by default the larger of
  ``k_visible`` and the 25th percentile of the visible boxes' SNRs, i.e.
  "comparable to labelled defects").
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as _fft
from scipy import ndimage as _ndi

from simgen.errors import DataError

__all__ = ["ScaleSpace", "scale_space", "visibility", "find_lookalikes", "label_noise", "LOOKALIKE_DTYPE"]

LOOKALIKE_DTYPE = np.dtype([("x", "f4"), ("y", "f4"), ("sigma", "f4"), ("snr", "f4"), ("depth", "f4")])


def _bin(img: np.ndarray, f: int) -> np.ndarray:
    """Block mean over ``f × f`` pixels (``f`` a power of two; by halving, which numpy does fast)."""
    out = img
    while f > 1:
        h, w = (out.shape[0] // 2) * 2, (out.shape[1] // 2) * 2
        out = out[:h:2, :w] + out[1:h:2, :w]
        out = (out[:, 0:w:2] + out[:, 1:w:2]) * np.float32(0.25)
        f //= 2
    return out


def _bin_all(mask: np.ndarray, f: int) -> np.ndarray:
    """A coarse pixel is True when all its ``f × f`` pixels are (``f`` a power of two)."""
    out = mask
    while f > 1:
        h, w = (out.shape[0] // 2) * 2, (out.shape[1] // 2) * 2
        out = out[:h:2, :w] & out[1:h:2, :w]
        out = out[:, 0:w:2] & out[:, 1:w:2]
        f //= 2
    return out


class ScaleSpace:
    """Normalised LoG responses ``R`` and their local background fluctuation for one image.

    A scale ``σ`` is computed on the image block-averaged by the largest power of two
    ``f`` with ``σ / f >= 1.5`` (binning adds a blur of ``0.29 f`` px in quadrature,
    < 2 % of ``σ``); ``resp[j]`` is on that grid (pixel ``(r, c)`` covers the full-resolution
    pixels ``[f r, f r + f) x [f c, f c + f)``), ``factor[j] = f``.
    """

    def __init__(self, image: np.ndarray, sigmas, level: float):
        self.image = image
        self.sigmas = np.asarray(sigmas, float)
        self.level = level
        self.resp: list[np.ndarray] = []
        self.factor: list[int] = []
        self.binned: dict[int, np.ndarray] = {1: image}
        self.fluct: list[np.ndarray] = []  # per scale: (nby, nbx) local RMS per block
        self.block = 64

    @property
    def shape(self):
        return self.image.shape

    def scale_index(self, sigma) -> np.ndarray:
        s = np.log(np.maximum(np.asarray(sigma, float), 1e-6))
        return np.abs(s[..., None] - np.log(self.sigmas)).argmin(-1)

    def set_background(self, free: np.ndarray, block: int = 64, clip: float = 3.0, indices=None) -> None:
        """Local RMS of every response over the ``free`` (background) pixels, per ``block`` px.

        Computed on a 16 × 16 sample grid per block and sigma-clipped once: samples beyond
        ``clip`` × the block's first RMS, and their surroundings within 2σ, are left out, so
        a few strong unlabelled blobs do not hide themselves by raising the level they are
        compared with, while the busyness of texture, noise and lines counts.  Blocks with
        fewer than 20 % free samples use the whole image.
        """
        h, w = self.shape
        self.block = block = int(max(16, min(block, h, w)))
        nby, nbx = -(-h // block), -(-w // block)
        free_f: dict[int, np.ndarray] = {}
        if indices is None or len(self.fluct) != len(self.resp):
            self.fluct = [None] * len(self.resp)
            indices = range(len(self.resp))
        for j in indices:
            r, f = self.resp[j], self.factor[j]
            if f not in free_f:
                free_f[f] = _bin_all(free, f)  # coarse pixel entirely free
            bc = block // f
            st = max(1, bc // 16)
            bs = bc // st
            m = free_f[f][::st, ::st].astype(np.float32)
            rs = r[::st, ::st]
            ph, pw = nby * bs - rs.shape[0], nbx * bs - rs.shape[1]
            mp = np.pad(m, ((0, max(ph, 0)), (0, max(pw, 0))))[: nby * bs, : nbx * bs]
            rp = np.pad(rs, ((0, max(ph, 0)), (0, max(pw, 0))))[: nby * bs, : nbx * bs]
            fl = None
            for _ in range(2):
                if fl is not None:  # clip: drop samples beyond clip x the block's first RMS and their
                    lim = np.repeat(np.repeat(fl * np.float32(clip), bs, 0), bs, 1)  # surroundings (2σ)
                    out = np.abs(rp) > lim
                    grow = int(math.ceil(2.0 * self.sigmas[j] / (f * st)))
                    if grow > 0 and out.any():
                        out = _ndi.maximum_filter(out, size=2 * grow + 1)
                    mp = mp * ~out
                rm = rp * mp
                cnt = mp.reshape(nby, bs, nbx, bs).sum(axis=(1, 3))
                s1 = rm.reshape(nby, bs, nbx, bs).sum(axis=(1, 3))
                rm *= rm
                s2 = rm.reshape(nby, bs, nbx, bs).sum(axis=(1, 3))
                n_all = max(float(cnt.sum()), 1.0)
                glob = math.sqrt(max(float(s2.sum()) / n_all - (float(s1.sum()) / n_all) ** 2, 1e-20))
                with np.errstate(invalid="ignore", divide="ignore"):
                    var = s2 / cnt - (s1 / cnt) ** 2
                ok = cnt >= 0.2 * bs * bs
                fl = np.where(ok, np.sqrt(np.maximum(var, 1e-20)), glob).astype(np.float32)
            self.fluct[j] = fl

    def fluctuation_at(self, j: int, x, y) -> np.ndarray:
        """Local fluctuation of scale ``j`` at full-resolution positions ``(x, y)``."""
        fl = self.fluct[j]
        by = np.clip((np.asarray(y) // self.block).astype(int), 0, fl.shape[0] - 1)
        bx = np.clip((np.asarray(x) // self.block).astype(int), 0, fl.shape[1] - 1)
        return fl[by, bx]

    def fluctuation_map(self, j: int) -> np.ndarray:
        """Local fluctuation of scale ``j`` on that scale's grid."""
        r = self.resp[j]
        bc = self.block // self.factor[j]
        fl = self.fluct[j]
        by = np.minimum(np.arange(r.shape[0]) // bc, fl.shape[0] - 1)
        bx = np.minimum(np.arange(r.shape[1]) // bc, fl.shape[1] - 1)
        return fl[by[:, None], bx[None, :]]

    def recompute(self, image: np.ndarray, indices) -> None:
        """(Re)compute the responses of scales ``indices`` for ``image`` (the level is kept)."""
        img = np.asarray(image, np.float32)
        self.image = img
        self.binned = {1: img}
        indices = sorted(set(int(j) for j in indices))
        for f in sorted({self.factor[j] for j in indices}):
            work = self.binned.setdefault(f, _bin(img, f))
            h, w = work.shape
            idx = [j for j in indices if self.factor[j] == f]
            pad = min(int(3.0 * max(self.sigmas[j] for j in idx) / f + 2), h - 1, w - 1)
            padded = np.pad(work, pad, mode="reflect") if pad > 0 else work
            fh, fw = _fft.next_fast_len(padded.shape[0], real=True), _fft.next_fast_len(padded.shape[1], real=True)
            spec = _fft.rfft2(padded, s=(fh, fw), workers=1)
            spec[0, 0] = 0
            ky = _fft.fftfreq(fh).astype(np.float32)[:, None]
            kx = _fft.rfftfreq(fw).astype(np.float32)[None, :]
            k2 = (kx * kx + ky * ky) * np.float32(4 * math.pi**2)
            for j in idx:
                s2 = np.float32((self.sigmas[j] / f) ** 2)
                tf = np.exp(k2 * (-0.5 * s2))
                tf *= k2
                tf *= -s2 / np.float32(self.level)  # σ² ∇² ↔ -σ² |2πk|²
                r = _fft.irfft2(spec * tf, s=(fh, fw), workers=1)
                self.resp[j] = np.ascontiguousarray(r[pad: pad + h, pad: pad + w], dtype=np.float32)

    def peak_roundness(self, j: int, cols, rows) -> np.ndarray:
        """Roundness of response maxima: ratio of the Hessian eigenvalues of ``R`` (small / large, 0…1).

        At a maximum of a round blob's response both curvatures are alike (ratio ~1); along a
        line the response hardly changes (ratio ~0).  Finite differences on the scale's grid.
        """
        r = self.resp[j]
        h, w = r.shape
        y = np.clip(np.asarray(rows), 1, h - 2)
        x = np.clip(np.asarray(cols), 1, w - 2)
        rxx = r[y, x + 1] + r[y, x - 1] - 2 * r[y, x]
        ryy = r[y + 1, x] + r[y - 1, x] - 2 * r[y, x]
        rxy = 0.25 * (r[y + 1, x + 1] + r[y - 1, x - 1] - r[y + 1, x - 1] - r[y - 1, x + 1])
        tr, det = rxx + ryy, rxx * ryy - rxy * rxy
        disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0.0))
        e_big, e_small = tr / 2 - disc, tr / 2 + disc  # both <= 0 at a maximum; |e_big| >= |e_small|
        return np.where(e_big < 0, np.clip(e_small / np.minimum(e_big, -1e-12), 0.0, 1.0), 0.0)


def scale_space(image, sigmas, min_sigma_px: float = 1.5) -> ScaleSpace:
    """Normalised LoG responses of ``image`` at ``sigmas`` (see module docstring).

    Per binning factor one forward FFT of the reflect-padded image, one inverse FFT per
    scale, single precision (transfer ``-σ² |2πk|² exp(-2π²σ²k²)``: positive on dark blobs).
    """
    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise DataError(f"expected a 2-D greyscale image, got shape {img.shape}")
    sigmas = np.asarray(sigmas, float)
    level = float(np.median(img))
    if not level > 0:
        level = float(img.mean()) if img.mean() > 0 else 1.0
    ss = ScaleSpace(img, sigmas, level)
    factors = []
    for sg in sigmas:
        f = 1
        while sg / (2 * f) >= min_sigma_px and min(img.shape) // (2 * f) >= 32:
            f *= 2
        factors.append(f)
    ss.factor = factors
    ss.resp = [None] * len(sigmas)
    ss.recompute(img, range(len(sigmas)))
    return ss


def _default_sigmas(lo_px: float, hi_px: float) -> np.ndarray:
    """Scales for blob diameters ``lo_px … hi_px`` (``σ = d / (2√2)``, σ ≥ 1) on the fixed lattice ``σ = √2^j``.

    A fixed lattice makes every caller (the renderer's label rule, :func:`label_noise`) use
    the same scales whatever its size range.
    """
    r2 = math.log(math.sqrt(2))
    lo = max(1.0, lo_px / (2 * math.sqrt(2)))
    hi = max(lo, hi_px / (2 * math.sqrt(2)))
    j0 = int(math.floor(math.log(lo) / r2 + 1e-9))
    j1 = int(math.ceil(math.log(hi) / r2 - 1e-9))
    return math.sqrt(2) ** np.arange(j0, max(j1, j0) + 1)


def _box_array(boxes) -> np.ndarray:
    b = np.asarray(boxes, float).reshape(-1, 4) if boxes is not None and len(boxes) else np.zeros((0, 4))
    return b


def _free_mask(shape, boxes: np.ndarray, grow: float) -> np.ndarray:
    h, w = shape
    free = np.ones(shape, bool)
    for x0, y0, x1, y1 in boxes:
        c0, r0 = max(int(math.floor(x0 - grow)), 0), max(int(math.floor(y0 - grow)), 0)
        c1, r1 = min(int(math.ceil(x1 + grow)), w), min(int(math.ceil(y1 + grow)), h)
        if c1 > c0 and r1 > r0:
            free[r0:r1, c0:c1] = False
    return free


def visibility(ss: ScaleSpace, boxes) -> tuple[np.ndarray, np.ndarray]:
    """SNR of every box (response at its own scale / local background fluctuation) and its scale index."""
    b = _box_array(boxes)
    snr = np.zeros(len(b), np.float32)
    jj = np.zeros(len(b), int)
    if not len(b):
        return snr, jj
    size = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    jj = ss.scale_index(size / (2 * math.sqrt(2)))
    n_s = len(ss.sigmas)
    cx, cy = 0.5 * (b[:, 0] + b[:, 2]), 0.5 * (b[:, 1] + b[:, 3])
    hw, hh = np.maximum(0.25 * (b[:, 2] - b[:, 0]), 1.0), np.maximum(0.25 * (b[:, 3] - b[:, 1]), 1.0)
    best = np.full(len(b), -np.inf)
    for step in (0, 1):
        kk = np.minimum(jj + step, n_s - 1)
        for k in np.unique(kk):
            sel = np.flatnonzero(kk == k)
            f, r = ss.factor[k], ss.resp[k]
            fl = ss.fluctuation_at(k, cx[sel], cy[sel])
            c0 = np.maximum(np.floor((cx[sel] - hw[sel]) / f).astype(int), 0)
            c1 = np.minimum(np.ceil((cx[sel] + hw[sel]) / f).astype(int), r.shape[1])
            r0 = np.maximum(np.floor((cy[sel] - hh[sel]) / f).astype(int), 0)
            r1 = np.minimum(np.ceil((cy[sel] + hh[sel]) / f).astype(int), r.shape[0])
            for i, a0, a1, b0, b1, fv in zip(sel, r0, r1, c0, c1, fl):
                if a1 > a0 and b1 > b0:
                    best[i] = max(best[i], float(r[a0:a1, b0:b1].max()) / float(fv))
    snr[:] = np.where(np.isfinite(best), best, 0.0)
    return snr, jj


def find_lookalikes(ss: ScaleSpace, free: np.ndarray, threshold: float, scale_range=None,
                    min_roundness: float = 0.25) -> np.ndarray:
    """Blob-shaped dark maxima (5×5 grid px and adjacent scales) centred on ``free`` pixels with SNR ≥ ``threshold``.

    ``scale_range`` = (lowest, highest) scale index considered (default all).
    Returns a structured array of :data:`LOOKALIKE_DTYPE` (full-resolution positions;
    ``depth`` = the response ``R``, a darkness relative to the level).
    """
    n_s = len(ss.sigmas)
    lo, hi = (0, n_s - 1) if scale_range is None else scale_range
    rows = []
    free_f: dict[int, np.ndarray] = {}
    for j in range(max(lo, 0), min(hi, n_s - 1) + 1):
        r, f = ss.resp[j], ss.factor[j]
        if f not in free_f:
            free_f[f] = _bin_all(free, f)
        fmap = ss.fluctuation_map(j)
        snr_map = r / fmap
        cand = (snr_map >= np.float32(threshold)) & free_f[f]
        yy, xx = np.nonzero(cand)
        if not len(yy):
            continue
        # a maximum of the SNR over its 5x5 neighbourhood (gathered at the candidates only)
        rp = np.pad(snr_map, 2, mode="edge")
        val = snr_map[yy, xx]
        keep = np.ones(len(yy), bool)
        for dy in range(5):
            for dx in range(5):
                if dy != 2 or dx != 2:
                    keep &= val >= rp[yy + dy, xx + dx]
        for k in (j - 1, j + 1):  # ... and over the adjacent scales (compared at its position)
            if 0 <= k < n_s:
                rk, fk = ss.resp[k], ss.factor[k]
                yk = np.minimum(((yy + 0.5) * f / fk).astype(int), rk.shape[0] - 1)
                xk = np.minimum(((xx + 0.5) * f / fk).astype(int), rk.shape[1] - 1)
                keep &= val >= rk[yk, xk] / ss.fluctuation_at(k, (xx + 0.5) * f, (yy + 0.5) * f)
        yy, xx = yy[keep], xx[keep]
        if not len(yy):
            continue
        blob = ss.peak_roundness(j, xx, yy) >= min_roundness
        if not blob.any():
            continue
        yy, xx = yy[blob], xx[blob]
        out = np.zeros(len(yy), LOOKALIKE_DTYPE)
        out["x"], out["y"] = (xx + 0.5) * f, (yy + 0.5) * f
        out["sigma"] = ss.sigmas[j]
        out["depth"] = r[yy, xx]
        out["snr"] = r[yy, xx] / fmap[yy, xx]
        rows.append(out)
    if not rows:
        return np.zeros(0, LOOKALIKE_DTYPE)
    allb = np.concatenate(rows)
    # one blob per place: keep the strongest, drop weaker ones centred within its radius
    order = np.argsort(-allb["snr"], kind="stable")
    keep: list[int] = []
    kx, ky, kr = [], [], []
    for i in order:
        x, y = allb["x"][i], allb["y"][i]
        if kx:
            d2 = (np.asarray(kx) - x) ** 2 + (np.asarray(ky) - y) ** 2
            if np.any(d2 < np.asarray(kr) ** 2):
                continue
        keep.append(int(i))
        kx.append(x)
        ky.append(y)
        kr.append(math.sqrt(2) * float(allb["sigma"][i]))
    return allb[np.sort(np.array(keep, int))]


def label_noise(image, boxes, *, size_range=None, k_visible: float = 2.0, lookalike_threshold=None,
                lookalike_quantile: float = 25.0, grow: float = 2.0, block: int = 64,
                min_roundness: float = 0.25) -> dict:
    """Both kinds of label noise of one image with boxes (see module docstring).

    Parameters
    ----------
    image : (H, W) array
    boxes : (n, 4) array of ``x0, y0, x1, y1`` (px)
    size_range : (lo, hi) px, optional
        Defect diameters to search look-alikes at; default the 5–95 % range of the
        boxes' longer sides (``(4, 40)`` without boxes).
    k_visible : float
        A box with SNR below this is *invisible*.
    lookalike_threshold : float, optional
        SNR from which an unlabelled blob counts as a look-alike; default the larger
        of ``k_visible`` and the ``lookalike_quantile`` percentile of the visible
        boxes' SNRs.
    grow : float
        Px added around boxes for the background and the look-alike exclusion.

    Returns
    -------
    dict with ``n_boxes``, ``snr`` (per box), ``invisible`` (bool per box),
    ``n_invisible``, ``invisible_fraction``, ``lookalikes`` (:data:`LOOKALIKE_DTYPE`),
    ``n_lookalikes``, ``lookalikes_per_mpx``, ``lookalike_ratio`` (look-alikes per
    labelled box), ``threshold_lookalike``, ``k_visible``, ``sigmas`` and
    ``fluctuation`` (median local fluctuation per scale).
    """
    img = np.asarray(image, np.float32)
    if img.ndim != 2 or min(img.shape) < 16:
        raise DataError(f"expected a 2-D greyscale image of at least 16 px, got shape {img.shape}")
    b = _box_array(boxes)
    if size_range is None:
        if len(b):
            size = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
            size_range = tuple(np.percentile(size, [5, 95]))
        else:
            size_range = (4.0, 40.0)
    lo_px, hi_px = float(max(size_range[0], 2.0)), float(max(size_range[1], size_range[0], 2.0))
    box_sizes = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) if len(b) else np.zeros(0)
    all_lo = min(lo_px, float(box_sizes.min())) if len(b) else lo_px
    all_hi = max(hi_px, float(box_sizes.max())) if len(b) else hi_px
    sigmas = _default_sigmas(all_lo / math.sqrt(2), all_hi * math.sqrt(2))
    ss = scale_space(img, sigmas)
    free = _free_mask(img.shape, b, grow)
    ss.set_background(free, block)
    snr, _ = visibility(ss, b)
    invisible = snr < k_visible
    vis = snr[~invisible]
    if lookalike_threshold is None:
        lookalike_threshold = max(k_visible, float(np.percentile(vis, lookalike_quantile)) if len(vis) else k_visible)
    # "of defect size": the size range, one lattice step (√2) wider on each side
    rng_idx = (int(ss.scale_index(lo_px / (2 * math.sqrt(2)))) - 1, int(ss.scale_index(hi_px / (2 * math.sqrt(2)))) + 1)
    look = find_lookalikes(ss, free, lookalike_threshold, rng_idx, min_roundness)
    mpx = img.size / 1e6
    return {
        "n_boxes": int(len(b)),
        "snr": snr,
        "invisible": invisible,
        "n_invisible": int(invisible.sum()),
        "invisible_fraction": float(invisible.mean()) if len(b) else float("nan"),
        "lookalikes": look,
        "n_lookalikes": int(len(look)),
        "lookalikes_per_mpx": float(len(look) / mpx),
        "lookalike_ratio": float(len(look) / len(b)) if len(b) else float("nan"),
        "threshold_lookalike": float(lookalike_threshold),
        "k_visible": float(k_visible),
        "sigmas": [float(s) for s in sigmas],
        "fluctuation": [float(np.median(f)) for f in ss.fluct],
    }
