"""Reading and writing image files (PNG, TIFF, JPEG, BMP; MRC, DM3/DM4) as simgen arrays.

Microscopy images come as 8- or 16-bit greyscale, sometimes stored as RGB with
identical channels, or as instrument files (MRC, Gatan DM3/DM4; read by
:mod:`simgen.datasets.microscope`, extra ``[instruments]``) that also carry the pixel size.
Inside simgen every image is a float32 ``(H, W)`` array in [0, 1]; these helpers do the
conversion in one place.

Pixel values → [0, 1]: non-negative integers are divided by the full scale of the smallest
camera bit depth that holds their maximum (``2**b - 1``, b in 8, 10, 12, 14, 16); floats and
signed integers with negative values are stretched from their minimum to their maximum.

Pixel size: :func:`read_calibrated` returns image and nm per pixel together, :func:`pixel_size_nm`
the size alone from the header; both give ``None`` when the file records none (PNG, JPEG, BMP,
TIFF, an uncalibrated MRC/DM file).
"""

from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path

import numpy as np

from simgen.atomic import atomic_path
from simgen.datasets.microscope import (
    DM_SUFFIXES,
    INSTRUMENT_SUFFIXES,
    MRC_SUFFIXES,
    dm_header,
    mrc_header,
    read_dm,
    read_mrc,
)
from simgen.datasets.normalize import to_uint8
from simgen.errors import DataError, ParameterError

__all__ = ["IMAGE_SUFFIXES", "read_image", "read_calibrated", "pixel_size_nm", "image_shape", "write_image",
           "list_images"]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp") + INSTRUMENT_SUFFIXES


def read_image(path: str | PathLike) -> np.ndarray:
    """Read an image file as a float32 ``(H, W)`` array in [0, 1].

    Integer images are scaled by their camera full scale (8-bit by 255, a 12-bit frame
    in a 16-bit container by 4095, see the module notes); colour images are converted to
    luminance (ITU-R 601 weights), which for greyscale-stored-as-RGB returns the common
    channel exactly.  MRC and DM3/DM4 files need the ``[instruments]`` extra.

    Raises
    ------
    DataError
        If the file is missing or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.suffix.lower() in INSTRUMENT_SUFFIXES:
        return read_calibrated(path)[0]
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        return _read_tiff(path)
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                wide = np.asarray(im, dtype=np.uint32)
                return (wide / _full_scale(wide)).astype(np.float32)
            if im.mode == "F":
                real = np.asarray(im, dtype=np.float32)
                lo, hi = float(real.min()), float(real.max())
                return ((real - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
            if im.mode not in ("L", "RGB", "RGBA", "LA", "P", "1"):
                arr = np.asarray(im.convert("RGB"))
            else:
                arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if arr.ndim == 3:
        rgb = arr[..., :3].astype(np.float32)
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            arr = arr[..., 0]
        else:
            grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
            return (grey / 255.0).astype(np.float32)
    return (arr.astype(np.float32) / 255.0).astype(np.float32)


#: Bit depths cameras write; a 12-bit frame stored in a 16-bit container is scaled by 4095, not 65535.
CAMERA_BITS = (8, 10, 12, 14, 16)


def _full_scale(values: np.ndarray) -> float:
    """The full-scale value of integer pixels: 2**b - 1 for the smallest camera bit depth b that holds
    the maximum (a 12-bit frame saved as 16-bit TIFF once read as a near-black image, level 0.03)."""
    top = int(values.max(initial=0))
    for bits in CAMERA_BITS:
        if top <= 2**bits - 1:
            return float(2**bits - 1)
    return float(top)


def read_calibrated(path: str | PathLike) -> tuple[np.ndarray, float | None]:
    """An image and its pixel size: ``(float32 (H, W) in [0, 1], nm per pixel or None)``.

    MRC and DM3/DM4 files give the pixel size they record (see :mod:`simgen.datasets.microscope`);
    other formats give ``None``.

    Raises
    ------
    DataError
        A missing or undecodable file, or an MRC/DM file without the ``[instruments]`` extra.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        raw, pixel = read_mrc(path)
    elif suffix in DM_SUFFIXES:
        raw, pixel = read_dm(path)
    else:
        return read_image(path), None
    return _to_unit(raw, path), pixel


def _microscope_header(path: Path):
    """``((H, W), pixel nm or None)`` of an MRC / DM file, ``None`` for other formats."""
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        return mrc_header(path)
    if suffix in DM_SUFFIXES:
        return dm_header(path)
    return None


def pixel_size_nm(path: str | PathLike) -> float | None:
    """Pixel size in nm recorded in an image file's header, or ``None`` (formats without one)."""
    header = _microscope_header(Path(path))
    return None if header is None else header[1]


def image_shape(path: str | PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (no pixels decoded)."""
    path = Path(path)
    header = _microscope_header(path)
    if header is not None:
        return header[0]
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.height), int(im.width)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def _read_tiff(path: Path) -> np.ndarray:
    """A TIFF through ``tifffile``: its true bit depth, the first page only (with a warning)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) > 1:
                warnings.warn(f"{path} holds {len(tif.pages)} pages; reading the first", stacklevel=3)
            arr = tif.pages[0].asarray()
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    return _to_unit(arr, path)


def _to_unit(arr: np.ndarray, path: Path) -> np.ndarray:
    """Raw pixels of a TIFF / MRC / DM image → float32 ``(H, W)`` in [0, 1] (see the module notes)."""
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return (arr / (255.0 if arr.max(initial=0) <= 255 else _full_scale(np.rint(arr)))).astype(np.float32)
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D greyscale image, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{path}: empty image")
    if arr.dtype.kind in "iu" and arr.min() >= 0:
        return (arr / _full_scale(arr)).astype(np.float32)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    real = arr.astype(np.float32)
    if not np.isfinite(real).all():
        raise DataError(f"{path}: non-finite pixel values")
    lo, hi = float(real.min()), float(real.max())
    return ((real - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


def write_image(path: str | PathLike, image: np.ndarray, overwrite: bool = False, bits: int = 8) -> Path:
    """Write a float image in [0, 1] (or a uint8/uint16 or RGB uint8 array) atomically.

    Parameters
    ----------
    bits : {8, 16}
        Bit depth for float input (PNG/TIFF only for 16).
    """
    from PIL import Image

    image = np.asarray(image)
    if bits not in (8, 16):
        raise ParameterError(f"bits must be 8 or 16, got {bits}")
    if image.dtype.kind == "f":
        if bits == 16:
            image = np.rint(np.clip(image, 0, 1) * 65535).astype(np.uint16)
        else:
            image = to_uint8(image)
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(
        path.suffix.lower(), "PNG"
    )
    with atomic_path(path, overwrite) as tmp:
        Image.fromarray(image).save(tmp, format=fmt)
    return path


def list_images(folder: str | PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a directory")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
