"""Atomic file output: write to a temporary name, then rename.

A killed process never leaves a half-written file under the final name, and an
existing file is never replaced unless the caller asked for it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import ParameterError

__all__ = ["check_output", "atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_path"]


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
