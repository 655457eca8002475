"""Unlabeled real images for adaptation: pixels only, never a label.

:func:`open_unlabeled` (:class:`UnlabeledImages`) reads image files and nothing else: in a
YOLO-layout folder only ``images/`` is listed and opened, never ``labels/``; an unlabeled video
folder's ``frames/`` is read the same way; an HDF5 dataset is read through ``Source.image`` only.
Every adaptation lever (:mod:`.adapt_batchnorm`, :mod:`.pseudo_label`, :mod:`.self_train`) opens
real images through it; see ``docs/adapt.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simgen.datasets.imageio import IMAGE_SUFFIXES, list_images, read_image
from simgen.datasets.sources import Source, open_source
from simgen.errors import DataError, ParameterError

__all__ = ["UnlabeledImages", "open_unlabeled"]


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def image_folder(path: Path) -> Path:
    """The folder whose image files are the unlabeled images: ``images/`` (a YOLO folder), the folder
    itself, or ``frames/`` (an unlabeled video).  Never a ``labels/`` folder."""
    for folder in (path / "images", path, path / "frames"):
        if folder.is_dir() and _has_images(folder):
            return folder
        if folder.is_dir() and folder != path and any(d.is_dir() and _has_images(d) for d in folder.iterdir()):
            raise DataError(f"{folder} holds split folders; give one of them (e.g. {folder / 'train'})")
    raise DataError(f"{path} holds no images (looked in images/, in it and in frames/)")


class UnlabeledImages:
    """Read-only access to images whose labels, if any, must never be read.

    Parameters
    ----------
    images : path, Source, sequence of paths, array or sequence of arrays
        A folder of images; a YOLO-layout folder (only its ``images/`` is read); a folder
        with a ``frames/`` subfolder (an unlabeled video); a simgen HDF5 dataset (images
        only: its tables are never read); an open :class:`~simgen.datasets.sources.Source`
        (only ``image()``/``shape()`` are called; left open); a list of image files and/or
        such folders (their images; names must stay unique); or float arrays
        ``(H, W)`` / ``(N, H, W)`` in [0, 1].
    names : sequence of str, optional
        Keep only these samples (by name: the file stem, or the HDF5 sample name).
    exclude : sequence of str
        Drop these samples, e.g. frames that are scored later: adaptation images and
        scored images must be disjoint.

    Notes
    -----
    A folder is read through :func:`simgen.datasets.sources.open_source` on the image folder
    itself (``root/images``), which is a plain image folder: the YOLO reader, which pairs
    images with ``labels/``, is never involved.
    """

    def __init__(self, images, *, names: Sequence[str] | None = None, exclude: Sequence[str] = ()):
        if isinstance(exclude, str):
            exclude = [exclude]
        self._src = None
        self._arrays: list[np.ndarray] | None = None
        self._files: dict[str, Path] | None = None
        if isinstance(images, Source):  # an open source: a view of it (left open); image() only
            self._src = open_source(images)
            self.origin = str(images.path)
            all_names = list(self._src.names)
        elif isinstance(images, (str, Path)):
            path = Path(images)
            self.origin = str(path)
            if path.is_dir():
                self._src = open_source(image_folder(path))
                all_names = [self._src.name(k) for k in range(len(self._src))]
            elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                self._files = {path.stem: path}
                all_names = [path.stem]
            elif path.is_file():
                self._src = open_source(path)  # HDF5: image() only; boxes() is never called
                all_names = [self._src.name(k) for k in range(len(self._src))]
            else:
                raise DataError(f"{path} does not exist (expected an image folder, a YOLO folder or an HDF5 file)")
        else:
            items = list(images) if not isinstance(images, np.ndarray) or images.ndim == 3 else [images]
            if not items:
                raise DataError("no images given")
            self.origin = "<in-memory>" if not isinstance(items[0], (str, Path)) else "<files>"
            if isinstance(items[0], (str, Path)):
                self._files = {}
                # folders in a list contribute their images (several unlabeled folders at once)
                paths = [f for p in map(Path, items)
                         for f in (list_images(image_folder(p)) if p.is_dir() else [p])]
                for p in paths:
                    if not p.is_file():
                        raise DataError(f"image {p} does not exist")
                    if p.stem in self._files:
                        raise DataError(f"two images are named {p.stem!r}; names must be unique")
                    self._files[p.stem] = p
                all_names = list(self._files)
            else:
                self._arrays = []
                for i, a in enumerate(items):
                    a = np.asarray(a, np.float32)
                    if a.ndim != 2:
                        raise DataError(f"image {i} has shape {a.shape}; expected (H, W)")
                    self._arrays.append(a)
                all_names = [f"{i:06d}" for i in range(len(self._arrays))]
        lookup = {n: i for i, n in enumerate(all_names)}
        if names is not None:
            missing = [n for n in names if n not in lookup]
            if missing:
                raise DataError(f"{self.origin}: no image(s) named {', '.join(map(str, missing[:5]))}")
            chosen = [lookup[n] for n in names]
        else:
            chosen = list(range(len(all_names)))
        drop = set(map(str, exclude))
        self.excluded = sorted(n for n in drop if n in lookup)
        self._index = [i for i in chosen if all_names[i] not in drop]
        self._all_names = all_names
        if not self._index:
            self.close()
            raise DataError(f"{self.origin}: no images left to adapt to (all excluded?)")

    def __len__(self) -> int:
        return len(self._index)

    @property
    def names(self) -> list[str]:
        return [self._all_names[i] for i in self._index]

    def name(self, k: int) -> str:
        return self._all_names[self._index[k]]

    def image(self, k: int) -> np.ndarray:
        """Image ``k`` as float32 ``(H, W)`` in [0, 1] (colour is averaged to grey)."""
        i = self._index[k]
        if self._arrays is not None:
            img = self._arrays[i]
        elif self._files is not None:
            img = read_image(self._files[self._all_names[i]])
        else:
            img = self._src.image(i)
        img = np.asarray(img, np.float32)
        return img.mean(axis=2) if img.ndim == 3 else img

    def shape(self, k: int) -> tuple[int, int]:
        i = self._index[k]
        if self._arrays is not None:
            return tuple(self._arrays[i].shape[:2])
        if self._files is not None:
            from PIL import Image

            with Image.open(self._files[self._all_names[i]]) as im:
                return (im.height, im.width)
        return tuple(int(s) for s in self._src.shape(i)[:2])

    def describe(self) -> dict:
        return {"origin": self.origin, "n": len(self), "names": self.names, "excluded": self.excluded}

    def close(self) -> None:
        if self._src is not None:
            self._src.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_unlabeled(images, *, names: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> UnlabeledImages:
    """Open unlabeled real images for adaptation (see :class:`UnlabeledImages`); labels are never read."""
    if isinstance(images, UnlabeledImages):
        if names is not None or exclude:
            raise ParameterError("names/exclude apply when opening; give them to open_unlabeled")
        return images
    return UnlabeledImages(images, names=names, exclude=exclude)


class _Opened:
    """Context manager: open ``images`` unless it is already an :class:`UnlabeledImages` (then leave it open)."""

    def __init__(self, images, exclude=()):
        self.owned = not isinstance(images, UnlabeledImages)
        self.src = open_unlabeled(images, exclude=exclude) if self.owned else open_unlabeled(images)
        if not self.owned and exclude:
            raise ParameterError("exclude applies when opening; give it to open_unlabeled")

    def __enter__(self) -> UnlabeledImages:
        return self.src

    def __exit__(self, *exc):
        if self.owned:
            self.src.close()
        return False
