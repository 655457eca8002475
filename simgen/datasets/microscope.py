"""Microscope image files: MRC (``mrcfile``) and Gatan DigitalMicrograph DM3/DM4 (``rosettasciio``).

Both formats carry the pixel size the instrument recorded; these readers return the raw pixel
array of one 2-D image together with that size in **nm per pixel** (``None`` when the file is
uncalibrated or calibrated in non-length units, e.g. a diffraction pattern in 1/nm).
:func:`simgen.datasets.imageio.read_image` scales the pixels to [0, 1]; use
:func:`simgen.datasets.imageio.read_calibrated` for image and pixel size together.

Both readers come with the optional extra ``pip install 'simgen[instruments]'``.

Conventions
-----------
* MRC: ``voxel_size.x`` (Å) / 10; an all-zero cell (``voxel_size == 0``) means unknown.  A stack
  or volume (``nz > 1``) gives its first section, with a warning.  Rows are returned in file order
  (``data[0]`` is the first row stored), as ``mrcfile``, hyperspy and napari show them.
* DM3/DM4: the first non-thumbnail image of the file; its signal axes' ``scale`` converted from
  their ``units`` (nm, µm, Å, pm, ...).  A stack gives its first image, with a warning; RGB images
  are converted to luminance by :mod:`simgen.datasets.imageio`.
* Non-square pixels: the x (column) size is returned, with a warning.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from simgen.errors import DataError

__all__ = ["MRC_SUFFIXES", "DM_SUFFIXES", "INSTRUMENT_SUFFIXES", "read_mrc", "read_dm", "mrc_header",
           "dm_header", "length_to_nm"]

MRC_SUFFIXES = (".mrc", ".mrcs")
DM_SUFFIXES = (".dm3", ".dm4")
#: File suffixes read by this module (all carry a pixel size).
INSTRUMENT_SUFFIXES = MRC_SUFFIXES + DM_SUFFIXES

#: Length units microscope software writes, in nm.
_NM_PER_UNIT = {"nm": 1.0, "µm": 1e3, "μm": 1e3, "um": 1e3, "micron": 1e3, "å": 0.1, "a": 0.1, "angstrom": 0.1,
                "pm": 1e-3, "mm": 1e6, "m": 1e9}


def length_to_nm(value: float, unit: str) -> float | None:
    """``value`` in ``unit`` as nm; ``None`` for a non-length unit (``1/nm``, ``""``) or a size <= 0.

    Examples
    --------
    >>> length_to_nm(0.25, "µm")
    250.0
    >>> length_to_nm(1.0, "1/nm") is None
    True
    """
    factor = _NM_PER_UNIT.get(str(unit).strip().lower().replace("\u00c5", "å"))
    value = float(value)
    if factor is None or not (math.isfinite(value) and value > 0):
        return None
    return value * factor


def _square(px: float | None, py: float | None, path: Path) -> float | None:
    if px is not None and py is not None and abs(px - py) > 0.01 * max(px, py):
        warnings.warn(f"{path}: non-square pixels ({px:g} x {py:g} nm); using the x size {px:g} nm", stacklevel=4)
    return px if px is not None else py


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _need(module: str, path: Path):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"reading {path.suffix} files needs {module.split('.')[0]}: "
                        "pip install 'simgen[instruments]'") from None


# -- MRC ------------------------------------------------------------------------------------------
def _mrc_pixel(mrc, path: Path) -> float | None:
    vs = mrc.voxel_size
    return _square(length_to_nm(float(vs.x), "Å"), length_to_nm(float(vs.y), "Å"), path)


def _open_mrc(path: Path, header_only: bool):
    mrcfile = _need("mrcfile", path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist")
    try:
        return mrcfile.open(path, mode="r", header_only=header_only, permissive=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read MRC file {path}: {_first_line(exc)}") from None


def mrc_header(path) -> tuple[tuple[int, int], float | None]:
    """``((H, W), nm per pixel or None)`` of an MRC file, from its header only."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # header oddities surface when the data are read
        with _open_mrc(path, header_only=True) as mrc:
            h, w = int(mrc.header.ny), int(mrc.header.nx)
            return (h, w), _mrc_pixel(mrc, path)


