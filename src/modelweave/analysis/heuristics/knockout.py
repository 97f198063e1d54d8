"""Causal checks of heuristic neurons by zero-ablation (Nikankin et al. 2024, §5).

- :func:`heuristic_knockout`: zero-ablate every neuron implementing one heuristic H (at all
  positions) and compare the accuracy on correct prompts that satisfy H ("related") with the
  accuracy on as many that do not ("unrelated"), against a control that ablates as many random
  neurons drawn from the same layers' top neurons.
- :func:`prompt_knockout`: for each prompt, zero-ablate up to ``per_layer`` neurons per layer
  whose heuristics hold for that prompt (ranked by match score), against as many random neurons
  of the same layers' top neurons, per prompt in one batched pass.

Accuracy is top-1 on the unit token (the answer's first token, or token ``step`` with the
earlier ones teacher-forced).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from ...engine.ablation import ablation_hook, units_mask
from ...metrics.functional import top1_accuracy
from ...models import Model
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
    """Accuracy after ablating one heuristic's neurons (and the random control)."""

    heuristic: str
    n_neurons: int
    n_related: int
    n_unrelated: int
    related: float
    unrelated: float
    random_related: float
    random_unrelated: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _operands(batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor, str]:
    meta = [ex.meta for ex in batch.examples]
    ops = {m["op"] for m in meta}
    if len(ops) != 1:
        raise TaskError(f"knockouts need prompts of one operator, got {sorted(ops)}")
    return (torch.tensor([m["op1"] for m in meta]), torch.tensor([m["op2"] for m in meta]),
            ops.pop())


def heuristic_knockout(model: Model, batch: TaskBatch, heuristic: str,
                       neurons: list[tuple[int, int]], pool: list[tuple[int, int]], *,
                       n_max: int = 100, seed: int = 0) -> Knockout:
    """Zero-ablate ``neurons`` (those implementing ``heuristic``) and, as control, as many
    neurons drawn at random from ``pool`` (the same layers' top neurons) per layer; accuracy on
    up to ``n_max`` prompts of ``batch`` (one operator, answered correctly) where the heuristic
    holds and as many where it does not."""
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

    def acc(part, ablate):
        return float(accuracy(model, part, _zero_hooks(ablate, model.cfg.d_mlp)).mean())

    return Knockout(heuristic, len(neurons), len(related), len(unrelated),
                    acc(rel, neurons), acc(unrel, neurons), acc(rel, control),
                    acc(unrel, control))


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
