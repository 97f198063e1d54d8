"""ModelWeave: mechanistic interpretability of Hugging Face causal LMs.

Quick start::

    import modelweave as mw
    model = mw.load_model("smollm2-135m")
    logits, cache = model.run_with_cache("When Mary and John went to the store, John gave")
    cache["blocks.3.attn.hook_z"].shape  # [batch, pos, head, d_head]
"""

from .errors import ModelLoadError, ModelWeaveError, SiteError, UnsupportedArchitectureError
from .models import ActivationCache, Hook, Model, ModelConfig, act_name, load_model

__version__ = "0.1.0"

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
