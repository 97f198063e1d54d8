"""An eager attention function that exposes ``hook_pattern``.

HF models pick their attention kernel by name through ``AttentionInterface``. Fused kernels
(SDPA, flash) never materialise the attention pattern, so while a pattern is hooked the model
is switched to :data:`ATTN_IMPLEMENTATION`, registered here, and switched back afterwards.
The HF modules themselves are not modified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTN_IMPLEMENTATION = "modelweave_eager"

PatternHook = Callable[[torch.Tensor], torch.Tensor]
# attention module -> pattern hooks, applied in order; filled while a hooked run is active.
_PATTERN_HOOKS: dict[torch.nn.Module, list[PatternHook]] = {}
# attention module -> a dict receiving the attention inputs (see :func:`captured_attention`).
_CAPTURES: dict[torch.nn.Module, dict] = {}


def eager_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **_: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention with a hook point on the pattern.

    Args:
        query: [batch, n_heads, q_pos, d_head]; key, value: [batch, n_kv_heads, k_pos, d_head].
        attention_mask: additive float mask broadcastable to [batch, n_heads, q_pos, k_pos].

    Returns:
        ([batch, q_pos, n_heads, d_head] mixed values, [batch, n_heads, q_pos, k_pos] pattern).
    """
    kv_key, groups = key, query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    for hook in _PATTERN_HOOKS.get(module, ()):
        pattern = hook(pattern)
    record = _CAPTURES.get(module)
    if record is not None:
        record.update(query=query, key=kv_key, mask=attention_mask, scaling=scaling,
                      softcap=softcap, pattern=pattern)
    if dropout and module.training:
        pattern = torch.nn.functional.dropout(pattern, p=dropout)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()
    return out, pattern


AttentionInterface.register(ATTN_IMPLEMENTATION, eager_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)


@contextmanager
def pattern_hooks(
    hf_model: PreTrainedModel, hooks: dict[torch.nn.Module, PatternHook]
) -> Iterator[None]:
    """Route attention through :func:`eager_attention` with ``hooks`` on the given attention
    modules, restoring the model's own implementation on exit."""
    if not hooks:
        yield
        return
    previous = hf_model.config._attn_implementation
    hf_model.set_attn_implementation(ATTN_IMPLEMENTATION)
    for module, hook in hooks.items():
        _PATTERN_HOOKS.setdefault(module, []).append(hook)
    try:
        yield
    finally:
        for module, hook in hooks.items():
            _PATTERN_HOOKS[module].remove(hook)
            if not _PATTERN_HOOKS[module]:
                del _PATTERN_HOOKS[module]
        hf_model.set_attn_implementation(previous)


@contextmanager
def captured_attention(hf_model: PreTrainedModel, modules: list[torch.nn.Module]
                       ) -> Iterator[list[dict]]:
    """Route attention through :func:`eager_attention` and record, per module (one dict each,
    filled by every forward pass), its post-rotary ``query`` [batch, heads, q_pos, d_head],
    ``key`` [batch, kv_heads, k_pos, d_head], additive ``mask``, ``scaling``, ``softcap`` and
    ``pattern`` [batch, heads, q_pos, k_pos] (a graph node when the run keeps gradients)."""
    records = [{} for _ in modules]
    if not modules:
        yield records
        return
    previous = hf_model.config._attn_implementation
    hf_model.set_attn_implementation(ATTN_IMPLEMENTATION)
    for module, record in zip(modules, records, strict=True):
        _CAPTURES[module] = record
    try:
        yield records
    finally:
        for module in modules:
            _CAPTURES.pop(module, None)
        hf_model.set_attn_implementation(previous)
