"""Progress reporting: bars for long loops (rich, on stderr) and per-epoch logs of training runs.

:func:`track` shows a bar over a loop and :func:`stages` one over the named steps of a job, both
silent when disabled or not a terminal; :class:`ProgressLog` prints
one line per epoch and appends the same metrics to ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from simgen.atomic import json_default_lenient

__all__ = ["track", "stages", "ProgressLog", "Timer", "format_duration"]


# -- progress bars ---------------------------------------------------------------------
@contextmanager
def _bar(description: str, total: int | None):
    """A rich progress bar on stderr (drawn only when stderr is a terminal): yields ``(progress, task)``.

    A loop that fails (or is left early) erases its bar, so a command's ``Error: ...`` line stands
    alone; a finished bar stays on screen.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        try:
            yield bar, task
        except BaseException:
            bar.live.transient = True
            raise


def track(iterable: Iterable, total: int | None = None, description: str = "working", enabled: bool = True) -> Iterator:
    """Yield from ``iterable`` while showing a progress bar on stderr.

    Parameters
    ----------
    total : int, optional
        Number of items (default ``len(iterable)`` when it has one).
    description : str
        Text in front of the bar.
    enabled : bool
        Show the bar at all (the CLI passes ``--progress/--no-progress``).  Nothing is drawn
        when stderr is not a terminal (set ``TTY_COMPATIBLE=1`` to force it).
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not enabled:
        yield from iterable
        return
    with _bar(description, total) as (bar, task):
        for item in iterable:
            yield item
            bar.advance(task)


@contextmanager
def stages(names: Sequence[str], description: str = "working", enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A bar over the named stages of one job, for work that is a sequence of different steps.

    ``with stages(["read", "match"], "evaluate", on) as stage: stage("read"); ...; stage("match"); ...``:
    each call marks the stages before it done and draws ``"<description>: <name>"``; leaving the
    block normally completes the bar (stages that did not apply count as done).

    Parameters
    ----------
    names : sequence of str
        Every stage, in order (unknown names given to ``stage`` raise ``ValueError``).
    description : str
        Text in front of the bar.
    enabled : bool
        Show the bar at all.
    """
    names = list(names)
    if not enabled:
        yield lambda name: None
        return
    with _bar(description, len(names)) as (bar, task):
        def stage(name: str) -> None:
            # drawn at once (not at the next timed refresh), so every stage shows as it starts
            bar.update(task, completed=names.index(name), description=f"{description}: {name}", refresh=True)

        yield stage
        bar.update(task, completed=len(names), description=description)


# -- durations and per-epoch logs ------------------------------------------------------
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
    prefix : str
        Put before every printed line (e.g. ``"maskrcnn "``).
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
                fh.write(json.dumps(record, default=json_default_lenient) + "\n")
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
