"""What each method of an experiment computes and writes into its unit folder.

Every handler takes the loaded model, the unit, the experiment, the (empty) unit folder and a
``progress(k)`` callback (or None) for long methods, writes its files there, and returns a
small JSON-ready summary (the numbers a report or a dataframe shows without reading the
files).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..models import Model
from .config import Experiment, Unit

Progress = Callable[[int], None] | None


def _batch(model: Model, unit: Unit, experiment: Experiment, same_length: bool = True):
    from ..tasks import make_batch

    return make_batch(model, unit.task, n=experiment.n, seed=experiment.seed,
                      same_length=same_length)


def run_eval(model: Model, unit: Unit, experiment: Experiment, folder: Path,
             progress: Progress = None) -> dict:
    from ..metrics import evaluate

    result = evaluate(model, unit.task, n=unit.params.get("n", experiment.n),
                      seed=experiment.seed, scoring=unit.params.get("scoring", "first"))
    summary = result.to_dict()
    (folder / "eval.json").write_text(json.dumps(result.to_dict(per_example=True)))
    return summary


def run_patch(model: Model, unit: Unit, experiment: Experiment, folder: Path,
              progress: Progress = None) -> dict:
    from ..methods import attribution_sweep, patch_sweep
    from ..report.figures import patching_figure

    batch = _batch(model, unit, experiment)
    p = unit.params
    grid, direction = p.get("grid", "heads"), p.get("direction", "denoising")
    if p.get("method", "exact") == "attribution":
        result = attribution_sweep(model, batch, grid, direction=direction, layers=p.get("layers"))
    else:
        result = patch_sweep(model, batch, grid, direction=direction, layers=p.get("layers"),
                             progress=progress)
    result.save(folder / "result")
    patching_figure(result, folder / "heatmap")
    top = [{"unit": [result.labels[a][i] for a, i in zip(result.axes, idx, strict=True)],
            "value": value} for idx, value in result.top(5)]
    return {"grid": grid, "direction": direction, "metric": result.metric, "n": len(batch),
            "clean_metric": result.clean_metric, "corrupt_metric": result.corrupt_metric,
            "top": top}


def run_discover(model: Model, unit: Unit, experiment: Experiment, folder: Path,
                 progress: Progress = None) -> dict:
    from ..circuits import discover, to_mib
    from ..report.circuit_graph import save_circuit_graph
    from ..report.curves import save_faithfulness_curve

    batch = _batch(model, unit, experiment)
    params = dict(unit.params)
    method = params.pop("method", "eap-ig")
    found = discover(model, batch, method, **params,
                     progress=(lambda _phase, k: progress(k)) if progress else None)
    circuit = found.circuit
    circuit.save(folder / "circuit.json")
    (folder / "circuit.mib.json").write_text(json.dumps(to_mib(circuit, model.cfg.d_model)))
    save_circuit_graph(circuit, folder / "circuit.html")
    save_faithfulness_curve(circuit.curve, f"{method} on {unit.task}", folder / "faithfulness")
    heads = _save_top_patterns(model, batch, circuit, folder)
    return {**found.summary(), "n": len(batch), "nodes": circuit.nodes, "top_heads": heads}


def _save_top_patterns(model: Model, batch, circuit, folder: Path, k: int = 3) -> list[str]:
    """Attention patterns of the circuit's ``k`` highest-scoring heads on the first prompt
    (``patterns.safetensors`` + ``patterns.json`` with the tokens); returns the heads."""
    from safetensors.torch import save_file

    from ..methods.patterns import attention_patterns

    scores = circuit.node_scores()
    heads = sorted((n for n in circuit.nodes if n.startswith("a")), key=lambda n: -scores[n])[:k]
    if not heads:
        return []
    pairs = [tuple(int(x) for x in n[1:].split(".h")) for n in heads]
    prompt = batch.clean[0, : batch.lengths[0]]
    patterns, tokens = attention_patterns(model, prompt, pairs)
    save_file({name: patterns[pair].contiguous() for name, pair in zip(heads, pairs, strict=True)},
              str(folder / "patterns.safetensors"))
    (folder / "patterns.json").write_text(json.dumps({"heads": heads, "tokens": tokens,
                                                      "prompt": batch.examples[0].clean}))
    return heads


def run_lens(model: Model, unit: Unit, experiment: Experiment, folder: Path,
             progress: Progress = None) -> dict:
    from ..methods.lens import logit_lens
    from ..report.figures import save_heatmap

    batch = _batch(model, unit, experiment)
    result = logit_lens(model, batch, k=unit.params.get("k", 5))
    result.save(folder / "lens")
    save_heatmap(result.answer_prob, result.layers, result.positions, "layer", "pos",
                 f"Logit lens: P(answer) on {unit.task}", folder / "answer_prob", center=False)
    return {"n": len(batch), "answer_prob_end": result.answer_prob[:, -1].tolist()}


def run_heads(model: Model, unit: Unit, experiment: Experiment, folder: Path,
              progress: Progress = None) -> dict:
    from ..methods.head_roles import head_roles

    roles = head_roles(model, seed=experiment.seed)
    roles.to_dataframe().to_csv(folder / "head_roles.csv", index=False)
    return {role: [{"head": f"{layer}.{head}", "score": score}
                   for layer, head, score in roles.top(role, 5)] for role in roles.scores}


HANDLERS: dict[str, Callable[[Model, Unit, Experiment, Path, Progress], dict]] = {
    "eval": run_eval, "patch": run_patch, "discover": run_discover, "lens": run_lens,
    "heads": run_heads,
}
