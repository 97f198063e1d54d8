"""The whole bag-of-heuristics analysis of one model, one operator at a time.

:func:`find_heuristics` runs, for each operator:

1. prompts: correctly answered prompts with counterfactuals (:mod:`.prompts`), split into a
   discovery set (``n_discovery``, the paper's 50) and an evaluation set (the rest);
2. reference means per position over prompts of ``reference_operators`` (default: the
   analysed operators; a random ``n_reference`` legal prompts of each), for mean ablation;
3. localisation: heads and MLPs patched by position with the Eq. 1 effect; heads chosen from
   the faithfulness-vs-heads curve (all MLPs in the circuit) (:mod:`.localize`);
4. neurons: attribution of every neuron at the last position, ranked by mean + std; the top
   ``n_confirm`` re-measured by exact patching; the first layer where a probe reads the answer;
   the faithfulness-vs-k curve of top-k neurons per layer from that layer (:mod:`.neurons`);
5. heuristics: key and key-value maps of the top ``classify_k`` neurons per layer over the
   operator's grid, classified (:mod:`.classify`), beside three nulls classified the same way
   (random neurons of the same layers, the same neurons on the base model, prompt-permuted
   maps; :mod:`.nulls`);
6. knockouts of the heuristics implemented by at least ``min_neurons`` neurons (the
   ``max_knockouts`` with most neurons) and per-prompt knockouts (:mod:`.knockout`).

Each stage's wall time is recorded in ``OperatorResult.seconds``.

**Layer range.** Neurons are subset and classified from ``first_layer`` to the last layer. Its
default is not a fixed number: it is the first layer whose residual stream at the last position
decodes the answer token on held-out prompts (the evaluation set, never the discovery prompts
the neurons are ranked on) better than the majority-class baseline by ``decodable_margin``
(0.1), with the paired bootstrap interval of the gain above 0 (:func:`.neurons.decoding`); the
paper's rule ("from the first layer a probe reads the answer") with the baseline it lacks. A
fixed accuracy threshold is not used: on the + grid of operands 0-99 always answering "1"
already scores 0.51. If no layer is decodable, every layer is (``first_layer`` 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ...circuits.node_faithfulness import NodeEvaluator
from ...circuits.nodes import PositionMeans, position_means
from ...models import Model
from ...models.finetune import EXCLUDED
from ...models.parts import is_gated as gated_mlp
from ...progress import Progress, Steps, nested
from ...tasks import TaskBatch, TaskError
from ...tasks.arith import parse_operators
from .classify import HeuristicMatch, classify_maps
from .knockout import Knockout, PromptKnockout, heuristic_knockout, prompt_knockout
from .localize import HeadCurve, PositionEffects, head_curve, position_effects
from .maps import GridActivations, NeuronMaps, grid_activations
from .neurons import (
    Decoding,
    NeuronCurve,
    decoding,
    exact_neuron_effects,
    first_decodable_layer,
    neuron_attribution,
    neuron_curve,
    rank_neurons,
    top_neurons,
)
from .nulls import NULLS, NullResult, check_base, classification_nulls, observed_share
from .prompts import arithmetic_batch, grid_batch


@dataclass
class Settings:
    """Parameters of :func:`find_heuristics` (defaults: the paper's where they apply)."""

    operators: tuple[str, ...] = ("+",)
    op_min: int = 0
    op_max: int = 100
    result_max: int | None = None
    step: int = 0
    n_prompts: int = 400
    n_discovery: int = 50
    n_eval: int = 200
    n_reference: int = 512
    head_target: float = 0.9
    neuron_target: float = 0.9
    decodable: str = "probe"
    decodable_margin: float = 0.1
    first_layer: int | None = None
    n_confirm: int = 20
    classify_k: int = 50
    grid_fraction: float = 1.0
    threshold: float = 0.6
    min_neurons: int = 10
    max_knockouts: int = 20
    knockout_per_layer: tuple[int, ...] = (5, 10, 25)
    reference_operators: tuple[str, ...] | str | None = None  # None: the analysed operators
    spaces: bool = False
    seed: int = 0
    nulls: tuple[str, ...] = NULLS
    null_draws: int = 100
    permutation_draws: int = 20
    null_alpha: float = 0.05

    def check(self, model: Model) -> Settings:
        """Raise a clear :class:`TaskError` for a setting this model cannot take."""
        n = model.cfg.n_layers
        if self.first_layer is not None and not 0 <= self.first_layer < n:
            raise TaskError(f"first_layer {self.first_layer} out of range (model has {n} "
                            f"layers: 0..{n - 1})")
        return self.check_values()

    def check_values(self) -> Settings:
        """The checks that need no model (a command runs them before loading one)."""
        if self.first_layer is not None and self.first_layer < 0:
            raise TaskError(f"first_layer must be >= 0, got {self.first_layer}")
        if not 0 < self.grid_fraction <= 1:
            raise TaskError(f"grid_fraction must be in (0, 1], got {self.grid_fraction}")
        for name, low in (("step", 0), ("classify_k", 1), ("n_discovery", 1), ("n_eval", 1),
                          ("n_prompts", 2)):
            value = getattr(self, name)
            if value is not None and value < low:  # n_prompts None: every legal prompt
                raise TaskError(f"{name} must be >= {low}, got {value}")
        if self.decodable not in ("probe", "lens"):
            raise TaskError(f"decodability method must be 'probe' or 'lens', got "
                            f"{self.decodable!r}")
        if not 0 <= self.decodable_margin < 1:
            raise TaskError(f"decodability margin must be in [0, 1), got {self.decodable_margin}")
        if not 0 < self.threshold <= 1:
            raise TaskError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.null_draws < 1 or self.permutation_draws < 1:
            raise TaskError(f"null_draws and permutation_draws must be >= 1, got "
                            f"{self.null_draws} and {self.permutation_draws}")
        unknown = sorted(set(self.nulls) - set(NULLS))
        if unknown:
            raise TaskError(f"unknown null {unknown[0]!r}; nulls are {', '.join(NULLS)}")
        return self

    def prompts(self, model: Model, operator: str) -> TaskBatch:
        """Correct prompts of ``operator`` with counterfactuals of any requested operator."""
        return arithmetic_batch(model, operator, op_min=self.op_min, op_max=self.op_max,
                                result_max=self.result_max, n=self.n_prompts,
                                counterfactual_operators=self.operators, step=self.step,
                                spaces=self.spaces, seed=self.seed)

    def grid(self, model: Model, operator: str, n: int | None = None) -> TaskBatch:
        """Legal prompts of ``operator`` (``grid_fraction`` of them, or ``n`` random ones)."""
        return grid_batch(model, operator, op_min=self.op_min, op_max=self.op_max,
                          result_max=self.result_max,
                          fraction=1.0 if n is not None else self.grid_fraction, n=n,
                          step=self.step, spaces=self.spaces, seed=self.seed)


@dataclass
class OperatorResult:
    """Everything :func:`find_heuristics` found for one operator (JSON via ``to_dict``; the
    maps are tensors saved beside it)."""

    operator: str
    n_discovery: int
    n_eval: int
    dropped: dict
    effects: PositionEffects
    heads: HeadCurve
    circuit_faithfulness: float
    decodability: list[float]
    ranking: torch.Tensor  # [n_layers, d_mlp] mean + std attribution
    confirm: dict
    neurons: NeuronCurve
    maps: NeuronMaps
    matches: dict[tuple[int, int], list[HeuristicMatch]]
    knockouts: list[Knockout]
    prompt_knockouts: list[PromptKnockout]
    seconds: dict = field(default_factory=dict)
    decoding: Decoding | None = None
    nulls: dict[str, NullResult] = field(default_factory=dict)

    @property
    def share_matched(self) -> float:
        """Share of the classified top neurons that match at least one heuristic (never a
        finding alone: see :attr:`nulls`)."""
        return sum(bool(m) for m in self.matches.values()) / max(len(self.matches), 1)

    def share_matched_ci(self) -> list[float]:
        """95% bootstrap interval (over the classified neurons) of :attr:`share_matched`."""
        agg = observed_share([{m.name for m in ms} for ms in self.matches.values()])
        return [agg["ci_low"], agg["ci_high"]]

    def family_counts(self) -> dict[int, dict[str, int]]:
        """layer -> heuristic family -> number of neurons with a match of that family."""
        out: dict[int, dict[str, int]] = {}
        for (layer, _), ms in self.matches.items():
            for family in {m.family for m in ms}:
                out.setdefault(layer, {}).setdefault(family, 0)
                out[layer][family] += 1
        return out

    def heuristic_neurons(self) -> dict[str, list[tuple[int, int]]]:
        """heuristic name -> the neurons implementing it."""
        out: dict[str, list] = {}
        for neuron, ms in self.matches.items():
            for m in ms:
                out.setdefault(m.name, []).append(neuron)
        return out


def _timed(seconds: dict, name: str):
    class _T:
        def __enter__(self):
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            seconds[name] = round(time.perf_counter() - self.t, 2)
    return _T()


def reference_means(model: Model, s: Settings, progress: Progress = None) -> PositionMeans:
    """Per-position means over legal prompts of ``reference_operators`` (default: the
    operators analysed, ``s.operators``; the paper uses all four on the full grid, which
    averages in operators a model may never have learned: give ``("+", "-", "*", "/")`` for
    it), ``n_reference`` random ones of each, so operators are balanced. A fine-tune's
    training prompts are left out (:mod:`.prompts`). ``progress`` phase ``"means"``
    (:func:`~modelweave.circuits.nodes.position_means`)."""
    ops = parse_operators(s.reference_operators or s.operators)
    picked = [s.grid(model, op, n=s.n_reference) for op in ops]
    width = max(int(g.lengths.max()) for g in picked)
    pad = model.tokenization.pad_token_id

    def padded(t):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad)

    tokens = torch.cat([padded(g.clean) for g in picked])
    mask = torch.cat([torch.nn.functional.pad(g.mask, (0, width - g.mask.shape[1]))
                      for g in picked])
    return position_means(model, tokens, mask, progress=progress)


