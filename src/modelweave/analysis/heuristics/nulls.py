"""Nulls for heuristic classification: is "most top neurons match a heuristic" special?

The chance guard of :mod:`.classify` removes unstructured noise only: a neuron whose map is
merely smooth in op1 matches coarse ranges, and such neurons are common in any model, trained
on arithmetic or not. A share of matched neurons is therefore reported only as an enrichment
over three nulls, each classified with exactly the same classifier and settings
(:func:`classify_maps` with the same candidates, threshold, gating and chance guard):

- ``random``: random neurons of the same layers as the top neurons, the same count per layer
  (:func:`~modelweave.metrics.nulls.matched_draws` over
  :func:`~modelweave.metrics.nulls.neurons_universe`, the top neurons excluded), on the same
  grid of the same model. Null value of a draw: its share matched.
- ``base``: the same neurons' maps computed on the base model (the un-fine-tuned model when a
  fine-tune is analysed). One set, paired with the observed one neuron by neuron: a draw swaps
  each neuron's (analysed, base) outcome with probability 1/2 (a paired randomisation test of
  "the fine-tune's neurons match no more often than the same neurons before fine-tuning").
- ``permuted``: the same key and key-value maps with the prompt axis permuted
  (:func:`~modelweave.metrics.nulls.permutation`, one derangement per draw, the same for key
  and key-value maps and for every neuron): every marginal kept, the pairing of value and
  prompt broken.

For each null: the observed share against the draws' shares
(:func:`~modelweave.metrics.nulls.compare`: null mean with its 2.5-97.5% range, ratio =
enrichment, one-sided p), the null's own share, and per label (heuristic name) the observed
share of neurons with that label against the same null (``enriched``: ratio > 1 and p <=
``alpha``, no multiplicity correction; ``labels`` lists the labels of the observed neurons
by count).

Shapes: maps [n_neurons, N]; ``matched`` [n_neurons] bool; neurons ``(layer, index)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ...metrics.nulls import (
    NullComparison,
    NullError,
    compare,
    matched_draws,
    neurons_universe,
    permutation,
)
from ...metrics.uncertainty import bootstrap_stat
from ...models import Model
from ...tasks import TaskBatch, TaskError
from .classify import HeuristicMatch
from .maps import GridActivations, NeuronMaps, neuron_maps

Classifier = Callable[[torch.Tensor, torch.Tensor], list[list[HeuristicMatch]]]
NULLS = ("random", "base", "permuted")


def neuron_name(neuron: tuple[int, int]) -> str:
    """``(layer, index)`` -> ``mL.nI``."""
    return f"m{neuron[0]}.n{neuron[1]}"


def parse_neuron(name: str) -> tuple[int, int]:
    """``mL.nI`` -> ``(layer, index)``."""
    layer, index = name[1:].split(".n")
    return int(layer), int(index)


def labels_of(matches: Sequence[list[HeuristicMatch]]) -> list[set[str]]:
    """Per neuron, the set of heuristic names it matches."""
    return [{m.name for m in ms} for ms in matches]


def share_matched(matches: Sequence[list[HeuristicMatch]]) -> float:
    """Share of neurons with at least one match."""
    return sum(bool(m) for m in matches) / max(len(matches), 1)


@dataclass
class NullResult:
    """One null beside the observed classification (see the module docstring).

    Attributes:
        name: ``random``, ``base`` or ``permuted``; computed: False (with ``reason``) when it
            could not be drawn (no base model given, a layer too small...).
        share: the observed share matched vs the null (a NullComparison dict).
        null_share: the null's own share matched (mean over draws, or the base set's share)
            with its 95% interval (bootstrap over neurons for ``base``, the draws' range else).
        labels: label -> {observed, null_mean, ratio, p_value, enriched} for the observed
            labels, most common first.
    """

    name: str
    computed: bool
    reason: str = ""
    share: dict | None = None
    null_share: dict | None = None
    labels: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> NullResult:
        return cls(**data)

    @property
    def comparison(self) -> NullComparison | None:
        """:attr:`share` as a NullComparison (a ratio over a zero null mean is NaN)."""
        if not self.share:
            return None
        ratio = self.share["ratio"]
        return NullComparison(**{**self.share, "ratio": float("nan") if ratio is None
                                 else ratio})


def _finite(data: dict) -> dict:
    """``data`` with non-finite floats (a ratio over a zero null mean) as None (JSON-safe,
    equal after a round trip)."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in data.items()}


def _label_table(observed: list[set[str]], null_sets: list[list[set[str]]], what: str,
                 alpha: float, paired: list[set[str]] | None = None,
                 swaps: np.ndarray | None = None) -> dict:
    """Per observed label: its share among the observed neurons vs the null draws'."""
    counts = Counter(label for s in observed for label in s)
    n = max(len(observed), 1)
    out = {}
    for label, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if paired is not None and swaps is not None:
            obs_has = np.array([label in s for s in observed], dtype=float)
            base_has = np.array([label in s for s in paired], dtype=float)
            values = np.where(swaps, base_has[None], obs_has[None]).mean(1)
        else:
            values = [sum(label in s for s in draw) / max(len(draw), 1) for draw in null_sets]
        c = compare(count / n, values, null=f"{what}: share with {label}")
        out[label] = _finite({"observed": c.observed, "null_mean": c.null_mean, "ratio": c.ratio,
                              "p_value": c.p_value,
                              "enriched": bool(c.p_value <= alpha and c.observed > c.null_mean)})
    return out


def _interval(values: Sequence[float]) -> dict:
    x = np.asarray(values, dtype=float)
    low, high = np.percentile(x, [2.5, 97.5])
    return {"mean": float(x.mean()), "ci_low": float(low), "ci_high": float(high),
            "n": int(x.size)}


def random_null(top: list[tuple[int, int]], matched_of: Callable[[list[tuple[int, int]]],
                dict[tuple[int, int], list[HeuristicMatch]]], observed: list[set[str]],
                d_mlp: int, *, draws: int = 100, seed: int = 0, alpha: float = 0.05,
                draw_sets: list[list[str]] | None = None) -> NullResult:
    """The ``random`` null: ``draws`` sets of random neurons matched by layer to ``top``.

    ``matched_of(neurons)`` classifies neurons (called once, on the union of the draws) and
    returns neuron -> matches. ``draw_sets``: the draws (names ``mL.nI``), else drawn here.
    """
    layers = sorted({L for L, _ in top})
    try:
        sets = draw_sets or matched_draws([neuron_name(x) for x in top],
                                          neurons_universe(layers, d_mlp), draws, seed)
    except NullError as err:
        return NullResult("random", False, str(err))
    union = sorted({parse_neuron(x) for s in sets for x in s})
    found = matched_of(union)
    null_sets = [[{m.name for m in found[parse_neuron(x)]} for x in s] for s in sets]
    rates = [sum(bool(x) for x in s) / len(s) for s in null_sets]
    what = f"random neurons of the same layers ({len(sets)} draws, same count per layer)"
    share = compare(sum(bool(x) for x in observed) / max(len(observed), 1), rates, null=what)
    return NullResult("random", True, share=_finite(share.to_dict()), null_share=_interval(rates),
                      labels=_label_table(observed, null_sets, "random neurons", alpha))


def base_null(observed: list[set[str]], base: list[set[str]] | None, *, draws: int = 1000,
              seed: int = 0, alpha: float = 0.05, reason: str = "") -> NullResult:
    """The ``base`` null: the same neurons classified on the base model (``base``, one set per
    neuron in the order of ``observed``), by a paired swap per neuron (module docstring)."""
    if base is None:
        return NullResult("base", False, reason or "no base model given (--base): the base-"
                          "model null was not computed")
    obs = np.array([bool(s) for s in observed], dtype=float)
    ref = np.array([bool(s) for s in base], dtype=float)
    rng = np.random.default_rng(seed)
    swaps = rng.random((draws, len(obs))) < 0.5
    values = np.where(swaps, ref[None], obs[None]).mean(1)
    what = f"the same neurons on the base model (paired swap, {draws} draws)"
    share = compare(float(obs.mean()), values, null=what)
    agg = bootstrap_stat(ref, seed=seed)
    return NullResult("base", True, share=_finite(share.to_dict()),
                      null_share={"mean": agg.mean, "ci_low": agg.ci_low,
                                  "ci_high": agg.ci_high, "n": agg.n},
                      labels=_label_table(observed, [], "base model", alpha, paired=base,
                                          swaps=swaps))


def permuted_null(maps: NeuronMaps, classify: Classifier, observed: list[set[str]], *,
                  draws: int = 20, seed: int = 0, alpha: float = 0.05) -> NullResult:
    """The ``permuted`` null: ``classify(key, kv)`` of the maps with the prompt axis permuted
    (one derangement per draw, :func:`~modelweave.metrics.nulls.permutation`)."""
    n = maps.key.shape[1]
    try:
        perms = [torch.as_tensor(permutation(n, seed + d)) for d in range(draws)]
    except NullError as err:
        return NullResult("permuted", False, str(err))
    null_sets = [labels_of(classify(maps.key[:, p], maps.kv[:, p])) for p in perms]
    rates = [sum(bool(x) for x in s) / max(len(s), 1) for s in null_sets]
    what = f"the same maps with prompts permuted ({draws} draws)"
    share = compare(sum(bool(x) for x in observed) / max(len(observed), 1), rates, null=what)
    return NullResult("permuted", True, share=_finite(share.to_dict()), null_share=_interval(rates),
                      labels=_label_table(observed, null_sets, "permuted maps", alpha))


def observed_share(observed: list[set[str]], seed: int = 0) -> dict:
    """The observed share matched with its 95% bootstrap interval over neurons."""
    if not observed:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    agg = bootstrap_stat(np.array([bool(s) for s in observed], dtype=float), seed=seed)
    return {"mean": agg.mean, "ci_low": agg.ci_low, "ci_high": agg.ci_high, "n": agg.n}


def classification_nulls(model: Model, acts: GridActivations, maps: NeuronMaps,
                         matches: list[list[HeuristicMatch]], classify: Classifier, *,
                         base: Model | None = None, grid: TaskBatch | None = None,
                         which: Sequence[str] = NULLS, draws: int = 100,
                         permutations: int = 20, seed: int = 0, alpha: float = 0.05,
                         chunk: int = 2048,
                         base_acts: GridActivations | None = None) -> dict[str, NullResult]:
    """The nulls of the module docstring for the top neurons' ``maps`` and ``matches``.

    ``acts``: the grid's activations of (at least) the top neurons' layers on ``model``
    (random neurons' maps are sliced from it, ``chunk`` neurons at a time); ``classify(key,
    kv)``: the classifier with the settings used for ``matches``; ``base`` and ``grid``: the
    base model and the grid its maps are computed on (``base=None``: that null says it was not
    computed; ``base_acts``: the base model's activations on that grid, when already
    computed). Returns name -> :class:`NullResult` for each of ``which``.
    """
    unknown = sorted(set(which) - set(NULLS))
    if unknown:
        raise TaskError(f"unknown null {unknown[0]!r}; nulls are {', '.join(NULLS)}")
    observed = labels_of(matches)
    out: dict[str, NullResult] = {}
    if "random" in which:
        def matched_of(neurons):
            found: dict = {}
            for start in range(0, len(neurons), chunk):
                part = neurons[start:start + chunk]
                m = acts.maps(model, part)
                found.update(zip(part, classify(m.key, m.kv), strict=True))
            return found

        out["random"] = random_null(maps.neurons, matched_of, observed, model.cfg.d_mlp,
                                    draws=draws, seed=seed, alpha=alpha)
    if "base" in which:
        sets = None
        if base is not None:
            if grid is None and base_acts is None:
                raise TaskError("the base-model null needs the grid its maps are computed on")
            check_base(model, base)
            bm = (base_acts.maps(base, maps.neurons) if base_acts is not None
                  else neuron_maps(base, grid, maps.neurons))
            sets = labels_of(classify(bm.key, bm.kv))
        out["base"] = base_null(observed, sets, seed=seed, alpha=alpha)
    if "permuted" in which:
        out["permuted"] = permuted_null(maps, classify, observed, draws=permutations,
                                        seed=seed, alpha=alpha)
    return out


def check_base(model: Model, base: Model) -> None:
    """Raise a :class:`TaskError` unless ``base`` has ``model``'s shape and vocabulary (the
    same neurons and answer tokens must exist in both)."""
    a, b = model.cfg, base.cfg
    if (a.n_layers, a.d_mlp, a.d_vocab) != (b.n_layers, b.d_mlp, b.d_vocab):
        raise TaskError(f"the base model's shape (layers {b.n_layers}, d_mlp {b.d_mlp}, vocab "
                        f"{b.d_vocab}) differs from the analysed model's ({a.n_layers}, "
                        f"{a.d_mlp}, {a.d_vocab}): the same neurons cannot be compared")
    if model.tokenizer.get_vocab() != base.tokenizer.get_vocab():
        raise TaskError("the base model's tokenizer differs from the analysed model's")
