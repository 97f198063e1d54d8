"""Causal checks of heuristic neurons by zero-ablation (Nikankin et al. 2024, §5).

- :func:`heuristic_knockout`: zero-ablate every neuron implementing one heuristic H (at all
  positions) and compare the accuracy on correct prompts that satisfy H ("related") with the
  accuracy on as many that do not ("unrelated"), against two controls: as many random
  neurons drawn from the same layers' top neurons (the paper's), and ``null_draws`` sets of
  random neurons *matched on direct effect* (:func:`matched_controls`: same count per layer
  and per direct-effect quantile bin of that layer, the direct effect being a neuron's mean
  |activation x W_out[n] . W_U_c[answer]| on the related prompts, :func:`direct_effects`).
  The accuracy drop on related prompts is compared with the matched draws' drops
  (``drop_null``, :func:`modelweave.metrics.nulls.compare`): a heuristic's neurons matter
  beyond what any neurons pushing the answer as hard would.
- :func:`prompt_knockout`: for each prompt, zero-ablate up to ``per_layer`` neurons per layer
  whose heuristics hold for that prompt (ranked by match score), against as many random neurons
  of the same layers' top neurons, per prompt in one batched pass.

Accuracy is top-1 on the unit token (the answer's first token, or token ``step`` with the
earlier ones teacher-forced).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import numpy as np
import torch

from ...engine.ablation import ablation_hook, units_mask
from ...metrics.functional import top1_accuracy
from ...metrics.nulls import NullError, compare, matched_components
from ...metrics.uncertainty import bootstrap_stat
from ...models import Model
from ...models.parts import out_norm
from ...tasks import TaskBatch, TaskError
from ...tasks.arith import OPS

_PATTERN = re.compile(r"^(op1|op2|result)_(pattern|value)_([0-9.]+)$")
_MOD = re.compile(r"^(op1|op2|result|both_operands)_(\d+)mod(\d+)$")
_RANGE = re.compile(r"^(op1|op2|result|both_operands)_range_(\d+)_(\d+)$")
_MULTI = re.compile(r"^result_multi_value_\d+=\[([0-9, ]*)\]$")


def holds(name: str, op1: torch.Tensor, op2: torch.Tensor, operator: str) -> torch.Tensor:
    """[N] whether heuristic ``name`` (as :func:`classify_map` names it) holds for each prompt
    ``op1 operator op2``."""
    result = OPS[operator](op1, op2)
    values = {"op1": [op1], "op2": [op2], "result": [result], "both_operands": [op1, op2]}
    if name == "same_operand":
        return op1 == op2
    if m := _MOD.match(name):
        who, r, n = m.group(1), int(m.group(2)), int(m.group(3))
        return torch.stack([v % n == r for v in values[who]]).all(0)
    if m := _RANGE.match(name):
        who, a, b = m.group(1), int(m.group(2)), int(m.group(3))
        return torch.stack([(v >= a) & (v < b) for v in values[who]]).all(0)
    if m := _PATTERN.match(name):
        who, pattern = m.group(1), m.group(3)
        width = len(pattern)
        text = [str(int(v)).zfill(width) for v in values[who][0]]
        return torch.tensor([len(t) == width and all(p in (".", c) for p, c in zip(
            pattern, t, strict=True)) for t in text])
    if m := _MULTI.match(name):
        wanted = [int(x) for x in m.group(1).replace(" ", "").split(",") if x]
        return torch.isin(result, torch.tensor(wanted))
    raise TaskError(f"unknown heuristic name {name!r}")


def _zero_hooks(neurons: list[tuple[int, int]], d_mlp: int) -> list:
    """Hooks zero-ablating ``neurons`` ((layer, index) pairs) of ``mlp.hook_post`` at every
    position."""
    by_layer: dict[int, list[int]] = {}
    for L, n in neurons:
        by_layer.setdefault(L, []).append(n)
    return [(f"blocks.{L}.mlp.hook_post", ablation_hook(keep=units_mask(d_mlp, idx, kept=False)))
            for L, idx in by_layer.items()]


def _row_mask_hooks(masks: dict[int, torch.Tensor]) -> list:
    """Hooks zero-ablating ``mlp.hook_post`` of layer L where ``masks[L]`` [B, d_mlp] is 0 (per
    prompt, at every position)."""
    return [(f"blocks.{L}.mlp.hook_post", ablation_hook(keep=m.bool())) for L, m in masks.items()]


def accuracy(model: Model, batch: TaskBatch, hooks=(), masks: dict | None = None,
             batch_size: int = 64) -> torch.Tensor:
    """[N] top-1 accuracy on the unit token with ``hooks`` (or per-prompt ``masks``)."""
    out = []
    for start, part in batch.chunks(batch_size):
        extra = list(hooks)
        if masks is not None:
            extra += _row_mask_hooks({L: m[start:start + len(part)] for L, m in masks.items()})
        logits = model.run_with_hooks(part.clean, extra, attention_mask=part.mask)
        last = logits[torch.arange(len(part)), part.lengths - 1]
        out.append(top1_accuracy(last, part.answers).cpu())
    return torch.cat(out)


@dataclass
class Knockout:
    """Accuracy after ablating one heuristic's neurons, and the controls.

    ``related`` / ``unrelated``: accuracy with the neurons ablated on prompts where the
    heuristic holds / does not (``*_ci`` their bootstrap intervals over prompts);
    ``random_*``: with as many random top neurons of the same layers ablated;
    ``matched_*``: mean over ``control_draws`` sets matched on direct effect
    (``matched_bins``: quantile bins used per layer; ``direct_effect`` /
    ``matched_direct_effect``: the mean direct effect of the knocked-out and of the matched
    neurons); ``drop_null``: the related accuracy drop against the matched draws' drops
    (:class:`~modelweave.metrics.nulls.NullComparison` as a dict)."""

    heuristic: str
    n_neurons: int
    n_related: int
    n_unrelated: int
    related: float
    unrelated: float
    random_related: float
    random_unrelated: float
    related_ci: list | None = None
    unrelated_ci: list | None = None
    baseline_related: float | None = None
    matched_related: float | None = None
    matched_unrelated: float | None = None
    direct_effect: float | None = None
    matched_direct_effect: float | None = None
    matched_bins: dict | None = None
    control_draws: int = 0
    drop_null: dict | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def direct_effects(model: Model, batch: TaskBatch, layers, *,
                   batch_size: int = 64) -> dict[int, torch.Tensor]:
    """layer -> [d_mlp] each neuron's mean over ``batch`` of |a_n x (W_out[n] . W_U_c[t])| at
    the last position: its activation times its output read through the centred unembedding
    at the answer's unit token ``t`` (the key-value map of :mod:`.maps`, for every neuron of
    ``layers``; through an OLMo-2 post-norm's gain and per-prompt scale)."""
    layers = sorted(set(layers))
    unembed = model.W_U.T.float()  # [d_vocab, d_model]
    centred = unembed - unembed.mean(0, keepdim=True)
    columns = {}
    for L in layers:
        w = model.W_out[L].float()  # [d_mlp, d_model]
        if model.cfg.post_norm:
            w = w * out_norm(model, L, "mlp").weight.float()
        columns[L] = w
    sites = [f"blocks.{L}.mlp.hook_post" for L in layers]
    scales = [f"blocks.{L}.mlp.hook_scale" for L in layers] if model.cfg.post_norm else []
    total = {L: torch.zeros(model.cfg.d_mlp) for L in layers}
    for _, part in batch.chunks(batch_size):
        _, cache = model.run_with_cache(part.clean, sites + scales, attention_mask=part.mask)
        rows = centred[part.answers.to(centred.device)]  # [B, d_model]
        for L in layers:
            site = f"blocks.{L}.mlp.hook_post"
            at = torch.arange(len(part)), (part.lengths - 1).to(cache[site].device)
            act = cache[site][at].float()  # [B, d_mlp]
            if scales:
                scale = cache[f"blocks.{L}.mlp.hook_scale"][at].float()
                act = act * scale.reshape(len(part), -1)
            value = rows.to(columns[L].device) @ columns[L].T  # [B, d_mlp]
            total[L] += (act.to(value.device) * value).abs().sum(0).cpu()
    return {L: t / max(len(batch), 1) for L, t in total.items()}


