"""ModelWeave: mechanistic interpretability of Hugging Face causal LMs.

Quick start::

    import modelweave as mw
    model = mw.load_model("smollm2-135m")
    logits, cache = model.run_with_cache("When Mary and John went to the store, John gave")
    cache["blocks.3.attn.hook_z"].shape  # [batch, pos, head, d_head]

Names are imported on first use, so ``modelweave --help`` does not load torch.
"""

from __future__ import annotations

import importlib

from .errors import ModelLoadError, ModelWeaveError, SiteError, UnsupportedArchitectureError
from .runtime import prefer_passive_wait

prefer_passive_wait()  # before torch loads: its idle threads sleep instead of spinning


def _display_in_notebooks() -> None:
    """Inside an IPython kernel, result objects display with the report's figures."""
    import sys

    if "IPython" in sys.modules:
        from .report.notebook import register

        register()


_display_in_notebooks()

__version__ = "0.1.0"

_LAZY = {name: "models" for name in
         ("ActivationCache", "Hook", "Model", "ModelConfig", "act_name", "load_model")}


_SUBMODULES = ("circuits", "engine", "methods", "metrics", "models", "report", "tasks")


def __getattr__(name: str):
    if name in _SUBMODULES:  # ``mw.tasks.make_batch(...)`` without importing it first
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modelweave' has no attribute {name!r}")


__all__ = [
    "ActivationCache",
    "Hook",
    "Model",
    "ModelConfig",
    "ModelLoadError",
    "ModelWeaveError",
    "SiteError",
    "UnsupportedArchitectureError",
    "__version__",
    "act_name",
    "load_model",
]
