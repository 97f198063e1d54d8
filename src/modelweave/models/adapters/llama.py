"""Llama family: SmolLM2, Llama-2/3, Mistral, Qwen2 (sequential pre-norm blocks, RMSNorm,
rotary, gated MLP, grouped-query attention)."""

from __future__ import annotations

from .base import Adapter, SeparateQKV, standard_config

LLAMA = Adapter(
    model_types=("llama", "mistral", "qwen2"),
    make_config=standard_config,
    qkv=SeparateQKV(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj"),
)


def adapter_for(hf_config) -> Adapter:
    """The Llama layout does not vary with the config."""
    return LLAMA
