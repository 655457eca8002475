"""A label-free census of dark, defect-like blobs: how many per megapixel, how deep, how large.

Spectrum and histogram distances (:mod:`simgen.augment.realism`) say nothing about what a
detector trains on: the population of dark blobs of defect size.  Two image sets with the same
spectrum can differ in exactly that — e.g. renders whose background mottle is full of
moderately dark, defect-sized blobs, against real frames where a few very dark loops stand on a
smooth streaky background.  :func:`blob_census` counts the dark-blob candidates of every image
(:func:`simgen.simulate.match.find_dark_blobs`: normalised LoG scale-space maxima above 3 robust
standard deviations, depth = ring median − disc mean relative to the level) after the
detector's own contrast normalisation (0.5 / 99.5 percentiles), and bins them by depth per
megapixel; :func:`census_distance` compares two censuses.  Pixels only, never labels: the
census of a real set is something every user can compute from their unlabelled micrographs.

Measured on the dev sets (README, *Realism judge*): the default dsva_fecral training images
hold about twice the real frames' blobs of depth 0.2–0.45 per Mpx and a quarter of their
blobs deeper than 0.7, and their deep blobs are smaller (median 6.7 vs 10.7 px).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from simgen.datasets.normalize import normalize_image
from simgen.errors import ParameterError
from simgen.simulate.match import find_dark_blobs

__all__ = ["DEPTH_EDGES", "BlobCensus", "blob_census", "census_distance", "defect_sized_blobs"]

#: Depth bins (relative contrast of a blob against its surroundings, percentile-normalised image).
DEPTH_EDGES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, np.inf)

#: LoG diameter of a disc: 2√2 σ.
_DIAMETER_PER_SIGMA = 2.0 * np.sqrt(2.0)


@dataclass(frozen=True)
class BlobCensus:
    """Dark-blob candidates of an image set, per megapixel.

    Attributes
    ----------
    depth_edges : tuple of float
        Bin edges of the blob depth (the last may be ``inf``).
    per_mpx : tuple of float
        Blobs per megapixel in each depth bin (``len(depth_edges) - 1`` values).
    deep : float
        Depth from which a blob counts as *deep* for ``deep_per_mpx`` and ``deep_diameter_px``.
    deep_per_mpx : float
    deep_diameter_px : tuple of float or None
        10th, 50th and 90th percentile of the deep blobs' LoG diameters (px); ``None`` without any.
    diameter_px : (float, float)
        Blob diameters counted (px).
    n_images : int
    megapixels : float
    """

    depth_edges: tuple
    per_mpx: tuple
    deep: float
    deep_per_mpx: float
    deep_diameter_px: tuple | None
    diameter_px: tuple
    n_images: int
    megapixels: float

    def to_dict(self) -> dict:
        return {"depth_edges": [None if not np.isfinite(e) else float(e) for e in self.depth_edges],
                "per_mpx": [round(float(v), 2) for v in self.per_mpx], "deep": self.deep,
                "deep_per_mpx": round(float(self.deep_per_mpx), 2),
                "deep_diameter_px": None if self.deep_diameter_px is None else [round(float(v), 2)
                                                                                for v in self.deep_diameter_px],
                "diameter_px": list(self.diameter_px), "n_images": self.n_images,
                "megapixels": round(float(self.megapixels), 4)}


def defect_sized_blobs(image: np.ndarray, diameter_px=(5.0, 45.0)) -> np.ndarray:
    """The dark-blob candidates of one image whose LoG diameter ``2√2 σ`` lies in ``diameter_px``.

    The image is contrast-normalised as the detector sees it (0.5 / 99.5 percentiles) first;
    returns :func:`~simgen.simulate.match.find_dark_blobs`' structured array (``x, y, sigma, depth, …``).
    """
    blobs = find_dark_blobs(normalize_image(np.asarray(image, np.float32), "percentile"))
    diameter = _DIAMETER_PER_SIGMA * blobs["sigma"]
    return blobs[(diameter >= diameter_px[0]) & (diameter <= diameter_px[1])]


def blob_census(images: Iterable[np.ndarray], *, depth_edges=DEPTH_EDGES, diameter_px=(5.0, 45.0),
                deep: float = 0.3) -> BlobCensus:
    """Count the dark blobs of ``images`` by depth, per megapixel.

    Parameters
    ----------
    images : iterable of (H, W) arrays
        Greyscale images, any range; each is contrast-normalised as the detector sees it
        (:func:`~simgen.datasets.normalize.normalize_image`, 0.5 / 99.5 percentiles).
    depth_edges : sequence of float
        Increasing bin edges of the blob depth.
    diameter_px : (float, float)
        Only blobs whose LoG diameter ``2√2 σ`` lies in this range (px) are counted.
    deep : float
        Depth threshold of the deep-blob summary.

    Returns
    -------
    BlobCensus
    """
    edges = np.asarray(depth_edges, float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ParameterError(f"depth_edges must be at least two increasing values, got {list(depth_edges)}")
    lo, hi = (float(v) for v in diameter_px)
    if not 0 < lo < hi:
        raise ParameterError(f"diameter_px must be (lo, hi) with 0 < lo < hi, got {diameter_px}")
    counts = np.zeros(len(edges) - 1)
    deep_diameters: list[np.ndarray] = []
    n, pixels = 0, 0
    for image in images:
        blobs = defect_sized_blobs(image, (lo, hi))
        counts += np.histogram(blobs["depth"], edges)[0]
        deep_diameters.append(_DIAMETER_PER_SIGMA * blobs["sigma"][blobs["depth"] >= deep])
        n += 1
        pixels += np.asarray(image).size
    if n == 0:
        raise ParameterError("blob_census needs at least one image")
    mpx = pixels / 1e6
    dd = np.concatenate(deep_diameters)
    return BlobCensus(depth_edges=tuple(float(e) for e in edges), per_mpx=tuple(counts / mpx), deep=float(deep),
                      deep_per_mpx=float(len(dd) / mpx),
                      deep_diameter_px=tuple(np.percentile(dd, [10, 50, 90])) if len(dd) else None,
                      diameter_px=(lo, hi), n_images=n, megapixels=mpx)


def census_distance(a: BlobCensus, b: BlobCensus, *, floor: float = 1.0) -> float:
    """RMS difference of ``log10(blobs per Mpx + floor)`` over the depth bins, in decades.

    0 = the same blob population; 0.3 ≈ a factor 2 in every bin.  ``floor`` (blobs per Mpx)
    keeps nearly empty bins from dominating.
    """
    if tuple(a.depth_edges) != tuple(b.depth_edges):
        raise ParameterError("the two censuses use different depth bins")
    x = np.log10(np.asarray(a.per_mpx) + floor) - np.log10(np.asarray(b.per_mpx) + floor)
    return float(np.sqrt(np.mean(x**2)))
