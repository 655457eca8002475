"""Reading a sharded dataset (``manifest.json`` + ``shard-*.h5``) as one dataset.

:class:`ShardedDataset` mirrors the reading API of :class:`simgen.datasets.h5io.Dataset`
(``n``, ``image(i)``, ``rows(table, i)``, ``table(name)``, ``provenance(i)``, ...) with
global sample indices across shards.  Shard files are opened lazily, at most
``max_open`` at a time, and never shared across processes: a handle opened in one
process is dropped (not used) after a ``fork``, so the object is safe to hand to
DataLoader workers or Dask tasks.

If the generator wrote ``virtual.h5`` (an HDF5 virtual dataset over all shards),
:attr:`ShardedDataset.images` is that ``(N, H, W)`` dataset, sliceable like any
h5py dataset (``ds.images[10:20]``).  HDF5 returns fill values for a missing
source file, so the reader checks that every shard exists before offering it.

Examples
--------
>>> with open_sharded("film_shards/") as ds:              # doctest: +SKIP
...     img = ds.image(123_456); boxes = ds.rows("boxes", 123_456)
"""

from __future__ import annotations

import os
from collections import OrderedDict
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np

from simgen.datasets.h5io import Dataset, open_dataset
from simgen.datasets.shards.write import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    VIRTUAL_NAME,
    VerifyReport,
    is_manifest_path,
    load_manifest,
    manifest_path,
    verify_manifest,
)
from simgen.errors import DataError, SchemaError

if TYPE_CHECKING:
    import h5py
    import pandas as pd

__all__ = ["ShardedDataset", "open_sharded", "open_any", "virtual_manifest", "summarize_manifest"]

#: ``schema`` attribute of a shard set's ``virtual.h5`` (see ``shards.write.write_virtual_from``).
VIRTUAL_SCHEMA = "simgen-virtual"


def locate_sample(starts: np.ndarray, i: int) -> tuple[int, int]:
    """Global sample index → ``(shard number, index inside the shard)``.

    ``starts`` holds the first global index of every shard followed by the total
    count (length ``n_shards + 1``); negative ``i`` counts from the end.
    """
    n = int(starts[-1])
    i = int(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"sample {i} out of range for {n} samples")
    k = int(np.searchsorted(starts, i, side="right")) - 1
    return k, i - int(starts[k])

