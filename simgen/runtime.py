"""Stage-free helpers every trainer uses: seeds, devices, threads, safe checkpoints, run folders.

* :func:`seed_everything` seeds Python, NumPy's legacy global generator (third-party
  augmentation code uses it) and torch.  simgen's own code never draws from global
  state; this only makes third-party training loops repeatable.
* :func:`select_device` picks ``cuda`` when present, else ``cpu`` (``"auto"``), or
  validates an explicit choice.
* :func:`setup_threads` pins torch (and BLAS through the environment) to a thread
  count, ``SIMGEN_THREADS`` by default — on a small shared machine one thread per
  process is much faster than oversubscription.
* :func:`save_checkpoint` writes a ``torch.save`` file atomically (a run killed at any moment
  leaves the previous or the new checkpoint, never a truncated one) holding only tensors and plain
  containers; :func:`load_checkpoint` reads one with ``weights_only=True``, never running code.
* :class:`RunDir` organises a run folder (``last.pt``, ``best.pt``, ``config.json``,
  ``metrics.jsonl``) and reads the state to resume from.
* :func:`check_image_memory` refuses an image size before anything is allocated: sides above
  :data:`MAX_IMAGE_SIDE`, or an estimated working set (:func:`image_memory`) larger than the memory
  available now (:func:`available_memory`).

The training loops built on these (epochs, early stopping, resume) are in :mod:`simgen.train.engine`;
progress bars and per-epoch logs in :mod:`simgen.progress`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import operator
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from simgen.atomic import atomic_path, atomic_write_text, json_default_lenient
from simgen.errors import DataError, ParameterError
from simgen.rng import check_seed

__all__ = [
    "MAX_IMAGE_SIDE",
    "available_memory",
    "image_memory",
    "check_image_memory",
    "seed_everything",
    "select_device",
    "setup_threads",
    "default_threads",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_globals",
    "RunDir",
]


# -- seeds, devices, threads ---------------------------------------------------
def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Parameters
    ----------
    seed : int
        Non-negative seed.
    deterministic : bool
        Also ask torch for deterministic algorithms (slower; errors on ops without one
        are turned into warnings).

    Returns
    -------
    The seed, as ``int``.
    """
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # third-party augmentation code draws from the global state
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return seed
    torch.manual_seed(seed)
    if torch.cuda.is_available():  # pragma: no cover - no GPU on the test machine
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return seed


def select_device(device: str | None = "auto"):
    """Resolve a device name to a ``torch.device``.

    Parameters
    ----------
    device : str or None
        ``"auto"`` / ``None`` / ``""``: ``cuda`` if a GPU is visible, else ``cpu``.
        Otherwise ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a bare GPU index ``"N"`` or ``"mps"``.

    Raises
    ------
    ParameterError
        If the device is unknown or not available on this machine.
    """
    import torch

    name = "auto" if device is None else str(device).strip().lower()
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.isdigit():
        name = f"cuda:{name}"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ParameterError("device 'mps' requested but Apple MPS is not available here; use --device cpu")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ParameterError(f"device {device!r} requested but no CUDA GPU is visible; use --device cpu or auto")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ParameterError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    raise ParameterError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")


