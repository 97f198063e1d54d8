"""The ``modelweave`` command line."""

from . import analysis, circuits, experiments  # noqa: F401 - register the commands
from .app import app, main

__all__ = ["app", "main"]