class ShardedDataset:
    """A complete sharded dataset, read through its manifest.

    Parameters
    ----------
    path : path-like
        ``manifest.json`` or the directory holding it.
    check_files : bool
        Fail at once (:class:`DataError`) if any shard file is missing.
    max_open : int
        Keep at most this many shard files open (least recently used are closed).

    Attributes
    ----------
    manifest : dict
    n : int
    kind : str
    class_names : list of str
    image_shape : (H, W) or None
    starts : (S + 1,) int64 array of shard boundaries in global sample indices
    """

    def __init__(self, path: str | PathLike, *, check_files: bool = True, max_open: int = 64) -> None:
        self.manifest_path = manifest_path(path)
        self.manifest = load_manifest(self.manifest_path)
        m = self.manifest
        if not m.get("complete") or any(s.get("status") != "done" for s in m["shards"]):
            done = sum(s.get("status") == "done" for s in m["shards"])
            raise DataError(
                f"{self.manifest_path} is incomplete ({done} of {len(m['shards'])} shards done); "
                "re-run the generating command to finish it"
            )
        self.root = self.manifest_path.parent
        self.path = self.root
        self.files = [self.root / s["file"] for s in m["shards"]]
        self.starts = np.array([int(s["first_index"]) for s in m["shards"]] + [int(m["n_samples"])], np.int64)
        self.n = int(m["n_samples"])
        self.kind = m.get("kind", "")
        self.class_names = list(m.get("class_names") or [])
        self.image_shape = tuple(m["image_shape"]) if m.get("image_shape") else None
        self.attrs = {
            "schema": MANIFEST_SCHEMA,
            "schema_version": m["schema_version"],
            "simgen_version": m.get("simgen_version"),
            "created": m.get("created"),
            "kind": self.kind,
            "seed": m.get("seed"),
            "n_samples": self.n,
            "generator": m.get("sampler"),
        }
        if check_files:
            missing = [p.name for p in self.files if not p.is_file()]
            if missing:
                more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                raise DataError(
                    f"{self.root} is missing shard file(s) {', '.join(missing[:3])}{more}; "
                    "re-run the generating command to regenerate them"
                )
        self.max_open = max(1, int(max_open))
        self._pid = os.getpid()
        self._handles: OrderedDict[int, Dataset] = OrderedDict()
        self._virtual: h5py.File | None = None
        self._checked: set[int] = set()

    # -- shards -----------------------------------------------------------
    @property
    def n_shards(self) -> int:
        return len(self.files)

    def locate(self, i: int) -> tuple[int, int]:
        """Global sample index → ``(shard number, index inside the shard)``."""
        return locate_sample(self.starts, i)

    def shard(self, k: int) -> Dataset:
        """Open (or reuse) shard ``k`` as a :class:`simgen.datasets.h5io.Dataset`."""

        self._after_fork()
        ds = self._handles.get(k)
        if ds is not None:
            self._handles.move_to_end(k)
            return ds
        ds = open_dataset(self.files[k])
        if k not in self._checked:
            entry = self.manifest["shards"][k]
            if ds.n != int(entry["n"]) or int(ds.attrs.get("first_index", -1)) != int(entry["first_index"]):
                ds.close()
                raise DataError(f"{self.files[k]} does not match the manifest (samples or first index differ); run simgen verify")
            self._checked.add(k)
        self._handles[k] = ds
        while len(self._handles) > self.max_open:
            _, old = self._handles.popitem(last=False)
            old.close()
        return ds

    def _after_fork(self) -> None:
        pid = os.getpid()
        if pid != self._pid:  # handles belong to the parent: forget them without touching them
            self._handles = OrderedDict()
            self._virtual = None
            self._pid = pid

    # -- arrays -----------------------------------------------------------
    @property
    def images(self) -> h5py.Dataset | None:
        """``/images`` of ``virtual.h5`` (a lazy h5py virtual dataset) or ``None`` if it was not written."""
        self._after_fork()
        if self._virtual is None:
            vpath = self.root / (self.manifest.get("virtual") or VIRTUAL_NAME)
            if not vpath.is_file():
                return None
            import h5py

            self._virtual = h5py.File(vpath, "r")
        return self._virtual.get("images")

    def image(self, i: int, as_float: bool = True) -> np.ndarray:
        """Image ``i`` as float32 in [0, 1] (or the raw on-disk dtype with ``as_float=False``)."""
        k, j = self.locate(i)
        return self.shard(k).image(j, as_float=as_float)

    def mask(self, i: int) -> np.ndarray | None:
        k, j = self.locate(i)
        return self.shard(k).mask(j)

    def phase(self, i: int) -> np.ndarray | None:
        k, j = self.locate(i)
        return self.shard(k).phase(j)

    def provenance(self, i: int) -> dict:
        k, j = self.locate(i)
        return self.shard(k).provenance(j)

    def name(self, i: int) -> str:
        k, j = self.locate(i)
        ds = self.shard(k)
        return ds.name(j) if ds.has("names") else f"{int(self.starts[k]) + j:06d}"

    def shape(self, i: int) -> tuple[int, int]:
        k, j = self.locate(i)
        return self.shard(k).shape(j)

    def has(self, path: str) -> bool:
        """Whether the shards store ``path`` (checked in the first shard)."""
        return self.shard(0).has(path)

    # -- tables -----------------------------------------------------------
    @property
    def tables(self) -> list[str]:
        rows = (self.manifest.get("totals") or {}).get("rows")
        return sorted(rows) if rows else self.shard(0).tables

    def rows(self, name: str, i: int) -> pd.DataFrame | None:
        """Rows of table ``name`` for global sample ``i`` (``sample`` column = global index)."""
        k, j = self.locate(i)
        df = self.shard(k).rows(name, j)
        if df is not None and "sample" in df:
            df["sample"] = df["sample"].to_numpy() + self.starts[k]
        return df

    def table(self, name: str) -> pd.DataFrame | None:
        """Whole table ``name`` over all shards as one DataFrame (global ``sample``), or ``None``."""
        import pandas as pd

        parts = []
        for k in range(self.n_shards):
            df = self.shard(k).table(name)
            if df is not None:
                if "sample" in df:
                    df["sample"] = df["sample"].to_numpy() + self.starts[k]
                parts.append(df)
        return pd.concat(parts, ignore_index=True) if parts else None

    # -- misc -------------------------------------------------------------
    def summary(self) -> dict:
        return summarize_manifest(self.manifest_path, self.manifest)

    def verify(self) -> VerifyReport:
        """Recompute all shard checksums (see :func:`simgen.datasets.shards.verify_manifest`)."""
        return verify_manifest(self.manifest_path)

    def __len__(self) -> int:
        return self.n

    def close(self) -> None:
        if os.getpid() == self._pid:
            for ds in self._handles.values():
                ds.close()
            if self._virtual is not None:
                self._virtual.close()
        self._handles = OrderedDict()
        self._virtual = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def __getstate__(self) -> dict[str, Any]:  # picklable (spawned DataLoader workers, Dask): no open handles travel
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        state["_virtual"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()


def open_sharded(path: str | PathLike, **kwargs: Any) -> ShardedDataset:
    """Open a complete sharded dataset (``manifest.json`` or its directory)."""
    return ShardedDataset(path, **kwargs)


def open_any(path: str | PathLike) -> Dataset | ShardedDataset:
    """Open any simgen HDF5 input for reading.

    A shard set's ``manifest.json``, its directory or its ``virtual.h5`` gives a
    :class:`ShardedDataset`; any other path :func:`~simgen.datasets.h5io.open_dataset`.

    Raises
    ------
    SchemaError, DataError
        Missing, foreign or incomplete inputs (one-line messages).
    """
    if is_manifest_path(path):
        return ShardedDataset(path)
    try:
        return open_dataset(path)
    except SchemaError:
        manifest = virtual_manifest(path)
        if manifest is None:
            raise
        return ShardedDataset(manifest)


def virtual_manifest(path: str | PathLike) -> Path | None:
    """The ``manifest.json`` a shard set's ``virtual.h5`` belongs to, or ``None`` for any other file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("schema") != VIRTUAL_SCHEMA:
                return None
            name = str(f.attrs.get("manifest", MANIFEST_NAME))
    except OSError:
        return None
    if "/" in name or name.startswith("."):
        return None
    return path.parent / name


def summarize_manifest(path: str | PathLike, manifest: dict | None = None) -> dict:
    """Summary of a (possibly incomplete) sharded dataset from its manifest alone (``simgen info``)."""
    mpath = manifest_path(path)
    m = manifest if manifest is not None else load_manifest(mpath)
    totals = m.get("totals") or {}
    n = int(m["n_samples"])
    done = int(totals.get("samples_done", 0))
    nbytes = int(totals.get("bytes", 0))
    tables = {}
    for name, rows in sorted((totals.get("rows") or {}).items()):
        tables[name] = {"rows": int(rows), "per_sample": round(int(rows) / max(done, 1), 3)}
    return {
        "path": str(mpath),
        "schema": f"{m['schema']} v{m['schema_version']}",
        "simgen_version": m.get("simgen_version"),
        "kind": m.get("kind"),
        "created": m.get("created"),
        "updated": m.get("updated"),
        "seed": m.get("seed"),
        "n_samples": n,
        "n_shards": len(m["shards"]),
        "shard_size": m.get("shard_size"),
        "complete": bool(m.get("complete")),
        "shards_done": int(totals.get("shards_done", 0)),
        "samples_done": done,
        "image_shape": m.get("image_shape"),
        "image_dtype": m.get("image_dtype"),
        "bytes": nbytes,
        "bytes_per_sample": round(nbytes / done, 1) if done else None,
        "classes": m.get("class_names"),
        "virtual": m.get("virtual"),
        "tables": tables,
        "generator": m.get("sampler"),
    }
