"""Architecture adapters, one module per family. Adding a family = one module here, one line in
``_FAMILIES`` and a parity test."""

from __future__ import annotations

from collections.abc import Callable

from ...errors import UnsupportedArchitectureError
from . import cohere, cohere2, gpt2, gpt_neox, llama, olmo, olmo2
from .base import Adapter, as_linear, is_linear, linear_shape, linear_weight, projections

_FAMILIES: dict[str, Callable[[object], Adapter]] = {
    "llama": llama.adapter_for,
    "mistral": llama.adapter_for,
    "qwen2": llama.adapter_for,
    "gpt2": gpt2.adapter_for,
    "gpt_neox": gpt_neox.adapter_for,
    "olmo": olmo.adapter_for,
    "olmo2": olmo2.adapter_for,
    "cohere": cohere.adapter_for,
    "cohere2": cohere2.adapter_for,
}

#: What users know each ``model_type`` as.
FAMILY_EXAMPLES: dict[str, str] = {
    "llama": "SmolLM2, Llama-2, Llama-3",
    "mistral": "Mistral",
    "qwen2": "Qwen2, Qwen2.5",
    "gpt2": "GPT-2",
    "gpt_neox": "Pythia, GPT-NeoX",
    "olmo": "OLMo-1",
    "olmo2": "OLMo-2",
    "cohere": "Command R, Aya 23, Aya Expanse",
    "cohere2": "Command R7B, Command A",
}


def supported_architectures() -> list[str]:
    """HF ``model_type`` values that have an adapter."""
    return sorted(_FAMILIES)


def get_adapter(hf_config) -> Adapter:
    """The adapter for an HF config; raises :class:`UnsupportedArchitectureError` otherwise."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in _FAMILIES:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported; supported: "
            f"{', '.join(supported_architectures())}"
        )
    return _FAMILIES[model_type](hf_config)


__all__ = [
    "Adapter", "FAMILY_EXAMPLES", "as_linear", "get_adapter", "is_linear", "linear_shape",
    "linear_weight", "projections", "supported_architectures",
]
