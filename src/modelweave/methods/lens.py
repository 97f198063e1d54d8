"""The logit lens: what the residual stream after each layer would predict if the model
stopped there (final norm and unembedding applied to it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import load_bundle, save_bundle
from ..models import Model
from ..tasks import TaskBatch


@dataclass
class LensResult:
    """Per layer and position, averaged over prompts.

    Attributes:
        layers: labels: ``embed`` (the residual entering layer 0), then ``0``, ``1``, ...
            (the residual after each layer).
        positions: labels of the first prompt's tokens.
        answer_prob, answer_rank: [layer, pos] probability and rank (0 = top-1) of the main
            answer's first token.
        top_tokens: for the first prompt, [layer][pos] -> the top-k tokens as text.
        top_probs: [layer, pos, k] their probabilities.
        answer_prob_last: [N, layer] each prompt's P(answer) at its own last position (for
            the band of the headline curve, :meth:`band`; None in older results).
    """

    model: str
    task: str
    layers: list[str]
    positions: list[str]
    answer_prob: torch.Tensor
    answer_rank: torch.Tensor
    top_tokens: list[list[list[str]]]
    top_probs: torch.Tensor
    answer_prob_last: torch.Tensor | None = None

    def save(self, path: str | Path) -> None:
        """Write ``path.json`` and ``path.safetensors``."""
        meta = {k: getattr(self, k) for k in ("model", "task", "layers", "positions",
                                              "top_tokens")}
        names = ("answer_prob", "answer_rank", "top_probs") + (
            ("answer_prob_last",) if self.answer_prob_last is not None else ())
        save_bundle(path, meta, {k: getattr(self, k) for k in names}, indent=None)

    def band(self, *, n_resamples: int = 1000, seed: int = 0):
        """P(answer) at the last position after each layer, the mean over prompts with its
        pointwise bootstrap band (a :class:`~modelweave.metrics.uncertainty.Band`, x = layer
        index, ``embed`` = 0)."""
        from ..metrics.uncertainty import ResamplingError, bootstrap_curve

        if self.answer_prob_last is None:
            raise ResamplingError("this lens result has no per-prompt values to resample")
        return bootstrap_curve(self.answer_prob_last, n_resamples=n_resamples, seed=seed)

    @classmethod
    def load(cls, path: str | Path) -> LensResult:
        meta, tensors = load_bundle(path)
        return cls(**meta, **tensors)


def logit_lens(model: Model, batch: TaskBatch, k: int = 5, corrupt: bool = False
               ) -> LensResult:
    """Apply the final norm and unembedding to the residual stream after every layer.

    Args:
        k: how many top tokens to keep for the first prompt.
        corrupt: read the corrupted prompts instead of the clean ones.
    """
    tokens = batch.corrupt if corrupt else batch.clean
    n = model.cfg.n_layers
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n)]
    _, cache = model.run_with_cache(tokens, names, attention_mask=batch.mask)
    answers = batch.answers.to(model.device)
    probs_out, ranks_out, top_p, top_t, last_p = [], [], [], [], []
    rows = torch.arange(tokens.shape[0], device=model.device)
    last = batch.lengths.to(model.device) - 1
    str_tokens = model.to_str_tokens(tokens[0, : batch.lengths[0]])
    with torch.no_grad():
        for name in names:
            logits = model.unembed(cache[name]).float()  # [batch, pos, vocab]
            index = answers[:, None, None].expand(-1, logits.shape[1], 1)
            answer_logit = logits.gather(2, index)
            probs = logits.softmax(-1)
            mask = batch.mask.to(logits.device).float()
            answer_p = probs.gather(2, index)[..., 0]
            rank = (logits > answer_logit).sum(-1).float()
            probs_out.append((answer_p * mask).sum(0) / mask.sum(0).clamp(min=1))
            last_p.append(answer_p[rows.to(answer_p.device), last.to(answer_p.device)])
            ranks_out.append((rank * mask).sum(0) / mask.sum(0).clamp(min=1))
            best = probs[0, : len(str_tokens)].topk(k)
            top_p.append(best.values)
            top_t.append([[model.to_string([i]) for i in row] for row in best.indices.tolist()])
    return LensResult(model.name, batch.task, ["embed"] + [str(i) for i in range(n)],
                      [f"{i}: {t}" for i, t in enumerate(str_tokens)],
                      torch.stack(probs_out).cpu(), torch.stack(ranks_out).cpu(), top_t,
                      torch.stack(top_p).cpu(), torch.stack(last_p, dim=1).cpu())
