"""Atomic file output: write to a temporary name, then rename.

A killed process never leaves a half-written file under the final name, and an
existing file is never replaced unless the caller asked for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from simgen.errors import ParameterError

__all__ = [
    "check_output",
    "check_output_dir",
    "atomic_path",
    "atomic_dir",
    "replace_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_path",
    "json_default",
    "json_default_lenient",
]


def check_output(path, overwrite: bool = False) -> Path:
    """Validate an output path before any work is done.

    Raises :class:`ParameterError` if ``path`` exists and ``overwrite`` is false,
    if it is a directory, or if its parent directory cannot be created.
    """
    path = Path(path)
    if path.is_dir():
        raise ParameterError(f"output {path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise ParameterError(f"output {path} exists; pass --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create directory {path.parent}: {exc.strerror}") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path) -> None:
    """Flush a closed file's data to stable storage (best effort on exotic filesystems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = False, suffix: str | None = None):
    """Context manager yielding a temporary path next to ``path``.

    Write the file at the yielded path; on normal exit it is fsynced and renamed
    to ``path`` (``os.replace``, atomic on POSIX).  On an exception the temporary
    file is removed and ``path`` is untouched.

    Examples
    --------
    >>> with atomic_path("out.json", overwrite=True) as tmp:   # doctest: +SKIP
    ...     tmp.write_text("{}")
    """
    final = check_output(path, overwrite)
    suffix = final.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the final file normal permissions
    try:
        yield tmp
        fsync_path(tmp)
        if final.exists() and not overwrite:
            raise ParameterError(f"output {final} appeared while writing; not replacing it")
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; returns the final path."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the final path."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite)


def check_output_dir(path, overwrite: bool = False, allow_empty: bool = False) -> Path:
    """Validate an output *folder* before any work is done.

    Raises :class:`ParameterError` if ``path`` is a file, or exists (and, with
    ``allow_empty``, is not empty) while ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ParameterError(f"output {path} is a file, expected a directory")
    if path.exists() and not overwrite and not (allow_empty and not any(path.iterdir())):
        raise ParameterError(f"output {path} exists; pass --overwrite to replace it")
    return path


def replace_dir(tmp, final) -> None:
    """Move a finished temporary folder to ``final``.

    An existing ``final`` is moved aside first and deleted only after the new
    folder is in place, so a crash in between never leaves neither.
    """
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


@contextlib.contextmanager
def atomic_dir(path, overwrite: bool = False, allow_empty: bool = False):
    """Context manager yielding a temporary folder that becomes ``path`` on success.

    The folder is created next to ``path`` (same filesystem, so the final rename is
    atomic); on an exception it is deleted and ``path`` is untouched.
    """
    final = check_output_dir(path, overwrite, allow_empty)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create directory {final.parent}: {exc.strerror}") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the final folder normal permissions
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def json_default(obj):
    """``json.dumps(default=...)`` hook for NumPy scalars/arrays, paths, sets and tuples."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_default_lenient(obj):
    """Like :func:`json_default`, but anything else becomes its ``str`` (run records may hold devices, dtypes)."""
    try:
        return json_default(obj)
    except TypeError:
        return str(obj)
