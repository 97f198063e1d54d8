"""GPT-2: learned absolute positions, fused ``c_attn`` (``[q | k | v]``), ``Conv1D`` layers."""

from __future__ import annotations

from .base import Adapter, ConcatQKV, standard_config


def _config(hf_config):
    d_mlp = hf_config.n_inner if hf_config.n_inner is not None else 4 * hf_config.n_embd
    return standard_config(hf_config, positional="learned", d_mlp=d_mlp)


GPT2 = Adapter(
    model_types=("gpt2",),
    make_config=_config,
    qkv=ConcatQKV("attn.c_attn"),
    blocks="transformer.h",
    embed="transformer.wte",
    pos_embed="transformer.wpe",
    final_norm="transformer.ln_f",
    attn="attn",
    out_proj="attn.c_proj",
    attn_out="attn",
    mlp_down="mlp.c_proj",
    mlp_in="mlp.c_fc",
    mlp_gate=None,
    mlp_out="mlp",
    attn_in_norm="ln_1",
    mlp_in_norm="ln_2",
)


def adapter_for(hf_config) -> Adapter:
    """The GPT-2 layout does not vary with the config."""
    return GPT2
