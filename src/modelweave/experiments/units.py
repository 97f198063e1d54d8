"""Compatibility names for running units; the code lives in the method kinds.

Each method kind (:mod:`modelweave.experiments.methods`) runs its own units with
``MethodKind.run(model, unit, experiment, folder, progress) -> summary``; ``HANDLERS`` is a live
view ``method name -> that bound method`` over the registry.
"""

from __future__ import annotations

from .methods import Progress, RegistryView

HANDLERS: RegistryView = RegistryView(lambda kind: kind.run)

__all__ = ["HANDLERS", "Progress"]
