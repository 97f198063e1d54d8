"""Head-role scores for every attention head.

Pattern scores, on repeated random tokens (a sequence of ``length`` tokens, then the same
sequence again):

- ``previous_token``: attention from each position to the one before it.
- ``duplicate_token``: attention from a token's second occurrence to its first.
- ``induction``: attention from a token's second occurrence to the token that *followed* its
  first occurrence.

OV scores, on effective token embeddings (the residual stream after layer 0 of a one-token
input, as in Gould et al. 2023), passed through the head's value and output maps and the
unembedding restricted to a token set:

- ``copying``: fraction of sampled tokens whose own logit is the highest among the sample.
- ``successor``: fraction of ordinal tokens (digits, number words, months, days, letters)
  whose successor gets the highest logit among their class (Gould et al. 2023).

Every score is a mean over items (random sequences for the pattern scores, sampled tokens for
copying, ordinal tokens for successor); :attr:`HeadRoles.items` keeps the per-item values, so
:meth:`HeadRoles.interval` gives a bootstrap interval over items and :func:`role_null` compares
a set of heads with random heads of the same layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models import Model
from ..models.parts import attn_in_norm, final_norm, qkv_clip
from ..tasks.words import DAYS, LETTERS, MONTHS, NUMBER_WORDS

ROLES = ("previous_token", "duplicate_token", "induction", "copying", "successor")
ORDINALS = [[str(d) for d in range(10)], NUMBER_WORDS[:10], MONTHS, DAYS, LETTERS]


@dataclass
class HeadRoles:
    """``scores[role]`` is [layer, head], each in [0, 1]; ``items[role]`` (when computed) is
    [n_items, layer, head], whose mean over items is the score."""

    model: str
    scores: dict[str, torch.Tensor]
    items: dict[str, torch.Tensor] = field(default_factory=dict)

    def interval(self, role: str, layer: int, head: int, *, n_resamples: int = 2000,
                 seed: int = 0):
        """A head's score with its bootstrap interval over the role's items (an
        :class:`~modelweave.metrics.stats.Aggregate`; NaN ends without ``items``)."""
        from ..metrics.stats import Aggregate
        from ..metrics.uncertainty import bootstrap_stat

        if role not in self.items:
            return Aggregate(float(self.scores[role][layer, head]), float("nan"),
                             float("nan"), 0)
        return bootstrap_stat(self.items[role][:, layer, head], n_resamples=n_resamples,
                              seed=seed)

    def top_intervals(self, role: str, k: int = 5, seed: int = 0) -> list[dict]:
        """The ``k`` top heads as ``{"head": "L.H", "score", "score_ci": [low, high]}``."""
        out = []
        for layer, head, score in self.top(role, k):
            agg = self.interval(role, layer, head, seed=seed)
            out.append({"head": f"{layer}.{head}", "score": score,
                        "score_ci": [agg.ci_low, agg.ci_high]})
        return out

    def top(self, role: str, k: int = 5) -> list[tuple[int, int, float]]:
        """The ``k`` highest-scoring heads for a role: (layer, head, score)."""
        grid = self.scores[role]
        order = grid.flatten().argsort(descending=True)[:k]
        return [(int(i) // grid.shape[1], int(i) % grid.shape[1], float(grid.flatten()[i]))
                for i in order]

    def to_dataframe(self):
        """One row per head, a column per role."""
        import pandas as pd

        layers, heads = next(iter(self.scores.values())).shape
        data = {"layer": [layer for layer in range(layers) for _ in range(heads)],
                "head": [head for _ in range(layers) for head in range(heads)]}
        data.update({role: grid.flatten().tolist() for role, grid in self.scores.items()})
        return pd.DataFrame(data)


def _token_pool(model: Model) -> torch.Tensor:
    """Ids random prompts draw from: ``[min(1000, vocab/4), min(20000, vocab))`` (skipping
    the first ids, often special or byte tokens, and rare ones), special tokens excluded."""
    vocab = model.cfg.d_vocab
    low, high = min(1000, vocab // 4), min(20000, vocab)
    special = set(getattr(model.tokenizer, "all_special_ids", None) or [])
    if model.tokenization is not None:
        special |= {model.tokenization.bos_token_id, model.tokenization.pad_token_id}
    return torch.tensor([i for i in range(low, high) if i not in special])


def _random_tokens(model: Model, batch: int, length: int, seed: int) -> torch.Tensor:
    """[batch, 2 * length] (+ BOS): ``length`` distinct random ids, then the same again.

    Ids come from :func:`_token_pool`, without repeats inside a sequence, so only the second
    half repeats the first (as the scores assume)."""
    gen = torch.Generator().manual_seed(seed)
    pool = _token_pool(model)
    if len(pool) >= length:
        first = torch.stack([pool[torch.randperm(len(pool), generator=gen)[:length]]
                             for _ in range(batch)])
    else:  # a vocabulary too small for distinct ids: repeats are unavoidable
        first = pool[torch.randint(0, len(pool), (batch, length), generator=gen)]
    tokens = torch.cat([first, first], dim=1)
    if model.tokenization and model.tokenization.prepend_bos:
        bos = torch.full((batch, 1), model.tokenization.bos_token_id)
        tokens = torch.cat([bos, tokens], dim=1)
    return tokens


def pattern_scores(model: Model, batch: int = 8, length: int = 20, seed: int = 0,
                   per_item: bool = False) -> dict[str, torch.Tensor]:
    """previous_token, duplicate_token and induction scores, each [layer, head] (``length``
    is shortened to fit a model with a shorter context); ``per_item``: [batch, layer, head],
    one score per random sequence."""
    config = model.hf_model.config
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings",
                                                                None)
    if context:
        length = max(2, min(length, (context - 1) // 2))
    tokens = _random_tokens(model, batch, length, seed)
    offset = tokens.shape[1] - 2 * length  # 1 with a BOS
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names)
    second = torch.arange(offset + length, offset + 2 * length)
    prev_q = torch.arange(offset + 1, offset + 2 * length)
    out = {"previous_token": [], "duplicate_token": [], "induction": []}
    for name in names:
        p = cache[name].float()  # [batch, head, q, k]
        out["previous_token"].append(p[:, :, prev_q, prev_q - 1].mean(2))
        out["duplicate_token"].append(p[:, :, second, second - length].mean(2))
        out["induction"].append(p[:, :, second[:-1], second[:-1] - length + 1].mean(2))
    items = {k: torch.stack(v, dim=1).cpu() for k, v in out.items()}  # [batch, layer, head]
    return items if per_item else {k: v.mean(0) for k, v in items.items()}


def effective_embeddings(model: Model, token_ids: list[int]) -> torch.Tensor:
    """[n, d_model] residual stream after layer 0 of each token given alone (after the BOS
    where the model's rule prepends one)."""
    tokens = torch.tensor(token_ids)[:, None]
    if model.tokenization and model.tokenization.prepend_bos:
        tokens = torch.cat([torch.full_like(tokens, model.tokenization.bos_token_id), tokens], 1)
    name = "blocks.1.hook_resid_pre" if model.cfg.n_layers > 1 else "blocks.0.hook_resid_post"
    _, cache = model.run_with_cache(tokens, [name])
    return cache[name][:, -1]


def ov_logits(model: Model, layer: int, embeddings: torch.Tensor, columns: list[int]
              ) -> torch.Tensor:
    """[n, head, len(columns)] logits each head's OV map writes for each input vector, read
    through the final norm and the unembedding rows ``columns`` (and the logit scale)."""
    norm = attn_in_norm(model, layer)
    with torch.no_grad():
        x = embeddings if norm is None else norm(embeddings)  # [n, d_model]
        v = torch.einsum("nm,hmd->nhd", x, model.W_V(layer, per_query_head=True))
        v = v + model.b_V(layer, per_query_head=True)  # [n, head, d_head]
        clip = qkv_clip(model)
        if clip is not None:  # OLMo's clip_qkv, as the model applies it
            v = v.clamp(-clip, clip)
        out = torch.einsum("nhd,hdm->nhm", v, model.W_O[layer])
        normed = final_norm(model)(out)
        w_u = model.W_U.T[columns].to(normed.device)
        return (normed @ w_u.T * model.logit_scale).float()


def _single_token_ids(model: Model, words: list[str]) -> list[int] | None:
    ids = []
    for word in words:
        encoded = model.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            encoded = model.tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                return None
        ids.append(encoded[0])
    return ids if len(set(ids)) == len(ids) else None


def ov_scores(model: Model, n_tokens: int = 200, seed: int = 0, per_item: bool = False
              ) -> dict[str, torch.Tensor]:
    """copying and successor scores, each [layer, head] (successor needs a tokenizer);
    ``per_item``: [items, layer, head], one 0/1 hit per sampled (copying) or ordinal
    (successor) token."""
    cfg = model.cfg
    pool = _token_pool(model)  # each id is its own one-token prompt: no long sequence
    sample = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
                  [:n_tokens]].sort().values.tolist()
    classes = [ids for ids in (_single_token_ids(model, c) for c in ORDINALS) if ids] \
        if model.tokenizer is not None else []
    copying, successor = [], []
    emb_sample = effective_embeddings(model, sample)
    emb_classes = [effective_embeddings(model, ids) for ids in classes]
    for layer in range(cfg.n_layers):
        logits = ov_logits(model, layer, emb_sample, sample)  # [n, head, n]
        own = torch.arange(len(sample))
        copying.append((logits.argmax(-1) == own[:, None]).float())  # [n, head]
        hits = []
        for ids, emb in zip(classes, emb_classes, strict=True):
            logits = ov_logits(model, layer, emb[:-1], ids)  # successors of all but the last
            hits.append((logits.argmax(-1) == torch.arange(1, len(ids))[:, None]).float())
        if hits:
            successor.append(torch.cat(hits))
    items = {"copying": torch.stack(copying, dim=1).cpu()}  # [items, layer, head]
    if classes:
        items["successor"] = torch.stack(successor, dim=1).cpu()
    return items if per_item else {k: v.mean(0) for k, v in items.items()}


