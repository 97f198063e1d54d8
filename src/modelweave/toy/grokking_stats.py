"""Nulls and seeds for the grokking analysis (:mod:`.fourier`).

- :func:`top_share`: the share of a spectrum on its ``k`` largest frequencies. A trained
  model's key-frequency share *is* its top-``|K|`` share (the key frequencies are the largest
  ones), so the fair null applies the same selection to the null model.
- :func:`random_init_null`: the embedding's and the neurons' top-``|K|`` share in ``draws``
  freshly initialised models of the run's own config (new weight seeds, no training): what
  "the key frequencies carry 0.8" is worth when nothing was learned. Compared with
  :func:`modelweave.metrics.nulls.compare` (one-sided, greater).
- :func:`across_runs`: the headline numbers of K runs (training seeds) as a mean with a
  Student-t interval (:func:`modelweave.metrics.uncertainty.across_seeds`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..metrics.nulls import compare
from ..metrics.uncertainty import across_seeds
from ..models import Model

#: headline numbers of one grokking analysis, aggregated over runs by :func:`across_runs`
HEADLINES = ("test_acc", "swap_free_acc", "swap_trained_acc", "train_acc", "test_loss",
             "restricted_loss", "excluded_loss", "key_share", "neuron_key_share")


def top_share(spectrum: torch.Tensor, k: int) -> float:
    """Sum of the ``k`` largest shares of ``spectrum`` [p//2 + 1] (the constant, index 0,
    left out)."""
    if k < 1:
        return 0.0
    return float(spectrum[1:].sort(descending=True).values[:k].sum())


def top_keys(spectrum: torch.Tensor, k: int) -> list[int]:
    """The ``k`` frequencies (>= 1) with the largest shares."""
    return [int(i) + 1 for i in spectrum[1:].argsort(descending=True)[:k]]


def random_init_null(config, n_keys: int, draws: int = 20, *, neurons: bool = True,
                     seed: int = 1000) -> dict[str, list[float]]:
    """Top-``n_keys`` shares of ``draws`` untrained models built from ``config`` (a
    :class:`modelweave.toy.train.ToyConfig`) with weight seeds ``seed, seed + 1, ...``.

    Returns:
        ``{"key_share": [draws], "neuron_key_share": [draws]}`` (the second only with
        ``neurons``): the embedding's top-``n_keys`` share and the neurons' mean share on
        those frequencies.
    """
    from dataclasses import replace

    from .fourier import embedding_spectrum, neuron_key_share, neuron_spectrum
    from .train import build_model

    data = config.validate()
    out: dict[str, list[float]] = {"key_share": []}
    if neurons:
        out["neuron_key_share"] = []
    for i in range(draws):
        model = Model(build_model(replace(config, seed=seed + i), data).eval(),
                      name=f"random-init-{seed + i}")
        spectrum = embedding_spectrum(model)
        out["key_share"].append(top_share(spectrum, n_keys))
        if neurons:
            share, _ = neuron_key_share(neuron_spectrum(model), top_keys(spectrum, n_keys), 0)
            out["neuron_key_share"].append(share)
    return out


def null_comparisons(observed: dict, null: dict[str, list[float]], what: str) -> dict:
    """``{name}_null`` -> :meth:`modelweave.metrics.nulls.NullComparison.to_dict` for each
    null present."""
    return {f"{name}_null": compare(observed[name], values, null=what).to_dict()
            for name, values in null.items() if observed.get(name) is not None}


def headline(analysis: dict) -> dict:
    """The headline numbers of one grokking analysis (a
    :meth:`.fourier.GrokkingAnalysis.to_dict`): the last progress point's accuracies and
    losses with their intervals, the key shares."""
    last = analysis["progress"][-1] if analysis.get("progress") else {}
    out = {k: last.get(k) for k in HEADLINES if k in last}
    out.update({f"{k}_ci": last[f"{k}_ci"] for k in HEADLINES if f"{k}_ci" in last})
    key_share = analysis.get("key_share")
    if key_share is None:
        key_share = sum(analysis["embedding_spectrum"][k] for k in analysis["key_frequencies"])
    out["key_share"] = key_share
    out["neuron_key_share"] = analysis["neuron_key_share"]
    if analysis.get("neuron_key_share_ci"):
        out["neuron_key_share_ci"] = analysis["neuron_key_share_ci"]
    out["key_frequencies"] = analysis["key_frequencies"]
    return out


def across_runs(headlines: Sequence[dict]) -> dict:
    """Mean and 95% t-interval over runs of each headline number present in all of them:
    ``{name: Aggregate.to_dict()}``."""
    out = {}
    for name in HEADLINES:
        values = [h.get(name) for h in headlines]
        if values and all(v is not None for v in values):
            out[name] = across_seeds(values).to_dict()
    return out
