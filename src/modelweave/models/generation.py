"""Generation with a key/value cache under whatever hooks are active.

:func:`generate` runs the HF model itself, one token per step after the prompt, so every
``model.hooks(...)``/``model.steer(...)`` context in force applies to the prompt and to every
generated token. Prompts of different lengths are left-padded; position ids and the attention
mask are passed explicitly, so a row's tokens sit at the same positions as in an uncached pass
over that row alone (and :mod:`.steering`'s absolute positions line up).

Greedy decoding (``temperature=0``) is deterministic; sampling draws from a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

if TYPE_CHECKING:
    from .model import Model


@dataclass
class Generation:
    """Generated continuations.

    Attributes:
        prompt_tokens: [batch, prompt_pos] left-padded prompt ids.
        prompt_mask: [batch, prompt_pos] 1 on real prompt tokens.
        tokens: [batch, new] generated ids (``pad_id`` after a row's end-of-sequence).
        texts: the decoded continuations (``None`` without a tokenizer).
        prompts: the prompts as given (strings) or ``None``.
    """

    prompt_tokens: torch.Tensor
    prompt_mask: torch.Tensor
    tokens: torch.Tensor
    texts: list[str] | None = None
    prompts: list[str] | None = None

    def sequences(self) -> list[torch.Tensor]:
        """Per row, prompt (without padding) + generated ids, [len] each."""
        return [torch.cat([p[m.bool()], t]) for p, m, t in
                zip(self.prompt_tokens, self.prompt_mask, self.tokens, strict=True)]

    def to_dict(self) -> dict:
        return {"prompts": self.prompts, "texts": self.texts, "tokens": self.tokens.tolist()}


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None,
          generator: torch.Generator | None) -> torch.Tensor:
    """[batch, vocab] -> [batch] next ids (argmax at temperature 0)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k:
        cut = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < cut, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(logits.device)


def generate(model: Model, inputs: str | list[str] | torch.Tensor, max_new_tokens: int = 20,
             *, temperature: float = 0.0, top_k: int | None = None, seed: int = 0,
             stop_at_eos: bool = True, attention_mask: torch.Tensor | None = None
             ) -> Generation:
    """Continue ``inputs`` by ``max_new_tokens`` tokens with a KV cache, under active hooks.

    Args:
        inputs: a prompt, a list of prompts (left-padded), or ids [batch, pos] (with
            ``attention_mask`` [batch, pos] when they are left-padded).
        temperature: 0 for greedy decoding, else sampling (``top_k`` optional) with ``seed``.
        stop_at_eos: stop a row at the tokenizer's end-of-sequence id (then pad it).

    Returns:
        :class:`Generation`.
    """
    prompts = None
    if isinstance(inputs, torch.Tensor):
        tokens = (inputs[None] if inputs.dim() == 1 else inputs).to(model.device)
        mask = (torch.ones_like(tokens) if attention_mask is None
                else attention_mask.to(model.device).long())
    else:
        prompts = [inputs] if isinstance(inputs, str) else list(inputs)
        tokens, mask = model.encode(prompts, padding_side="left")
    tok = model.tokenizer
    eos = tok.eos_token_id if (tok is not None and stop_at_eos) else None
    pad = model.tokenization.pad_token_id if model.tokenization is not None else 0
    generator = torch.Generator().manual_seed(seed) if temperature > 0 else None
    cache = DynamicCache(config=model.hf_model.config)
    batch = tokens.shape[0]
    done = torch.zeros(batch, dtype=torch.bool, device=tokens.device)
    out_ids: list[torch.Tensor] = []
    step_ids, step_pos = tokens, (mask.cumsum(-1) - 1).clamp(min=0)
    full_mask = mask
    with torch.no_grad():
        for _ in range(max_new_tokens):
            out = model.hf_model(input_ids=step_ids, attention_mask=full_mask,
                                 position_ids=step_pos, past_key_values=cache, use_cache=True,
                                 logits_to_keep=1)
            nxt = _pick(out.logits[:, -1], temperature, top_k, generator).to(done.device)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            out_ids.append(nxt)
            if eos is not None:
                done |= nxt == eos
                if bool(done.all()):
                    break
            step_ids = nxt[:, None]
            step_pos = step_pos[:, -1:] + 1
            full_mask = torch.cat([full_mask, torch.ones_like(step_ids)], dim=1)
    new = torch.stack(out_ids, dim=1) if out_ids else tokens[:, :0]
    texts = None
    if tok is not None:
        texts = [tok.decode([i for i, d in zip(row, _after_eos(row, eos), strict=True)
                             if not d], skip_special_tokens=True) for row in new.tolist()]
    return Generation(tokens, mask, new, texts, prompts)


def _after_eos(row: list[int], eos: int | None) -> list[bool]:
    """Per id of a row: whether it comes after the first end-of-sequence id."""
    seen, out = False, []
    for i in row:
        out.append(seen)
        seen = seen or (eos is not None and i == eos)
    return out
