"""Checking a circuit: faithfulness, MIB's CPR and CMD, and the smallest faithful circuit.

A circuit is run with its own edges clean and every other edge carrying the sender's value
from the corrupted run (``intervention="patching"``, MIB's default) or the sender's mean over
the corrupted prompts, per position (``"mean"``). Its faithfulness is

    f(C) = (m(C) - m(empty)) / (m(model) - m(empty)),

``m`` the metric averaged over prompts, ``m(model)`` the unmodified model, ``m(empty)`` the run
with every edge corrupted. MIB's summaries over circuit sizes ``k`` (fractions of all edges,
:data:`PERCENTAGES`), by the trapezoid rule over ``k``, without clipping:

- CPR (higher is better): area under ``f`` for the circuits of the top-k *signed* scores;
- CMD (lower is better): area under ``|1 - f|`` for the top-k *absolute* scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..engine.ablation import MeanAccumulator, replacement
from ..metrics.functional import normalize
from ..models import Model
from ..names import INTERVENTIONS
from ..progress import Progress, Steps
from ..tasks import TaskBatch
from .circuit import Circuit, prune
from .eap import chunks
from .graph import CircuitError
from .objective import check_metric, last_logits, per_example
from .runs import patched_logits, sender_outputs
from .wiring import check_model

PERCENTAGES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class CircuitEvaluator:
    """Runs circuits on one batch; the corrupted sender outputs are computed once.

    Args:
        metric: task metric or ``"kl"`` (scored as -KL(model || circuit)).
        intervention: ``"patching"`` or ``"mean"`` (see the module docstring).
        batch_size: prompts per pass.
    """

    def __init__(self, model: Model, batch: TaskBatch, metric: str = "logit_diff",
                 intervention: str = "patching", batch_size: int = 16):
        if intervention not in INTERVENTIONS:
            raise CircuitError(f"intervention must be one of {INTERVENTIONS}, got {intervention!r}")
        self.model, self.metric, self.intervention = model, check_metric(metric), intervention
        self.graph = check_model(model)
        self.n = len(batch)
        self.parts: list[tuple[TaskBatch, torch.Tensor, torch.Tensor]] = []
        full, full_rows = 0.0, []
        for part in chunks(batch.to(model.device), batch_size):
            logits = model.forward(part.clean, attention_mask=part.mask)
            _, corrupted = sender_outputs(model, part.corrupt, part.mask)
            reference = last_logits(logits, part)
            values = per_example(metric, logits, part, reference)
            full += float(values.sum())
            full_rows.append(values[0].detach().cpu())
            self.parts.append((part, corrupted, reference))
        if intervention == "mean":
            self._use_means()
        self.full = full / self.n
        #: [N] per-prompt metric of the model and of the empty circuit (float64 numpy)
        self.full_rows = torch.cat(full_rows).double().numpy()
        self._cache: dict[bytes, float] = {}
        self._rows: dict[bytes, np.ndarray] = {}
        empty = torch.zeros_like(self.graph.real_edges)
        self.empty = float(self.score(empty)[0])
        self.empty_rows = self._last_rows[0]

    def _use_means(self) -> None:
        """Replace corrupted outputs by their mean over the corrupted prompts at each position
        (:mod:`modelweave.engine.ablation`, ``per="position"``)."""
        acc = MeanAccumulator("position")
        for part, corrupted, _ in self.parts:
            acc.add(corrupted, part.mask)
        means = acc.means()
        self.parts = [(p, replacement("mean", c, reference=means), r)
                      for p, c, r in self.parts]

    def score(self, in_graph: torch.Tensor, pruned: bool = True) -> torch.Tensor:
        """Mean metric of circuits: ``in_graph`` [N, R] or [G, N, R] bool -> [G].

        ``pruned``: prune each edge set first (MIB); ``False`` runs exactly the edges given."""
        stacked = in_graph.reshape(-1, *self.graph.real_edges.shape)
        kept = torch.stack([prune(self.graph, g) for g in stacked]) if pruned else stacked
        removed = (self.graph.real_edges & ~kept).to(self.model.device)
        total = torch.zeros(len(stacked))
        rows = []
        for part, corrupted, reference in self.parts:
            logits = patched_logits(self.model, part.clean, corrupted, removed, part.mask)
            values = per_example(self.metric, logits, part, reference)
            total += values.sum(1).cpu()
            rows.append(values.detach().cpu())
        #: [G, N] the per-prompt metric of the last call's circuits (float64 numpy)
        self._last_rows = torch.cat(rows, dim=1).double().numpy()
        return total / self.n

    def faithfulness(self, in_graph: torch.Tensor) -> float:
        """f(C) of one circuit's edges [N, R] (memoised, with its per-prompt metric)."""
        key = prune(self.graph, in_graph).numpy().tobytes()
        if key not in self._cache:
            value = float(self.score(in_graph)[0])
            self._rows[key] = self._last_rows[0]
            self._cache[key] = normalize(value, self.full, self.empty)
        return self._cache[key]

    def rows(self, in_graph: torch.Tensor) -> np.ndarray:
        """[N] per-prompt metric of one circuit (pruned), from the memo when it was run."""
        key = prune(self.graph, in_graph).numpy().tobytes()
        if key not in self._rows:
            self.faithfulness(in_graph)
        return self._rows[key]


