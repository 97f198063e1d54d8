"""OLMo-1: Llama layout with non-parametric LayerNorm and optional QKV clipping. With
``clip_qkv`` the model clamps the projections in place; ``hook_q/k/v`` show the clamped values
(what attention uses), and a patched value is clamped by the model like any other."""

from __future__ import annotations

from dataclasses import replace

from .base import Adapter, SeparateQKV, standard_config

OLMO = Adapter(
    model_types=("olmo",),
    make_config=standard_config,
    qkv=SeparateQKV(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj"),
)


def adapter_for(hf_config) -> Adapter:
    """Carries ``clip_qkv`` into the q/k/v layout when the config sets it."""
    clip = getattr(hf_config, "clip_qkv", None)
    return OLMO if clip is None else replace(OLMO, qkv=replace(OLMO.qkv, clip=float(clip)))
