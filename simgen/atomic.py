"""Atomic file output: write to a temporary name, then rename.

A killed process never leaves a half-written file under the final name, and an
existing file is never replaced unless the caller asked for it.

Temporary files and folders sit next to their output and are named
``.<output name>.<host>-<pid>.<random>.tmp[<suffix>]`` (:func:`make_temp`).  They are removed

* on any exception while writing (a failed write, a bug, Ctrl-C);
* on ``SIGTERM`` (what ``timeout`` and batch schedulers send): while a write is open,
  :func:`sigterm_raises` turns the signal into :class:`Terminated` (a ``SystemExit`` with exit
  status 143) so the usual cleanup runs, then the previous handler is back;
* by the next write of the same output when they were left by a process that could not clean up
  (``kill -9``, power loss): :func:`sweep_stale_temps` removes a temp file of *that output* whose
  process is gone (same host, PID not running), or, for one from another host, an older name
  without a PID, or a PID that is running again (PIDs are reused), that has not been modified for
  :data:`STALE_AGE_S` (24 h).  Temp files of other outputs are never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from simgen.errors import DataError, ParameterError

__all__ = [
    "STALE_AGE_S",
    "Terminated",
    "sigterm_raises",
    "sigterm_deferred",
    "check_terminated",
    "make_temp",
    "sweep_stale_temps",
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
    "read_json_object",
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


# -- SIGTERM while a write is open ------------------------------------------------
class Terminated(SystemExit):
    """SIGTERM arrived while an atomic write was open: unwinds like an exception (cleanup runs),
    then the interpreter exits with status ``128 + signum`` (143) and no traceback."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + int(signum))
        self.signum = int(signum)


_guard = threading.local()  # only the main thread may install signal handlers; the count lives there
_previous: list = []  # the handler ours replaced (one entry while installed)
_received: list[int] = []  # SIGTERMs seen while installed
_hooks: list = []  # the sys.unraisablehook ours wraps


def _raise_terminated(signum, frame):
    _received.append(signum)
    raise Terminated(signum)


def _quiet_unraisable(unraisable):
    """While installed: a Terminated swallowed by a finalizer is not printed (it is raised again later)."""
    if not isinstance(unraisable.exc_value, Terminated):
        (_hooks[0] if _hooks else sys.__unraisablehook__)(unraisable)


def check_terminated() -> None:
    """Raise :class:`Terminated` if SIGTERM arrived during the current write.

    The handler raises at once, but an exception raised while Python runs a finalizer (``__del__``,
    a weakref callback) is only printed; writers call this once per item so a signal is never lost.
    """
    if _received:
        raise Terminated(_received[0])


