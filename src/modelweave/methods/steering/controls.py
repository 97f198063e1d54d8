"""Controls for steering vectors and directional ablation: intervals over prompts and matched
nulls.

A steering vector's effect is only evidence if a random vector of the same norm, added at the
same site, layer, positions and scale, does not do as much; an ablated direction's effect only
if ablating a random direction does not. Both are measured on per-prompt scores:

- :func:`steering_null`: ``score()`` [N] (one value per evaluation prompt, e.g. whether a
  greedy continuation contains a target word, or the log-probability of the target words)
  without steering, with the vector, and with each of ``n_draws`` equal-norm random vectors
  (:func:`~modelweave.metrics.nulls.equal_norm_vectors`) applied identically. The effect is
  the mean over prompts of (steered - unsteered), with its paired bootstrap interval
  (:func:`~modelweave.metrics.uncertainty.bootstrap_stat`) and its null
  (:func:`~modelweave.metrics.nulls.compare`, one-sided: the vector moves the score more).
- :func:`ablation_null`: the same for ``ablate_direction`` with unit random directions
  (:func:`~modelweave.metrics.nulls.random_directions`); the effect is the mean drop
  (unablated - ablated).

Each result records where every vector was applied (site name, layer, scale, positions, the
norms), so a reader can check the null was applied as the vector was.
:func:`check_disjoint_prompts` refuses evaluation prompts that are (or start) a fitting pair's
text. :func:`target_logprob` and :func:`word_hits` are ready-made scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ...errors import SteeringError
from ...models.steering import check_layer, site_name
from .ablation import ablate_direction

Score = Callable[[], "np.ndarray | Sequence[float] | torch.Tensor"]


@dataclass
class NullResult:
    """A vector's (or direction's) effect beside its matched null.

    Attributes:
        base, treated: [N] per-prompt scores without and with the intervention.
        effect, effect_ci: mean of the per-prompt effect and its 95% bootstrap interval.
        effect_null: :meth:`~modelweave.metrics.nulls.NullComparison.to_dict` of the effect
            against the null draws' effects.
        null_effects: the mean effect of each null draw.
        record: where and how the vector and each null were applied.
    """

    base: list[float]
    treated: list[float]
    effect: float
    effect_ci: list[float]
    effect_null: dict
    null_effects: list[float]
    record: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _scores(score: Score) -> np.ndarray:
    values = score()
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _result(base: np.ndarray, treated: np.ndarray, null_scores: list[np.ndarray], sign: float,
            what: str, record: dict, n_resamples: int) -> NullResult:
    from ...metrics.nulls import compare
    from ...metrics.uncertainty import bootstrap_stat

    per_prompt = sign * (treated - base)
    agg = bootstrap_stat(per_prompt, n_resamples=n_resamples)
    nulls = [float(np.mean(sign * (s - base))) for s in null_scores]
    return NullResult(base.tolist(), treated.tolist(), agg.mean, [agg.ci_low, agg.ci_high],
                      compare(agg.mean, nulls, null=what).to_dict(), nulls, record)


def steering_null(model, vector: torch.Tensor, score: Score, *, layer: int,
                  scale: float = 1.0, positions=None, site: str = "hook_resid_post",
                  n_draws: int = 10, seed: int = 0, n_resamples: int = 2000) -> NullResult:
    """The effect of ``model.steer(vector, layer, scale, positions, site)`` on ``score``
    beside ``n_draws`` random vectors of ``vector``'s norm steered identically (module
    docstring). ``score()`` is called once unsteered, once steered, once per draw, and
    returns [N] per-prompt values (the same prompts each time)."""
    from ...metrics.nulls import equal_norm_vectors

    layer = check_layer(model, layer)
    vector = torch.as_tensor(vector).float()
    draws = equal_norm_vectors(vector, n_draws, seed)
    base = _scores(score)
    with model.steer(vector, layer=layer, scale=scale, positions=positions, site=site):
        treated = _scores(score)
    null_scores = []
    for v in draws:
        with model.steer(v, layer=layer, scale=scale, positions=positions, site=site):
            null_scores.append(_scores(score))
    record = {"site": site_name(model, site, layer), "layer": layer, "scale": float(scale),
              "positions": "all" if positions is None else str(positions),
              "norm": float(vector.norm()), "null_norms": draws.norm(dim=-1).tolist(),
              "null": "equal-norm random vectors", "seed": seed}
    return _result(base, treated, null_scores, 1.0, "equal-norm random vector at the same "
                   "site, layer, positions and scale", record, n_resamples)


def ablation_null(model, direction: torch.Tensor, score: Score, *, n_draws: int = 10,
                  seed: int = 0, n_resamples: int = 2000) -> NullResult:
    """The drop in ``score`` (unablated - ablated, per prompt) when ``direction`` is
    projected out of every residual write (:func:`~.ablation.ablate_direction`), beside
    ``n_draws`` unit random directions ablated the same way."""
    from ...metrics.nulls import random_directions

    direction = torch.as_tensor(direction).float()
    draws = random_directions(direction, n_draws, seed)
    base = _scores(score)
    with ablate_direction(model, direction):
        treated = _scores(score)
    null_scores = []
    for r in draws:
        with ablate_direction(model, r):
            null_scores.append(_scores(score))
    record = {"sites": "every residual write (embeddings, attention and MLP outputs)",
              "norm": float(direction.norm()), "null_norms": draws.norm(dim=-1).tolist(),
              "null": "unit random directions", "seed": seed}
    return _result(base, treated, null_scores, -1.0, "random direction ablated the same way",
                   record, n_resamples)


def check_disjoint_prompts(prompts: Sequence[str], positives: Sequence[str],
                           negatives: Sequence[str]) -> None:
    """Raise :class:`SteeringError` if an evaluation prompt is one of the fitting pairs'
    texts or the start of one (the vector was read on that very text)."""
    fitted = [t.strip() for t in [*positives, *negatives]]
    for p in prompts:
        q = p.strip()
        if q and any(t == q or t.startswith(q) for t in fitted):
            raise SteeringError(f"evaluation prompt {p!r} is (the start of) a contrastive "
                                "pair the vector was fitted on; evaluate on other prompts")


def word_token_ids(model, words: Sequence[str]) -> list[int]:
    """The first token of ``" " + word`` for each word, deduplicated (in order)."""
    ids = [int(model.to_tokens(" " + w, prepend_bos=False)[0, 0]) for w in words]
    return list(dict.fromkeys(ids))


def target_logprob(model, prompts: Sequence[str], ids: Sequence[int]) -> Score:
    """A score: per prompt, log of the total next-token probability of ``ids`` at the last
    token (one batched forward per call, under whatever hooks are active)."""
    def score() -> torch.Tensor:
        tokens, mask = model.encode(list(prompts))
        logits = model.forward(tokens, attention_mask=mask)
        last = logits[torch.arange(len(prompts)), mask.sum(-1) - 1].float()
        return torch.logsumexp(last.log_softmax(-1)[:, list(ids)], -1)

    return score


def words_of(text: str) -> set[str]:
    """Lower-cased words of a text, punctuation stripped."""
    return {w.strip(".,!?;:'\"()").lower() for w in text.split()}


def word_hits(model, prompts: Sequence[str], words: Sequence[str], max_new_tokens: int = 16,
              texts: list | None = None, **sampling) -> Score:
    """A score: per prompt, 1.0 if its continuation (``model.generate``, greedy unless
    ``sampling`` says otherwise) contains one of ``words``, else 0.0. Each call's
    continuations are appended to ``texts`` when given."""
    lexicon = {w.lower() for w in words}
    if not lexicon:
        raise SteeringError("word_hits needs at least one target word")

    def score() -> list[float]:
        out = model.generate(list(prompts), max_new_tokens, **sampling).texts
        if texts is not None:
            texts.append(out)
        return [float(bool(words_of(t) & lexicon)) for t in out]

    return score
