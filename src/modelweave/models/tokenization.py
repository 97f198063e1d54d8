"""The BOS rule, one per tokenizer, and text -> token batches.

**Rule.** Text is always encoded with ``add_special_tokens=False`` (so no tokenizer appends an
EOS or a second BOS behind our back). A BOS is then prepended iff ``prepend_bos`` is true, and
only if the sequence does not already start with it: a BOS is never doubled. The default of
``prepend_bos`` is what the tokenizer itself does when asked for special tokens: Llama-2/3 and
Cohere tokenizers add a BOS, so ModelWeave does; GPT-2, Pythia and SmolLM2 tokenizers do not,
so ModelWeave does not. ``load_model(..., prepend_bos=...)`` overrides the default per model and
every tokenising call overrides it per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TokenizationError


@dataclass(frozen=True)
class TokenizationPolicy:
    """How a model's tokenizer is used.

    Attributes:
        bos_token_id: the BOS id, or ``None`` if the tokenizer has none.
        prepend_bos: default for prepending it.
        pad_token_id: id used to right-pad batches of unequal length.
        rule: one line a person can read, saying why ``prepend_bos`` has its value.
    """

    bos_token_id: int | None
    prepend_bos: bool
    pad_token_id: int
    rule: str


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether the tokenizer's own special-token template starts with its BOS token."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bool(with_special) and with_special[0] == bos and (not plain or plain[0] != bos)


def policy_for(tokenizer, prepend_bos: bool | None = None) -> TokenizationPolicy:
    """The :class:`TokenizationPolicy` of a tokenizer, optionally overriding ``prepend_bos``."""
    bos = tokenizer.bos_token_id
    adds = tokenizer_adds_bos(tokenizer)
    if prepend_bos is not None:
        rule = f"prepend_bos={prepend_bos} set by the user"
    elif adds:
        rule = f"the tokenizer adds BOS {tokenizer.bos_token!r} itself, so it is prepended"
    else:
        rule = "the tokenizer does not add a BOS itself, so none is prepended"
    if prepend_bos and bos is None:
        raise TokenizationError("prepend_bos=True but the tokenizer has no BOS token; use "
                                "prepend_bos=False or None")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return TokenizationPolicy(bos, adds if prepend_bos is None else prepend_bos, pad, rule)


def encode(tokenizer, policy: TokenizationPolicy, texts: list[str],
           prepend_bos: bool | None = None) -> list[list[int]]:
    """Token ids of each text under the BOS rule (no padding)."""
    prepend = policy.prepend_bos if prepend_bos is None else prepend_bos
    if prepend and policy.bos_token_id is None:
        raise TokenizationError("prepend_bos=True but the tokenizer has no BOS token; use "
                                "prepend_bos=False or None")
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    if prepend:
        ids = [s if s[:1] == [policy.bos_token_id] else [policy.bos_token_id, *s] for s in ids]
    return ids


def pad_batch(ids: list[list[int]], pad_token_id: int, padding_side: str = "right"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists to one length.

    Returns:
        tokens [batch, pos] (long) and attention_mask [batch, pos] (1 = real token).
    """
    if padding_side not in ("right", "left"):
        raise TokenizationError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if not ids or any(len(s) == 0 for s in ids):
        raise TokenizationError("cannot tokenise an empty text (or empty list of texts)")
    length = max(len(s) for s in ids)
    tokens = torch.full((len(ids), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for row, seq in enumerate(ids):
        span = slice(0, len(seq)) if padding_side == "right" else slice(length - len(seq), length)
        tokens[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return tokens, mask