def default_threads() -> int:
    """Thread count from ``SIMGEN_THREADS`` (then ``OMP_NUM_THREADS``), else 1."""
    for var in ("SIMGEN_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def setup_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count (``None``: :func:`default_threads`); returns it.

    Inter-op threads are also set to ``n`` when torch still allows it (only before the
    first parallel op).  BLAS libraries read ``OMP_NUM_THREADS`` at import; this sets
    the variable for child processes (dataloader workers) but cannot change a BLAS
    already loaded.
    """
    n = default_threads() if n is None else int(n)
    if n < 1:
        raise ParameterError(f"thread count must be >= 1, got {n}")
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # already set / parallel work started
        torch.set_num_interop_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    return n


# -- memory ----------------------------------------------------------------------
#: Largest image side (pixels) any command accepts: 65536² float32 is already 16 GiB per copy.
MAX_IMAGE_SIDE = 65536


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now, or ``None`` if it cannot be told.

    ``psutil.virtual_memory().available`` when psutil is installed, else ``MemAvailable`` from
    ``/proc/meminfo`` (Linux), else free physical pages from ``os.sysconf``.
    """
    try:
        import psutil
    except ImportError:
        pass
    else:
        with contextlib.suppress(Exception):
            return int(psutil.virtual_memory().available)
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file says kB, meaning KiB
    with contextlib.suppress(AttributeError, OSError, ValueError):
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    return None


def image_memory(shape, n_images: float = 1, dtype="float32", working_copies: float = 0.0,
                 extra_bytes: int = 0) -> int:
    """Estimated bytes to hold ``n_images`` images of ``shape`` plus ``working_copies`` more of one.

    Parameters
    ----------
    shape : (H, W) or int
        Image shape in pixels (an int means square).
    n_images : float
        Images held at once (1 for generators that stream sample by sample).
    dtype : numpy dtype
        Element type of the images and of the working copies (float32 inside simgen).
    working_copies : float
        Temporary image-sized arrays alive at the peak (kernels, intermediate fields).
    extra_bytes : int
        Anything else held (e.g. uint8 change maps).

    Returns
    -------
    Bytes, as ``int`` (exact integer arithmetic: no overflow for any size).
    """
    h, w = _shape2(shape)
    per_image = h * w * np.dtype(dtype).itemsize
    return int(math.ceil(per_image * (float(n_images) + float(working_copies)))) + int(extra_bytes)


def check_image_memory(shape, *, n_images: float = 1, dtype="float32", working_copies: float = 0.0,
                       extra_bytes: int = 0, processes: int = 1, what: str = "this run",
                       option: str = "--size") -> int:
    """Refuse an image size that cannot work, before anything is allocated; returns the estimate.

    Checks each side against :data:`MAX_IMAGE_SIDE`, then ``processes`` times
    :func:`image_memory` against :func:`available_memory` (skipped when that is unknown, or when
    ``processes`` is 0: the work runs on other machines).

    Raises
    ------
    ParameterError
        One line stating the size, the estimate and the memory available.
    """
    h, w = _shape2(shape, option)
    if max(h, w) > MAX_IMAGE_SIDE:
        raise ParameterError(f"{option} {w}x{h}: at most {MAX_IMAGE_SIDE} px per side")
    processes = int(processes)
    need = image_memory((h, w), n_images, dtype, working_copies, extra_bytes) * max(1, processes)
    free = available_memory() if processes >= 1 else None
    if free is not None and need > free:
        per = f" ({processes} processes)" if processes > 1 else ""
        raise ParameterError(f"{what} at {option} {w}x{h} needs about {_gib(need)} of memory{per}, "
                             f"but {_gib(free)} is available; use a smaller {option}")
    return need


def _shape2(shape, option: str = "size") -> tuple[int, int]:
    h, w = (shape, shape) if np.isscalar(shape) else tuple(shape)
    try:
        h, w = operator.index(h), operator.index(w)
    except TypeError:
        raise ParameterError(f"{option} must be whole pixels, got {shape!r}") from None
    if h < 1 or w < 1:
        raise ParameterError(f"{option} must be at least 1 px per side, got {w}x{h}")
    return int(h), int(w)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**29 else f"{n / 2**20:.0f} MiB"


# -- checkpoints -----------------------------------------------------------------
def save_checkpoint(path, state: dict, *, allow: Callable[[str], object | None] | None = None) -> Path:
    """``torch.save(state)`` to ``path`` atomically (temp file + fsync + rename); replaces ``path``.

    The file holds only what :func:`load_checkpoint` reads with the same ``allow`` policy: NumPy
    arrays are stored as tensors and NumPy scalars as Python numbers (a loader gets tensors back);
    any other object that would need unpickling (a class instance, a function) is refused — unless
    ``allow`` accepts it, as for the whole-model checkpoints of Ultralytics — and nothing is written.

    Raises
    ------
    TypeError
        If ``state`` holds such an object.
    """
    import torch

    path = Path(path)
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(_plain_state(state), tmp)
        unsafe = [name for name in checkpoint_globals(tmp) if allow is None or allow(name) is None]
        if unsafe:
            raise TypeError(f"refusing to write checkpoint {path}: it would name {', '.join(unsafe)}; "
                            "store tensors, numbers, strings and plain containers only")
    return path


def _plain_state(obj):
    """``obj`` with NumPy arrays turned into tensors and NumPy scalars into Python numbers.

    Containers are rebuilt only where something changed (module state dicts keep their type and
    ``_metadata``); tuples that change become plain tuples.
    """
    if isinstance(obj, np.ndarray):
        import torch

        return torch.tensor(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        changed = {k: v2 for k, v in obj.items() if (v2 := _plain_state(v)) is not v}
        if not changed:
            return obj
        out = copy.copy(obj)
        out.update(changed)
        return out
    if isinstance(obj, (list, tuple)):
        items = [_plain_state(v) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    return obj


def checkpoint_globals(path) -> list[str]:
    """The Python objects (``module.name``) a checkpoint's pickle would import, read without unpickling.

    Only names outside torch's built-in ``weights_only`` safe set are listed; an empty list means the
    file holds tensors and plain containers only.
    """
    import torch

    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise DataError(f"cannot read checkpoint {path}: {_first_line(exc)}") from None


def load_checkpoint(path, map_location="cpu", *, allow: Callable[[str], object | None] | None = None) -> dict:
    """Load a checkpoint safely: ``torch.load(weights_only=True)``, never arbitrary code.

    Checkpoints are untrusted input.  Every global the pickle names is checked *before* anything is
    unpickled: it must be resolved by ``allow`` (a function from ``"module.name"`` to the object, or
    ``None`` to refuse); then the file is loaded with exactly those objects allowlisted.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_checkpoint` or a trainer.
    map_location : str or torch.device
        Where tensors go (CPU by default).
    allow : callable, optional
        Policy for globals beyond tensors and containers (e.g. the classes of a whole pickled model);
        ``None`` refuses every such global.

    Raises
    ------
    DataError
        If the file is missing, unreadable, or names a global the policy refuses.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    safe = []
    for name in checkpoint_globals(path):
        obj = allow(name) if allow is not None else None
        if obj is None:
            raise DataError(f"refusing checkpoint {path}: it names {name}, which is not an allowed type "
                            "(simgen never unpickles arbitrary objects)")
        safe.append((obj, name) if getattr(obj, "__module__", None) and f"{obj.__module__}.{obj.__qualname__}" != name
                    else obj)
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise DataError(f"cannot read checkpoint {path}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class RunDir:
    """A training run folder: ``config.json``, ``last.pt``, ``best.pt``, ``metrics.jsonl``.

    Parameters
    ----------
    path : path-like
        The folder (created).
    config : dict, optional
        JSON-serialisable run configuration, written to ``config.json``.
    resume : bool
        Continue a run in an existing folder (its ``last.pt`` is the resume state).
    overwrite : bool
        Start afresh in an existing run folder (its ``last.pt``, ``best.pt`` and
        ``metrics.jsonl`` are removed; other files are left alone).

    Raises
    ------
    ParameterError
        If the folder exists and holds a run but neither ``resume`` nor ``overwrite`` is set,
        or if ``path`` is a file.
    """

    LAST = "last.pt"
    BEST = "best.pt"

    def __init__(self, path, config: dict | None = None, *, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ParameterError(f"run folder {self.path} is a file")
        has_run = self.path.is_dir() and any(
            (self.path / n).exists() for n in (self.LAST, self.BEST, "config.json")
        )
        if has_run and not (resume or overwrite):
            raise ParameterError(f"run folder {self.path} holds a run; pass --resume to continue it or --overwrite")
        self.resume = bool(resume) and has_run
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ParameterError(f"cannot create run folder {self.path}: {exc.strerror}") from None
        if overwrite and not resume:
            for name in (self.LAST, self.BEST, "metrics.jsonl"):
                (self.path / name).unlink(missing_ok=True)
        if config is not None:
            self.write_json("config.json", config)

    @property
    def last(self) -> Path:
        return self.path / self.LAST

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    def write_json(self, name: str, data) -> Path:
        """Write ``data`` as indented JSON to ``name`` in the run folder, atomically (replacing it)."""
        text = json.dumps(data, indent=2, default=json_default_lenient) + "\n"
        return atomic_write_text(self.path / name, text, overwrite=True)

    def save(self, state: dict, best: bool = False) -> Path:
        """Write ``state`` to ``last.pt`` (and copy to ``best.pt`` when ``best``), atomically."""
        save_checkpoint(self.last, state)
        if best:
            save_checkpoint(self.best, state)
        return self.last

    def resume_state(self, map_location="cpu") -> dict | None:
        """The ``last.pt`` state when resuming (read with :func:`load_checkpoint`), else ``None``."""
        if not self.resume or not self.last.exists():
            return None
        return load_checkpoint(self.last, map_location=map_location)
