"""Generate a dataset file from a sampler (serial, in-process).

A *sampler* is any picklable callable ``sampler(index) -> dict`` following the
protocol of :class:`simgen.simulate.film.FilmSampler` (``kind``,
``class_names``, ``describe()``).  Because sample ``i`` depends only on
``(seed, i)``, the same function serves serial generation here and sharded,
distributed generation in :mod:`simgen.datasets.shards`.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.schema import Sampler
from simgen.errors import ParameterError
from simgen.progress import track

__all__ = ["write_dataset", "append_sample"]




def append_sample(writer: DatasetWriter, sample: dict) -> int:
    """Append one sampler output dict to an open writer."""
    return writer.append(
        sample.get("image"),
        points=sample.get("points"),
        boxes=sample.get("boxes"),
        tracks=sample.get("tracks"),
        tables=sample.get("tables"),
        mask=sample.get("mask"),
        phase=sample.get("phase"),
        provenance=sample.get("provenance"),
        name=sample.get("name"),
    )


def write_dataset(
    path: str | PathLike,
    sampler: Sampler,
    n: int,
    *,
    start: int = 0,
    overwrite: bool = False,
    image_dtype: str = "uint8",
    progress: bool = False,
    attrs: dict | None = None,
) -> Path:
    """Write samples ``start .. start + n - 1`` of ``sampler`` to one HDF5 file, atomically.

    Parameters
    ----------
    path : path-like
        Output file (must not exist unless ``overwrite``).
    sampler : callable
        ``sampler(i)`` → sample dict (see module docstring).
    n : int
        Number of samples (>= 1).
    start : int
        Index of the first sample (shards use it; seeds follow the index).
    image_dtype : {"uint8", "uint16", "float32"}
    progress : bool
        Show a progress bar on stderr.
    attrs : dict, optional
        Extra root attributes.

    Returns
    -------
    Path of the finished file.
    """
    if int(n) != n or n < 1:
        raise ParameterError(f"number of samples must be a positive integer, got {n}")
    if start < 0:
        raise ParameterError(f"start index must be >= 0, got {start}")
    with DatasetWriter.for_sampler(
        path, sampler, image_dtype=image_dtype, overwrite=overwrite,
        attrs={"first_index": int(start), **(attrs or {})},
    ) as writer:
        for i in track(range(start, start + n), total=n, description=f"{sampler.kind} → {Path(path).name}", enabled=progress):
            append_sample(writer, sampler(i))
    return Path(path)
