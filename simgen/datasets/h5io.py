"""Reading and writing simgen HDF5 datasets (see :mod:`simgen.datasets.schema`).

Writing goes through :class:`DatasetWriter`, which writes to a temporary file in
the destination directory and renames it only when the writer is closed
without error, so an interrupted run never leaves a partial dataset under the
final name.  A failed write (full disk, I/O error) is reported as one ``OSError``
naming the output, and the temporary file is removed on any failure, on ``SIGTERM``,
or by the next write of the same output if the process was killed outright (see
:mod:`simgen.atomic`).  Reading goes through :func:`open_dataset`, which validates the
schema version first.

Examples
--------
>>> with DatasetWriter("out.h5", kind="film", seed=0) as w:          # doctest: +SKIP
...     w.append(image, points={"x": xs, "y": ys, "charge": q})
>>> with open_dataset("out.h5") as ds:                                 # doctest: +SKIP
...     ds.image(0).shape, ds.rows("points", 0)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

import h5py
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from simgen import __version__
from simgen.atomic import (
    Terminated,
    check_output,
    check_terminated,
    fsync_path,
    json_default,
    make_temp,
    sigterm_deferred,
    sigterm_raises,
    sweep_stale_temps,
)
from simgen.datasets.schema import (
    IMAGE_DTYPES,
    OPTIONAL_COLUMNS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    TABLE_COLUMNS,
    Sampler,
    _json_text,
    _table_names,
    _text,
    table_path,
    validate_file,
)
from simgen.errors import ParameterError, SchemaError

__all__ = [
    "DatasetWriter",
    "Dataset",
    "open_dataset",
    "read_table",
    "to_storage_dtype",
    "to_float_image",
    "records_to_columns",
]

_STR = h5py.string_dtype("utf-8")

#: Annotation records of one table: a DataFrame, a NumPy structured array, a dict of
#: array-likes (one per column) or a list of dicts (one per row).
Records: TypeAlias = pd.DataFrame | np.ndarray | Mapping[str, Any] | Sequence[Mapping[str, Any]]


def to_storage_dtype(image: np.ndarray, dtype: str) -> np.ndarray:
    """Convert a float image in [0, 1] (or an already integer image) to the on-disk dtype.

    Floats are clipped to [0, 1] and scaled to the full integer range with rounding;
    integer inputs of the target dtype are passed through unchanged.
    """
    image = np.asarray(image)
    if image.dtype == np.dtype(dtype):
        return image
    if dtype == "float32":
        if np.issubdtype(image.dtype, np.integer):
            return (image / np.iinfo(image.dtype).max).astype(np.float32)
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        raise ParameterError(f"cannot store a {image.dtype} image as {dtype}; pass floats in [0, 1]")
    top = np.iinfo(dtype).max
    return np.rint(np.clip(image, 0.0, 1.0) * top).astype(dtype)


def to_float_image(image: np.ndarray) -> np.ndarray:
    """On-disk image (uint8, uint16 or float) → float32 in [0, 1]."""
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    return image.astype(np.float32, copy=False)


def records_to_columns(records: Records | None, table: str | None = None) -> dict[str, np.ndarray]:
    """Normalize annotation records to ``{column: 1-D array}``.

    Accepts a pandas DataFrame, a NumPy structured array, a dict of array-likes
    or a list of dicts.  Columns of well-known tables are cast to their schema
    dtypes; a missing required column raises :class:`ParameterError`.
    """
    if records is None:
        return {}
    raw: dict[Any, Any]
    if isinstance(records, pd.DataFrame):
        raw = {c: records[c].to_numpy() for c in records.columns}
    elif isinstance(records, np.ndarray) and records.dtype.names:
        raw = {c: records[c] for c in records.dtype.names}
    elif isinstance(records, dict):
        raw = {c: np.asarray(v) for c, v in records.items()}
    elif isinstance(records, (list, tuple)):
        if not records:
            raw = {}
        else:
            keys = list(records[0].keys())
            raw = {k: np.asarray([r[k] for r in records]) for k in keys}
    else:
        raise ParameterError(f"unsupported annotation records of type {type(records).__name__}")
    cols = {str(c): np.atleast_1d(np.asarray(v)) for c, v in raw.items()}
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise ParameterError(f"table {table!r}: columns have different lengths {sorted(lengths)}")
    required = TABLE_COLUMNS.get(table or "", {})
    empty = not cols
    for col, dtype in required.items():
        if col == "sample":
            continue
        if col not in cols:
            if empty:  # an empty record set may omit columns
                cols[col] = np.zeros(0, dtype)
                continue
            raise ParameterError(f"table {table!r} is missing column {col!r} (has {sorted(cols)})")
    out: dict[str, np.ndarray] = {}
    for col, values in cols.items():
        target: str | np.dtype | None = required.get(col) or OPTIONAL_COLUMNS.get(col)
        if target is None:
            if values.dtype.kind not in "biuf":
                raise ParameterError(f"table {table!r} column {col!r} must be numeric, got {values.dtype}")
            target = values.dtype
        out[col] = values.astype(target, copy=False)
    return out


class _TableBuffer:
    """Rows of one indexed table, buffered in memory and flushed in blocks."""

    def __init__(self, name: str):
        self.name = name
        self.columns: list[str] | None = None
        self.dtypes: dict[str, np.dtype] = {}
        self.counts: list[int] = []  # rows per sample, aligned with sample index
        self.pending: dict[str, list[np.ndarray]] = {}
        # Kept open until the writer flushes: closing a dataset writes its buffers, and a write that
        # fails there can only be printed by h5py (not raised) and leaves HDF5 unable to close the file.
        self.datasets: dict[str, h5py.Dataset] = {}
        self.offsets: h5py.Dataset | None = None

    def add(self, index: int, records: Records | None) -> None:
        cols = records_to_columns(records, self.name)
        cols.pop("sample", None)
        if self.columns is None:
            self.columns = ["sample", *cols.keys()]
            self.dtypes = {"sample": np.dtype("int64"), **{c: v.dtype for c, v in cols.items()}}
            self.pending = {c: [] for c in self.columns}
        elif cols and set(cols) != set(self.columns[1:]):
            raise ParameterError(
                f"table {self.name!r}: sample {index} has columns {sorted(cols)}, "
                f"earlier samples had {sorted(self.columns[1:])}"
            )
        n = len(next(iter(cols.values()))) if cols else 0
        while len(self.counts) < index:
            self.counts.append(0)
        self.counts.append(n)
        if n:
            self.pending["sample"].append(np.full(n, index, np.int64))
            for c in self.columns[1:]:
                self.pending[c].append(cols[c].astype(self.dtypes[c], copy=False))

    def flush(self, f: h5py.File) -> None:
        if self.columns is None:
            return
        if not self.datasets:
            group = f.require_group(table_path(self.name))
            group.attrs["columns"] = json.dumps(self.columns)
            for c in self.columns:
                # modest compressed chunks: small files stay small, big tables still stream fast
                self.datasets[c] = group.create_dataset(
                    c, shape=(0,), maxshape=(None,), dtype=self.dtypes[c], chunks=(4096,), compression="gzip",
                    compression_opts=1, shuffle=True,
                )
        if not self.pending["sample"]:
            return
        for c in self.columns:
            block = np.concatenate(self.pending[c])
            ds = self.datasets[c]
            start = ds.shape[0]
            ds.resize((start + len(block),))
            ds[start:] = block
            self.pending[c] = []

    def finish(self, f: h5py.File, n_samples: int) -> None:
        if self.columns is None:
            return
        self.flush(f)
        counts = np.zeros(n_samples, np.int64)
        counts[: len(self.counts)] = self.counts
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.offsets = f[table_path(self.name)].create_dataset("offsets", data=offsets)


def _write_error(path: Path, exc: BaseException) -> OSError:
    """One-line ``OSError`` for a failed write to ``path`` (h5py words it as OSError or RuntimeError)."""
    code = exc.errno if isinstance(exc, OSError) and exc.errno else None
    if code is None and (m := re.search(r"errno = (\d+)", str(exc))):
        code = int(m[1])
    reason = os.strerror(code) if code else _short(exc)
    return OSError(code or errno.EIO, f"{reason} (nothing written, the partial file was removed)", str(path))


def _writes(method):
    """A writer method that touches the file: a failed write discards the file and raises one line."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (OSError, RuntimeError) as exc:  # h5py's words for a failed write (ENOSPC, EFBIG, EIO)
            self._discard(broken=True)
            raise _write_error(self.path, exc) from None

    return wrapper


