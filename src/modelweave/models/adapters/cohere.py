"""Cohere (Command R, Aya 23, Aya Expanse): parallel attention + MLP on one LayerNorm, logits
multiplied by ``logit_scale`` (the ``logits`` site is after that scale), optional per-head QK
LayerNorm (then ``hook_q``/``hook_k`` are after it)."""

from __future__ import annotations

from .base import Adapter, SeparateQKV, standard_config


def _config(hf_config):
    return standard_config(hf_config, parallel=True)


_PROJ = SeparateQKV(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj")
PLAIN = Adapter(model_types=("cohere",), make_config=_config, qkv=_PROJ,
                mlp_in_norm="input_layernorm")
QK_NORM = Adapter(
    model_types=("cohere",),
    make_config=_config,
    qkv=SeparateQKV(q="self_attn.q_norm", k="self_attn.k_norm", v="self_attn.v_proj"),
    qkv_proj=_PROJ,
    qk_norm="per_head",
    mlp_in_norm="input_layernorm",
)


def adapter_for(hf_config) -> Adapter:
    """With ``use_qk_norm`` the queries and keys are read after their norms."""
    return QK_NORM if getattr(hf_config, "use_qk_norm", False) else PLAIN
