"""Suffix-only recomputation: the exact fast path of activation patching.

A patch at layer ``L`` and position ``p`` leaves every layer below ``L`` and every position
before ``p`` as it was in the base run. :func:`run_suffix` therefore re-runs only layers
``L..`` at positions ``p..``: the HF model's own decoder layers (temporarily the only ones in
its layer list), fed the base run's residual stream at ``L`` and a key/value cache holding the
base run's keys and values of positions ``< p``. Many patches are batched into one pass by
stacking copies of the batch (``groups``), each copy carrying its own patch in the hooks.

Models mixing layer types (``config.layer_types``: sliding-window and full attention, as in
Cohere2, Gemma-2 or sliding Qwen2) work the same way. HF picks layer ``i``'s mask as
``masks[config.layer_types[i]]`` with ``i`` counted in the (truncated) layer list, while each
attention module addresses the cache by its own, original ``layer_idx``. So while layers
``L..`` run, ``config.layer_types`` is cut to ``layer_types[L:]`` too, and the prefix cache
keeps one entry per original layer, typed by the full config: sliding layers hold only the
last ``window - 1`` prefix keys (all their queries can see) and report the offset their mask
needs. The base run keeps every key of every layer (a cache built without a config).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from ..errors import ModelWeaveError
from ..models import Model
from ..models.truncate import kv_cache, layer_types, run_from, run_keeping_kv


class SuffixRangeError(ModelWeaveError, ValueError):
    """A suffix run asked to start outside the model's layers or the prompt's positions."""


@dataclass
class BaseRun:
    """What the suffix runner needs from the unpatched run of a batch.

    Attributes:
        tokens: [batch, pos] input ids.
        resid_pre: per layer, [batch, pos, d_model] residual stream entering the layer.
        keys, values: per layer, [batch, n_kv_heads, pos, d_head] attention keys (after
            rotary) and values.
        last_logits: [batch, d_vocab] logits at the last position.
        sites: other activations of the run, by site name.
    """

    tokens: torch.Tensor
    resid_pre: list[torch.Tensor]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    last_logits: torch.Tensor | None = None
    sites: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.tokens.shape[1]


def base_run(model: Model, tokens: torch.Tensor, sites: list[str] = ()
             ) -> tuple[torch.Tensor, BaseRun]:
    """Run ``tokens`` once, keeping what suffix runs start from, plus the activations of
    ``sites`` (in ``BaseRun.sites``). Returns (logits, BaseRun)."""
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
    store: dict[str, torch.Tensor] = {}

    def keep(tensor, hook):
        store[hook.name] = tensor.clone() if hook.name in sites else tensor

    hooks = [(n, keep) for n in dict.fromkeys([*names, *sites])]
    with model.hooks(hooks), torch.no_grad():
        logits, keys, values = run_keeping_kv(model, tokens)
    return logits, BaseRun(tokens, [store[n] for n in names], keys, values,
                           logits[:, -1], {n: store[n] for n in sites})


#: Layer types whose masks the suffix runner lines up with truncated layer lists.
SUFFIX_LAYER_TYPES = frozenset({"full_attention", "sliding_attention"})


def _prefix_cache(model: Model, base: BaseRun, pos: int, groups: int) -> DynamicCache:
    """A cache of the base run's keys and values at positions ``< pos``, one entry per layer
    of the full model (attention modules address it by their original layer index), each of
    the type the full config gives it (sliding layers keep the last ``window - 1`` keys).
    Layers below the suffix are never read but size the masks."""
    cache = kv_cache(model)
    for layer in range(model.cfg.n_layers):
        k = base.keys[layer][:, :, :pos].repeat(groups, 1, 1, 1)
        v = base.values[layer][:, :, :pos].repeat(groups, 1, 1, 1)
        cache.update(k, v, layer)
    return cache


def run_suffix(model: Model, base: BaseRun, layer: int, pos: int, groups: int = 1,
               resid: torch.Tensor | None = None) -> torch.Tensor:
    """Logits at the last position, [groups * batch, d_vocab], of the base run re-done from
    ``layer`` and ``pos`` on, with whatever hooks are active (``model.hooks(...)``): hook
    tensors then cover positions ``pos..`` only (a position ``q`` of the prompt is ``q - pos``
    in the hook) and ``groups`` stacked copies of the batch.

    Args:
        resid: [groups * batch, pos_count - pos, d_model] residual stream entering ``layer``,
            instead of the base run's (for patches of ``hook_resid_pre`` itself).
    """
    if not 0 <= layer < model.cfg.n_layers or not 0 <= pos < base.length:
        raise SuffixRangeError(f"suffix start (layer {layer}, pos {pos}) out of range: layers are "
                               f"0..{model.cfg.n_layers - 1}, positions 0..{base.length - 1}")
    if resid is None:
        resid = base.resid_pre[layer][:, pos:].repeat(groups, 1, 1)
    cache = _prefix_cache(model, base, pos, groups) if pos > 0 else None
    with torch.no_grad():
        return run_from(model, layer, resid, cache)


def supports_suffix(model: Model) -> bool:
    """Whether the suffix runner applies: every layer is a full or sliding-window attention
    layer (other kinds, e.g. chunked or linear attention, keep state the prefix cache does
    not rebuild)."""
    types = layer_types(model)
    return not types or set(types) <= SUFFIX_LAYER_TYPES
