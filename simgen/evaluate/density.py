"""Areal and volumetric defect density per frame, and the time and dose of every frame.

In strong two-beam bright-field TEM only some dislocation-loop variants are in contrast under
one diffraction vector; the loop study scales the visible count by ``7/4``
(:data:`VISIBILITY`).  With ``N`` visible defects in a frame of ``A`` pixels of side ``p`` nm,
in a foil ``t`` nm thick::

    areal density      = N * 7/4 / (A p^2)        [m^-2]   (areal_density: per pixel² or per unit²)
    volumetric density = N * 7/4 / (A p^2 t)      [m^-3]

In-situ irradiation videos map frames to time and dose linearly: frame ``k`` is at
``t_k = k / frame_rate`` seconds and dose ``dose_start + dose_rate * t_k`` (e.g. dpa with a dose
rate in dpa/s).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from simgen.errors import ParameterError

__all__ = ["VISIBILITY", "NM2_PER_M2", "NM3_PER_M3", "areal_density", "volumetric_density", "frame_clock",
           "density_per_frame"]

#: Default visibility correction factor for loop densities (7/4).
VISIBILITY = 7.0 / 4.0

#: Square nanometres in a square metre, cubic nanometres in a cubic metre.
NM2_PER_M2 = 1e18
NM3_PER_M3 = 1e27


def _positive(value, name: str) -> float:
    if value is None or not (np.isfinite(value) and value > 0):
        raise ParameterError(f"{name} must be > 0, got {value}")
    return float(value)


def areal_density(count: ArrayLike, area: ArrayLike, *, visibility: float = VISIBILITY,
                  pixel_size: float | None = None) -> float | np.ndarray:
    """Defects per unit area, corrected for invisible variants: ``count * visibility / (area * pixel_size**2)``.

    Parameters
    ----------
    count : int or array
        Visible defects (per frame).
    area : float or array
        Field of view in pixels² (per frame, broadcast against ``count``).
    visibility : float
        Correction factor (default 7/4).
    pixel_size : float, optional
        Length of a pixel (e.g. nm); the density is then per unit² instead of per pixel².

    Returns
    -------
    float or ndarray
        Per pixel² (or per unit²).

    Examples
    --------
    >>> areal_density(100, 1000.0 * 1000.0)
    0.000175
    """
    if not (np.isfinite(visibility) and visibility > 0):
        raise ParameterError(f"visibility factor must be > 0, got {visibility}")
    area = np.asarray(area, np.float64)
    if not np.all(np.isfinite(area) & (area > 0)):
        raise ParameterError(f"area must be > 0, got {area if area.ndim == 0 else area.min()}")
    scale = 1.0 if pixel_size is None else _positive(pixel_size, "pixel size") ** 2
    out = np.asarray(count, np.float64) * visibility / (area * scale)
    return float(out) if out.ndim == 0 else out


def volumetric_density(count: ArrayLike, area: ArrayLike, thickness: float, *, pixel_size: float,
                       visibility: float = VISIBILITY) -> float | np.ndarray:
    """Defects per cubic metre: ``count * visibility / (area * pixel_size**2 * thickness)``.

    Parameters
    ----------
    count : int or array
        Visible defects (per frame).
    area : float or array
        Imaged area in pixels².
    thickness : float
        Foil thickness in nm.
    pixel_size : float
        Pixel side in nm.
    visibility : float
        Correction for defects out of contrast (default 7/4).

    Returns
    -------
    float or ndarray
        m⁻³.

    Examples
    --------
    >>> round(volumetric_density(100, 1000 * 1000, 100.0, pixel_size=0.5) / 1e22, 6)   # 25e4 nm² × 100 nm
    0.7
    """
    thickness = _positive(thickness, "foil thickness (nm)")
    areal_per_nm2 = areal_density(count, area, visibility=visibility, pixel_size=_positive(pixel_size, "pixel size (nm)"))
    return areal_per_nm2 / thickness * NM3_PER_M3


def frame_clock(n_frames: int, *, frame_rate: float | None = None, dose_rate: float | None = None,
                dose_start: float = 0.0) -> pd.DataFrame:
    """Time and dose of frames ``0 .. n_frames-1``.

    Parameters
    ----------
    frame_rate : float, optional
        Frames per second (of the frames given, i.e. after any subsampling).  Without it
        there is no time or dose.
    dose_rate : float, optional
        Dose per second (e.g. dpa/s); needs ``frame_rate``.
    dose_start : float
        Dose at frame 0.

    Returns
    -------
    DataFrame
        ``sample`` and, when known, ``time_s`` and ``dose``.
    """
    if int(n_frames) != n_frames or n_frames < 0:
        raise ParameterError(f"number of frames must be a non-negative integer, got {n_frames}")
    out = pd.DataFrame({"sample": np.arange(int(n_frames), dtype=np.int64)})
    if dose_rate is not None and frame_rate is None:
        raise ParameterError("a dose rate needs the frame rate (frames/s) to give each frame a dose")
    if not np.isfinite(dose_start):
        raise ParameterError(f"dose at the first frame must be a number, got {dose_start}")
    if frame_rate is not None:
        out["time_s"] = out["sample"] / _positive(frame_rate, "frame rate (frames/s)")
        if dose_rate is not None:
            if not (np.isfinite(dose_rate) and dose_rate >= 0):
                raise ParameterError(f"dose rate must be >= 0, got {dose_rate}")
            out["dose"] = float(dose_start) + float(dose_rate) * out["time_s"]
    return out


def density_per_frame(counts: ArrayLike, shapes: ArrayLike, *, pixel_size: float, thickness: float | None = None,
                      visibility: float = VISIBILITY) -> pd.DataFrame:
    """Areal (m⁻²) and, given the foil thickness, volumetric (m⁻³) density of every frame.

    Parameters
    ----------
    counts : (n,) int array
        Visible defects per frame.
    shapes : (n, 2) array
        ``(H, W)`` of every frame in pixels (the imaged area is ``H * W``).
    pixel_size : float
        nm per pixel.
    thickness : float, optional
        Foil thickness in nm.
    visibility : float
        Count correction (default 7/4).

    Returns
    -------
    DataFrame
        ``sample, count, area_nm2, areal_density_m2`` [, ``volume_nm3, volumetric_density_m3``].
    """
    counts = np.asarray(counts, np.float64)
    shapes = np.asarray(shapes, np.float64).reshape(-1, 2)
    if len(counts) != len(shapes):
        raise ParameterError(f"{len(counts)} counts but {len(shapes)} frame shapes")
    pixel_size = _positive(pixel_size, "pixel size (nm)")
    area_px = shapes[:, 0] * shapes[:, 1]
    if np.any(area_px <= 0):
        raise ParameterError("every frame needs a positive area")
    out = pd.DataFrame({"sample": np.arange(len(counts), dtype=np.int64), "count": counts.astype(np.int64),
                        "area_nm2": area_px * pixel_size**2})
    out["areal_density_m2"] = areal_density(counts, area_px, visibility=visibility, pixel_size=pixel_size) * NM2_PER_M2
    if thickness is not None:
        out["volume_nm3"] = out["area_nm2"] * _positive(thickness, "foil thickness (nm)")
        out["volumetric_density_m3"] = volumetric_density(counts, area_px, thickness, pixel_size=pixel_size,
                                                          visibility=visibility)
    return out
