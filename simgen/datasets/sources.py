"""One way to read samples: an HDF5 dataset, a sharded set, a YOLO folder or an image folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.datasets.imageio import read_image
from simgen.errors import DataError

__all__ = [
    "open_source",
]


class _Source:
    """Uniform read access to an HDF5 dataset, a YOLO folder or a plain image folder."""

    def __init__(self, path, names=None, table: str = "boxes"):
        self.path = Path(path)
        self.table = table
        self._ds = None
        self._folder = None
        if self.path.is_dir():
            if (self.path / "images").is_dir():
                from simgen.datasets.formats.yolo import open_yolo_folder

                self._folder = open_yolo_folder(self.path)
                self.names = list(self._folder.names)
                self.class_names = self._folder.class_names
                self.has_labels = (self.path / "labels").is_dir()
            else:
                from simgen.datasets.imageio import list_images

                self._files = {p.stem: p for p in list_images(self.path)}
                if not self._files:
                    raise DataError(f"{self.path} holds no images (png, tif, jpg)")
                self.names = sorted(self._files)
                self.class_names = []
                self.has_labels = False
            self.kind = "folder"
        elif self.path.is_file():
            from simgen.datasets.h5io import open_dataset

            self._ds = open_dataset(self.path)
            if self._ds.images is None:
                self._ds.close()
                raise DataError(f"{self.path} stores no images")
            self.names = [self._ds.name(i) if self._ds.has("names") else f"{i:06d}" for i in range(self._ds.n)]
            self.class_names = list(self._ds.class_names)
            self.has_labels = table in self._ds.tables
            self.kind = "hdf5"
        else:
            raise DataError(f"{self.path} does not exist (expected an HDF5 file, a YOLO folder or an image folder)")
        self.index = list(range(len(self.names)))
        if names is not None:
            lookup = {n: i for i, n in enumerate(self.names)}
            missing = [n for n in names if n not in lookup]
            if missing:
                raise DataError(f"{self.path}: no sample(s) named {', '.join(missing[:5])}")
            self.index = [lookup[n] for n in names]

    def __len__(self) -> int:
        return len(self.index)

    def name(self, k: int) -> str:
        return self.names[self.index[k]]

    def image(self, k: int) -> np.ndarray:
        i = self.index[k]
        if self._ds is not None:
            return self._ds.image(i)
        if self._folder is not None:
            return self._folder.image(i)

        return read_image(self._files[self.names[i]])

    def shape(self, k: int) -> tuple[int, int]:
        i = self.index[k]
        if self._ds is not None:
            return tuple(self._ds.image_shape)
        if self._folder is not None:
            return tuple(self._folder.shape(i))
        from PIL import Image

        with Image.open(self._files[self.names[i]]) as im:
            return (im.height, im.width)

    def boxes(self, k: int) -> pd.DataFrame | None:
        if not self.has_labels:
            return None
        i = self.index[k]
        if self._ds is not None:
            return self._ds.rows(self.table, i)
        return self._folder.boxes(i)

    def checksum(self) -> str:
        """Content hash of the underlying file(s) (plus the selected sample names)."""
        h = hashlib.sha256()
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        for p in files:
            h.update(str(p.relative_to(self.path) if p != self.path else p.name).encode())
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        h.update(json.dumps([self.names[i] for i in self.index]).encode())
        return h.hexdigest()

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_source(path, names=None, table: str = "boxes") -> _Source:
    """Open an HDF5 dataset, a YOLO folder (``images/`` + ``labels/``) or an image folder for reading.

    ``names`` selects samples by name (e.g. the images of one cross-validation fold).
    The returned object has ``len()``, ``name(k)``, ``image(k)`` (float32 in [0, 1]),
    ``shape(k)``, ``boxes(k)`` (DataFrame or ``None``) and ``class_names``.
    """
    return _Source(path, names=names, table=table)

