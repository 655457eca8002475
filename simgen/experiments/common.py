"""What every experiment driver shares: the result base class, the output-folder check, step timing."""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from simgen.errors import ParameterError
from simgen.progress import ProgressLog, format_duration

__all__ = ["ExperimentResult", "StepClock", "check_experiment_dir", "empty_dir"]


class ExperimentResult:
    """Base of the drivers' result dataclasses.

    :meth:`to_dict` is the JSON-ready report.  ``result["key"]`` and ``result.get("key")``
    read that report, so code written when the drivers returned plain dicts keeps working.
    """

    def to_dict(self) -> dict:  # pragma: no cover - every result overrides it
        raise NotImplementedError

    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)


def check_experiment_dir(out, *, overwrite: bool = False, resume: bool | None = None) -> Path:
    """Validate an experiment folder before any work is done (nothing is created).

    ``resume=None``: the experiment cannot resume, an existing non-empty folder needs
    ``overwrite``; otherwise ``resume`` or ``overwrite`` is needed.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output {out} is a file; give a folder")
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        hint = "pass --overwrite to replace it" if resume is None else \
            "pass --resume to continue it or --overwrite to start again"
        raise ParameterError(f"output {out} exists; {hint}")
    return out


def empty_dir(out: Path) -> None:
    """Delete everything inside ``out`` (the folder itself stays)."""
    for child in Path(out).iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


class StepClock:
    """Wall-clock time per named step (``timing``), logged as each step ends."""

    def __init__(self, log: ProgressLog | None = None):
        self.log = log
        self.t0 = time.perf_counter()
        self.timing: dict[str, float] = {}

    def elapsed(self) -> float:
        """Seconds since the clock was made."""
        return time.perf_counter() - self.t0

    @contextmanager
    def step(self, name: str):
        t = time.perf_counter()
        yield
        self.timing[name] = round(time.perf_counter() - t, 1)
        if self.log is not None:
            self.log.message(f"{name} done in {format_duration(self.timing[name])} "
                             f"(total {format_duration(self.elapsed())})")

    def finish(self) -> dict[str, float]:
        """``timing`` with the ``total`` added."""
        self.timing["total"] = round(self.elapsed(), 1)
        return self.timing