def split_prompts(batch: TaskBatch, s: Settings) -> tuple[TaskBatch, TaskBatch]:
    """The discovery set (the first ``n_discovery`` prompts, at most half) and the evaluation
    set (up to ``n_eval`` of the rest).

    Raises:
        TaskError: no prompt is left for evaluation (the numbers, with the fine-tune's
            training prompts excluded, in one line).
    """
    n = len(batch)
    n_disc = min(s.n_discovery, max(1, n // 2))
    if n - n_disc < 1:
        excluded = batch.dropped.get(EXCLUDED, 0)
        raise TaskError(f"{n} correct prompt(s) after excluding {excluded} training prompt(s) "
                        f"of the fine-tune (dropped: {dict(batch.dropped)}); {n_disc} go to "
                        "discovery and none is left for evaluation: widen the grid or draw "
                        "more (n_prompts)")
    return batch.select(slice(0, n_disc)), batch.select(slice(n_disc, n_disc + s.n_eval))


def decode(model: Model, heldout: TaskBatch, s: Settings) -> Decoding:
    """:func:`.neurons.decoding` of ``heldout`` with the settings' method and margin."""
    return decoding(model, heldout, s.decodable, s.decodable_margin, seed=s.seed)


def classify_top(model: Model, operator: str, s: Settings, ranking: torch.Tensor, first: int,
                 *, base: Model | None = None, progress: Progress = None,
                 seconds: dict | None = None, grid: TaskBatch | None = None,
                 acts: GridActivations | None = None, base_acts: GridActivations | None = None,
                 ) -> tuple[NeuronMaps, dict, dict[str, NullResult]]:
    """Stage 5: maps of the top ``classify_k`` neurons per layer of ``ranking`` [n_layers,
    d_mlp] from ``first`` over the operator's grid (``grid``, default ``s.grid``), their
    matches (neuron -> matches) and the nulls of :mod:`.nulls` (``s.nulls``; ``base``: the
    base model for the base null). ``acts`` / ``base_acts``: the grid's activations on the
    model / the base model when already computed (shared across seeds of prompts: they do not
    depend on the ranking). Wall times go into ``seconds`` (``maps``, ``classify``,
    ``nulls``)."""
    sec = {} if seconds is None else seconds
    c = model.cfg
    with _timed(sec, "maps"):
        grid = s.grid(model, operator) if grid is None else grid
        top = top_neurons(ranking, s.classify_k, range(first, c.n_layers))
        neurons = [(L, n) for L, idx in top.items() for n in idx]
        if acts is None:
            acts = grid_activations(model, grid, range(first, c.n_layers), progress=progress)
        maps = acts.maps(model, neurons)
    gated = is_gated(model)

    def classify(key, kv):
        return classify_maps(key, maps.op1, maps.op2, operator, kv_maps=kv,
                             threshold=s.threshold, gated=gated, candidates=candidates)

    with _timed(sec, "classify"):
        from .families import build_candidates

        candidates = build_candidates(maps.op1, maps.op2, operator)
        found = classify(maps.key, maps.kv)
        matches = dict(zip(neurons, found, strict=True))
    with _timed(sec, "nulls"):
        nulls = classification_nulls(model, acts, maps, found, classify, base=base, grid=grid,
                                     base_acts=base_acts,
                                     which=s.nulls, draws=s.null_draws,
                                     permutations=s.permutation_draws, seed=s.seed,
                                     alpha=s.null_alpha) if neurons else {}
    del acts
    return maps, matches, nulls


def analyse_operator(model: Model, operator: str, s: Settings, means: PositionMeans,
                     progress: Progress = None, base: Model | None = None) -> OperatorResult:
    """Stages 1 and 3-6 of the module docstring for one operator (``base``: the base model
    of the base-model null, None: not computed).

    ``progress`` phases, each as ``"<operator>/<phase>"``: ``prompts``, ``effects`` (heads and
    MLPs by position), ``heads`` (head curve), ``attribution`` (neuron attribution and its
    exact check), ``neurons`` (neuron curve), ``maps`` (key maps over the grid),
    ``knockouts``."""
    p = nested(progress, operator)
    sec: dict = {}
    c = model.cfg
    with _timed(sec, "prompts"):
        stage = Steps(p, "prompts", 1)
        batch = s.prompts(model, operator)
        disc, evalset = split_prompts(batch, s)
        stage.advance()
    with _timed(sec, "localise"):
        effects = position_effects(model, disc, progress=p)
        evaluator = NodeEvaluator(model, evalset, means)
        heads = head_curve(model, evaluator, effects.head_ranking(), target=s.head_target,
                           progress=p)
        circuit_f = heads.faithfulness[heads.counts.index(heads.chosen)]
    with _timed(sec, "neurons"):
        stage = Steps(p, "attribution", 1)
        attribution = neuron_attribution(model, disc)
        ranking = rank_neurons(attribution)
        flat = ranking.flatten().topk(min(s.n_confirm, ranking.numel())).indices.tolist()
        chosen = [divmod(i, c.d_mlp) for i in flat]
        exact = exact_neuron_effects(model, disc, chosen) if chosen else torch.zeros(0)
        attributed = attribution.mean(0)
        confirm = {"neurons": [list(x) for x in chosen], "exact": exact.tolist(),
                   "attribution": [float(attributed[L, n]) for L, n in chosen]}
        stage.advance()
        decoded = decode(model, evalset if len(evalset) >= 20 else batch, s)
        first = s.first_layer if s.first_layer is not None else first_decodable_layer(decoded)
        curve = neuron_curve(evaluator, heads.heads, ranking, first, target=s.neuron_target,
                             progress=p)
    maps, matches, nulls = classify_top(model, operator, s, ranking, first, base=base,
                                        progress=p, seconds=sec)
    with _timed(sec, "knockouts"):
        neurons = maps.neurons
        result = OperatorResult(operator, len(disc), len(evalset), batch.dropped, effects, heads,
                                circuit_f, decoded.accuracy, ranking, confirm, curve, maps,
                                matches, [], [], sec, decoded, nulls)
        knock_set = batch.select(slice(len(disc), None))
        owned = sorted(result.heuristic_neurons().items(), key=lambda kv: (-len(kv[1]), kv[0]))
        big = [(name, owners) for name, owners in owned if len(owners) >= s.min_neurons]
        stage = Steps(p, "knockouts", len(big[: s.max_knockouts]) + len(s.knockout_per_layer))
        for name, owners in big[: s.max_knockouts]:  # the heuristics with the most neurons
            try:
                result.knockouts.append(heuristic_knockout(model, knock_set, name, owners,
                                                           neurons, seed=s.seed))
            except TaskError:  # it holds for all or none of the prompts: nothing to compare
                continue
            finally:
                stage.advance()
        for per_layer in s.knockout_per_layer:
            result.prompt_knockouts.append(prompt_knockout(model, knock_set, matches, neurons,
                                                           per_layer, seed=s.seed))
            stage.advance()
    return result


def is_gated(model: Model) -> bool:
    """Whether the MLP is gated (SwiGLU-style), so neurons can fire negatively."""
    return gated_mlp(model)


def find_heuristics(model: Model, operators="+", progress: Progress = None,
                    base: Model | None = None, **settings) -> list[OperatorResult]:
    """Run the analysis (module docstring) for each operator; ``settings``: the fields of
    :class:`Settings`; ``base``: the base model (e.g. the un-fine-tuned model of a fine-tune)
    whose maps of the same neurons are the base-model null (None: that null is reported as
    not computed). ``progress`` phases: ``"means"`` (reference means), then each operator's
    (:func:`analyse_operator`)."""
    s = Settings(operators=parse_operators(operators), **settings).check(model)
    if base is not None:
        check_base(model, base)
    means = reference_means(model, s, progress)
    return [analyse_operator(model, op, s, means, progress, base) for op in s.operators]
