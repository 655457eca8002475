"""Progress bars for long loops (rich, on stderr), silent when disabled or not a terminal."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["track"]


def track(iterable: Iterable, total: int | None = None, description: str = "working", enabled: bool = True) -> Iterator:
    """Yield from ``iterable`` while showing a progress bar on stderr.

    Parameters
    ----------
    enabled : bool
        Show the bar at all (the CLI passes ``--progress/--no-progress``).
    """
    if not enabled:
        yield from iterable
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
        for item in iterable:
            yield item
            bar.advance(task)
