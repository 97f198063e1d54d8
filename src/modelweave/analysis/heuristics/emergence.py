"""How heuristic neurons appear during training (Nikankin et al. 2024, §6), on checkpoints a
user can make: ``modelweave finetune ... --save-every N`` writes ``checkpoints/step-N/``.

For each checkpoint (oldest first) and one operator:

1. its correctly answered prompts (the discovery set ranks neurons by attribution; the rest
   evaluate), its accuracy on the drawn prompts, and reference means;
2. the top ``top_k`` neurons per layer from ``first_layer`` classified on the operand grid:
   the set of (heuristic, neuron) matches, and the *heuristic neurons* (those with a match);
3. the share of the final checkpoint's matches already present;
4. faithfulness ratio: F(every head + whole MLPs before ``first_layer`` + only the heuristic
   neurons that are heuristic neurons of the final checkpoint too) over F(the same with all of
   this checkpoint's heuristic neurons). Heads stay whole so the ratio isolates the neurons.
   It is a ratio of means, ``(mean m(shared) - mean m(∅)) / (mean m(all) - mean m(∅))``
   (:func:`shared_ratio`), with a bootstrap interval over the evaluation prompts: a ratio of
   two per-prompt faithfulnesses divides by prompts whose m(M) - m(∅) is ~0 and jumped
   between -2.9 and 66. It is ``None`` where this checkpoint's heuristic neurons recover less
   than ``MIN_DENOMINATOR`` of the model's own margin over the empty circuit (nothing to
   share).

A fine-tune's training prompts (recorded in each checkpoint's folder) are never among the
prompts or the grid (:mod:`.prompts`); ``excluded`` gives their count per checkpoint.

``first_layer`` is fixed across checkpoints (default: the first layer a probe decodes the
answer in the final checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...circuits.node_faithfulness import NodeEvaluator
from ...circuits.nodes import NodeCircuit
from ...metrics.stats import MIN_DENOMINATOR, Aggregate, _array
from ...metrics.uncertainty import bootstrap_stat
from ...models import Model
from ...models.finetune import EXCLUDED
from ...progress import Progress, Steps
from ...tasks import TaskBatch, TaskError
from .classify import classify_maps
from .maps import neuron_maps
from .neurons import (
    decoding,
    first_decodable_layer,
    neuron_attribution,
    rank_neurons,
    top_neurons,
)
from .pipeline import Settings, is_gated, reference_means, split_prompts


def find_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-N`` model directory under ``folder`` (or its
    ``checkpoints/``), by step."""
    folder = Path(folder)
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    found = sorted((int(p.name.split("-", 1)[1]), p) for p in folder.glob("step-*")
                   if p.is_dir() and p.name.split("-", 1)[1].isdigit())
    if not found:
        raise TaskError(f"no step-N checkpoint directories in {folder}; fine-tune with "
                        "--save-every N to make them")
    return found


@dataclass
class CheckpointMatches:
    """What one checkpoint shows: accuracy, its (heuristic, neuron) matches, its model."""

    step: int
    accuracy: float
    matches: set[tuple[str, int, int]] = field(default_factory=set)
    batch: TaskBatch | None = field(default=None, repr=False)
    excluded: int = 0

    @property
    def neurons(self) -> set[tuple[int, int]]:
        return {(L, n) for _, L, n in self.matches}


def checkpoint_matches(model: Model, step: int, operator: str, s: Settings,
                       first_layer: int, batch: TaskBatch | None = None) -> CheckpointMatches:
    """Steps 1-2 of the module docstring for one checkpoint (``batch``: its prompts, if
    already drawn)."""
    try:
        batch = batch or s.prompts(model, operator)
    except TaskError:
        return CheckpointMatches(step, 0.0)
    excluded = batch.dropped.get(EXCLUDED, 0)
    drawn = len(batch) + sum(v for k, v in batch.dropped.items() if k != EXCLUDED)
    try:
        disc, _ = split_prompts(batch, s)
    except TaskError:  # too few correct prompts to rank neurons and evaluate
        return CheckpointMatches(step, len(batch) / max(drawn, 1), excluded=excluded)
    ranking = rank_neurons(neuron_attribution(model, disc))
    top = top_neurons(ranking, s.classify_k, range(first_layer, model.cfg.n_layers))
    neurons = [(L, n) for L, idx in top.items() for n in idx]
    grid = s.grid(model, operator)
    maps = neuron_maps(model, grid, neurons)
    found = classify_maps(maps.key, maps.op1, maps.op2, operator, kv_maps=maps.kv,
                          threshold=s.threshold, gated=is_gated(model))
    return CheckpointMatches(step, len(batch) / max(drawn, 1),
                             {(m.name, L, n) for (L, n), ms in zip(neurons, found, strict=True)
                              for m in ms}, batch, excluded)