@contextlib.contextmanager
def sigterm_deferred():
    """Hold SIGTERM back (``pthread_sigmask``) while a temp file is created and recorded.

    A signal in between would leave a file nobody knows the name of; held back, it arrives right
    after the block, when the cleanup code already has the name.  Main thread only (elsewhere a no-op).
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class sigterm_raises(contextlib.AbstractContextManager):  # noqa: N801 - used like a function
    """While open, ``SIGTERM`` raises :class:`Terminated` in the main thread instead of killing the process.

    Installed only when the process would otherwise die on ``SIGTERM`` without cleanup (the default
    handler): an ignored signal or an application's own handler is left alone.  Nested uses share one
    installation; the previous handler is restored when the outermost one closes, and a SIGTERM whose
    exception was lost (see :func:`check_terminated`) is raised then.  A no-op outside the main
    thread (Python delivers signals there only).
    """

    def __enter__(self):
        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            depth = getattr(_guard, "depth", 0)
            if depth == 0 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                _previous[:] = [signal.SIG_DFL]
                _received.clear()
                _hooks[:] = [sys.unraisablehook]
                sys.unraisablehook = _quiet_unraisable
                signal.signal(signal.SIGTERM, _raise_terminated)
            _guard.depth = depth + 1
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.main:
            return False
        _guard.depth -= 1
        if _guard.depth > 0 or not _previous:
            return False
        if signal.getsignal(signal.SIGTERM) is _raise_terminated:
            signal.signal(signal.SIGTERM, _previous[0])
        if sys.unraisablehook is _quiet_unraisable:
            sys.unraisablehook = _hooks[0] if _hooks else sys.__unraisablehook__
        _hooks.clear()
        _previous.clear()
        lost = _received[0] if _received else None
        _received.clear()
        unwinding = exc if exc is not None else sys.exc_info()[1]  # closed from an except block / __exit__
        if lost is not None and not isinstance(unwinding, SystemExit):
            raise Terminated(lost)
        return False


# -- temporary names and stale ones ------------------------------------------------
#: Seconds without modification after which a temp file whose owner cannot be checked is stale.
STALE_AGE_S = 24 * 3600
_log = logging.getLogger(__name__)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", os.uname().nodename)[:24] or "host"


def make_temp(final, suffix: str = "", directory: bool = False) -> Path:
    """Create an empty temporary file (or folder) next to ``final`` and return its path.

    Named ``.<final name>.<host>-<pid>.<random>.tmp<suffix>`` so that :func:`sweep_stale_temps`
    can tell whose it is; permissions follow the umask like an ordinary new file.
    """
    final = Path(final)
    prefix = f".{final.name}.{_host()}-{os.getpid()}."
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=f".tmp{suffix}", dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        return tmp
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())  # mkstemp makes 0600
    return Path(name)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process / not a PID at all
        return pid > 0
    return True


def _last_modified(path: Path) -> float:
    if not path.is_dir():
        return path.lstat().st_mtime
    newest = path.lstat().st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


_swept: set[str] = set()  # outputs this process has swept already (see sweep_stale_temps(once=True))
_TEMP_DIR = re.compile(r"^\..+\.tmp$")


def sweep_stale_temps(final, max_age: float = STALE_AGE_S, *, once: bool = False) -> list[Path]:
    """Remove the temp files (and folders) of ``final`` left behind by runs that were killed.

    A temp file belongs to ``final`` when its name is ``.<final name>.[<host>-]<pid>.<tag>.tmp[<ext>]``
    (the names :func:`make_temp` and earlier simgen versions gave) or ``.<final name>.<tag>.tmp<ext>``
    (older atomic writes, no PID).  It is stale when it was made on this host by a process that is no
    longer running, or when it has not been modified for ``max_age`` seconds (its owner cannot be
    checked: another host, no PID in the name, or a PID in use again).  Returns the paths removed.

    With ``once`` (what the atomic writers use) a folder is listed only the first time this process
    writes ``final``, and never inside a temp folder (which a killed run cannot have left anything
    in): writers called in a loop stay O(1).
    """
    final = Path(final)
    if once:
        key = os.path.abspath(final)
        if key in _swept or _TEMP_DIR.match(final.parent.name):
            return []
        if len(_swept) > 10000:
            _swept.clear()
        _swept.add(key)
    pattern = re.compile(
        rf"^\.{re.escape(final.name)}\.(?:(?:(?P<host>[A-Za-z0-9]+)-)?(?P<pid>\d+)\.)?"
        r"[A-Za-z0-9_]+\.tmp(?:\.[A-Za-z0-9_]+)?$"
    )
    removed = []
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return removed
    now, host = time.time(), _host()
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        path = Path(entry.path)
        try:
            pid = int(m["pid"]) if m["pid"] else None
            owner_gone = pid is not None and m["host"] in (None, host) and not _pid_running(pid)
            if not owner_gone and now - _last_modified(path) < max_age:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        _log.info("removed %s (a temporary file left by a run that was killed)", path)
        removed.append(path)
    return removed


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
    sweep_stale_temps(final, once=True)
    with sigterm_raises():
        tmp = None
        try:
            with sigterm_deferred():
                tmp = make_temp(final, suffix)
            yield tmp
            fsync_path(tmp)
            if final.exists() and not overwrite:
                raise ParameterError(f"output {final} appeared while writing; not replacing it")
            os.replace(tmp, final)
        except BaseException:
            if tmp is not None:
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
    sweep_stale_temps(final, once=True)
    with sigterm_raises():
        tmp = None
        try:
            with sigterm_deferred():
                tmp = make_temp(final, directory=True)
            yield tmp
            replace_dir(tmp, final)
        except BaseException:
            if tmp is not None:
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


def read_json_object(path, what: str) -> dict:
    """The JSON object in ``path``; ``DataError`` naming ``what`` when it is missing, unreadable or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data
