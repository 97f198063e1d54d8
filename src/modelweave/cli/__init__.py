"""The ``modelweave`` command line."""

from . import (  # noqa: F401 - each module registers its commands
    analysis,
    circuits,
    compare,
    experiments,
    finetune,
    heuristics,
    influence,
    plan,
    steering,
    toy,
)
from .app import app, main

__all__ = ["app", "main"]
