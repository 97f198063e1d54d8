"""Per-stage progress and timing of a kronfluence run, without its terminal bars.

kronfluence reports progress through ``tqdm`` bars inside its stage functions. While a
:func:`stage_reporting` context is active those bars are replaced by ``_Bar`` objects that
forward ``(stage, done, total)`` to a callback and add up the time spent in each stage, so the
time of the query gradients and of the training pass of scoring can be told apart.
"""

from __future__ import annotations

import resource
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from ...progress import Progress

#: the stages, in order, with kronfluence's bar descriptions that belong to each
STAGES = ("covariance", "eigendecomposition", "lambda", "query gradients", "scores")
_BARS = {"Fitting covariance": "covariance", "Eigendecomposition": "eigendecomposition",
         "Fitting Lambda": "lambda", "(query gradient)": "query gradients",
         "(training gradient)": "scores"}
_MODULES = ("kronfluence.factor.covariance", "kronfluence.factor.eigen",
            "kronfluence.score.pairwise", "kronfluence.score.dot_product")



def peak_memory_gb() -> float:
    """This process's peak resident memory so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class StageClock:
    """Seconds spent in each stage (bars nested inside another bar are subtracted from it)."""

    def __init__(self, callback: Progress = None, prefix: str = ""):
        self.callback, self.prefix = callback, prefix
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: list[list] = []

    def bar_class(self):
        clock = self

        class _Bar:
            def __init__(self, iterable=None, total=None, desc: str = "", **_):
                self.stage = clock.prefix + next(
                    (s for key, s in _BARS.items() if key in (desc or "")), desc or "other")
                self.total, self.n, self.iterable = total or 0, 0, iterable

            def __enter__(self):
                clock._open.append([self.stage, time.perf_counter(), 0.0])
                if clock.callback:
                    clock.callback(self.stage, 0, self.total)
                return self

            def __exit__(self, *exc):
                stage, start, nested = clock._open.pop()
                spent = time.perf_counter() - start
                clock.seconds[stage] += spent - nested
                if clock._open:
                    clock._open[-1][2] += spent
                return False

            def __iter__(self):
                for item in self.iterable:
                    yield item
                    self.update(1)

            def update(self, n: int = 1) -> None:
                self.n += n
                if clock.callback:
                    clock.callback(self.stage, self.n, self.total)

            def set_postfix(self, *args, **kwargs) -> None:
                pass

            def close(self) -> None:
                pass

        return _Bar


@contextmanager
def stage_reporting(clock: StageClock) -> Iterator[StageClock]:
    """Route kronfluence's progress bars to ``clock`` while the context is active."""
    import importlib

    patched = []
    bar = clock.bar_class()
    for name in _MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "tqdm"):
            patched.append((module, module.tqdm))
            module.tqdm = bar
    try:
        yield clock
    finally:
        for module, original in patched:
            module.tqdm = original