def _neuron_circuit(model: Model, first_layer: int, neurons: set) -> NodeCircuit:
    c = model.cfg
    heads = frozenset((L, h) for L in range(c.n_layers) for h in range(c.n_heads))
    by_layer: dict[int, list[int]] = {}
    for L, n in neurons:
        by_layer.setdefault(L, []).append(n)
    return NodeCircuit(heads, frozenset(range(first_layer)),
                       {L: tuple(v) for L, v in by_layer.items()})


def shared_ratio(shared, every, full, empty, *, min_fraction: float = MIN_DENOMINATOR,
                 seed: int = 0) -> Aggregate | None:
    """F(shared) / F(all) as a ratio of means over paired per-prompt metrics ([N] each):
    ``(mean shared - mean empty) / (mean every - mean empty)`` (the model's m(M) cancels),
    with its percentile-bootstrap interval over prompts. ``None`` when
    ``|mean every - mean empty|`` is below ``min_fraction * |mean full - mean empty|``."""
    s, a, f, e = (_array(x) for x in (shared, every, full, empty))
    den = abs(a.mean() - e.mean())
    if den == 0 or den < min_fraction * abs(f.mean() - e.mean()):
        return None

    def ratio(s_, a_, e_):
        return float((s_.mean() - e_.mean()) / (a_.mean() - e_.mean()))

    with np.errstate(divide="ignore", invalid="ignore"):
        return bootstrap_stat([s, a, e], ratio, seed=seed)


def emergence(checkpoints: list[tuple[int, str | Path]], operator: str = "+", *,
              load: Callable[[str | Path], Model] | None = None,
              progress: Progress = None, **settings) -> dict:
    """Run the module docstring's steps over ``checkpoints`` (``(step, model dir)``; the last
    is the final one). ``settings``: :class:`~.pipeline.Settings` fields (``first_layer``,
    ``top_k`` as ``classify_k`` ...). Returns a JSON-ready dict: steps, accuracy, matches,
    share_present, shared_faithfulness_ratio (with ``_ci``), excluded, first_layer.
    ``progress`` phases: ``"final"``
    (the final checkpoint's neurons) and ``"checkpoints"`` (checkpoints done of all)."""
    from ...models import load_model

    load = load or load_model
    s = Settings(operators=(operator,), **settings).check_values()
    steps = [step for step, _ in checkpoints]
    stage = Steps(progress, "final", 1)
    final_model = load(checkpoints[-1][1])
    batch = s.prompts(final_model, operator)
    first = s.first_layer
    if first is None:
        first = first_decodable_layer(decoding(final_model, batch, s.decodable,
                                               s.decodable_margin, seed=s.seed))
    final = checkpoint_matches(final_model, steps[-1], operator, s, first, batch)
    stage.advance()
    rows, stage = [], Steps(progress, "checkpoints", len(checkpoints))
    for i, (step, path) in enumerate(checkpoints):
        last = i == len(checkpoints) - 1
        model = final_model if last else load(path)
        found = final if last else checkpoint_matches(model, step, operator, s, first)
        share = len(found.matches & final.matches) / max(len(final.matches), 1)
        ratio = None
        if found.neurons:
            try:
                _, evalset = split_prompts(found.batch, s)
                ev = NodeEvaluator(model, evalset, reference_means(model, s))
                every = ev.values(_neuron_circuit(model, first, found.neurons))
                shared = ev.values(_neuron_circuit(model, first, found.neurons & final.neurons))
                ratio = shared_ratio(shared, every, ev.full, ev.empty, seed=s.seed)
            except TaskError:
                ratio = None
        rows.append((found, share, ratio))
        stage.advance()
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {"operator": operator, "first_layer": first, "top_k": s.classify_k, "steps": steps,
            "accuracy": [r[0].accuracy for r in rows],
            "n_matches": [len(r[0].matches) for r in rows],
            "n_heuristic_neurons": [len(r[0].neurons) for r in rows],
            "share_present": [r[1] for r in rows],
            "shared_faithfulness_ratio": [None if r[2] is None else r[2].mean for r in rows],
            "shared_faithfulness_ratio_ci": [None if r[2] is None else [r[2].ci_low,
                                                                        r[2].ci_high]
                                             for r in rows],
            "excluded": [r[0].excluded for r in rows],
            "final_matches": sorted([list(m) for m in final.matches])}
