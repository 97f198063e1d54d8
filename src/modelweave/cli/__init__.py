"""The ``modelweave`` command line."""

from . import analysis, circuits, compare, experiments  # noqa: F401 - register commands
from .app import app, main

__all__ = ["app", "main"]
