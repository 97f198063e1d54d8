"""One progress protocol for every long library call: ``progress(phase, done, total)``.

A function that reports progress takes ``progress: Progress = None`` and calls it as
``progress(phase, done, total)``: ``done`` of ``total`` steps of ``phase`` are finished.
``done`` is cumulative (never an increment) and does not decrease within a phase; ``total`` is
0 when it is not known in advance. Each function's docstring names its phases. Training
metrics (a loss, an evaluation record) are not progress: training loops take a separate,
explicitly named callback for them.

Library code uses the helpers rather than testing for ``None`` itself:

>>> seen = []
>>> report(lambda *a: seen.append(a), "load", 1, 1)
>>> steps = Steps(lambda *a: seen.append(a), "patch", total=3)   # reports ("patch", 0, 3)
>>> steps.advance(2); steps.advance()
>>> seen
[('load', 1, 1), ('patch', 0, 3), ('patch', 2, 3), ('patch', 3, 3)]
>>> report(None, "load", 1, 1)   # nobody listens: nothing happens

A caller that runs a sub-call inside one of its own phases can file the sub-call's phases
under its own name with :func:`nested` (``"fv/mean"``, ``"fv/heads"``, ...).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "Steps", "nested", "report"]

Progress = Callable[[str, int, int], None] | None
"""``progress(phase, done, total)``: ``done`` of ``total`` steps of ``phase`` finished
(cumulative; ``total`` 0 when unknown). ``None``: nobody listens."""


def report(progress: Progress, phase: str, done: int, total: int = 0) -> None:
    """Call ``progress(phase, done, total)`` unless ``progress`` is None."""
    if progress is not None:
        progress(phase, int(done), int(total))


class Steps:
    """A counter for one phase: reports ``(phase, 0, total)`` at once, then the running count.

    >>> seen = []
    >>> steps = Steps(lambda *a: seen.append(a), "score", total=4)
    >>> steps.advance(3); steps.advance(1); steps.done
    4
    >>> seen[-1]
    ('score', 4, 4)
    >>> Steps(None, "score", 4).advance(2)   # None-safe
    """

    def __init__(self, progress: Progress, phase: str, total: int = 0, done: int = 0):
        self.progress, self.phase, self.total, self.done = progress, phase, int(total), int(done)
        report(progress, phase, self.done, self.total)

    def advance(self, k: int = 1) -> None:
        """``k`` more steps finished."""
        self.done += int(k)
        report(self.progress, self.phase, self.done, self.total)

    def set(self, done: int) -> None:
        """``done`` steps finished in all (for loops that count themselves)."""
        self.done = int(done)
        report(self.progress, self.phase, self.done, self.total)

    def within(self) -> Progress:
        """A ``Progress`` for a sub-call whose steps count towards this phase from here on
        (its phase names are dropped); None when nobody listens.

        >>> seen = []
        >>> steps = Steps(lambda *a: seen.append(a), "effects", total=5)
        >>> sub = steps.within(); sub("patch", 2, 2)
        >>> sub = steps.within(); sub("patch", 3, 3); seen[-1]
        ('effects', 5, 5)
        """
        if self.progress is None:
            return None
        start = self.done
        return lambda _phase, done, _total: self.set(start + done)


def nested(progress: Progress, prefix: str) -> Progress:
    """``progress`` with each phase reported as ``"<prefix>/<phase>"`` (None stays None).

    >>> seen = []
    >>> inner = nested(lambda *a: seen.append(a), "fv")
    >>> inner("heads", 1, 2); seen
    [('fv/heads', 1, 2)]
    """
    if progress is None or not prefix:
        return progress

    def forward(phase: str, done: int, total: int) -> None:
        progress(f"{prefix}/{phase}", done, total)
    return forward
