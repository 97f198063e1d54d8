"""Attention patterns of chosen heads over one prompt, labelled by its tokens."""

from __future__ import annotations

import torch

from ..models import Model


def attention_patterns(model: Model, tokens: torch.Tensor, heads: list[tuple[int, int]]
                       ) -> tuple[dict[tuple[int, int], torch.Tensor], list[str]]:
    """Patterns of ``heads`` ((layer, head) pairs) on one prompt.

    Args:
        tokens: [pos] token ids of the prompt.

    Returns:
        {(layer, head): [query_pos, key_pos] attention}, and the prompt's tokens as text.
    """
    names = sorted({f"blocks.{layer}.attn.hook_pattern" for layer, _ in heads})
    _, cache = model.run_with_cache(tokens[None], names)
    patterns = {(layer, head): cache["pattern", layer][0, head].float().cpu()
                for layer, head in heads}
    labels = model.to_str_tokens(tokens) if model.tokenizer is not None else [
        str(i) for i in range(len(tokens))]
    return patterns, labels
