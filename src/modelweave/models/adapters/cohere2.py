"""Cohere2 (Command R7B, Command A): Cohere's parallel attention + MLP on one LayerNorm, with
sliding-window layers (interleaved rotary) and, every fourth layer, a global layer with no
positional embedding (NoPE); logits multiplied by ``logit_scale`` (the ``logits`` site is after
that scale, and :meth:`~modelweave.models.Model.unembed` applies it too).

``hook_q``/``hook_k`` are the projections (pre-rotary, as in every family); on the global
layers no rotary follows. Each layer's mask type is ``config.layer_types[layer]``; the hooks
and the suffix engine read it from there.
"""

from __future__ import annotations

from .base import Adapter, SeparateQKV, standard_config


def _config(hf_config):
    return standard_config(hf_config, parallel=True)


COHERE2 = Adapter(
    model_types=("cohere2",),
    make_config=_config,
    qkv=SeparateQKV(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj"),
    mlp_in_norm="input_layernorm",
)


def adapter_for(hf_config) -> Adapter:
    """The Cohere2 layout does not vary with the config."""
    return COHERE2
