"""The ``modelweave`` command line."""

from . import analysis, circuits, compare, experiments, finetune  # noqa: F401 - commands
from .app import app, main

__all__ = ["app", "main"]