class DatasetWriter:
    """Append samples to a new simgen HDF5 dataset, atomically.

    Parameters
    ----------
    path : str or Path
        Final file name.  Nothing appears there until :meth:`close` succeeds.
    kind : str
        What the samples are (``"film"``, ``"tem"``, ``"video"``, ``"filament"``,
        ``"predictions"``, ...).
    image_dtype : {"uint8", "uint16", "float32"}
        On-disk image dtype.  Float images in [0, 1] are scaled to integer ranges.
    class_names : sequence of str, optional
        Names of class ids used in box/track tables.
    generator : dict, optional
        JSON-serialisable description of how the data was made (stored as JSON).
    seed : int, optional
        Master seed.
    attrs : dict, optional
        Extra root attributes (scalars or strings).
    overwrite : bool
        Replace an existing file at ``path`` (only when the new one is complete).
    compression : {"gzip", "lzf", None}
        Filter for images and masks (gzip level 1 by default: small and fast).
    flush_every : int
        Flush buffered table rows every this many samples.

    Notes
    -----
    Optional per-sample arrays (``mask``, ``phase``) are created the first time a
    sample provides them; earlier samples read back as all-zero masks / NaN phase.
    Tables likewise: a sample that does not mention a table has no rows in it.

    The temporary file (``.<name>.<host>-<pid>.<random>.tmp`` next to ``path``) is removed on any
    error, on ``SIGTERM`` while the writer is open (:func:`simgen.atomic.sigterm_raises`) and, if a
    killed run left one, by the next writer of the same ``path``
    (:func:`simgen.atomic.sweep_stale_temps`).  A failed write (full disk, I/O error) raises one
    ``OSError`` naming ``path`` and its ``errno``.
    """

    @classmethod
    def for_sampler(cls, path: str | PathLike, sampler: Sampler, *, attrs: dict | None = None,
                    image_dtype: str = "uint8", overwrite: bool = False) -> DatasetWriter:
        """A writer whose kind, class names, generator description and seed come from ``sampler``."""
        return cls(path, kind=sampler.kind, image_dtype=image_dtype, class_names=sampler.class_names,
                   generator=sampler.describe(), seed=getattr(sampler, "seed", None), attrs=attrs,
                   overwrite=overwrite)

    def __init__(
        self,
        path: str | PathLike,
        *,
        kind: str,
        image_dtype: str = "uint8",
        class_names: Iterable[str] | None = None,
        generator: dict | None = None,
        seed: int | None = None,
        attrs: dict | None = None,
        overwrite: bool = False,
        compression: str | None = "gzip",
        flush_every: int = 256,
    ) -> None:
        if image_dtype not in IMAGE_DTYPES:
            raise ParameterError(f"image_dtype must be one of {IMAGE_DTYPES}, got {image_dtype!r}")
        self.path = check_output(path, overwrite)
        self.overwrite = overwrite
        self.kind = kind
        self.image_dtype = image_dtype
        self.compression = compression
        self.flush_every = max(1, int(flush_every))
        self.n = 0
        self._tables: dict[str, _TableBuffer] = {}
        self._arrays: dict[str, h5py.Dataset] = {}  # image-like arrays, kept open (see _TableBuffer)
        self._held: list = []  # every other object created, kept open for the same reason
        self._provenance: list[str] = []
        self._names: list[str] = []
        self._shapes: list[tuple[int, ...]] = []
        self._closed = True  # nothing to clean up until the HDF5 file is open
        self._tmp: Path | None = None
        self._fd: int | None = None
        sweep_stale_temps(self.path, once=True)
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(sigterm_raises())
        try:
            with sigterm_deferred():  # a SIGTERM arrives once the name is recorded for cleanup
                self._tmp = make_temp(self.path)
            self._f = h5py.File(self._tmp, "w", libver=("earliest", "v110"))
            self._closed = False
            with contextlib.suppress(Exception):  # the sec2 driver's file descriptor (other drivers have none)
                self._fd = self._f.id.get_vfd_handle()
            self._init_attrs(kind, generator, seed, class_names, attrs)
        except BaseException:  # SIGTERM included: the object never reaches the caller's `with`
            if not self._closed:
                self._discard()
            else:
                if self._tmp is not None:
                    self._tmp.unlink(missing_ok=True)
                self._signals.close()
            raise

    @_writes
    def _init_attrs(self, kind, generator, seed, class_names, attrs) -> None:
        root = self._f.attrs
        root["schema"] = SCHEMA_NAME
        root["schema_version"] = SCHEMA_VERSION
        root["simgen_version"] = __version__
        root["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        root["kind"] = kind
        root["generator"] = json.dumps(generator or {}, default=json_default)
        if seed is not None:
            root["seed"] = int(seed)
        if class_names is not None:
            self.set_class_names(class_names)
        if attrs:
            self.set_attrs(**attrs)

    # -- building ---------------------------------------------------------
    @_writes
    def set_attrs(self, **attrs: Any) -> None:
        """Set extra root attributes; dicts and lists are stored as JSON strings."""
        reserved = {"schema", "schema_version", "n_samples"}
        for key, value in attrs.items():
            if key in reserved:
                raise ParameterError(f"attribute {key!r} is reserved")
            if isinstance(value, (dict, list, tuple)):
                value = json.dumps(value, default=json_default)
            elif value is None:
                continue
            self._f.attrs[key] = value

    @_writes
    def set_class_names(self, names: Iterable[str]) -> None:
        labels = [str(n) for n in names]
        grp = self._f.require_group("labels")
        if "classes" in grp:
            del grp["classes"]
        self._held += [grp, grp.create_dataset("classes", data=np.array(labels, dtype=object), dtype=_STR)]

    @_writes
    def append(
        self,
        image: ArrayLike | None = None,
        *,
        points: Records | None = None,
        boxes: Records | None = None,
        tracks: Records | None = None,
        tables: Mapping[str, Records | None] | None = None,
        mask: ArrayLike | None = None,
        phase: ArrayLike | None = None,
        provenance: dict | None = None,
        name: str | None = None,
        shape: tuple[int, int] | None = None,
    ) -> int:
        """Add one sample and its annotations; returns its index.

        Parameters
        ----------
        image : (H, W) array, optional
            Float in [0, 1] or already in the on-disk dtype.  All images of a file
            share one shape.  Omit for label-only files (then give ``shape``).
        points, boxes, tracks : records, optional
            Annotation records (DataFrame, structured array, dict of columns).
        tables : dict, optional
            Further tables ``{name: records}``.
        mask : (H, W) integer array, optional
            Instance-id label image (0 = background).
        phase : (H, W) float array, optional
            Phase field in radians.
        provenance : dict, optional
            JSON-serialisable per-sample parameters (seeds, artifact spec, ...).
        name : str, optional
            Source name of the sample (e.g. an image file name).
        shape : (H, W), optional
            Image shape for label-only samples.
        """
        self._check_open()
        check_terminated()
        i = self.n
        if image is not None:
            image = np.asarray(image)
            if image.ndim != 2:
                raise ParameterError(f"images must be 2-D (H, W), got shape {image.shape}")
            self._append_image("images", to_storage_dtype(image, self.image_dtype), fill=0)
            shape = image.shape
        elif "images" in self._f:
            raise ParameterError("this dataset stores images; every sample needs one")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.min(initial=0) < 0 or mask.max(initial=0) > np.iinfo(np.uint16).max:
                raise ParameterError("instance masks must hold ids in [0, 65535]")
            self._append_image("labels/masks", mask.astype(np.uint16), fill=0)
        if phase is not None:
            self._append_image("phase", np.asarray(phase, np.float32), fill=np.nan)
        for tname, records in (("points", points), ("boxes", boxes), ("tracks", tracks), *(tables or {}).items()):
            if records is not None:
                self._tables.setdefault(tname, _TableBuffer(tname)).add(i, records)
        self._provenance.append(json.dumps(provenance or {}, default=json_default, sort_keys=True))
        self._names.append("" if name is None else str(name))
        self._shapes.append(tuple(int(s) for s in shape) if shape is not None else (0, 0))
        self.n += 1
        if self.n % self.flush_every == 0:
            for buf in self._tables.values():
                buf.flush(self._f)
            self._f.flush()  # a full disk shows up here, not only at close()
        return i

    @_writes
    def create_array(self, path: str, data: ArrayLike | None = None, **kwargs: Any) -> h5py.Dataset:
        """Store an extra array (e.g. ``pairs/index``) at ``path``; kwargs go to h5py.

        With ``data=None`` and ``shape``/``dtype`` in ``kwargs`` an empty dataset is created
        to be filled incrementally.  Returns the h5py dataset (valid until :meth:`close`).
        """
        self._check_open()
        if path in self._f:
            self._arrays.pop(path, None)
            del self._f[path]
        ds = self._f.create_dataset(path, data=data, **kwargs)
        self._held.append(ds)
        return ds

    @_writes
    def set_group_attrs(self, path: str, **attrs: Any) -> None:
        """Set attributes on the group or dataset at ``path``; dicts/lists are stored as JSON."""
        self._check_open()
        obj = self._f[path] if path in self._f else self._f.require_group(path)
        self._held.append(obj)
        for key, value in attrs.items():
            obj.attrs[key] = json.dumps(value, default=json_default) if isinstance(value, (dict, list, tuple)) else value

    def _append_image(self, path: str, array: np.ndarray, fill) -> None:
        f = self._f
        if path not in self._arrays:
            kwargs = {}
            if self.compression == "gzip":
                kwargs = {"compression": "gzip", "compression_opts": 1, "shuffle": array.dtype.itemsize > 1}
            elif self.compression:
                kwargs = {"compression": self.compression}
            self._arrays[path] = f.create_dataset(
                path,
                shape=(self.n, *array.shape),
                maxshape=(None, *array.shape),
                dtype=array.dtype,
                chunks=(1, *array.shape),
                fillvalue=fill,
                **kwargs,
            )
        ds = self._arrays[path]
        if ds.shape[1:] != array.shape:
            raise ParameterError(f"{path}: sample {self.n} has shape {array.shape}, earlier ones {ds.shape[1:]}")
        if ds.shape[0] < self.n + 1:
            ds.resize((self.n + 1, *array.shape))
        ds[self.n] = array

    # -- finishing --------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ParameterError("dataset writer is closed")

    def close(self) -> Path:
        """Finish the file and move it to its final name; returns that path.

        Raises
        ------
        OSError
            If the file could not be written (full disk, I/O error); nothing is left behind.
        """
        if self._closed:
            return self.path
        f = self._f
        n = self.n
        try:
            for path in ("images", "labels/masks", "phase"):
                if path in f and f[path].shape[0] < n:
                    f[path].resize((n, *f[path].shape[1:]))
            for buf in self._tables.values():
                buf.finish(f, n)
            self._held.append(f.create_dataset("provenance", data=np.array(self._provenance, dtype=object), dtype=_STR))
            if any(self._names):
                self._held.append(f.create_dataset("names", data=np.array(self._names, dtype=object), dtype=_STR))
            if "images" not in f and n:
                self._held.append(f.create_dataset("shapes", data=np.array(self._shapes, np.int64).reshape(n, 2)))
            f.attrs["n_samples"] = n
            f.flush()  # every byte reaches the file (or fails) while it can still be discarded cleanly
            self._release()
            f.close()
        except (OSError, RuntimeError) as exc:
            self._discard(broken=True)
            raise _write_error(self.path, exc) from None
        except BaseException:
            self._discard()
            raise
        self._closed = True
        tmp = self._tmp
        assert tmp is not None  # set in __init__ before any write can happen
        try:
            fsync_path(tmp)
            if self.path.exists() and not self.overwrite:
                raise ParameterError(f"output {self.path} appeared while writing; not replacing it")
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            self._signals.close()
        return self.path

    def abort(self) -> None:
        """Discard everything written so far; the final path is left untouched."""
        self._discard()

    def _discard(self, broken: bool = False) -> bool:
        """Remove the temp file and close the HDF5 file whatever state it is in; True if it was broken.

        The file is unlinked first.  HDF5 flushes what it still holds when the file is closed, and if
        writing has failed (``broken``, or the flush tried here fails) that flush fails again: the file
        stays half-open and the library crashes at interpreter exit (the segfault a full disk gave).
        So the file descriptor is pointed at ``/dev/null`` first and the close then succeeds.
        """
        if self._closed:
            return False
        self._closed = True
        try:
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    self._tmp.unlink()
            if not self._f:  # already closed (interrupted right after close()): its descriptor is gone
                return broken
            if not broken:
                try:
                    self._f.flush()
                except Exception:  # noqa: BLE001 - any failure means the file cannot be closed normally
                    broken = True
            if broken and self._fd is not None:
                with contextlib.suppress(OSError):
                    null = os.open(os.devnull, os.O_RDWR)
                    os.dup2(null, self._fd)
                    os.close(null)
            self._release()
            with contextlib.suppress(Exception):  # closing a broken file must not mask the original error
                self._f.close()
        finally:
            self._signals.close()
        return broken

    def _release(self) -> None:
        self._arrays.clear()
        self._tables.clear()
        self._held.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc_type is None:
            self.close()
        elif self._discard() and isinstance(exc, (OSError, RuntimeError)):
            raise _write_error(self.path, exc) from None  # a write through create_array()'s dataset failed
        return False

    def __del__(self) -> None:  # a writer dropped without close() must not leave its temp file
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Terminated):  # a finalizer cannot raise; SIGTERM is still pending
                self.abort()


