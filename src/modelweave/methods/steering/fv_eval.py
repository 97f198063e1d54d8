"""Evaluating function vectors, and the whole pipeline over ICL tasks.

:func:`addition_accuracy` adds vectors to one block's output at the prompt's last token and
reads top-1 accuracy of the answer's first token; the addition only changes that token from
that layer on, so each (layer, vector) is one suffix pass of one position
(:func:`~modelweave.engine.suffix.run_suffix`), all vectors of a layer stacked in one batch.

:func:`run_function_vectors` does, per ICL task: clean ``shots``-shot prompts -> keep the queries
answered correctly -> head means and causal indirect effects on their shuffled-label prompts;
then the top-``k`` heads of the effect averaged over tasks (the paper's task-agnostic head
set), each task's FV from them, and accuracy zero-shot and on shuffled-label prompts with no
vector, the FV and the layer-mean baseline (the mean block output at that layer) at every
evaluated layer, next to the clean ``shots``-shot accuracy (the ceiling).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ...engine.suffix import base_run, run_suffix
from ...errors import SteeringError
from ...io import load_bundle, save_bundle
from ...models.steering import check_layer
from ...progress import Progress, Steps, nested
from ...tasks import TaskBatch, make_batch
from ...tasks.icl import dataset_of, icl_task_name
from .fv import (
    correct_rows,
    function_vector,
    head_effects,
    last_token_acts,
    length_groups,
    top_heads,
)


def addition_accuracy(model, batch: TaskBatch, vectors: dict[str, torch.Tensor | None],
                      layers: list[int], tokens: str = "clean") -> dict[str, list[float]]:
    """Top-1 accuracy (first answer token) of ``batch``'s ``tokens`` prompts with each vector
    added to the output of block ``layer`` at the last token, for every layer of ``layers``.

    A vector is [d_model] (the same at every layer), [len(layers), d_model] (one per layer)
    or ``None`` (the unsteered run). Returns ``{vector name: [accuracy per layer]}``."""
    names = list(vectors)
    d = model.cfg.d_model
    per_layer = torch.zeros(len(names), len(layers), d)
    for j, name in enumerate(names):
        v = vectors[name]
        if v is not None:
            per_layer[j] = v.float().cpu().expand(len(layers), d)
    hits = torch.zeros(len(names), len(layers))
    for group in length_groups(batch):
        n, last = len(group), int(group.lengths[0]) - 1
        _, base = base_run(model, getattr(group, tokens))
        answers = group.answers.to(model.device)
        for i, layer in enumerate(layers):
            stack = per_layer[:, i]

            def add(x: torch.Tensor, _hook, stack=stack, n=n) -> torch.Tensor:
                delta = stack.to(x.device, x.dtype).repeat_interleave(n, 0)  # [k * n, d]
                out = x.clone()
                out[:, -1] += delta
                return out

            with model.hooks([(f"blocks.{layer}.hook_resid_post", add)]):
                logits = run_suffix(model, base, layer, last, groups=len(names))
            right = (logits.argmax(-1) == answers.repeat(len(names))).view(len(names), n)
            hits[:, i] += right.sum(1).float().cpu()
    return {name: (hits[j] / len(batch)).tolist() for j, name in enumerate(names)}


@dataclass
class TaskFV:
    """One ICL task's function vector and its evaluation.

    Attributes:
        task: the dataset name (``antonym``).
        n_clean, n_correct: clean prompts run and answered correctly (means come from these).
        n_corrupt: shuffled-label prompts the effects were averaged over.
        effects: [n_layers, n_heads] causal indirect effects (probability change).
        vector: [d_model] the FV from the shared top heads; layer_means [n_layers, d_model].
        accuracy: ``{"zero_shot"|"shuffled": {"none"|"fv"|"layer_mean": [per eval layer]}}``.
        ceiling: clean ``shots``-shot accuracy of the evaluation prompts.
    """

    task: str
    n_clean: int
    n_correct: int
    n_corrupt: int
    effects: torch.Tensor
    vector: torch.Tensor | None = None
    layer_means: torch.Tensor | None = None
    accuracy: dict = field(default_factory=dict)
    ceiling: float = 0.0


@dataclass
class FVRun:
    """Function vectors of several ICL tasks from one shared head set.

    Attributes:
        heads: the top-``k`` ``(layer, head)`` of the mean effect over tasks.
        layers: the evaluated layers; fv_layer: the layer the headline numbers use.
        tasks: per task :class:`TaskFV`.
        settings: the run's parameters.
    """

    model: str
    heads: list[tuple[int, int]]
    layers: list[int]
    fv_layer: int
    tasks: list[TaskFV]
    settings: dict = field(default_factory=dict)

    @property
    def mean_effects(self) -> torch.Tensor:
        """[n_layers, n_heads] effects averaged over tasks."""
        return torch.stack([t.effects for t in self.tasks]).mean(0)

    def headline(self) -> list[dict]:
        """Per task, accuracy at ``fv_layer``: zero-shot and shuffled, none / FV /
        layer-mean, and the ceiling."""
        i = self.layers.index(self.fv_layer)
        rows = []
        for t in self.tasks:
            row = {"task": t.task, "n_correct": t.n_correct, "ceiling_10shot": t.ceiling}
            for setting, accs in t.accuracy.items():
                for name, values in accs.items():
                    row[f"{setting}_{name}"] = values[i]
            rows.append(row)
        return rows

    def save(self, folder: str | Path) -> Path:
        """``fv.json`` (everything but tensors) and ``fv.safetensors``."""
        folder = Path(folder)
        tensors = {}
        for t in self.tasks:
            tensors[f"{t.task}.effects"] = t.effects.contiguous()
            if t.vector is not None:
                tensors[f"{t.task}.vector"] = t.vector.contiguous()
            if t.layer_means is not None:
                tensors[f"{t.task}.layer_means"] = t.layer_means.contiguous()
        tasks = [{k: v for k, v in asdict(t).items()
                  if k not in ("effects", "vector", "layer_means")} for t in self.tasks]
        info = {"model": self.model, "heads": self.heads, "layers": self.layers,
                "fv_layer": self.fv_layer, "settings": self.settings, "tasks": tasks,
                "headline": self.headline()}
        save_bundle(folder / "fv", info, tensors, indent=1)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FVRun:
        info, tensors = load_bundle(Path(folder) / "fv", error=SteeringError)
        tasks = [TaskFV(**t, effects=tensors[f"{t['task']}.effects"],
                        vector=tensors.get(f"{t['task']}.vector"),
                        layer_means=tensors.get(f"{t['task']}.layer_means"))
                 for t in info["tasks"]]
        return cls(info["model"], [tuple(h) for h in info["heads"]], info["layers"],
                   info["fv_layer"], tasks, info["settings"])


def run_function_vectors(model, tasks: list[str], *, n_clean: int = 30, n_corrupt: int = 10,
                         n_eval: int = 30, top_k: int = 10, shots: int = 10,
                         layers: list[int] | None = None, fv_layer: int | None = None,
                         effect_layers: list[int] | None = None, seed: int = 0,
                         heads: list[tuple[int, int]] | None = None,
                         only_correct: bool = True,
                         progress: Progress = None) -> FVRun:
    """The function-vector pipeline (module docstring) over ICL ``tasks`` (dataset names).

    Args:
        n_clean: clean prompts per task run to find correct queries (means use them all).
        n_corrupt: shuffled-label prompts (of correct queries) per task for the effects.
        n_eval: prompts per task for the accuracy evaluation (zero-shot and shuffled).
        top_k: heads in the FV (ignored when ``heads`` is given).
        layers: layers at which the FV is evaluated (default: every layer).
        fv_layer: the headline layer (default: about a third of the depth, ``n_layers // 3``).
        effect_layers: layers whose heads' effects are measured (default: every layer).
        heads: use these ``(layer, head)`` instead of the top-``k`` by effect.
        only_correct: keep only queries answered correctly ``shots``-shot (the paper);
            ``False`` keeps every prompt (for untrained test models).
        progress: phases per dataset ``d``, as ``"<d>/<phase>"``: ``prompts`` (the clean
            prompts' activations), ``effects`` (:func:`head_effects`), ``eval`` (accuracy
            with the vector at every layer).
    """
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [check_layer(model, x) for x in layers]
    fv_layer = check_layer(model, n_layers // 3 if fv_layer is None else fv_layer)
    if fv_layer not in layers:
        layers = sorted({*layers, fv_layer})
    datasets = [dataset_of(icl_task_name(t)) for t in tasks]
    results, means = [], {}
    for d in datasets:
        p = nested(progress, d)
        stage = Steps(p, "prompts", 1)
        batch = make_batch(model, icl_task_name(d), n=n_clean, seed=seed, shots=shots)
        acts = last_token_acts(model, batch)
        ok = (correct_rows(acts, batch) if only_correct
              else torch.ones(len(batch), dtype=torch.bool))
        kept = ok.nonzero()[:, 0]
        stage.advance()
        if not len(kept):
            results.append(TaskFV(d, len(batch), 0, 0,
                                  torch.full((n_layers, model.cfg.n_heads), float("nan"))))
            means[d] = None
            continue
        good = acts.select(kept)
        means[d] = (good.z.mean(0), good.result.mean(0), good.resid.mean(0))
        corrupt = batch.select(kept[:n_corrupt])
        effects = head_effects(model, corrupt, means[d][0], effect_layers, progress=p)
        results.append(TaskFV(d, len(batch), len(kept), len(corrupt), effects))
    measured = [t.effects for t in results if t.n_correct]
    mean_effects = torch.stack(measured).mean(0) if measured else None
    if heads is None:
        heads = top_heads(mean_effects, top_k) if mean_effects is not None else []
    for t in results:
        if means[t.task] is None:
            continue
        _, result_mean, resid_mean = means[t.task]
        t.vector, t.layer_means = function_vector(result_mean, heads), resid_mean
        stage = Steps(nested(progress, t.task), "eval", 3)
        zero = make_batch(model, icl_task_name(t.task), n=n_eval, seed=seed + 1, shots=0)
        few = make_batch(model, icl_task_name(t.task), n=n_eval, seed=seed + 1, shots=shots)
        for setting, b, which in (("zero_shot", zero, "clean"), ("shuffled", few, "corrupt")):
            t.accuracy[setting] = addition_accuracy(
                model, b, {"none": None, "fv": t.vector, "layer_mean": resid_mean[layers]},
                layers, which)
            stage.advance()
        t.ceiling = addition_accuracy(model, few, {"none": None}, [fv_layer])["none"][0]
        stage.advance()
    settings = dict(n_clean=n_clean, n_corrupt=n_corrupt, n_eval=n_eval, top_k=top_k,
                    shots=shots, seed=seed, effect_layers=effect_layers,
                    only_correct=only_correct)
    return FVRun(model.name, [tuple(h) for h in heads], layers, fv_layer, results, settings)