def matched_controls(neurons: list[tuple[int, int]], direct: dict[int, torch.Tensor],
                     n_draws: int, *, bins: int = 4,
                     seed: int = 0) -> tuple[list[list[tuple[int, int]]], dict[int, int]]:
    """``n_draws`` random neuron sets matched to ``neurons`` on layer and direct effect.

    Each layer's neurons are cut into ``bins`` equal-count quantile bins of ``direct[L]``
    ([d_mlp]); a draw takes, per (layer, bin), as many other neurons of that bin as
    ``neurons`` has there (:func:`~modelweave.metrics.nulls.matched_components`, never one of
    ``neurons``). A layer whose bins cannot supply is cut into fewer bins (down to one: the
    whole layer).

    Returns:
        the draws ((layer, neuron) lists) and layer -> the number of bins used.

    Raises:
        NullError: a layer has fewer other neurons than ``neurons`` takes from it.
    """
    if n_draws < 1:
        raise NullError(f"a matched control needs at least one draw, got {n_draws}")
    chosen = set(neurons)
    strata: list[tuple[list[str], list[str]]] = []
    used: dict[int, int] = {}
    for L in sorted({L for L, _ in neurons}):
        d = len(direct[L])
        rank = torch.empty(d, dtype=torch.long)
        rank[torch.argsort(direct[L], stable=True)] = torch.arange(d)
        for b in range(max(1, bins), 0, -1):
            bin_of = (rank * b // d).tolist()
            groups: dict[int, tuple[list[str], list[str]]] = {}
            for n in range(d):
                mine, others = groups.setdefault(bin_of[n], ([], []))
                (mine if (L, n) in chosen else others).append(f"m{L}.n{n}")
            if b == 1 or all(len(o) >= len(m) for m, o in groups.values()):
                break
        used[L] = b
        strata += [(m, m + o) for m, o in groups.values() if m]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws):
        names = [x for mine, universe in strata for x in matched_components(mine, universe, rng)]
        draws.append([(int(a[1:]), int(b[1:])) for a, b in (x.split(".") for x in names)])
    return draws, used