class Dataset:
    """A read-only simgen HDF5 dataset (use :func:`open_dataset`).

    Attributes
    ----------
    path : Path
    attrs : dict
        Root attributes; ``generator`` parsed from JSON.
    n : int
        Number of samples.
    class_names : list of str
    """

    def __init__(self, path: str | PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SchemaError(f"{self.path} does not exist")
        if self.path.is_dir():
            raise SchemaError(f"{self.path} is a folder, not a simgen HDF5 file (sharded data sets have a manifest.json)")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            raise SchemaError(f"cannot read {self.path} as HDF5 ({_short(exc)})") from None
        try:
            self.attrs = validate_file(self.file, str(self.path))
        except (KeyError, ValueError, OSError) as exc:  # h5py's words for a damaged file
            self.file.close()
            raise SchemaError(f"{self.path} is damaged ({_short(exc)})") from None
        except BaseException:
            self.file.close()
            raise
        self.n = int(self.attrs["n_samples"])
        self.kind = self.attrs.get("kind", "")
        f = self.file
        self.class_names = [_text(x) or x.decode() for x in f["labels/classes"][()]] if "labels/classes" in f else []
        self._offsets: dict[str, np.ndarray] = {}

    # -- arrays -----------------------------------------------------------
    @property
    def images(self) -> h5py.Dataset | None:
        """The on-disk ``/images`` dataset (lazy h5py Dataset) or ``None``."""
        return self.file.get("images")

    @property
    def image_shape(self) -> tuple[int, int] | None:
        images = self.images
        if images is None:
            return None
        h, w = images.shape[1:]  # validate_file checked (N, H, W)
        return h, w

    def image(self, i: int, as_float: bool = True) -> np.ndarray:
        """Image ``i`` as float32 in [0, 1] (or raw on-disk dtype with ``as_float=False``)."""
        if self.images is None:
            raise SchemaError(f"{self.path} stores no images")
        raw = self.images[self._index(i)]
        return to_float_image(raw) if as_float else raw

    def mask(self, i: int) -> np.ndarray | None:
        """Instance-id label image of sample ``i`` (uint16) or ``None``.

        Label-only files of mixed-size images store masks zero-padded to the largest
        size (root attribute ``masks_padded``); they are cropped back to ``shape(i)``.
        """
        ds = self.file.get("labels/masks")
        if ds is None:
            return None
        m = ds[self._index(i)]
        if self.attrs.get("masks_padded") and self.images is None:
            h, w = self.shape(i)
            m = m[:h, :w]
        return m

    def phase(self, i: int) -> np.ndarray | None:
        ds = self.file.get("phase")
        return None if ds is None else ds[self._index(i)]

    def array(self, path: str) -> np.ndarray:
        """An extra stored array, e.g. ``pairs/index``."""
        if path not in self.file:
            raise SchemaError(f"{self.path} has no {path!r}")
        return self.file[path][()]

    def has(self, path: str) -> bool:
        return path in self.file

    def name(self, i: int) -> str:
        ds = self.file.get("names")
        return f"{self._index(i):06d}" if ds is None else (_text(ds[self._index(i)]) or f"{i:06d}")

    def shape(self, i: int) -> tuple[int, int]:
        images = self.images
        if images is not None:
            h, w = images.shape[1:]
            return h, w
        if "shapes" in self.file:
            h, w = (int(s) for s in self.file["shapes"][self._index(i)])
            return h, w
        raise SchemaError(f"{self.path} stores neither images nor shapes")

    def provenance(self, i: int) -> dict:
        ds = self.file.get("provenance")
        if ds is None:
            return {}
        return json.loads(_text(ds[self._index(i)]) or "{}")

    # -- tables -----------------------------------------------------------
    @property
    def tables(self) -> list[str]:
        return _table_names(self.file)

    def table(self, name: str) -> pd.DataFrame | None:
        """Whole table ``name`` as a DataFrame (``None`` if the file has no such table)."""
        path = table_path(name)
        if path not in self.file or "columns" not in self.file[path].attrs:
            return None
        group = self.file[path]
        self._table_offsets(name, group)
        columns = _json_text(group.attrs["columns"])
        return pd.DataFrame({c: group[c][()] for c in columns})

    def _table_offsets(self, name: str, group) -> np.ndarray:
        """The validated row index of table ``name`` (cached): files are untrusted input.

        ``offsets`` must be N+1 non-decreasing integers from 0 to the row count of every column,
        and a ``sample`` column must agree with it; otherwise rows would silently move to another
        image (a file with ``offsets[2] = 1e9`` once exported boxes onto the wrong images).
        """
        if name in self._offsets:
            return self._offsets[name]
        where = f"{self.path}: table {name!r}"
        if "offsets" not in group:
            raise SchemaError(f"{where} has no offsets index")
        off = group["offsets"][()]
        if off.ndim != 1 or off.dtype.kind not in "iu" or len(off) != self.n + 1:
            raise SchemaError(f"{where}: offsets must be {self.n + 1} integers (one per sample + 1), "
                              f"got shape {off.shape} of {off.dtype}")
        off = off.astype(np.int64)
        columns = _json_text(group.attrs["columns"])
        lengths = {len(group[c]) for c in columns if c in group}
        if off[0] != 0 or np.any(np.diff(off) < 0) or lengths != {int(off[-1])}:
            raise SchemaError(f"{where}: offsets must start at 0, never decrease and end at the row count "
                              f"({sorted(lengths)}); the file is damaged")
        if "sample" in columns:
            sample = group["sample"][()]
            if not np.array_equal(sample, np.repeat(np.arange(self.n), np.diff(off))):
                raise SchemaError(f"{where}: its sample column disagrees with its offsets; the file is damaged")
        self._offsets[name] = off
        return off

    def rows(self, name: str, i: int) -> pd.DataFrame | None:
        """Rows of table ``name`` belonging to sample ``i``."""
        path = table_path(name)
        if path not in self.file or "columns" not in self.file[path].attrs:
            return None
        group = self.file[path]
        off = self._table_offsets(name, group)
        i = self._index(i)
        a, b = int(off[i]), int(off[i + 1])
        columns = _json_text(group.attrs["columns"])
        return pd.DataFrame({c: group[c][a:b] for c in columns})

    # -- plumbing ---------------------------------------------------------
    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"sample {i} out of range for {self.n} samples")
        return i

    def __len__(self) -> int:
        return self.n

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def summary(self) -> dict:
        """Counts and parameters, as shown by ``simgen info``."""
        image_shape = self.image_shape
        out: dict[str, Any] = {
            "path": str(self.path),
            "schema_version": self.attrs.get("schema_version"),
            "simgen_version": self.attrs.get("simgen_version"),
            "kind": self.kind,
            "created": self.attrs.get("created"),
            "seed": self.attrs.get("seed"),
            "n_samples": self.n,
            "image_shape": list(image_shape) if image_shape is not None else None,
            "image_dtype": str(self.images.dtype) if self.images is not None else None,
            "classes": self.class_names,
            "tables": {},
            "masks": "labels/masks" in self.file,
            "phase": "phase" in self.file,
            "generator": self.attrs.get("generator"),
        }
        for name in self.tables:
            group = self.file[table_path(name)]
            rows = int(self._table_offsets(name, group)[-1])
            entry: dict[str, Any] = {"rows": rows, "per_sample": round(rows / max(self.n, 1), 3)}
            if name == "points" and rows:
                charge = group["charge"][()]
                entry["charge+"] = int((charge > 0).sum())
                entry["charge-"] = int((charge < 0).sum())
            if "class" in group and rows and self.class_names:
                counts = np.bincount(group["class"][()].astype(np.int64), minlength=len(self.class_names))
                entry["per_class"] = {n: int(c) for n, c in zip(self.class_names, counts)}
            out["tables"][name] = entry
        return out


def open_dataset(path: str | PathLike) -> Dataset:
    """Open and validate a simgen HDF5 dataset for reading.

    Raises
    ------
    SchemaError
        If the file is missing, not HDF5, not a simgen dataset or of an unsupported version.
    """
    return Dataset(path)


def read_table(path: str | PathLike, name: str) -> pd.DataFrame | None:
    """Read one whole table from a dataset file."""
    with open_dataset(path) as ds:
        return ds.table(name)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
