"""The command line's one progress display: a rich bar per phase of a library call.

:func:`progress_bars` is a context manager yielding a :class:`Bars`, a
:data:`modelweave.progress.Progress` callable (``bars(phase, done, total)``) that shows one bar
per phase as it first reports, with ``done/total`` (``done/?`` while the total is unknown) and
the elapsed time::

    with progress_bars("discover on ioi") as bars:
        found = discover(model, batch, progress=bars)

With ``enabled=False`` (``--json``) it yields ``None``, so the library call reports to nobody.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Bars:
    """``bars(phase, done, total)``: the :data:`~modelweave.progress.Progress` protocol onto
    rich bars, one per phase (``title: phase`` when a title is given)."""

    def __init__(self, display: Progress, title: str = ""):
        self.display, self.title = display, title
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            label = f"{self.title}: {phase}" if self.title else phase
            self.tasks[phase] = self.display.add_task(label, total=total or None, note="")
        self.display.update(self.tasks[phase], completed=done, total=total or None)

    def note(self, phase: str, text: str) -> None:
        """Show ``text`` after ``phase``'s bar (a loss, an evaluation): metrics, not progress."""
        if phase in self.tasks:
            self.display.update(self.tasks[phase], note=text)

    def scoped(self, title: str) -> Bars:
        """Bars on the same display whose phases are labelled ``title: phase``."""
        return Bars(self.display, title)

    def clear(self) -> None:
        """Remove this object's bars (e.g. when an experiment's unit is done)."""
        for task in self.tasks.values():
            self.display.remove_task(task)
        self.tasks.clear()


@contextmanager
def progress_bars(title: str = "", *, console: Console | None = None, transient: bool = True,
                  enabled: bool = True, eta: bool = False) -> Iterator[Bars | None]:
    """A rich display for the duration of the block; yields its :class:`Bars` (``None`` when
    not ``enabled``). ``transient``: the bars vanish at the end; ``eta``: also the time left."""
    if not enabled:
        yield None
        return
    from .app import console as default_console

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[note]}"), TimeElapsedColumn()]
    if eta:
        columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console or default_console, transient=transient) as shown:
        yield Bars(shown, title)
