"""OLMo-2: norms *after* attention and MLP (``post_attention_layernorm``,
``post_feedforward_layernorm``) and RMS-normed queries and keys.

``hook_attn_out`` and ``hook_mlp_out`` are what joins the residual stream, i.e. after those
norms; ``hook_q``/``hook_k`` are after ``q_norm``/``k_norm`` (what attention uses, pre-rotary).
"""

from __future__ import annotations

from dataclasses import replace

from .base import Adapter, SeparateQKV, standard_config


def _config(hf_config):
    return replace(standard_config(hf_config), post_norm=True)


OLMO2 = Adapter(
    model_types=("olmo2",),
    make_config=_config,
    qkv=SeparateQKV(q="self_attn.q_norm", k="self_attn.k_norm", v="self_attn.v_proj"),
    attn_out="post_attention_layernorm",
    mlp_out="post_feedforward_layernorm",
    attn_out_norm="post_attention_layernorm",
    mlp_out_norm="post_feedforward_layernorm",
    attn_in_norm=None,
    mlp_in_norm=None,
    qkv_proj=SeparateQKV(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj"),
    qk_norm="joint",
)


def adapter_for(hf_config) -> Adapter:
    """The OLMo-2 layout does not vary with the config."""
    return OLMO2