def read_mrc(path) -> tuple[np.ndarray, float | None]:
    """The first 2-D section of an MRC file and its pixel size.

    Returns
    -------
    image : (H, W) ndarray
        Pixels as stored (int8/int16/uint16/float16/float32; not scaled).
    pixel_nm : float or None
        ``voxel_size.x`` in nm (``None`` when the header has no cell size).

    Raises
    ------
    DataError
        A missing, truncated or non-MRC file, complex data, or ``mrcfile`` not installed.
    """
    path = Path(path)
    with _open_mrc(path, header_only=False) as mrc:
        data = np.asarray(mrc.data)
        pixel = _mrc_pixel(mrc, path)
    if data.ndim == 3:
        if data.shape[0] > 1:
            warnings.warn(f"{path} holds {data.shape[0]} sections; reading the first", stacklevel=3)
        data = data[0]
    if data.ndim != 2 or data.size == 0:
        raise DataError(f"{path}: expected a 2-D image, got MRC data of shape {data.shape}")
    if data.dtype.kind == "c":
        raise DataError(f"{path}: complex (Fourier-space) MRC data is not an image")
    return np.array(data), pixel


# -- DigitalMicrograph ------------------------------------------------------------------------------
def _dm_signals(path: Path, lazy: bool) -> dict:
    """The first image dict of a DM file (rosettasciio's ``data, axes, metadata, ...``)."""
    api = _need("rsciio.digitalmicrograph", path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist")
    try:
        signals = api.file_reader(str(path), lazy=lazy)
    except ValueError as exc:
        if lazy and "RGBA" in str(exc):  # rosettasciio reads RGB images eagerly only
            return _dm_signals(path, lazy=False)
        raise DataError(f"cannot read DigitalMicrograph file {path}: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - the parser raises IOError, KeyError, struct.error, NotImplementedError ...
        raise DataError(f"cannot read DigitalMicrograph file {path}: {_first_line(exc)}") from None
    for sig in signals or []:
        axes = sorted(sig.get("axes", []), key=lambda a: a.get("index_in_array", 0))
        if sum(not a.get("navigate", False) for a in axes) == 2:  # an image (or a stack of images)
            return {**sig, "axes": axes}
    raise DataError(f"{path} holds no 2-D image (a spectrum or an empty file)")


def _dm_pixel(axes: list[dict], path: Path) -> float | None:
    signal = [a for a in axes if not a.get("navigate", False)] or axes
    y, x = signal[-2], signal[-1]
    return _square(length_to_nm(x.get("scale", 0), x.get("units", "")),
                   length_to_nm(y.get("scale", 0), y.get("units", "")), path)


def dm_header(path) -> tuple[tuple[int, int], float | None]:
    """``((H, W), nm per pixel or None)`` of a DM3/DM4 file (tags only, pixels not read)."""
    path = Path(path)
    sig = _dm_signals(path, lazy=True)
    signal = [a for a in sig["axes"] if not a.get("navigate", False)] or sig["axes"]
    return (int(signal[-2]["size"]), int(signal[-1]["size"])), _dm_pixel(sig["axes"], path)


def read_dm(path) -> tuple[np.ndarray, float | None]:
    """The first image of a Gatan DM3/DM4 file and its pixel size.

    Returns
    -------
    image : (H, W) or (H, W, 3) ndarray
        Pixels as stored (integer or float; RGB files give ``(H, W, 3)`` uint8).
    pixel_nm : float or None
        The x axis ``scale`` in nm (``None`` for an uncalibrated image or non-length units).

    Raises
    ------
    DataError
        A missing, damaged or non-DM file, a file without a 2-D image, complex data, or
        ``rosettasciio`` not installed.
    """
    path = Path(path)
    sig = _dm_signals(path, lazy=False)
    data = np.asarray(sig["data"])
    if data.dtype.names and {"R", "G", "B"} <= set(data.dtype.names):
        data = np.stack([data["R"], data["G"], data["B"]], axis=-1).astype(np.uint8)
        lead = data.ndim - 3
    else:
        lead = data.ndim - 2
    if lead > 0:
        warnings.warn(f"{path} holds a stack of {int(np.prod(data.shape[:lead]))} images; reading the first",
                      stacklevel=3)
        data = data[(0,) * lead]
    if lead < 0 or data.size == 0:
        raise DataError(f"{path}: expected a 2-D image, got DM data of shape {data.shape}")
    if data.dtype.kind == "c":
        raise DataError(f"{path}: complex (FFT) DM data is not an image")
    return np.array(data), _dm_pixel(sig["axes"], path)
