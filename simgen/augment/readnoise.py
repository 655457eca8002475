"""FN — Fourier read noise: periodic camera noise measured on a real image, injected into simulations.

Physics
-------
A camera adds *read noise* when the sensor is read out.  Besides white noise it has a
structured part: every row (or column) read through the same amplifier gets a common
offset (row/column noise), and electronic pickup (clocks, mains) adds stripes of fixed
frequency.  In the 2-D Fourier transform of an image these show up away from DC as thin
lines along the axes, regularly spaced lines and isolated peaks, while the specimen's own
content gives a smooth, broad spectrum.  Their *amplitudes* are a property of the
instrument; their *phases* change from frame to frame.

Extraction (:func:`extract_profile`)
    1. standardize each image to zero mean and unit variance;
    2. cut it into square tiles and average their periodograms (Welch's method) after
       the periodic-plus-smooth decomposition of Moisan (2011), which removes the
       boundary "cross" an FFT of a non-periodic tile would otherwise produce;
    3. estimate the smooth background spectrum ``S``: its radial median profile times a
       median filter of the remainder (a line one bin wide or a peak never reaches the
       median);
    4. keep, away from DC (``|f| >= min_freq``), whole spectrum rows/columns whose median
       ratio ``P/S`` shows a line, and bins whose ratio is a peak: at least ``peak_ratio``
       times the background and significant (false-alarm rate ``fpr`` per spectrum under
       the Gamma law of an averaged periodogram);
    5. store the excess power ``P - S`` of the kept bins as components
       ``(fy, fx, power)`` in cycles/pixel, so the profile applies to any image size.

Injection (:class:`ReadNoise`)
    Spread the components' power onto the target image's frequency grid, give every
    bin a random phase (Hermitian-symmetric so the field is real), inverse-FFT and
    scale to the requested RMS.  The field has exactly the profile's power spectrum and
    exactly the requested standard deviation, whatever the phases.

The profile is a plain :class:`NoiseProfile`; reading and writing ``.npz`` files is done
by :mod:`simgen.datasets.augment_io`.  :func:`synthetic_profile` builds the default
profile shipped with simgen (a documented synthetic stripe pattern).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft

from simgen.errors import DataError, ParameterError

__all__ = [
    "NoiseProfile",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "periodic_component",
    "extract_profile",
    "synthetic_profile",
    "spectrum_grid",
    "synthesize",
]

PROFILE_FORMAT = "simgen-readnoise"
PROFILE_VERSION = 1


@dataclass(frozen=True, eq=False)
class NoiseProfile:
    """A periodic read-noise power spectrum, independent of image size.

    Attributes
    ----------
    freqs : (K, 2) float64
        Component frequencies ``(fy, fx)`` in cycles/pixel, in [-0.5, 0.5).  The set is
        symmetric (``-f`` is present with the same power whenever ``f`` is).
    power : (K,) float64
        Fraction of the noise power in each component (sums to 1).
    cell : (float, float)
        Frequency extent ``(dfy, dfx)`` of one component (the measurement's bin width);
        its power is spread uniformly over that cell on finer target grids.
    rms_ratio : float
        RMS of the periodic noise relative to the standard deviation of the source
        images (0 for synthetic profiles).
    meta : dict
        JSON-able description: sources, method, thresholds, counts.
    """

    freqs: np.ndarray
    power: np.ndarray
    cell: tuple[float, float]
    rms_ratio: float = 0.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        freqs = np.asarray(self.freqs, np.float64).reshape(-1, 2)
        power = np.asarray(self.power, np.float64).reshape(-1)
        if len(freqs) != len(power):
            raise ParameterError(f"noise profile has {len(freqs)} frequencies but {len(power)} powers")
        if not len(power):
            raise DataError("noise profile has no components (no periodic noise was found)")
        if not (np.all(np.isfinite(freqs)) and np.all(np.isfinite(power))) or np.any(power < 0):
            raise ParameterError("noise profile frequencies/powers must be finite and powers >= 0")
        if np.any(np.abs(freqs) > 0.5):
            raise ParameterError("noise profile frequencies must lie in [-0.5, 0.5] cycles/pixel")
        total = power.sum()
        if total <= 0:
            raise DataError("noise profile has zero total power")
        object.__setattr__(self, "freqs", freqs)
        object.__setattr__(self, "power", power / total)
        cell = tuple(float(c) for c in np.broadcast_to(np.asarray(self.cell, np.float64), (2,)))
        if not all(0 < c <= 1 for c in cell):
            raise ParameterError(f"noise profile cell must be in (0, 1], got {cell}")
        object.__setattr__(self, "cell", cell)

    def __len__(self) -> int:
        return len(self.power)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for an ``.npz`` file (see :mod:`simgen.datasets.augment_io`)."""
        import json

        return {
            "format": np.array(PROFILE_FORMAT),
            "version": np.array(PROFILE_VERSION),
            "freqs": self.freqs.astype(np.float32),
            "power": self.power.astype(np.float32),
            "cell": np.array(self.cell, np.float64),
            "rms_ratio": np.array(float(self.rms_ratio)),
            "meta": np.array(json.dumps(self.meta, sort_keys=True)),
        }

    @classmethod
    def from_arrays(cls, arrays) -> "NoiseProfile":
        """Inverse of :meth:`to_arrays`; raises :class:`DataError` on anything else."""
        import json

        try:
            fmt = str(arrays["format"][()])
            version = int(arrays["version"][()])
        except (KeyError, ValueError, TypeError):
            raise DataError("not a simgen read-noise profile (missing 'format'/'version')") from None
        if fmt != PROFILE_FORMAT:
            raise DataError(f"not a simgen read-noise profile (format {fmt!r})")
        if version != PROFILE_VERSION:
            raise DataError(f"unsupported read-noise profile version {version} (this simgen reads {PROFILE_VERSION})")
        try:
            return cls(
                freqs=np.asarray(arrays["freqs"], np.float64),
                power=np.asarray(arrays["power"], np.float64),
                cell=tuple(np.asarray(arrays["cell"], np.float64)),
                rms_ratio=float(arrays["rms_ratio"][()]),
                meta=json.loads(str(arrays["meta"][()])),
            )
        except KeyError as exc:
            raise DataError(f"read-noise profile lacks array {exc.args[0]!r}") from None

    def describe(self) -> dict:
        return {
            "components": len(self),
            "rms_ratio": round(float(self.rms_ratio), 6),
            "cell": list(self.cell),
            **{k: v for k, v in self.meta.items() if k in ("name", "source", "sources", "method", "sha256")},
        }


# ----------------------------------------------------------------------------- analysis


def periodic_component(u: np.ndarray) -> np.ndarray:
    """Periodic component of Moisan's periodic-plus-smooth decomposition.

    ``u = p + s`` with ``s`` smooth and ``p`` periodic-friendly: the FFT of ``p`` has
    no spurious cross from the jump between opposite image borders.

    Reference: L. Moisan, "Periodic plus smooth image decomposition",
    J. Math. Imaging Vis. 39 (2011) 161-179.
    """
    u = np.asarray(u, np.float64)
    h, w = u.shape
    v = np.zeros_like(u)
    d = u[-1, :] - u[0, :]
    v[0, :] += d
    v[-1, :] -= d
    d = u[:, -1] - u[:, 0]
    v[:, 0] += d
    v[:, -1] -= d
    q = 2.0 * np.cos(2 * np.pi * np.arange(h) / h)[:, None] + 2.0 * np.cos(2 * np.pi * np.arange(w) / w)[None, :] - 4.0
    q[0, 0] = 1.0
    s_hat = sfft.fft2(v, workers=1) / q
    s_hat[0, 0] = 0.0
    return u - sfft.ifft2(s_hat, workers=1).real


def _tiles(image: np.ndarray, tile: int):
    h, w = image.shape
    ny, nx = h // tile, w // tile
    oy, ox = (h - ny * tile) // 2, (w - nx * tile) // 2
    for i in range(ny):
        for j in range(nx):
            yield image[oy + i * tile : oy + (i + 1) * tile, ox + j * tile : ox + (j + 1) * tile]


def _gamma_quantiles(k: int, fpr: float) -> tuple[float, float]:
    """Median and upper ``fpr`` quantile of the mean of ``k`` unit exponentials."""
    from scipy.stats import gamma

    dist = gamma(a=k, scale=1.0 / k)
    return float(dist.median()), float(dist.isf(fpr))


def extract_profile(
    images,
    *,
    tile: int = 256,
    min_freq: float = 0.02,
    line_ratio: float = 1.5,
    peak_ratio: float = 4.0,
    fpr: float = 0.01,
    median_size: int = 7,
    max_components: int = 20000,
    name: str | None = None,
    sources=None,
) -> NoiseProfile:
    """Measure the periodic read-noise spectrum of one or more real images.

    Parameters
    ----------
    images : iterable of (H, W) arrays
        Images of one instrument (any sizes >= 32 px).
    tile : int
        Welch tile side (reduced to the largest even side that fits the smallest image).
    min_freq : float
        Ignore frequencies below this radius (cycles/pixel): specimen content and
        illumination live there.
    line_ratio : float
        A spectrum row/column is a line when its median power is this many times the
        background.
    peak_ratio : float
        A bin is a peak when its power is at least this many times the background *and*
        significant (see ``fpr``); the ratio guards against small biases of the background
        estimate when many tiles make every bin's estimate precise.
    fpr : float
        Expected number of false peak detections per spectrum.
    median_size : int
        Side of the median filter estimating the smooth background.
    max_components : int
        Keep at most this many strongest components.
    name, sources : optional
        Provenance stored in ``meta``.

    Returns
    -------
    NoiseProfile

    Raises
    ------
    DataError
        If no image is given, an image is too small, or no periodic noise is found.
    """
    if int(tile) != tile or tile < 16:
        raise ParameterError(f"tile must be an integer >= 16, got {tile}")
    if not 0 <= min_freq < 0.5:
        raise ParameterError(f"min_freq must be in [0, 0.5) cycles/pixel, got {min_freq}")
    if line_ratio <= 1 or peak_ratio <= 1:
        raise ParameterError(f"line_ratio and peak_ratio must be > 1, got {line_ratio}, {peak_ratio}")
    if not 0 < fpr < 1:
        raise ParameterError(f"fpr must be in (0, 1), got {fpr}")
    arrays = [np.asarray(im, np.float64) for im in images]
    if not arrays:
        raise DataError("no images to extract read noise from")
    for im in arrays:
        if im.ndim != 2 or min(im.shape) < 32:
            raise DataError(f"read-noise extraction needs 2-D images of at least 32x32 px, got shape {im.shape}")
    t = int(min(tile, *(min(im.shape) for im in arrays)))
    t -= t % 2
    acc = np.zeros((t, t))
    n_tiles = 0
    for im in arrays:
        sd = im.std()
        if not sd > 0:
            continue
        z = (im - im.mean()) / sd
        for block in _tiles(z, t):
            p = periodic_component(block)
            p -= p.mean()
            acc += np.abs(sfft.fft2(p, norm="forward", workers=1)) ** 2
            n_tiles += 1
    if n_tiles == 0:
        raise DataError("all images are constant; no read noise to extract")
    power = acc / n_tiles  # sums to ~1: the (unit) variance of z
    from scipy import ndimage
    from scipy.ndimage import median_filter

    med_factor, peak_q = _gamma_quantiles(n_tiles, fpr / power.size)
    f = sfft.fftfreq(t)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    radius = np.hypot(fy, fx)
    # flatten the steep, isotropic specimen spectrum with its radial median first, so the
    # local median filter only has to follow the (slow) anisotropic remainder
    ring = np.rint(radius * t).astype(np.int64)
    rings = np.arange(ring.max() + 1)
    radial = np.asarray(ndimage.median(power, labels=ring, index=rings), np.float64)
    radial = np.maximum(np.nan_to_num(radial), np.finfo(float).tiny)[ring]
    background = radial * median_filter(power / radial, size=median_size, mode="wrap") / med_factor
    background = np.maximum(background, np.finfo(float).tiny)
    ratio = power / background
    # a median filter cannot follow the spectrum within a few bins of DC
    usable = radius >= max(min_freq, (median_size // 2 + 1) / t)
    masked = np.where(usable, ratio, np.nan)
    with np.errstate(all="ignore"):
        row_med = np.nanmedian(masked, axis=1)
        col_med = np.nanmedian(masked, axis=0)
    rows = np.nan_to_num(row_med) >= line_ratio
    cols = np.nan_to_num(col_med) >= line_ratio
    peaks = ratio >= max(peak_q, peak_ratio)
    keep = (rows[:, None] | cols[None, :] | peaks) & usable
    excess = np.where(keep, np.maximum(power - background, 0.0), 0.0)
    excess = 0.5 * (excess + excess[(-np.arange(t)) % t][:, (-np.arange(t)) % t])  # Hermitian symmetry
    total = float(excess.sum())
    if total <= 0:
        raise DataError(
            f"no periodic read noise found in {len(arrays)} image(s) ({n_tiles} tiles of {t} px): "
            "no line or peak stands out of the background spectrum"
        )
    iy, ix = np.nonzero(excess)
    values = excess[iy, ix]
    if len(values) > max_components:
        top = np.argsort(values)[::-1][:max_components]
        iy, ix, values = iy[top], ix[top], values[top]
    meta = {
        "name": name or "extracted",
        "method": "welch+moisan periodic component; median-filter background; row/column lines + Gamma peaks",
        "tile": t,
        "n_tiles": n_tiles,
        "n_images": len(arrays),
        "min_freq": min_freq,
        "line_ratio": line_ratio,
        "peak_ratio": peak_ratio,
        "fpr": fpr,
        "line_rows": int(rows.sum()),
        "line_cols": int(cols.sum()),
        "peak_bins": int((peaks & usable).sum()),
    }
    if sources is not None:
        meta["sources"] = [str(s) for s in sources]
    return NoiseProfile(
        freqs=np.stack([f[iy], f[ix]], axis=1),
        power=values,
        cell=(1.0 / t, 1.0 / t),
        rms_ratio=float(np.sqrt(total)),
        meta=meta,
    )


def synthetic_profile(size: int = 256) -> NoiseProfile:
    """The default profile: a synthetic stripe pattern of a typical CMOS/CCD camera.

    Deterministic (no random draws).  Power fractions:

    * 45 % row noise — every row gets its own offset (a vertical line ``fx = 0`` in
      the spectrum, white along ``fy``);
    * 15 % column fixed-pattern noise (the line ``fy = 0``);
    * 25 % horizontal interference stripes with a period of 7.3 px and two harmonics,
      broadened along ``fx`` as drifting pickup is (regularly spaced lines);
    * 15 % three isolated peaks (clock pickup: slanted stripes of periods 4.3, 9.1 and
      3.1 px).
    """
    n = int(size)
    f = sfft.fftfreq(n)
    spec = np.zeros((n, n))
    nz = f != 0
    spec[nz, 0] += 0.45 / nz.sum()
    spec[0, nz] += 0.15 / nz.sum()
    fx_profile = np.exp(-0.5 * (f / 0.06) ** 2)
    for harmonic, weight in ((1, 0.6), (2, 0.3), (3, 0.1)):
        ky = int(round(harmonic * n / 7.3)) % n
        if ky == 0 or ky >= n // 2:
            continue
        for k in (ky, -ky):
            spec[k % n] += 0.25 * weight / 2 * fx_profile / fx_profile.sum()
    for (py, px), weight in (((1 / 4.3, 0.05), 0.4), ((0.07, 1 / 9.1), 0.35), ((1 / 3.1, -0.21), 0.25)):
        ky, kx = int(round(py * n)) % n, int(round(px * n)) % n
        spec[ky, kx] += 0.15 * weight / 2
        spec[-ky % n, -kx % n] += 0.15 * weight / 2
    spec[0, 0] = 0.0
    iy, ix = np.nonzero(spec)
    return NoiseProfile(
        freqs=np.stack([f[iy], f[ix]], axis=1),
        power=spec[iy, ix],
        cell=(1.0 / n, 1.0 / n),
        rms_ratio=0.0,
        meta={
            "name": "default",
            "source": "synthetic stripe pattern (simgen.augment.readnoise.synthetic_profile)",
            "method": "45% row noise, 15% column noise, 25% 7.3-px stripes with harmonics, 15% three peaks",
            "tile": n,
        },
    )


# ----------------------------------------------------------------------------- synthesis


def spectrum_grid(profile: NoiseProfile, shape: tuple[int, int]) -> np.ndarray:
    """The profile's power on the full ``fft2`` grid of an image of ``shape`` (sums to 1).

    Each component's power is spread uniformly over the target bins inside its cell;
    a component narrower than the target bin goes to the nearest bin.  The result is
    symmetric under ``k -> -k`` and has no power at DC.
    """
    h, w = (int(s) for s in shape)
    dfy, dfx = profile.cell

    def cover(freq, cell, n):
        lo = np.ceil((freq - cell / 2) * n - 1e-9).astype(np.int64)
        hi = np.ceil((freq + cell / 2) * n - 1e-9).astype(np.int64) - 1
        nearest = np.rint(freq * n).astype(np.int64)
        empty = hi < lo
        lo = np.where(empty, nearest, lo)
        hi = np.where(empty, nearest, hi)
        return lo, hi - lo + 1

    y0, ny = cover(profile.freqs[:, 0], dfy, h)
    x0, nx = cover(profile.freqs[:, 1], dfx, w)
    share = profile.power / (ny * nx)
    grid = np.zeros(h * w)
    for dy in range(int(ny.max())):
        my = dy < ny
        for dx in range(int(nx.max())):
            m = my & (dx < nx)
            flat = ((y0[m] + dy) % h) * w + (x0[m] + dx) % w
            grid += np.bincount(flat, weights=share[m], minlength=h * w)
    grid = grid.reshape(h, w)
    grid = 0.5 * (grid + grid[(-np.arange(h)) % h][:, (-np.arange(w)) % w])
    grid[0, 0] = 0.0
    total = grid.sum()
    if total <= 0:
        raise DataError(f"noise profile has no power on a {h}x{w} grid")
    return grid / total


@dataclass(frozen=True, eq=False)
class _HalfPlane:
    """Sparse half-plane amplitudes of one target shape, with the Hermitian bookkeeping."""

    shape: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray
    amp: np.ndarray
    mirror: np.ndarray  # index into the arrays of the conjugate partner (self for real bins)
    free: np.ndarray  # bins whose phase is drawn (one per conjugate pair in the edge columns)
    real: np.ndarray  # self-conjugate bins: phase 0 or pi

    def __post_init__(self):
        object.__setattr__(self, "flat", self.rows * (self.shape[1] // 2 + 1) + self.cols)
        object.__setattr__(self, "tied", np.nonzero(~self.free & ~self.real)[0])
        object.__setattr__(self, "real_idx", np.nonzero(self.real)[0])


def _half_plane(profile: NoiseProfile, shape: tuple[int, int]) -> _HalfPlane:
    h, w = shape
    power = spectrum_grid(profile, shape)
    wh = w // 2 + 1
    half = power[:, :wh]
    rows, cols = np.nonzero(half)
    amp = np.sqrt(half[rows, cols])
    # columns kx = 0 and (even w) kx = w/2 must be Hermitian within themselves
    edge = (cols == 0) | ((w % 2 == 0) & (cols == w // 2))
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(rows[edge], cols[edge]))}
    pos = np.nonzero(edge)[0]
    mirror = np.arange(len(rows))
    free = np.ones(len(rows), bool)
    real = np.zeros(len(rows), bool)
    for _k, i in enumerate(pos):
        r, c = int(rows[i]), int(cols[i])
        partner = (-r) % h
        if partner == r:
            real[i] = True
            continue
        j = pos[index[(partner, c)]]
        mirror[i] = j
        free[i] = r < partner  # the partner with the smaller row draws the phase
    return _HalfPlane((h, w), rows, cols, amp.astype(np.float32), mirror, free, real)


def synthesize(profile: NoiseProfile, shape: tuple[int, int], rng: np.random.Generator, cache: dict | None = None) -> np.ndarray:
    """One real noise field of ``shape`` with the profile's spectrum, zero mean and unit variance.

    Phases are uniform and independent (Hermitian pairs tied), so the field's power
    spectrum, and hence its standard deviation, is exact for every draw.

    Parameters
    ----------
    cache : dict, optional
        Reused between calls to skip the per-shape set-up.
    """
    shape = (int(shape[0]), int(shape[1]))
    hp = cache.get(shape) if cache is not None else None
    if hp is None:
        hp = _half_plane(profile, shape)
        if cache is not None:
            cache[shape] = hp
    h, w = shape
    theta = rng.uniform(0.0, 2.0 * np.pi, size=len(hp.amp))
    if hp.tied.size:  # Hermitian partners within the kx = 0 and Nyquist columns
        theta[hp.tied] = -theta[hp.mirror[hp.tied]]
    if hp.real_idx.size:  # self-conjugate bins are real: phase 0 or pi
        theta[hp.real_idx] = np.where(theta[hp.real_idx] < np.pi, 0.0, np.pi)
    spec = np.zeros(h * (w // 2 + 1), np.complex64)
    values = np.empty(len(theta), np.complex64)
    values.real = hp.amp * np.cos(theta)
    values.imag = hp.amp * np.sin(theta)
    spec[hp.flat] = values
    out = sfft.irfft2(spec.reshape(h, w // 2 + 1), s=(h, w), norm="forward", workers=1)
    return out.astype(np.float32, copy=False)
