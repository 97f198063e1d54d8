"""Experiment method kinds: one module per method, each registering one :class:`MethodKind`.

Importing this package imports every module in it (except ``base`` and ``_private`` ones), so a
new method is a new module here and nothing else; :mod:`.base` documents the contract.
Built-in kinds: ``eval``, ``patch``, ``discover``, ``lens``, ``heads``.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    METHODS,
    ConfigError,
    MethodKind,
    Progress,
    RegistryView,
    ReportContext,
    RunSettings,
    Settings,
    Unit,
    get_method,
    methods,
    not_allowed,
    register,
    scalar_summary,
    unit_batch,
    unregister,
)

__all__ = ["METHODS", "ConfigError", "MethodKind", "Progress", "RegistryView", "ReportContext",
           "RunSettings", "Settings", "Unit", "get_method", "methods", "not_allowed", "register",
           "scalar_summary", "unit_batch", "unregister"]


def _import_builtin_kinds() -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module != "base" and not module.startswith("_"):
            importlib.import_module(f"{__name__}.{module}")


_import_builtin_kinds()
