"""Saving and loading a heuristic analysis: JSON for the numbers, safetensors for the tensors.

Layout of a results folder::

    heuristics.json            model, settings, per operator: every number and match
    <op>.safetensors           ranking [n_layers, d_mlp], key / kv maps [n_neurons, N],
                               op1 / op2 [N], neurons [n_neurons, 2]   (op: add, sub, mul, div)

Every file is written to a temporary name and renamed, so an interrupted save leaves the old
files or the new ones, never half of one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...io import load_tensors, read_json, save_tensors, write_json
from ...tasks import TaskError
from .classify import HeuristicMatch
from .knockout import Knockout, PromptKnockout
from .localize import HeadCurve, PositionEffects
from .maps import NeuronMaps
from .neurons import Decoding, NeuronCurve
from .nulls import NullResult
from .pipeline import OperatorResult


class UnknownOperatorError(TaskError, KeyError):
    """An operator that a loaded analysis has no result for."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one plain line.
        return str(self.args[0]) if self.args else ""

OP_NAMES = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
RESULTS = "heuristics.json"


@dataclass
class HeuristicsRun:
    """A loaded analysis: ``meta`` (model, settings, ...) and one result per operator."""

    meta: dict
    results: list[OperatorResult]

    def by_operator(self, operator: str) -> OperatorResult:
        for r in self.results:
            if r.operator == operator:
                return r
        have = ", ".join(r.operator for r in self.results) or "none"
        raise UnknownOperatorError(f"no result for operator {operator!r}; operators analysed: "
                                   f"{have}")


def _numbers(r: OperatorResult) -> dict:
    return {
        "operator": r.operator, "n_discovery": r.n_discovery, "n_eval": r.n_eval,
        "dropped": r.dropped, "effects": r.effects.to_dict(), "heads": r.heads.to_dict(),
        "circuit_faithfulness": r.circuit_faithfulness, "decodability": r.decodability,
        "confirm": r.confirm, "neurons": r.neurons.to_dict(),
        "matches": [{"neuron": list(n), "matches": [asdict(m) for m in ms]}
                    for n, ms in r.matches.items()],
        "knockouts": [k.to_dict() for k in r.knockouts],
        "prompt_knockouts": [k.to_dict() for k in r.prompt_knockouts],
        "seconds": r.seconds, "share_matched": r.share_matched,
        "family_counts": {str(k): v for k, v in r.family_counts().items()},
        "decoding": r.decoding.to_dict() if r.decoding else None,
        "nulls": {k: v.to_dict() for k, v in r.nulls.items()},
    }


def top_labels(r: OperatorResult, n: int = 3) -> list[dict]:
    """The ``n`` commonest labels of the top neurons, each with its count and, per null
    computed, its enrichment (ratio, p_value, enriched)."""
    counts = sorted(((len(v), k) for k, v in r.heuristic_neurons().items()),
                    key=lambda cv: (-cv[0], cv[1]))[:n]
    out = []
    for count, name in counts:
        row = {"label": name, "neurons": count}
        for null, res in r.nulls.items():
            if res.computed and name in res.labels:
                lab = res.labels[name]
                row[null] = {k: lab[k] for k in ("null_mean", "ratio", "p_value", "enriched")}
        out.append(row)
    return out


def summary(r: OperatorResult, d_mlp: int) -> dict:
    """The headline numbers of one operator (what ``--json`` prints and a report row shows)."""
    k = r.neurons.chosen
    nulls = {}
    for name, res in r.nulls.items():
        key = "share_matched_null" + ("" if name == "random" else f"_{name}")
        nulls[key] = res.share if res.computed else {"computed": False, "reason": res.reason}
    dec = r.decoding
    decoded = {} if dec is None else {
        "decodable_layer": dec.first_layer, "decoding_majority": dec.majority,
        "decoding_margin": dec.margin,
        "first_layer_accuracy": dec.accuracy[r.neurons.first_layer],
        "first_layer_accuracy_ci": dec.accuracy_ci[r.neurons.first_layer]}
    excluded = sum(v for k, v in r.dropped.items() if k.startswith("excluded"))
    return {"operator": r.operator, "n_discovery": r.n_discovery, "n_eval": r.n_eval,
            "excluded_training_prompts": excluded, "heads": r.heads.chosen,
            "circuit_faithfulness": r.circuit_faithfulness,
            "first_layer": r.neurons.first_layer, "neurons_per_layer": k,
            "neuron_share": k / d_mlp,
            "neuron_faithfulness": dict(zip(r.neurons.counts, r.neurons.faithfulness,
                                            strict=True)).get(k),
            "classified": len(r.matches), "share_matched": r.share_matched,
            "share_matched_ci": r.share_matched_ci(), **nulls, "top_labels": top_labels(r),
            **decoded, "knockouts": len(r.knockouts), "seconds": r.seconds}


def save_results(results: list[OperatorResult], folder: str | Path, meta: dict) -> Path:
    """Write ``results`` (and ``meta``: model name, settings...) into ``folder``; returns the
    JSON path."""
    folder = Path(folder)
    for r in results:
        tensors = {"ranking": r.ranking, "key": r.maps.key, "kv": r.maps.kv, "op1": r.maps.op1,
                   "op2": r.maps.op2,
                   "neurons": torch.tensor(r.maps.neurons, dtype=torch.long).view(-1, 2)}
        save_tensors(folder / f"{OP_NAMES[r.operator]}.safetensors", tensors)
    data = {**meta, "operators": [_numbers(r) for r in results]}
    return write_json(folder / RESULTS, data, indent=1)


def load_results(folder: str | Path) -> HeuristicsRun:
    """Read a folder written by :func:`save_results` (no model needed)."""
    folder = Path(folder)
    data = read_json(folder / RESULTS)
    results = []
    for d in data.pop("operators"):
        t = load_tensors(folder / f"{OP_NAMES[d['operator']]}.safetensors")
        neurons = [tuple(x) for x in t["neurons"].tolist()]
        maps = NeuronMaps(neurons, t["key"], t["kv"], t["op1"], t["op2"], d["operator"])
        matches = {tuple(m["neuron"]): [HeuristicMatch(**x) for x in m["matches"]]
                   for m in d["matches"]}
        results.append(OperatorResult(
            d["operator"], d["n_discovery"], d["n_eval"], d["dropped"],
            PositionEffects.from_dict(d["effects"]), HeadCurve.from_dict(d["heads"]),
            d["circuit_faithfulness"], d["decodability"], t["ranking"], d["confirm"],
            NeuronCurve.from_dict(d["neurons"]), maps, matches,
            [Knockout(**k) for k in d["knockouts"]],
            [PromptKnockout(**k) for k in d["prompt_knockouts"]], d["seconds"],
            Decoding.from_dict(d["decoding"]) if d.get("decoding") else None,
            {k: NullResult.from_dict(v) for k, v in d.get("nulls", {}).items()}))
    return HeuristicsRun(data, results)
