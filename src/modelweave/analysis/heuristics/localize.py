"""Localising the arithmetic circuit: heads and MLPs by position (Nikankin et al. 2024, §3).

1. :func:`position_effects`: patch each head's ``hook_z`` and each MLP's ``mlp.hook_post``
   from the counterfactual prompt into the clean prompt at each named position (OP1,
   OPERATOR, OP2, EQ) and measure the Eq. 1 effect
   (:func:`~modelweave.metrics.scores.prob_change_effect`), averaged over prompts. Runs on
   the exact suffix-only engine; the prompts must share their named positions
   (:func:`uniform_rows` picks the largest such group).
2. :func:`head_curve`: every MLP in the circuit, heads added in order of their effect
   averaged over positions; faithfulness (normalised logit, mean ablation) for each number of
   heads, and the smallest number reaching a target.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...circuits.node_faithfulness import NodeEvaluator
from ...circuits.nodes import NodeCircuit
from ...engine.suffix import base_run
from ...methods.activation_patching import patch_units
from ...methods.grids import Unit
from ...metrics.scores import final_logits, prob_change_effect
from ...models import Model
from ...progress import Progress, Steps
from ...tasks import TaskBatch, TaskError
from .prompts import POSITIONS


def uniform_rows(batch: TaskBatch, names=POSITIONS) -> TaskBatch:
    """The largest sub-batch whose prompts have one length and the same index for every named
    position (patching by position needs them aligned)."""
    keys = [(int(batch.lengths[i]), *(int(batch.positions[n][i]) for n in names))
            for i in range(len(batch))]
    common = Counter(keys).most_common(1)[0][0]
    rows = [i for i, k in enumerate(keys) if k == common]
    return batch.select(rows).trimmed()


def effect_metric(base_last: torch.Tensor, batch: TaskBatch) -> Callable:
    """A patching metric (see :func:`~modelweave.metrics.scores.metric_on_last`): the Eq. 1
    effect against the unpatched run's last-token logits ``base_last`` [N, vocab]."""
    r, rc = batch.answers, batch.wrong_ids[:, 0]

    def metric(last: torch.Tensor) -> torch.Tensor:  # [G, N, vocab] -> [G, N]
        return prob_change_effect(base_last, last, r, rc)

    return metric


@dataclass
class PositionEffects:
    """Mean Eq. 1 effect of patching each component at each named position.

    Attributes:
        heads: [n_layers, n_heads, n_positions]; mlps: [n_layers, n_positions].
        positions: the position names (columns); n: prompts used.
    """

    heads: torch.Tensor
    mlps: torch.Tensor
    positions: tuple[str, ...]
    n: int

    def head_ranking(self) -> list[tuple[int, int]]:
        """Heads by effect averaged over positions, largest first."""
        mean = self.heads.mean(-1)
        order = mean.flatten().argsort(descending=True).tolist()
        return [divmod(i, mean.shape[1]) for i in order]

    def to_dict(self) -> dict:
        return {"heads": self.heads.tolist(), "mlps": self.mlps.tolist(),
                "positions": list(self.positions), "n": self.n}

    @classmethod
    def from_dict(cls, data: dict) -> PositionEffects:
        return cls(torch.tensor(data["heads"]), torch.tensor(data["mlps"]),
                   tuple(data["positions"]), data["n"])


def position_effects(model: Model, batch: TaskBatch, positions=POSITIONS, *,
                     max_rows: int = 512,
                     progress: Progress = None) -> PositionEffects:
    """Eq. 1 effect of patching every head (``hook_z``) and MLP (``hook_post``) from the
    counterfactual into the clean run at each named position, on the exact fast path.

    ``batch`` is reduced to its largest group of aligned prompts (:func:`uniform_rows`).
    ``progress`` phase ``"effects"``: units patched (heads and MLPs at every position)."""
    part = uniform_rows(batch, positions)
    c = model.cfg
    index = [int(part.positions[name][0]) for name in positions]
    sites = [f"blocks.{L}.{kind}" for L in range(c.n_layers)
             for kind in ("attn.hook_z", "mlp.hook_post")]
    _, source = model.run_with_cache(part.corrupt, sites)
    base_logits, base = base_run(model, part.clean, sites)
    metric = effect_metric(final_logits(base_logits, part), part)
    out, steps = {}, Steps(progress, "effects", c.n_layers * len(index) * (c.n_heads + 1))
    for kind, grid, width in (("attn.hook_z", "heads-by-pos", c.n_heads),
                              ("mlp.hook_post", "neurons", None)):
        units = [Unit(L, p, h) for L in range(c.n_layers) for p in index
                 for h in (range(width) if width else [None])]
        raw = patch_units(model, part, base, source, grid, units, metric, max_rows,
                          steps.within())
        values = torch.tensor([raw[u] for u in units])
        out[kind] = values.view(c.n_layers, len(index), -1).permute(0, 2, 1)
    return PositionEffects(out["attn.hook_z"], out["mlp.hook_post"][:, 0], tuple(positions),
                           len(part))


HEAD_COUNTS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500)


@dataclass
class HeadCurve:
    """Faithfulness of "all MLPs + top-n heads" for each n; ``chosen`` the smallest n reaching
    the target (or the best n when none does)."""

    counts: list[int]
    faithfulness: list[float]
    chosen: int
    heads: list[tuple[int, int]]

    def to_dict(self) -> dict:
        return {"counts": self.counts, "faithfulness": self.faithfulness,
                "chosen": self.chosen, "heads": [list(h) for h in self.heads]}

    @classmethod
    def from_dict(cls, data: dict) -> HeadCurve:
        return cls(data["counts"], data["faithfulness"], data["chosen"],
                   [tuple(h) for h in data["heads"]])


def head_curve(model: Model, evaluator: NodeEvaluator, ranking: list[tuple[int, int]], *,
               target: float = 0.9, counts=HEAD_COUNTS,
               progress: Progress = None) -> HeadCurve:
    """Faithfulness of every MLP plus the first n heads of ``ranking``, for n in ``counts``
    (capped at the number of heads), stopping once the target is reached. ``progress`` phase
    ``"heads"``: circuits evaluated (of all counts; ends at the total when it stops early)."""
    if not 0 < target <= 1.5:
        raise TaskError(f"target faithfulness must be in (0, 1.5], got {target}")
    mlps = frozenset(range(model.cfg.n_layers))
    ns = sorted({min(n, len(ranking)) for n in counts} | {len(ranking)})
    done, values, steps = [], [], Steps(progress, "heads", len(ns))
    for n in ns:
        done.append(n)
        values.append(evaluator.faithfulness(NodeCircuit(frozenset(ranking[:n]), mlps)))
        steps.advance()
        if values[-1] >= target:
            break
    steps.set(steps.total)
    hits = [n for n, f in zip(done, values, strict=True) if f >= target]
    chosen = hits[0] if hits else done[max(range(len(values)), key=values.__getitem__)]
    return HeadCurve(done, values, chosen, list(ranking[:chosen]))
