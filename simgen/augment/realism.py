"""How real does a set of images look?  Distances between two image sets.

Both sets are standardized first (:func:`simgen.augment.transforms.standardize`, as
the detector sees them), then compared by

* **power spectrum** — the radially averaged power spectral density (PSD) of each
  image (periodic component of Moisan's decomposition, so image borders add no
  spurious power), averaged over the set on fixed bins of spatial frequency in
  cycles/pixel.  Distance: root-mean-square difference of ``log10`` PSD over the
  bins, in decades (0 = identical spectra; 1 = a factor 10 everywhere).  It sees
  blur, noise level and texture scale.
* **intensity histogram** — the pooled histogram of standardized intensities.
  Distance: the 1-Wasserstein (earth mover's) distance on [0, 1] (0 = identical;
  it is the mean shift of intensity mass).  It sees saturation, skew and the
  shape of the grey-level distribution that standardization leaves.

Images of different sizes can be mixed: frequencies are in cycles/pixel.  Statistics
accumulate image by image (:class:`ImageSetStats`) so sets never need to fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft

from simgen.augment.readnoise import periodic_component
from simgen.augment.transforms import standardize
from simgen.errors import DataError, ParameterError

__all__ = ["ImageSetStats", "RealismDistance", "radial_psd", "set_stats", "realism_distance"]


def radial_psd(image: np.ndarray, n_bins: int = 48, standardized: bool = False) -> np.ndarray:
    """Radially averaged power spectrum of one image on ``n_bins`` bins over (0, 0.5] cycles/px.

    Bins with no frequency sample (tiny images) are NaN.
    """
    x = np.asarray(image, np.float64)
    if x.ndim != 2 or min(x.shape) < 8:
        raise DataError(f"PSD needs a 2-D image of at least 8x8 px, got shape {x.shape}")
    z = x if standardized else standardize(x).astype(np.float64)
    p = periodic_component(z)
    p -= p.mean()
    h, w = p.shape
    # |F|^2 with norm="forward" falls as 1/(h*w) for the same texture; times h*w it is a density
    # (variance per unit frequency area), so images of different sizes compare
    power = np.abs(sfft.rfft2(p, norm="forward", workers=1)) ** 2 * (h * w)
    fy = sfft.fftfreq(h)[:, None]
    fx = sfft.rfftfreq(w)[None, :]
    r = np.sqrt(fy * fy + fx * fx)
    # rfft2 holds columns 1..w/2-1 once for two conjugate bins: weight them twice
    weight = np.full(fx.shape, 2.0)
    weight[:, 0] = 1.0
    if w % 2 == 0:
        weight[:, -1] = 1.0
    weight = np.broadcast_to(weight, power.shape)
    edges = np.linspace(0.0, 0.5, n_bins + 1)
    idx = np.digitize(r, edges[1:-1], right=True)
    valid = (r > 0) & (r <= 0.5)
    num = np.bincount(idx[valid], weights=(power * weight)[valid], minlength=n_bins)
    den = np.bincount(idx[valid], weights=weight[valid], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


@dataclass
class ImageSetStats:
    """Running power spectrum and intensity histogram of an image set (after standardization)."""

    n_bins: int = 48
    n_hist: int = 128
    n: int = 0
    psd_sum: np.ndarray = field(default=None)
    psd_count: np.ndarray = field(default=None)
    hist: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.n_bins < 2 or self.n_hist < 2:
            raise ParameterError("n_bins and n_hist must be >= 2")
        if self.psd_sum is None:
            self.psd_sum = np.zeros(self.n_bins)
            self.psd_count = np.zeros(self.n_bins)
            self.hist = np.zeros(self.n_hist)

    def add(self, image: np.ndarray) -> "ImageSetStats":
        z = standardize(np.asarray(image, np.float32))
        psd = radial_psd(z, self.n_bins, standardized=True)
        ok = np.isfinite(psd)
        self.psd_sum[ok] += psd[ok]
        self.psd_count[ok] += 1
        self.hist += np.histogram(z, bins=self.n_hist, range=(0.0, 1.0))[0]
        self.n += 1
        return self

    def extend(self, images) -> "ImageSetStats":
        for im in images:
            self.add(im)
        return self

    @property
    def freqs(self) -> np.ndarray:
        """Bin centres in cycles/pixel."""
        edges = np.linspace(0.0, 0.5, self.n_bins + 1)
        return 0.5 * (edges[1:] + edges[:-1])

    @property
    def psd(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.psd_count > 0, self.psd_sum / np.maximum(self.psd_count, 1), np.nan)

    @property
    def density(self) -> np.ndarray:
        total = self.hist.sum()
        return self.hist / total if total else self.hist


@dataclass(frozen=True)
class RealismDistance:
    """Distances between two image sets; smaller is more alike."""

    psd: float  # RMS log10 PSD difference (decades)
    histogram: float  # 1-Wasserstein distance of standardized intensities
    n_a: int
    n_b: int

    def to_dict(self) -> dict:
        return {"psd": self.psd, "histogram": self.histogram, "n_a": self.n_a, "n_b": self.n_b}


def set_stats(images, n_bins: int = 48, n_hist: int = 128) -> ImageSetStats:
    """Accumulate :class:`ImageSetStats` over an iterable of images."""
    return ImageSetStats(n_bins, n_hist).extend(images)


def realism_distance(a, b, n_bins: int = 48, n_hist: int = 128) -> RealismDistance:
    """Distance between image sets ``a`` and ``b`` (iterables of images or :class:`ImageSetStats`).

    Raises
    ------
    DataError
        If a set is empty.
    """
    sa = a if isinstance(a, ImageSetStats) else set_stats(a, n_bins, n_hist)
    sb = b if isinstance(b, ImageSetStats) else set_stats(b, n_bins, n_hist)
    if sa.n == 0 or sb.n == 0:
        raise DataError("realism distance needs at least one image in each set")
    if sa.n_bins != sb.n_bins or sa.n_hist != sb.n_hist:
        raise ParameterError("both sets must use the same n_bins and n_hist")
    pa, pb = sa.psd, sb.psd
    tiny = 1e-30
    ok = np.isfinite(pa) & np.isfinite(pb)
    d_psd = float(np.sqrt(np.mean((np.log10(pa[ok] + tiny) - np.log10(pb[ok] + tiny)) ** 2))) if ok.any() else float("nan")
    cdf = np.cumsum(sa.density) - np.cumsum(sb.density)
    d_hist = float(np.abs(cdf).sum() / sa.n_hist)
    return RealismDistance(psd=d_psd, histogram=d_hist, n_a=sa.n, n_b=sb.n)
