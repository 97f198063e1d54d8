"""The ``modelweave`` command line."""

from . import analysis  # noqa: F401 - registers patch, lens, heads
from .app import app, main

__all__ = ["app", "main"]
