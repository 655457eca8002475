"""Defect geometry from detections: sizes, size statistics, areal density, diffusivity.

Size of one detection (:func:`measure_box`), scikit-image style steps on the box crop::

    crop      = image[box]                         (+ a small margin)
    mask      = crop < threshold_otsu(crop)        (dark defects; ``polarity="bright"`` flips it)
    distance  = distance_transform_edt(mask)
    markers   = peak_local_max(distance)            (one seed per blob)
    labels    = watershed(-distance, markers, mask=mask)
    region    = label under the box centre (else the nearest region)
    ellipse   = second-moment ellipse of the region (major, minor axis, angle)
    size      = major axis length

The moment ellipse has the same second moments as the region: for a filled
ellipse with semi-axes ``a >= b`` it gives ``major = 2 a``, ``minor = 2 b``
(scikit-image's ``regionprops`` convention).  Angles are in radians from the
+x (column) axis towards +y (row), in ``(-pi/2, pi/2]``.

Areal density is ``count * visibility / area``: in bright-field TEM only some
loop variants are in contrast under one diffraction vector, so the visible
count is scaled by a correction factor (default 7/4).  The effective 2-D
diffusivity from tracks is ``Deff(tau) = <|r(t+tau) - r(t)|^2> / (4 tau)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from simgen.errors import DataError, ParameterError
from simgen.evaluate.matching import BOX_COLUMNS, box_centres

__all__ = [
    "VISIBILITY",
    "crop_box",
    "segment_crop",
    "ellipse_from_mask",
    "measure_box",
    "measure_sizes",
    "size_stats_per_frame",
    "areal_density",
    "msd",
    "diffusivity",
]

#: Default visibility correction factor for loop densities (7/4).
VISIBILITY = 7.0 / 4.0

_NAN_RESULT = {"cx": math.nan, "cy": math.nan, "major": math.nan, "minor": math.nan, "angle": math.nan,
               "area": 0.0, "size": math.nan}


def crop_box(image: np.ndarray, box: Sequence[float] | np.ndarray, pad: int = 2) -> tuple[np.ndarray, tuple[int, int]]:
    """Crop ``image`` to a box (pixels touched by it) plus ``pad`` pixels, clipped to the image.

    Returns
    -------
    crop : ndarray
    origin : (x, y) int
        Column and row of the crop's top-left pixel in the image.
    """
    image = np.asarray(image)
    h, w = image.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    c0 = max(0, int(math.floor(x0)) - pad)
    r0 = max(0, int(math.floor(y0)) - pad)
    c1 = min(w, int(math.ceil(x1)) + pad)
    r1 = min(h, int(math.ceil(y1)) + pad)
    return image[r0:max(r0, r1), c0:max(c0, c1)], (c0, r0)


def segment_crop(crop: np.ndarray, *, polarity: str = "dark", min_distance: int = 3) -> np.ndarray:
    """Otsu threshold + distance transform + marker watershed on a crop.

    Parameters
    ----------
    crop : (h, w) float array
    polarity : {"dark", "bright"}
        Whether defects are darker (bright-field TEM) or brighter than the background.
    min_distance : int
        Minimum separation of watershed seeds (pixels).

    Returns
    -------
    labels : (h, w) int32 array
        0 = background, 1..n = blobs.  All zero when the crop is constant.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    if polarity not in ("dark", "bright"):
        raise ParameterError(f"polarity must be 'dark' or 'bright', got {polarity!r}")
    crop = np.asarray(crop, np.float64)
    if crop.size == 0 or crop.min() == crop.max():
        return np.zeros(crop.shape, np.int32)
    t = threshold_otsu(crop)
    mask = crop <= t if polarity == "dark" else crop > t
    distance = ndi.distance_transform_edt(mask)
    blobs, _ = ndi.label(mask)
    peaks = peak_local_max(distance, min_distance=max(1, int(min_distance)), labels=blobs, exclude_border=False)
    markers = np.zeros(crop.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # every blob needs a seed, or watershed leaves it unlabelled
    seeded = np.unique(blobs[markers > 0])
    for k in np.setdiff1d(np.arange(1, blobs.max() + 1), seeded):
        r, c = np.argwhere(blobs == k)[0]
        markers[r, c] = markers.max() + 1
    return watershed(-distance, markers, mask=mask).astype(np.int32)


def ellipse_from_mask(mask: np.ndarray) -> dict:
    """Second-moment ellipse of a binary region.

    Returns
    -------
    dict
        ``cx, cy`` (centroid, pixel centres at +0.5), ``major, minor`` (full axis
        lengths, ``4 sqrt(eigenvalue)`` of the coordinate covariance), ``angle``
        (radians from +x towards +y) and ``area`` (pixels).

    Examples
    --------
    >>> from skimage.draw import ellipse
    >>> m = np.zeros((60, 60), bool); m[ellipse(30, 30, 8, 20)] = True   # semi-axes 8 (rows), 20 (cols)
    >>> e = ellipse_from_mask(m); round(e["major"]), round(e["minor"]), round(e["angle"], 3)
    (40, 16, 0.0)
    """
    rr, cc = np.nonzero(mask)
    n = len(rr)
    if n == 0:
        return {k: v for k, v in _NAN_RESULT.items() if k != "size"}
    x = cc + 0.5
    y = rr + 0.5
    cx, cy = float(x.mean()), float(y.mean())
    dx, dy = x - cx, y - cy
    cov = np.array([[np.mean(dx * dx), np.mean(dx * dy)], [np.mean(dx * dy), np.mean(dy * dy)]])
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    vx, vy = vecs[:, 1]
    angle = math.atan2(vy, vx)
    if angle <= -math.pi / 2:
        angle += math.pi
    elif angle > math.pi / 2:
        angle -= math.pi
    return {"cx": cx, "cy": cy, "major": 4.0 * math.sqrt(vals[1]), "minor": 4.0 * math.sqrt(vals[0]),
            "angle": angle, "area": float(n)}


def measure_box(image: np.ndarray, box: Sequence[float] | np.ndarray, *, polarity: str = "dark", pad: int = 2, min_distance: int = 3) -> dict:
    """Segment the defect inside one detection box and fit an ellipse.

    Parameters
    ----------
    image : (H, W) float array
    box : (x0, y0, x1, y1)
    polarity, min_distance : see :func:`segment_crop`
    pad : int
        Margin (pixels) added around the box before thresholding.

    Returns
    -------
    dict
        ``cx, cy, major, minor, angle, area`` in image coordinates and
        ``size = major``; NaN sizes when nothing could be segmented.
    """
    crop, (c0, r0) = crop_box(image, box, pad)
    if min(crop.shape) < 2:
        return dict(_NAN_RESULT)
    labels = segment_crop(crop, polarity=polarity, min_distance=min_distance)
    if labels.max() == 0:
        return dict(_NAN_RESULT)
    bx, by = box_centres(np.asarray(box, np.float64)[None])[0]
    r = int(np.clip(math.floor(by) - r0, 0, crop.shape[0] - 1))
    c = int(np.clip(math.floor(bx) - c0, 0, crop.shape[1] - 1))
    k = labels[r, c]
    if k == 0:  # centre on background: take the region whose centroid is nearest the centre
        from scipy import ndimage as ndi

        ids = np.arange(1, labels.max() + 1)
        cents = np.asarray(ndi.center_of_mass(labels > 0, labels, ids)).reshape(-1, 2)
        d = np.hypot(cents[:, 0] + 0.5 - (by - r0), cents[:, 1] + 0.5 - (bx - c0))
        k = ids[int(np.nanargmin(d))]
    e = ellipse_from_mask(labels == k)
    e["cx"] += c0
    e["cy"] += r0
    e["size"] = e["major"]
    return e


def measure_sizes(image_of: Callable[[int], ArrayLike], boxes: pd.DataFrame, *, polarity: str = "dark", pad: int = 2,
                  min_distance: int = 3) -> pd.DataFrame:
    """Measure every box of a table.

    Parameters
    ----------
    image_of : callable
        ``image_of(sample) -> (H, W) float image`` (called once per frame).
    boxes : DataFrame
        ``sample, x0, y0, x1, y1`` (other columns are kept).

    Returns
    -------
    DataFrame
        ``boxes`` with columns ``cx, cy, major, minor, angle, area, size`` added
        (same row order).
    """
    missing = [c for c in ["sample", *BOX_COLUMNS] if c not in boxes.columns]
    if missing:
        raise DataError(f"size measurement needs box columns; missing {missing}")
    keys = list(_NAN_RESULT)
    cols = {k: np.full(len(boxes), np.nan) for k in keys}
    b = boxes[BOX_COLUMNS].to_numpy(np.float64)
    s = boxes["sample"].to_numpy(np.int64)
    for sample in np.unique(s).tolist():
        image = np.asarray(image_of(sample), np.float64)
        for i in np.flatnonzero(s == sample).tolist():
            e = measure_box(image, b[i], polarity=polarity, pad=pad, min_distance=min_distance)
            for k in keys:
                cols[k][i] = e[k]
    return boxes.assign(**cols)


def size_stats_per_frame(sizes: pd.DataFrame, n_frames: int | None = None, column: str = "size") -> pd.DataFrame:
    """Median and quartiles of defect size per frame (NaN sizes ignored).

    Returns
    -------
    DataFrame
        ``sample, n, median, q1, q3`` for frames ``0..n_frames-1``.
    """
    s = sizes["sample"].to_numpy(np.int64)
    n = int(s.max(initial=-1) + 1) if n_frames is None else int(n_frames)
    g = sizes[np.isfinite(sizes[column].to_numpy(np.float64))].groupby("sample")[column]
    out = pd.DataFrame({"n": g.size(), "median": g.median(), "q1": g.quantile(0.25), "q3": g.quantile(0.75)})
    out = out.reindex(range(n))
    out["n"] = out["n"].fillna(0).astype(np.int64)
    out.index.name = "sample"
    return out.reset_index()


def areal_density(count: ArrayLike, area: float, *, visibility: float = VISIBILITY,
                  pixel_size: float | None = None) -> float | np.ndarray:
    """Defects per unit area, corrected for invisible variants.

    Parameters
    ----------
    count : int or array
        Visible defects (per frame).
    area : float
        Field of view in pixels^2.
    visibility : float
        Correction factor (default 7/4).
    pixel_size : float, optional
        Length of a pixel (e.g. nm); the density is then per unit^2 instead of per pixel^2.

    Returns
    -------
    float or ndarray
        ``count * visibility / (area * pixel_size**2)``.
    """
    if not (np.isfinite(visibility) and visibility > 0):
        raise ParameterError(f"visibility factor must be > 0, got {visibility}")
    if not (np.isfinite(area) and area > 0):
        raise ParameterError(f"area must be > 0, got {area}")
    scale = 1.0 if pixel_size is None else float(pixel_size) ** 2
    if scale <= 0 or not np.isfinite(scale):
        raise ParameterError(f"pixel size must be > 0, got {pixel_size}")
    out = np.asarray(count, np.float64) * visibility / (area * scale)
    return float(out) if out.ndim == 0 else out


def msd(tracks: pd.DataFrame, max_lag: int = 10) -> pd.DataFrame:
    """Ensemble mean squared displacement ``<|r(t+tau) - r(t)|^2>`` for lags 1..max_lag.

    Pairs are taken within tracks at exactly ``tau`` frames apart (gaps are not
    interpolated).

    Returns
    -------
    DataFrame
        ``lag, msd, n_pairs`` (msd in pixels^2; NaN when no pair exists).
    """
    if int(max_lag) != max_lag or max_lag < 1:
        raise ParameterError(f"max lag must be a positive integer, got {max_lag}")
    for col in ("sample", "track_id", "x", "y"):
        if col not in tracks.columns:
            raise DataError(f"tracks need a {col!r} column for the MSD (have {list(tracks.columns)})")
    t = tracks["sample"].to_numpy(np.int64)
    tid = tracks["track_id"].to_numpy(np.int64)
    xy = tracks[["x", "y"]].to_numpy(np.float64)
    index = pd.MultiIndex.from_arrays([tid, t])
    if index.has_duplicates:
        raise DataError("tracks have a track id twice in one frame")
    pos = pd.DataFrame(xy, index=index, columns=["x", "y"])
    rows = []
    for lag in range(1, int(max_lag) + 1):
        later = pos.reindex(pd.MultiIndex.from_arrays([tid, t + lag])).to_numpy()
        d2 = np.sum((later - xy) ** 2, axis=1)
        ok = np.isfinite(d2)
        rows.append({"lag": lag, "msd": float(d2[ok].mean()) if ok.any() else float("nan"), "n_pairs": int(ok.sum())})
    return pd.DataFrame(rows)


def diffusivity(tracks: pd.DataFrame, lag: int = 1, *, pixel_size: float = 1.0, frame_interval: float = 1.0) -> float:
    """Effective diffusivity ``Deff = <|r(t+tau) - r(t)|^2> / (4 tau)`` from tracks.

    Parameters
    ----------
    tracks : DataFrame
        ``sample, track_id, x, y``.
    lag : int
        ``tau`` in frames.
    pixel_size, frame_interval : float
        Units: Deff is in ``pixel_size**2 / frame_interval`` (pixels^2 per frame by default).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"sample": [0, 1, 2], "track_id": 0, "x": [0., 2., 4.], "y": 0.})
    >>> diffusivity(t)
    1.0
    """
    if frame_interval <= 0 or pixel_size <= 0:
        raise ParameterError("pixel size and frame interval must be > 0")
    m = msd(tracks, lag).iloc[-1]["msd"]
    return float(m * pixel_size**2 / (4.0 * lag * frame_interval))
