"""Loading models and hooking them with TransformerLens-named sites."""

from .cache import ActivationCache
from .config import ModelConfig
from .hooks import Hook
from .loading import load_model
from .model import Model
from .sites import act_name

__all__ = ["ActivationCache", "Hook", "Model", "ModelConfig", "act_name", "load_model"]