def head_roles(model: Model, seed: int = 0) -> HeadRoles:
    """Every role score for every head, with the per-item values (see the module
    docstring)."""
    items = {**pattern_scores(model, seed=seed, per_item=True),
             **ov_scores(model, seed=seed, per_item=True)}
    return HeadRoles(model.name, {k: v.mean(0) for k, v in items.items()}, items)


def role_null(roles: HeadRoles, role: str, heads: list[tuple[int, int]], draws: int = 200,
              seed: int = 0):
    """The mean ``role`` score of ``heads`` ((layer, head) pairs) beside random heads with
    the same count per layer (the chosen ones excluded): a
    :class:`~modelweave.metrics.nulls.NullComparison`. For heads picked *because* they score
    highest this says how far they stand out of their layers, not that the role is real.

    Raises:
        NullError: a layer has no other heads to draw.
    """
    from ..metrics.nulls import compare, heads_universe, matched_draws

    grid = roles.scores[role]
    names = [f"a{layer}.h{head}" for layer, head in heads]

    def mean(group: list[str]) -> float:
        return float(sum(grid[int(n[1:].split(".h")[0]), int(n.split(".h")[1])]
                         for n in group) / len(group))

    sets = matched_draws(names, heads_universe(*grid.shape), draws, seed=seed)
    return compare(mean(names), [mean(s) for s in sets],
                   null=f"{draws} random head sets with the same count of heads per layer")