def area(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Trapezoid-rule area under ``ys`` over ``xs``."""
    return float(sum((x2 - x1) * (y1 + y2) / 2
                     for x1, x2, y1, y2 in zip(xs, xs[1:], ys, ys[1:], strict=False)))


def faithfulness_curve(circuit: Circuit, evaluator: CircuitEvaluator,
                       percentages: Sequence[float] = PERCENTAGES,
                       progress: Progress = None) -> dict:
    """Faithfulness of the top-k circuits, signed and absolute, with CPR and CMD.

    ``progress`` phase ``"curve"``: circuits evaluated of ``2 * len(percentages)``.

    Returns:
        a JSON-ready dict: ``percentages``, ``edges`` (kept after pruning, per k; signed and
        absolute), ``faithfulness_signed``, ``faithfulness_abs``, ``cpr``, ``cmd``, the metric
        of the model (``full``) and of the empty circuit (``empty``), ``metric`` and
        ``intervention``. Also stored on ``circuit.curve``.
    """
    circuit.check_model(evaluator.graph, evaluator.model.name)
    curves: dict[str, list] = {}
    steps = Steps(progress, "curve", 2 * len(percentages))
    for absolute, name in ((False, "signed"), (True, "abs")):
        values, sizes = [], []
        for p in percentages:
            chosen = circuit.top_fraction(p, absolute)
            values.append(evaluator.faithfulness(chosen.in_graph))
            sizes.append(chosen.n_edges)
            steps.advance()
        curves[name], curves[f"edges_{name}"] = values, sizes
    result = {
        "percentages": list(percentages), "edges_signed": curves["edges_signed"],
        "edges_abs": curves["edges_abs"], "faithfulness_signed": curves["signed"],
        "faithfulness_abs": curves["abs"], "cpr": area(percentages, curves["signed"]),
        "cmd": area(percentages, [abs(1 - f) for f in curves["abs"]]),
        "full": evaluator.full, "empty": evaluator.empty, "metric": evaluator.metric,
        "intervention": evaluator.intervention,
    }
    circuit.curve = result
    return result


@dataclass
class MinimalCircuit:
    """Result of :func:`minimal_circuit`: the circuit, its faithfulness, whether it reached
    the target, and every size tried (``trials``: n edges requested -> faithfulness)."""

    circuit: Circuit
    faithfulness: float
    target: float
    reached: bool
    trials: dict[int, float]
    size: int = 0  # the top-n requested (before pruning)


def minimal_circuit(circuit: Circuit, evaluator: CircuitEvaluator, target: float = 0.9,
                    absolute: bool = False) -> MinimalCircuit:
    """The smallest top-n circuit with faithfulness >= ``target``.

    Edges are ranked by signed score (``absolute=False``, the circuits CPR measures): edges
    that work against the behaviour are left out rather than counted as important.

    Sizes double from 1 edge until the target is reached, then a bisection finds the smallest
    size between the last failing and the first passing one (faithfulness is not monotone in
    n, so this is the smallest *found*). If no size reaches the target, the most faithful
    circuit tried is returned with ``reached=False``.
    """
    if not target > 0:
        raise CircuitError(f"target faithfulness must be positive, got {target}")
    total = circuit.graph.n_edges
    trials: dict[int, float] = {}

    def f(n: int) -> float:
        if n not in trials:
            trials[n] = evaluator.faithfulness(circuit.top(n, absolute).in_graph)
        return trials[n]

    low, n = 0, 1
    while f(n) < target and n < total:
        low, n = n, min(2 * n, total)
    if f(n) >= target:
        high = n
        while high - low > 1 and high - low > high // 64:  # to within ~1.5% of the size
            mid = (low + high) // 2
            low, high = (low, mid) if f(mid) >= target else (mid, high)
        best = high
    else:
        best = max(trials, key=lambda k: (trials[k], -k))
    chosen = circuit.top(best, absolute)
    return MinimalCircuit(chosen, trials[best], target, trials[best] >= target, trials, best)
