"""The ``modelweave`` command line."""

from . import analysis, circuits, compare, experiments, finetune, heuristics  # noqa: F401
from .app import app, main

__all__ = ["app", "main"]
