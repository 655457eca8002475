"""Plumbing shared by every trainer: seeds, devices, threads, checkpoints, early stopping, progress.

Every trainer in :mod:`simgen.train` (YOLO, Mask R-CNN, the Siamese change
detector) uses these helpers so that runs behave the same way:

* :func:`seed_everything` seeds Python, NumPy's legacy global generator (third-party
  augmentation code uses it) and torch.  simgen's own code never draws from global
  state; this only makes third-party training loops repeatable.
* :func:`select_device` picks ``cuda`` when present, else ``cpu`` (``"auto"``), or
  validates an explicit choice.
* :func:`setup_threads` pins torch (and BLAS through the environment) to a thread
  count, ``SIMGEN_THREADS`` by default — on a small shared machine one thread per
  process is much faster than oversubscription.
* :func:`save_checkpoint` / :func:`load_checkpoint` write and read ``torch.save``
  files atomically, so a run killed at any moment leaves either the previous or the
  new checkpoint, never a truncated one.  :class:`RunDir` organises a run folder
  (``last.pt``, ``best.pt``, ``config.json``, ``metrics.jsonl``) and finds the state
  to resume from.
* :class:`EarlyStopping` tracks the best validation value and says when to stop;
  its state goes into checkpoints so a resumed run stops at the same epoch.
* :class:`ProgressLog` prints one line per epoch on stderr and appends the same
  metrics as JSON lines to ``metrics.jsonl``.

Examples
--------
A minimal resumable loop::

    run = RunDir("runs/x", config={"epochs": 10}, resume=True)
    device = select_device("auto"); setup_threads(); seed_everything(0)
    state = run.resume_state()                  # None on a fresh run
    stopper = EarlyStopping(patience=5, mode="max")
    start = 0
    if state:
        model.load_state_dict(state["model"]); stopper.load_state_dict(state["early_stopping"])
        start = state["epoch"] + 1
    log = ProgressLog(run.path / "metrics.jsonl", total_epochs=10)
    for epoch in range(start, 10):
        score = train_one_epoch_and_validate(...)
        improved = stopper.step(score, epoch)
        run.save({"epoch": epoch, "model": model.state_dict(), "early_stopping": stopper.state_dict()},
                 best=improved)
        log.epoch(epoch, score=score)
        if stopper.should_stop:
            break
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets.h5io import json_default
from ..errors import DataError, ParameterError
from ..rng import check_seed

__all__ = [
    "seed_everything",
    "select_device",
    "setup_threads",
    "default_threads",
    "save_checkpoint",
    "load_checkpoint",
    "RunDir",
    "EarlyStopping",
    "ProgressLog",
    "Timer",
    "format_duration",
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
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set / parallel work started
        pass
    os.environ["OMP_NUM_THREADS"] = str(n)
    return n


# -- checkpoints -----------------------------------------------------------------
def save_checkpoint(path, state: dict) -> Path:
    """``torch.save(state)`` to ``path`` atomically (temp file + fsync + rename); replaces ``path``."""
    import torch

    from ..datasets.atomic import atomic_path

    path = Path(path)
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path, map_location="cpu", weights_only: bool = False) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    DataError
        If the file is missing or unreadable (e.g. not a torch checkpoint).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    if not weights_only:
        # A full unpickle of an Ultralytics checkpoint imports ultralytics: make it offline and
        # project-owned first (its environment is read at import time).
        from .offline import setup_ultralytics

        setup_ultralytics()
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise DataError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0][:200]}") from None


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
        from ..datasets.atomic import atomic_write_text

        text = json.dumps(data, indent=2, default=_json_default) + "\n"
        return atomic_write_text(self.path / name, text, overwrite=True)

    def save(self, state: dict, best: bool = False) -> Path:
        """Write ``state`` to ``last.pt`` (and copy to ``best.pt`` when ``best``), atomically."""
        save_checkpoint(self.last, state)
        if best:
            save_checkpoint(self.best, state)
        return self.last

    def resume_state(self, map_location="cpu") -> dict | None:
        """The ``last.pt`` state when resuming, else ``None``."""
        if not self.resume or not self.last.exists():
            return None
        return load_checkpoint(self.last, map_location=map_location)


# -- early stopping ----------------------------------------------------------------
@dataclass
class EarlyStopping:
    """Stop when a validation value has not improved for ``patience`` epochs.

    Parameters
    ----------
    patience : int
        Epochs without improvement before :attr:`should_stop` turns true (0 disables).
    mode : {"max", "min"}
        Whether larger (F1, AP) or smaller (loss) values are better.
    min_delta : float
        Minimum change that counts as an improvement.
    """

    patience: int = 10
    mode: str = "max"
    min_delta: float = 0.0
    best: float = field(default=float("nan"))
    best_epoch: int = -1
    last_epoch: int = -1

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ParameterError(f"early-stopping mode must be 'max' or 'min', got {self.mode!r}")
        if self.patience < 0:
            raise ParameterError(f"patience must be >= 0, got {self.patience}")
        if self.min_delta < 0:
            raise ParameterError(f"min_delta must be >= 0, got {self.min_delta}")

    def step(self, value: float, epoch: int | None = None) -> bool:
        """Record the value of ``epoch``; returns ``True`` when it is a new best."""
        epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        self.last_epoch = epoch
        value = float(value)
        if math.isnan(value):
            return False
        if math.isnan(self.best):
            better = True
        elif self.mode == "max":
            better = value > self.best + self.min_delta
        else:
            better = value < self.best - self.min_delta
        if better:
            self.best, self.best_epoch = value, epoch
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.best_epoch >= 0 and self.last_epoch - self.best_epoch >= self.patience

    def state_dict(self) -> dict:
        return {"patience": self.patience, "mode": self.mode, "min_delta": self.min_delta,
                "best": self.best, "best_epoch": self.best_epoch, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        for key in ("best", "best_epoch", "last_epoch"):
            setattr(self, key, state[key])


# -- progress ------------------------------------------------------------------------
def format_duration(seconds: float) -> str:
    """``3725`` → ``"1h02m"``, ``65`` → ``"1m05s"``, ``4.2`` → ``"4.2s"``."""
    seconds = float(seconds)
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class Timer:
    """Wall-clock stopwatch: ``with Timer() as t: ...; t.seconds``."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds = 0.0

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class ProgressLog:
    """One line per epoch on stderr plus a JSON-lines metrics file.

    Parameters
    ----------
    path : path-like or None
        ``metrics.jsonl`` to append to (``None``: no file).
    total_epochs : int, optional
        For the ``epoch i/N`` counter and the time estimate.
    enabled : bool
        Print to stderr (the file is written regardless).
    stream : file, optional
        Where to print (default ``sys.stderr``).
    """

    def __init__(self, path=None, total_epochs: int | None = None, enabled: bool = True, stream=None, prefix: str = ""):
        self.path = Path(path) if path is not None else None
        self.total = total_epochs
        self.enabled = enabled
        self.stream = stream
        self.prefix = prefix
        self.t0 = time.perf_counter()
        self._first_epoch: int | None = None

    def message(self, text: str) -> None:
        """Print a free-form line (when enabled)."""
        if self.enabled:
            print(f"{self.prefix}{text}", file=self.stream or sys.stderr, flush=True)

    def epoch(self, epoch: int, **metrics) -> dict:
        """Record epoch ``epoch`` (0-based) with its metrics; returns the record written."""
        elapsed = time.perf_counter() - self.t0
        if self._first_epoch is None:
            self._first_epoch = int(epoch)
        record = {"epoch": int(epoch), "time": round(elapsed, 3), **{k: _plain(v) for k, v in metrics.items()}}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=_json_default) + "\n")
        if self.enabled:
            done = int(epoch) + 1 - self._first_epoch
            eta = ""
            if self.total and done > 0:
                remaining = (self.total - int(epoch) - 1) * elapsed / done
                eta = f"  eta {format_duration(remaining)}"
            counter = f"{int(epoch) + 1}/{self.total}" if self.total else f"{int(epoch) + 1}"
            parts = "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
            self.message(f"epoch {counter}  {parts}  [{format_duration(elapsed)}{eta}]")
        return record


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # 0-d tensors
        return value.item()
    return value


def _json_default(obj):
    try:
        return json_default(obj)
    except TypeError:  # run records may hold anything (devices, dtypes): keep them readable
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)
