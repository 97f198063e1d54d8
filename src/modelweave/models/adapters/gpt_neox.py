"""GPT-NeoX (Pythia): per-head interleaved ``query_key_value``, partial rotary, and, with
``use_parallel_residual`` (Pythia's default), attention and MLP reading the same residual."""

from __future__ import annotations

from .base import Adapter, InterleavedQKV, standard_config

_PATHS = dict(
    model_types=("gpt_neox",),
    qkv=InterleavedQKV("attention.query_key_value"),
    blocks="gpt_neox.layers",
    embed="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm",
    attn="attention",
    out_proj="attention.dense",
    attn_out="attention",
    mlp_down="mlp.dense_4h_to_h",
    mlp_in="mlp.dense_h_to_4h",
    mlp_gate=None,
    mlp_out="mlp",
)

PARALLEL = Adapter(make_config=lambda c: standard_config(c, parallel=True), **_PATHS)
SEQUENTIAL = Adapter(make_config=standard_config, **_PATHS)


def adapter_for(hf_config) -> Adapter:
    """Parallel or sequential residual, as the config says."""
    return PARALLEL if hf_config.use_parallel_residual else SEQUENTIAL
