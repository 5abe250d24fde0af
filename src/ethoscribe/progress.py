"""Progress bars for long work, shown on an interactive terminal and silent otherwise.

Library code wraps long loops in :func:`progress_bar`; whether a bar is drawn
is decided once, here: on when standard error is a terminal (or forced with
:func:`set_progress`), off in tests, pipes and CI logs.

Examples
--------
>>> with progress_bar(3, "counting") as advance:
...     for _ in range(3):
...         advance(1)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

_enabled: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on (True) or off (False); None restores the terminal check."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    """Whether progress bars are drawn."""
    return sys.stderr.isatty() if _enabled is None else _enabled


@contextlib.contextmanager
def progress_bar(total: float, description: str) -> Iterator[Callable[[float], None]]:
    """A rich progress bar of ``total`` steps; yields a function that advances it."""
    if not progress_enabled():
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
