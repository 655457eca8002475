"""Reading and writing plain image files (PNG, TIFF, JPEG) as simgen arrays.

Microscopy images come as 8- or 16-bit greyscale, sometimes stored as RGB with
identical channels.  Inside simgen every image is a float32 ``(H, W)`` array in
[0, 1]; these helpers do the conversion in one place.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from simgen.atomic import atomic_path
from simgen.datasets.normalize import to_uint8
from simgen.errors import DataError, ParameterError

__all__ = ["IMAGE_SUFFIXES", "read_image", "write_image", "list_images"]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def read_image(path: str | PathLike) -> np.ndarray:
    """Read an image file as a float32 ``(H, W)`` array in [0, 1].

    Integer images are scaled by their dtype's maximum (8-bit by 255, 16-bit by
    65535); colour images are converted to luminance (ITU-R 601 weights), which
    for greyscale-stored-as-RGB returns the common channel exactly.

    Raises
    ------
    DataError
        If the file is missing or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                wide = np.asarray(im, dtype=np.uint32)
                top = 65535.0 if wide.max(initial=0) <= 65535 else float(wide.max())
                return (wide / top).astype(np.float32)
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
