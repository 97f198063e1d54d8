"""The ``modelweave`` command line."""

from . import analysis, circuits  # noqa: F401 - register patch, lens, heads, discover
from .app import app, main

__all__ = ["app", "main"]
