"""The simgen HDF5 schema: names, versions and validation.

Layout of schema version 1 (``N`` samples; every group/dataset except the root
attributes is optional unless stated)::

    /  attrs  schema="simgen" (required), schema_version=1 (required),
              n_samples (required), kind ("film", "tem", "video", "filament",
              "predictions", ...), simgen_version, created (ISO 8601 UTC),
              generator (JSON: function + parameters), seed, extra attrs
    /images           (N, H, W) uint8 | uint16 | float32, chunks (1, H, W), gzip
    /phase            (N, H, W) float32 phase field phi in radians (film; lets DC re-render)
    /names            (N,) str   source file names (imports, predictions)
    /shapes           (N, 2) int (H, W) per sample when /images is absent
    /labels/classes   (C,) str   class names, index = class id
    /labels/masks     (N, H, W) uint16 instance ids (0 = background), gzip
    /labels/<table>   indexed table, e.g. points, boxes
    /tracks           indexed table (sample = frame)
    /pairs/...        arrays for change-detection pairs (filament)
    /provenance       (N,) str   one JSON object per sample

An *indexed table* is a group with attribute ``columns`` (JSON list of names),
one 1-D dataset per column (``sample`` always first) and ``offsets`` (N + 1,)
int64: the rows of sample ``i`` are ``offsets[i]:offsets[i + 1]`` and rows are
sorted by sample.  Columns are named, never positional:

* ``points``: sample, x, y, charge
* ``boxes``:  sample, x0, y0, x1, y1, class [, score, instance, size, ...]
* ``tracks``: sample, track_id, x, y [, x0, y0, x1, y1, class, size, ...]

Coordinates are pixels, ``x`` = column, ``y`` = row, origin at the top-left
corner of the top-left pixel (so pixel ``(r, c)`` has centre ``(c + 0.5, r + 0.5)``
in box coordinates; point annotations use the same continuous frame).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from simgen.errors import SchemaError

if TYPE_CHECKING:
    import h5py

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "TABLE_COLUMNS",
    "table_path",
    "validate_file",
]

SCHEMA_NAME = "simgen"
#: Version written by this simgen.  Bump on any incompatible layout change and
#: teach :func:`validate_file` to reject (or migrate) older files.
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)

#: Required columns and their on-disk dtypes for the well-known tables.
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "points": {"sample": "int64", "x": "float32", "y": "float32", "charge": "int8"},
    "boxes": {
        "sample": "int64",
        "x0": "float32",
        "y0": "float32",
        "x1": "float32",
        "y1": "float32",
        "class": "int16",
    },
    "tracks": {"sample": "int64", "track_id": "int64", "x": "float32", "y": "float32"},
}

#: Dtypes of optional columns that have a conventional meaning.
OPTIONAL_COLUMNS: dict[str, str] = {
    "score": "float32",
    "instance": "int32",
    "size": "float32",
    "class": "int16",
    "x0": "float32",
    "y0": "float32",
    "x1": "float32",
    "y1": "float32",
    "angle": "float32",
    "major": "float32",
    "minor": "float32",
}

IMAGE_DTYPES = ("uint8", "uint16", "float32")


def table_path(name: str) -> str:
    """HDF5 path of table ``name`` (``tracks`` at the root, everything else under ``labels``)."""
    if not name or "/" in name:
        raise SchemaError(f"invalid table name {name!r}")
    return "tracks" if name == "tracks" else f"labels/{name}"


def validate_file(f: h5py.File, path: str = "") -> dict:
    """Check that an open ``h5py.File`` is a readable simgen dataset.

    Returns the root attributes as a plain dict (``generator`` parsed from JSON).

    Raises
    ------
    SchemaError
        With a one-line message naming the file and what is wrong.
    """
    where = path or f.filename
    attrs = f.attrs
    if attrs.get("schema") != SCHEMA_NAME and _text(attrs.get("schema")) != SCHEMA_NAME:
        raise SchemaError(f"{where} is not a simgen dataset (no schema='simgen' attribute)")
    try:
        version = int(attrs["schema_version"])
    except (KeyError, TypeError, ValueError):
        raise SchemaError(f"{where} has no valid schema_version attribute") from None
    if version not in SUPPORTED_VERSIONS:
        newer = version > SCHEMA_VERSION
        hint = "upgrade simgen" if newer else "re-generate the file"
        raise SchemaError(
            f"{where} has schema version {version}; this simgen reads version(s) "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))} ({hint})"
        )
    try:
        n = int(attrs["n_samples"])
    except (KeyError, TypeError, ValueError):
        raise SchemaError(f"{where} has no valid n_samples attribute") from None
    if "images" in f:
        images = f["images"]
        if images.ndim != 3 or images.shape[0] != n:
            raise SchemaError(f"{where}: /images has shape {images.shape}, expected ({n}, H, W)")
        if images.dtype.name not in IMAGE_DTYPES:
            raise SchemaError(f"{where}: /images dtype {images.dtype} not in {IMAGE_DTYPES}")
    for name in _table_names(f):
        group = f[table_path(name)]
        if "offsets" not in group or "columns" not in group.attrs:
            raise SchemaError(f"{where}: table {name!r} has no offsets index or column list; the file is damaged")
        offsets = group["offsets"]
        if offsets.shape != (n + 1,):
            raise SchemaError(
                f"{where}: table {name!r} has {offsets.shape[0] - 1} samples in its index, expected {n}"
            )
        columns = _json_text(group.attrs["columns"])
        nrows = int(offsets[-1])
        for col in columns:
            if col not in group or group[col].shape != (nrows,):
                raise SchemaError(f"{where}: table {name!r} column {col!r} is missing or has the wrong length")
    if "labels/masks" in f and f["labels/masks"].shape[0] != n:
        raise SchemaError(f"{where}: /labels/masks has {f['labels/masks'].shape[0]} samples, expected {n}")
    out = {k: _plain(v) for k, v in attrs.items()}
    if "generator" in out and isinstance(out["generator"], str):
        with contextlib.suppress(json.JSONDecodeError):
            out["generator"] = json.loads(out["generator"])
    return out


def _table_names(f: h5py.File) -> list[str]:
    names = []
    if "labels" in f:
        for key, obj in f["labels"].items():
            if hasattr(obj, "attrs") and "columns" in obj.attrs:
                names.append(key)
    if "tracks" in f and "columns" in f["tracks"].attrs:
        names.append("tracks")
    return names


def _text(value) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


def _json_text(value: object) -> Any:
    """A JSON document stored as a string attribute (``str`` or ``bytes``) → Python object.

    Raises ``TypeError`` for any other value, as ``json.loads`` does.
    """
    text = _text(value)
    if text is None:
        raise TypeError(f"expected a JSON string, got {type(value).__name__}")
    return json.loads(text)


def _plain(value):
    """HDF5 attribute value → plain Python (str, int, float, list)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class Sampler(Protocol):
    """The sampler protocol (for type checking): ``kind``, ``class_names``, ``describe()`` and
    ``sampler(index) -> sample dict``; e.g. :class:`simgen.simulate.film.FilmSampler`."""

    @property
    def kind(self) -> str: ...

    @property
    def class_names(self) -> Sequence[str]: ...

    def describe(self) -> dict: ...

    def __call__(self, index: int, /) -> dict: ...