def _interval(values: torch.Tensor, seed: int) -> list[float]:
    agg = bootstrap_stat(values.numpy(), seed=seed)
    return [agg.ci_low, agg.ci_high]


def _finite(d: dict) -> dict:
    """A dict that JSON and ``==`` take (non-finite floats as ``None``)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()}


def _operands(batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor, str]:
    meta = [ex.meta for ex in batch.examples]
    ops = {m["op"] for m in meta}
    if len(ops) != 1:
        raise TaskError(f"knockouts need prompts of one operator, got {sorted(ops)}")
    return (torch.tensor([m["op1"] for m in meta]), torch.tensor([m["op2"] for m in meta]),
            ops.pop())


def heuristic_knockout(model: Model, batch: TaskBatch, heuristic: str,
                       neurons: list[tuple[int, int]], pool: list[tuple[int, int]], *,
                       n_max: int = 100, null_draws: int = 20, bins: int = 4,
                       seed: int = 0) -> Knockout:
    """Zero-ablate ``neurons`` (those implementing ``heuristic``) and, as controls, as many
    neurons drawn at random from ``pool`` (the same layers' top neurons) per layer, and
    ``null_draws`` sets matched on direct effect (module docstring; ``bins`` quantile bins per
    layer; ``null_draws=0`` skips them); accuracy on up to ``n_max`` prompts of ``batch`` (one
    operator, answered correctly) where the heuristic holds and as many where it does not."""
    op1, op2, op = _operands(batch)
    mask = holds(heuristic, op1, op2, op)
    rng = random.Random(seed)
    related = [i for i in range(len(batch)) if mask[i]]
    unrelated = [i for i in range(len(batch)) if not mask[i]]
    related = rng.sample(related, min(n_max, len(related)))
    unrelated = rng.sample(unrelated, min(len(related) or n_max, len(unrelated)))
    if not related or not unrelated:
        raise TaskError(f"heuristic {heuristic!r} holds for {len(related)} of {len(batch)} "
                        "prompts: a knockout needs prompts on both sides")
    control, owned = [], set(neurons)
    for L in sorted({L for L, _ in neurons}):
        want = sum(1 for L2, _ in neurons if L2 == L)
        options = [x for x in pool if x[0] == L and x not in owned]
        control += rng.sample(options, min(want, len(options)))
    rel, unrel = batch.select(related), batch.select(unrelated)

    def acc(part, ablate) -> torch.Tensor:
        return accuracy(model, part, _zero_hooks(ablate, model.cfg.d_mlp))

    knocked_rel, knocked_unrel = acc(rel, neurons), acc(unrel, neurons)
    out = Knockout(heuristic, len(neurons), len(related), len(unrelated),
                   float(knocked_rel.mean()), float(knocked_unrel.mean()),
                   float(acc(rel, control).mean()), float(acc(unrel, control).mean()),
                   _interval(knocked_rel, seed), _interval(knocked_unrel, seed))
    if null_draws < 1:
        return out
    direct = direct_effects(model, rel, {L for L, _ in neurons})
    draws, used = matched_controls(list(neurons), direct, null_draws, bins=bins, seed=seed)
    base = float(accuracy(model, rel).mean())
    null_rel = [float(acc(rel, d).mean()) for d in draws]

    def mean_de(group) -> float:
        return float(torch.stack([direct[L][n] for L, n in group]).mean())

    out.baseline_related = base
    out.matched_related = float(np.mean(null_rel))
    out.matched_unrelated = float(np.mean([float(acc(unrel, d).mean()) for d in draws]))
    out.direct_effect = mean_de(neurons)
    out.matched_direct_effect = float(np.mean([mean_de(d) for d in draws]))
    out.matched_bins = {str(L): b for L, b in used.items()}
    out.control_draws = len(draws)
    out.drop_null = _finite(compare(base - out.related, [base - a for a in null_rel],
                                    null=f"{len(draws)} random neuron sets of the same layers "
                                    "matched on direct effect").to_dict())
    return out


@dataclass
class PromptKnockout:
    """Mean accuracy when each prompt loses the neurons whose heuristics hold for it
    (``targeted``) versus as many random top neurons (``random``); ``neurons`` the mean number
    ablated per prompt."""

    per_layer: int
    targeted: float
    random: float
    neurons: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def prompt_knockout(model: Model, batch: TaskBatch, matches: dict[tuple[int, int], list],
                    pool: list[tuple[int, int]], per_layer: int, *,
                    seed: int = 0) -> PromptKnockout:
    """For each prompt of ``batch`` (one operator), zero-ablate up to ``per_layer`` neurons per
    layer among those of ``matches`` (neuron -> its :class:`HeuristicMatch` list) having a
    heuristic that holds for the prompt, best match score first; the control ablates as many
    neurons per layer drawn from ``pool`` (the top neurons)."""
    op1, op2, op = _operands(batch)
    names = sorted({m.name for ms in matches.values() for m in ms})
    hold = {name: holds(name, op1, op2, op) for name in names}
    n, d = len(batch), model.cfg.d_mlp
    layers = sorted({L for L, _ in pool})
    targeted = {L: torch.ones(n, d) for L in layers}
    control = {L: torch.ones(n, d) for L in layers}
    rng = random.Random(seed)
    total = 0
    for i in range(n):
        for L in layers:
            scored = [(max(m.score for m in ms if hold[m.name][i]), x[1])
                      for x, ms in matches.items()
                      if x[0] == L and any(hold[m.name][i] for m in ms)]
            chosen = [idx for _, idx in sorted(scored, reverse=True)[:per_layer]]
            if not chosen:
                continue
            targeted[L][i, chosen] = 0
            options = [x[1] for x in pool if x[0] == L]
            control[L][i, rng.sample(options, min(len(chosen), len(options)))] = 0
            total += len(chosen)
    return PromptKnockout(per_layer, float(accuracy(model, batch, masks=targeted).mean()),
                          float(accuracy(model, batch, masks=control).mean()), total / max(n, 1))
