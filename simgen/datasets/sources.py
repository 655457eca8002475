"""One way to read samples: every input simgen accepts, behind one :class:`Source` interface.

:func:`open_source` opens

========================================  =========================================================
a simgen HDF5 file                        ``/images`` + tables (``boxes``, ``points``, ...), masks
a sharded set                             its directory, its ``manifest.json`` or its ``virtual.h5``
                                          (read through :class:`~simgen.datasets.shards.read.ShardedDataset`)
a YOLO folder                             ``images/`` + ``labels/`` [+ ``masks/``, ``classes.txt``]
                                          (Ultralytics' ``images/train`` split layout included)
a plain image folder                      PNG / TIFF / JPEG / BMP files, or microscope files MRC /
                                          DM3 / DM4 (extra ``[instruments]``) (no labels)
========================================  =========================================================

and gives every kind the same sample interface: ``len(src)``, ``src.name(k)``,
``src.image(k)``, ``src.shape(k)``, ``src.boxes(k)``, ``src.mask(k)``,
``src.pixel_size_nm(k)``.  Trainers,
prediction, ``simgen preview``, ``simgen export`` and evaluation all read through it,
so a new input kind works everywhere at once.

Examples
--------
>>> with open_source("film_shards/") as src:                     # doctest: +SKIP
...     img, boxes = src.image(0), src.boxes(0)
>>> fold = src.subset(["im03", "im07"])                            # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from simgen.datasets.formats.yolo_folder import YoloFolder
from simgen.datasets.h5io import Dataset
from simgen.datasets.imageio import image_shape, list_images, pixel_size_nm, read_image
from simgen.datasets.shards.read import ShardedDataset, open_any
from simgen.datasets.shards.write import is_manifest_path
from simgen.errors import DataError

__all__ = [
    "SOURCE_KINDS",
    "Source",
    "open_source",
]

#: Values of :attr:`Source.kind`.
SOURCE_KINDS = ("hdf5", "shards", "yolo", "images")


# -- readers: one per input kind, indexed by the input's own sample numbers -------------------
class _Reader:
    """What :class:`Source` needs from an input (sample ``i`` = the input's own index)."""

    kind = ""
    dataset: Dataset | ShardedDataset | None = None
    class_names: list[str] = []
    tables: list[str] = []
    has_images = True
    has_masks = False
    named = True
    sample_kind = ""

    def __init__(self, path: Path):
        self.path = path
        self._names: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, i: int) -> str:
        return self.names[i]

    @property
    def names(self) -> list[str]:
        if self._names is None:
            self._names = [self.name(i) for i in range(len(self))]
        return self._names

    def image(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def shape(self, i: int) -> tuple[int, int]:
        raise NotImplementedError

    def rows(self, table: str, i: int) -> pd.DataFrame | None:
        return None

    def mask(self, i: int) -> np.ndarray | None:
        return None

    def pixel_size_nm(self, i: int) -> float | None:
        return None

    def table(self, name: str) -> pd.DataFrame | None:
        """Whole table with ``sample`` = the input's index, or ``None`` when only per-sample rows exist."""
        return None

    def fingerprint(self, h) -> None:
        """Feed the content of the input into hash ``h`` (every file below the folder)."""
        for p in sorted(p for p in self.path.rglob("*") if p.is_file()):
            h.update(str(p.relative_to(self.path)).encode())
            _hash_file(h, p)

    def close(self) -> None:
        pass


class _DatasetReader(_Reader):
    """A simgen HDF5 file or a sharded set."""

    def __init__(self, path: Path, require_images: bool, dataset: Dataset | ShardedDataset | None = None):
        super().__init__(path)
        self._own = dataset is None
        ds = open_any(path) if dataset is None else dataset
        try:
            kind = "shards" if isinstance(ds, ShardedDataset) else "hdf5"
            if ds.n == 0:
                raise DataError(f"{path} holds no samples")
            has_images = ds.has("images")
            if require_images and not has_images:
                raise DataError(f"{path} stores no images (a label-only file); give a dataset with images")
        except BaseException:
            if self._own:
                ds.close()
            raise
        self._ds = ds
        self.dataset = ds
        self.kind = kind
        self.has_images = has_images
        self.has_masks = ds.has("labels/masks")
        self.named = ds.has("names")
        self.class_names = list(ds.class_names)
        self.tables = list(ds.tables)
        self.sample_kind = str(ds.kind)

    def __len__(self) -> int:
        return self._ds.n

    def name(self, i: int) -> str:
        return self._ds.name(i)

    def image(self, i: int) -> np.ndarray:
        if not self.has_images:
            raise DataError(f"{self.path} stores no images (a label-only file)")
        return self._ds.image(i)

    def shape(self, i: int) -> tuple[int, int]:
        h, w = self._ds.shape(i)
        return int(h), int(w)

    def rows(self, table: str, i: int) -> pd.DataFrame | None:
        return self._ds.rows(table, i)

    def mask(self, i: int) -> np.ndarray | None:
        return self._ds.mask(i) if self.has_masks else None

    def pixel_size_nm(self, i: int) -> float | None:
        try:  # simulated TEM records the pixel size each image was drawn with
            prov = self._ds.provenance(i)
        except ValueError:  # unreadable provenance JSON: no pixel size, not a failed read
            return None
        return _positive(prov.get("pixel_nm")) if isinstance(prov, dict) else None

    def table(self, name: str) -> pd.DataFrame | None:
        return self._ds.table(name)

    def fingerprint(self, h) -> None:
        if isinstance(self._ds, ShardedDataset):  # the manifest records every shard's SHA-256
            shards = [(s["file"], s["n"], s.get("sha256")) for s in self._ds.manifest["shards"]]
            h.update(json.dumps(["shards", shards]).encode())
        else:
            h.update(self.path.name.encode())
            _hash_file(h, self.path)

    def close(self) -> None:
        if self._own:
            self._ds.close()


class _YoloReader(_Reader):
    """A YOLO folder; its labels are the ``boxes`` table."""

    kind = "yolo"

    def __init__(self, path: Path):
        super().__init__(path)
        self.folder = YoloFolder(path)
        self._names = list(self.folder.names)
        self.class_names = list(self.folder.class_names)
        self.tables = ["boxes"] if (path / "labels").is_dir() else []
        self.has_masks = self.folder.masks_dir is not None

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        return self.folder.image(i)

    def shape(self, i: int) -> tuple[int, int]:
        h, w = self.folder.shape(i)
        return h, w

    def rows(self, table: str, i: int) -> pd.DataFrame | None:
        return self.folder.boxes(i) if table in self.tables else None

    def mask(self, i: int) -> np.ndarray | None:
        return self.folder.mask(i)

    def pixel_size_nm(self, i: int) -> float | None:
        return pixel_size_nm(self.folder.image_path(i)) if self.folder.has_images else None


class _ImageFolderReader(_Reader):
    """Image files directly inside a folder (no labels); names are the file stems."""

    kind = "images"

    def __init__(self, path: Path):
        super().__init__(path)
        self.files = list_images(path)
        if not self.files:
            raise DataError(f"{path} holds no images (png, tif, jpg, bmp, mrc, dm3, dm4) and no images/ folder")
        self._names = [p.stem for p in self.files]
        if len(set(self._names)) < len(self._names):
            dup = next(n for n in self._names if self._names.count(n) > 1)
            raise DataError(f"{path} holds two images named {dup!r} (different extensions); names must be unique")
        self._shapes: dict[int, tuple[int, int]] = {}
        self._pixel: dict[int, float | None] = {}

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> np.ndarray:
        img = read_image(self.files[i])
        self._shapes[i] = img.shape
        return img

    def shape(self, i: int) -> tuple[int, int]:
        if i not in self._shapes:
            self._shapes[i] = image_shape(self.files[i])
        return self._shapes[i]

    def pixel_size_nm(self, i: int) -> float | None:
        if i not in self._pixel:
            self._pixel[i] = pixel_size_nm(self.files[i])
        return self._pixel[i]


def _positive(value) -> float | None:
    """A finite positive number, else ``None`` (missing or malformed metadata)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)


def _open_reader(path: Path, require_images: bool) -> _Reader:
    if path.is_dir():
        if is_manifest_path(path):
            return _DatasetReader(path, require_images)
        if (path / "images").is_dir():
            return _YoloReader(path)
        return _ImageFolderReader(path)
    if path.is_file():
        return _DatasetReader(path, require_images)
    raise DataError(f"{path} does not exist (expected a simgen HDF5 file, a shard set, a YOLO folder "
                    "or an image folder)")


# -- the public interface -------------------------------------------------------------------
class Source:
    """Read-only samples of one input, the same way for every input kind (use :func:`open_source`).

    Sample ``k`` runs over ``0 .. len(src) - 1`` in the input's order (HDF5 index, sorted
    file names), restricted to the selected names when the source was opened with
    ``names`` or made by :meth:`subset`.

    Attributes
    ----------
    path : Path
        The path it was opened from.
    kind : {"hdf5", "shards", "yolo", "images"}
        A simgen HDF5 file, a sharded set (directory, ``manifest.json`` or ``virtual.h5``),
        a YOLO folder or a plain image folder.
    table : str
        The table :meth:`boxes` reads (``boxes`` unless opened otherwise).  The labels of a
        YOLO folder are its ``boxes`` table.
    class_names : list of str
        Names of the class ids in the box tables (may be empty).
    has_labels : bool
        Whether :attr:`table` exists (a YOLO folder: whether it has ``labels/``).
    has_masks : bool
        Whether instance masks are stored (``/labels/masks`` or ``masks/``).
    has_images : bool
        Always true unless opened with ``require_images=False`` (label-only HDF5 files).
    dataset : Dataset or ShardedDataset or None
        The open HDF5 dataset behind the ``hdf5`` and ``shards`` kinds, for extra arrays
        (``/pairs``, ``/filament``, provenance) and whole tables; its sample numbers are
        :attr:`indices`.  ``None`` for folders.
    names : list of str
        Sample names in order (file stems for folders; ``/names`` or ``f"{index:06d}"`` for HDF5).
    indices : (n,) int64 array
        The input's own sample number of every sample (differs from ``k`` in a subset).
    n : int
        ``len(src)``.
    tables : list of str
        Annotation tables present (``boxes``, ``points``, ``tracks``, ...).
    sample_kind : str
        What the samples are (the HDF5 ``kind`` attribute: ``film``, ``tem``, ``video`` ...).

    Notes
    -----
    Per sample ``k``: :meth:`image` float32 ``(H, W)`` in [0, 1]; :meth:`shape` ``(H, W)`` in
    pixels; :meth:`boxes` a DataFrame ``x0, y0, x1, y1, class [, ...]`` in pixels (pixel
    ``(r, c)`` covers ``[c, c+1) x [r, r+1)``) or ``None``; :meth:`mask` an instance label image
    (uint16, 0 = background) or ``None``.  A source is a context manager; :meth:`subset` and
    :func:`open_source` of an open source give views that share its files.
    """

    def __init__(self, path: str | PathLike, names: list[str] | None = None, table: str = "boxes", *,
                 require_images: bool = True) -> None:
        self.path = Path(path)
        self._reader = _open_reader(self.path, require_images)
        self._owner = True
        self._closed = False
        self.table = str(table)
        self._index = np.arange(len(self._reader), dtype=np.int64)
        if names is not None:
            try:
                self._index = self._lookup(names)
            except BaseException:
                self.close()
                raise

    @classmethod
    def _view(cls, parent: Source, index: np.ndarray, table: str) -> Source:
        view = cls.__new__(cls)
        view.path, view._reader, view.table = parent.path, parent._reader, table
        view._owner, view._closed, view._index = False, False, np.asarray(index, np.int64)
        return view

    def _lookup(self, names) -> np.ndarray:
        if isinstance(names, str):
            names = [names]
        lookup = {n: i for i, n in enumerate(self._reader.names)}
        missing = [str(n) for n in names if n not in lookup]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DataError(f"{self.path}: no sample(s) named {', '.join(missing[:5])}{more}")
        selected = set(int(i) for i in self._index)
        outside = [str(n) for n in names if lookup[n] not in selected]
        if outside:
            raise DataError(f"{self.path}: sample(s) {', '.join(outside[:5])} are not in this subset")
        return np.array([lookup[n] for n in names], np.int64)

    def _i(self, k: int) -> int:
        """Sample ``k`` of this source → index in the input."""
        n = len(self._index)
        k = int(k)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"sample {k} out of range for {n} samples of {self.path}")
        return int(self._index[k])

    # -- description ------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self._reader.kind

    @property
    def class_names(self) -> list[str]:
        return list(self._reader.class_names)

    @property
    def has_labels(self) -> bool:
        return self.table in self._reader.tables

    @property
    def has_masks(self) -> bool:
        return self._reader.has_masks

    @property
    def has_images(self) -> bool:
        return self._reader.has_images

    @property
    def tables(self) -> list[str]:
        """Names of the annotation tables (a YOLO folder with labels: ``["boxes"]``)."""
        return list(self._reader.tables)

    @property
    def named(self) -> bool:
        """Whether sample names are real names (file stems, ``/names``) rather than index numbers."""
        return self._reader.named

    @property
    def sample_kind(self) -> str:
        """What the samples are: the HDF5 ``kind`` attribute (``film``, ``tem``, ``video`` ...), else :attr:`kind`."""
        return self._reader.sample_kind or self.kind

    @property
    def dataset(self) -> Dataset | ShardedDataset | None:
        return self._reader.dataset

    @property
    def indices(self) -> np.ndarray:
        """``(len(src),)`` int64: the input's sample number of every sample of this source."""
        return self._index.copy()

    @property
    def names(self) -> list[str]:
        """Names of the samples of this source, in order."""
        all_names = self._reader.names
        return [all_names[i] for i in self._index]

    @property
    def n(self) -> int:
        return len(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"Source({str(self.path)!r}, kind={self.kind!r}, n={len(self)})"

    # -- samples ----------------------------------------------------------------------
    def name(self, k: int) -> str:
        """Name of sample ``k``: file stem for folders, ``/names`` entry or ``f"{index:06d}"`` for HDF5."""
        return self._reader.name(self._i(k))

    def file_name(self, k: int) -> str:
        """The image file name of sample ``k`` (``im0.png``) for folder sources; :meth:`name` for HDF5."""
        reader, i = self._reader, self._i(k)
        if isinstance(reader, _ImageFolderReader):
            return reader.files[i].name
        if isinstance(reader, _YoloReader):
            return reader.folder.image_path(i).name
        return reader.name(i)

    def image(self, k: int) -> np.ndarray:
        """Image of sample ``k``: float32 ``(H, W)`` in [0, 1] (8-bit / 16-bit data scaled by 255 / 65535).

        Raises
        ------
        DataError
            For a label-only file (opened with ``require_images=False``) or an unreadable image file.
        """
        return self._reader.image(self._i(k))

    def shape(self, k: int) -> tuple[int, int]:
        """``(H, W)`` of sample ``k`` in pixels (from headers where possible, no pixel read)."""
        return self._reader.shape(self._i(k))

    def boxes(self, k: int) -> pd.DataFrame | None:
        """Rows of :attr:`table` for sample ``k`` (``None`` without labels).

        Columns ``x0, y0, x1, y1`` (pixels, pixel-edge frame: pixel ``(r, c)`` covers
        ``[c, c+1) x [r, r+1)``), ``class`` and whatever else is stored (``score``,
        ``instance``, ...); HDF5 rows also carry ``sample`` (the input's index).
        """
        return self.rows(self.table, k)

    def rows(self, table: str, k: int) -> pd.DataFrame | None:
        """Rows of any annotation table (``points``, ``tracks``, ...) for sample ``k``, or ``None``."""
        return self._reader.rows(table, self._i(k))

    def mask(self, k: int) -> np.ndarray | None:
        """Instance label image ``(H, W)`` (0 = background, ``n`` = instance ``n``) or ``None``."""
        return self._reader.mask(self._i(k))

    def pixel_size_nm(self, k: int) -> float | None:
        """Pixel size of sample ``k`` in nm per pixel, or ``None`` when the input does not record one.

        Known for MRC and DM3/DM4 image files (their header; folders and YOLO folders) and for
        simulated TEM datasets (the ``pixel_nm`` each image was drawn with, in its provenance);
        ``None`` for PNG/TIFF/JPEG images and other datasets.  Read from headers, no pixels decoded.
        """
        return self._reader.pixel_size_nm(self._i(k))

    def read_table(self, name: str | None = None) -> pd.DataFrame | None:
        """All rows of table ``name`` (default :attr:`table`) for the samples of this source.

        ``sample`` is renumbered to this source's sample numbers ``k`` (rows of samples
        outside a subset are dropped).  ``None`` if there is no such table.
        """
        name = self.table if name is None else name
        if name not in self._reader.tables:
            return None
        df = self._reader.table(name)
        if df is None:  # folders: the rows of the selected samples, one by one
            parts = [rows.assign(sample=np.full(len(rows), k, np.int64)) for k in range(len(self))
                     if (rows := self.rows(name, k)) is not None]
            if not parts:
                return None
            df = pd.concat(parts, ignore_index=True)
            return df[["sample", *[c for c in df.columns if c != "sample"]]]
        if len(self._index) == len(self._reader) and np.array_equal(self._index, np.arange(len(self._index))):
            return df.reset_index(drop=True)
        position = np.full(len(self._reader), -1, np.int64)
        position[self._index] = np.arange(len(self._index))
        k = position[df["sample"].to_numpy(np.int64)]
        out = df[k >= 0].assign(sample=k[k >= 0])
        return out.sort_values("sample", kind="stable").reset_index(drop=True)

    # -- views, identity, lifetime ----------------------------------------------------------
    def subset(self, names: list[str]) -> Source:
        """A view of the named samples, in the given order (e.g. one cross-validation fold).

        The view shares this source's open files: nothing is reopened, closing the view
        does nothing, and closing this source ends the view too.

        Raises
        ------
        DataError
            For names that are not samples of this source.
        """
        return Source._view(self, self._lookup(names), self.table)

    def with_table(self, table: str) -> Source:
        """A view of the same samples whose :meth:`boxes` read ``table``."""
        return Source._view(self, self._index, str(table))

    def checksum(self) -> str:
        """SHA-256 (hex) of the input's content plus the selected sample names.

        HDF5 files and folders are hashed byte for byte; a sharded set by its manifest's
        per-shard SHA-256s (so opening its directory or its ``virtual.h5`` gives one key).
        """
        h = hashlib.sha256()
        self._reader.fingerprint(h)
        h.update(json.dumps(self.names).encode())
        return h.hexdigest()

    def close(self) -> None:
        """Close the input's files (a view from :meth:`subset` or :func:`open_source` leaves them open)."""
        if self._owner and not self._closed:
            self._reader.close()
        self._closed = True

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False


def open_source(source: str | PathLike | Source | Dataset | ShardedDataset, names: list[str] | None = None,
                table: str | None = None, *, require_images: bool = True) -> Source:
    """Open an input for reading (see :class:`Source`); use as a context manager.

    Parameters
    ----------
    source : path-like or Source
        A simgen HDF5 file, a sharded set (directory, ``manifest.json`` or ``virtual.h5``),
        a YOLO folder (``images/`` + ``labels/`` [+ ``masks/``]) or a plain image folder.
        An already open :class:`Source` (or :class:`~simgen.datasets.h5io.Dataset`,
        :class:`~simgen.datasets.shards.read.ShardedDataset`) gives a view of it that does
        not close it: code that takes "a path or an open source" calls
        ``with open_source(x) as src:`` and never closes its caller's input.
    names : list of str, optional
        Only these samples, in this order (e.g. the images of one cross-validation fold).
    table : str, optional
        The annotation table :meth:`Source.boxes` reads (default ``boxes``; for an open
        :class:`Source`, the table it reads).
    require_images : bool
        Refuse label-only HDF5 files (default).  ``False`` accepts them; their
        :meth:`Source.image` raises :class:`DataError`.

    Raises
    ------
    DataError
        Missing path, a folder without images, an empty or label-only dataset, unknown names.
    SchemaError
        A file that is not a simgen dataset, an incomplete or malformed shard set.
    """
    if isinstance(source, (Dataset, ShardedDataset)):  # an open dataset: read it, leave it open
        src = Source.__new__(Source)
        src.path, src.table = Path(source.path), "boxes" if table is None else str(table)
        src._reader = _DatasetReader(src.path, require_images, dataset=source)
        src._owner, src._closed, src._index = True, False, np.arange(len(src._reader), dtype=np.int64)
        return src.subset(names) if names is not None else src
    if isinstance(source, Source):
        if require_images and not source.has_images:
            raise DataError(f"{source.path} stores no images (a label-only file); give a dataset with images")
        view = Source._view(source, source._index, source.table if table is None else str(table))
        return view.subset(names) if names is not None else view
    return Source(source, names=names, table="boxes" if table is None else table, require_images=require_images)
