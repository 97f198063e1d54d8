"""Running the HF model from a layer on (the decoder layers ``L..`` fed a residual stream)
and keeping a run's keys and values, for suffix-only recomputation
(:mod:`modelweave.engine.suffix`).

Models mixing layer types (``config.layer_types``: sliding-window and full attention) pick
layer ``i``'s mask by ``i`` counted in the (truncated) layer list, so the layer types are cut
with the layers. Learned position embeddings are silenced: the residual fed in already holds
them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

if TYPE_CHECKING:
    from .model import Model


def layer_types(model: Model) -> list[str] | None:
    """Each layer's attention type (``config.layer_types``), or ``None`` when not mixed."""
    return getattr(model.hf_model.config, "layer_types", None)


def kv_cache(model: Model) -> DynamicCache:
    """An empty key/value cache typed by the model's config (sliding layers keep a window)."""
    return DynamicCache(config=model.hf_model.config)


def run_keeping_kv(model: Model, tokens: torch.Tensor
                   ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Logits [batch, pos, d_vocab] of ``tokens`` and, per layer, the attention keys and
    values [batch, n_kv_heads, pos, d_head] (keys after rotary), under the active hooks."""
    # no config: every layer keeps all its keys (a sliding-window cache layer would drop all
    # but the last window - 1, and suffix runs need the keys before any start position)
    cache = DynamicCache()
    out = model.hf_model(input_ids=tokens.to(model.device), past_key_values=cache,
                         use_cache=True)
    n = model.cfg.n_layers
    return (out.logits, [cache.layers[i].keys for i in range(n)],
            [cache.layers[i].values for i in range(n)])


@contextmanager
def layers_from(model: Model, layer: int) -> Iterator[None]:
    """Temporarily make ``layers[layer:]`` the model's whole layer list (and
    ``config.layer_types[layer:]`` its layer types, so that the ``i``-th layer run gets the
    mask of its own type), and silence learned position embeddings."""
    path = model.adapter.blocks
    parent_path, _, attr = path.rpartition(".")
    parent = model.hf_model.get_submodule(parent_path) if parent_path else model.hf_model
    original = getattr(parent, attr)
    config = model.hf_model.config
    types = getattr(config, "layer_types", None)
    handles = []
    if model.adapter.pos_embed:
        pos = model.hf_model.get_submodule(model.adapter.pos_embed)
        handles.append(pos.register_forward_hook(lambda m, a, out: torch.zeros_like(out)))
    setattr(parent, attr, torch.nn.ModuleList(list(original)[layer:]))
    if types is not None:
        config.layer_types = list(types)[layer:]
    try:
        yield
    finally:
        setattr(parent, attr, original)
        if types is not None:
            config.layer_types = types
        for handle in handles:
            handle.remove()


def run_from(model: Model, layer: int, resid: torch.Tensor,
             cache: DynamicCache | None = None) -> torch.Tensor:
    """Last-position logits [batch, d_vocab] of layers ``layer..`` run on ``resid`` [batch,
    pos, d_model] (the stream entering ``layer``), after the ``cache`` of earlier positions
    (``None``: no earlier positions), under whatever hooks are active."""
    with layers_from(model, layer):
        out = model.hf_model(inputs_embeds=resid, past_key_values=cache,
                             use_cache=cache is not None, logits_to_keep=1)
    return out.logits[:, -1]
