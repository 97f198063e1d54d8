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

Leak-free by construction: the word pairs are split by query word
(:func:`~modelweave.tasks.icl.split_pairs`); the means and effects use train-split prompts,
the accuracies test-split prompts (held-out query words), and the shuffled-label prompts of
the effects are other prompts than those whose activations form the means. At the FV layer
the FV stands beside two nulls: random-head FVs (the same number of heads per layer, drawn by
:func:`~modelweave.metrics.nulls.matched_draws`, their task means summed the same way) and
random vectors of the FV's norm (:func:`~modelweave.metrics.nulls.equal_norm_vectors`);
:meth:`TaskFV.summary` gives each accuracy with its bootstrap interval over prompts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...engine.suffix import base_run, run_suffix
from ...errors import SteeringError
from ...io import load_bundle, save_bundle
from ...models.steering import check_layer
from ...progress import Progress, Steps, nested
from ...tasks import TaskBatch, get_task, make_batch
from ...tasks.icl import dataset_of, icl_task_name
from .fv import (
    correct_rows,
    function_vector,
    head_effects,
    last_token_acts,
    length_index_groups,
    top_heads,
)


def addition_hits(model, batch: TaskBatch, vectors: dict[str, torch.Tensor | None],
                  layers: list[int], tokens: str = "clean") -> dict[str, torch.Tensor]:
    """Per prompt, whether the top-1 next token is the answer's first token with each vector
    added to the output of block ``layer`` at the last token, for every layer of ``layers``.

    A vector is [d_model] (the same at every layer), [len(layers), d_model] (one per layer)
    or ``None`` (the unsteered run). Returns ``{vector name: [len(layers), N] bool}`` with the
    prompts in ``batch``'s order."""
    names = list(vectors)
    d = model.cfg.d_model
    per_layer = torch.zeros(len(names), len(layers), d)
    for j, name in enumerate(names):
        v = vectors[name]
        if v is not None:
            per_layer[j] = v.float().cpu().expand(len(layers), d)
    hits = torch.zeros(len(names), len(layers), len(batch), dtype=torch.bool)
    for rows in length_index_groups(batch):
        group = batch.select(rows).trimmed()
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
            hits[:, i, rows] = right.cpu()
    return {name: hits[j] for j, name in enumerate(names)}


def addition_accuracy(model, batch: TaskBatch, vectors: dict[str, torch.Tensor | None],
                      layers: list[int], tokens: str = "clean") -> dict[str, list[float]]:
    """Top-1 accuracy of :func:`addition_hits`: ``{vector name: [accuracy per layer]}``."""
    hits = addition_hits(model, batch, vectors, layers, tokens)
    return {name: h.float().mean(1).tolist() for name, h in hits.items()}


@dataclass
class TaskFV:
    """One ICL task's function vector and its evaluation.

    Attributes:
        task: the dataset name (``antonym``).
        n_clean, n_correct: clean train-split prompts run for the means, and how many of them
            were answered correctly (the means come from these ``n_correct``).
        n_corrupt: shuffled-label prompts the effects were averaged over: correct queries of
            *other* clean prompts than the means' (disjoint rows).
        effects: [n_layers, n_heads] causal indirect effects (probability change).
        vector: [d_model] the FV from the shared top heads; layer_means [n_layers, d_model].
        accuracy: ``{"zero_shot"|"shuffled": {"none"|"fv"|"layer_mean": [per eval layer]}}``
            on test-split (held-out word) prompts.
        ceiling: clean ``shots``-shot accuracy of the evaluation prompts.
        hits: at the FV layer, ``{setting: {"none"|"fv"|"layer_mean"|"ceiling": [0/1 per
            prompt]}}`` (the bootstrap resamples these).
        null_accuracy: ``{setting: {"random_heads"|"random_vector": [accuracy per draw]}}``.
        queries: the query words of the ``mean``, ``corrupt`` and ``eval`` prompts.
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
    hits: dict = field(default_factory=dict)
    null_accuracy: dict = field(default_factory=dict)
    queries: dict = field(default_factory=dict)

    def summary(self, n_resamples: int = 2000) -> dict:
        """Held-out accuracies at the FV layer with their bootstrap intervals over prompts
        (``x_ci``), the FV's gain over no vector (paired), and the FV beside its nulls:
        ``{setting}_fv_null`` (random-head FVs matched by layer) and
        ``{setting}_fv_null_vector`` (equal-norm random vectors), in the ``x_null``
        convention."""
        from ...metrics.nulls import compare
        from ...metrics.uncertainty import bootstrap_stat

        row: dict = {"task": self.task, "n_correct": self.n_correct, "n_corrupt": self.n_corrupt,
                     "n_eval": len(self.queries.get("eval", []))}
        if not self.hits:
            return row

        def put(key: str, *arrays, stat=None) -> None:
            agg = bootstrap_stat([np.asarray(a, dtype=float) for a in arrays], stat,
                                 n_resamples=n_resamples)
            row[key], row[f"{key}_ci"] = agg.mean, [agg.ci_low, agg.ci_high]

        put("ceiling_10shot", self.hits["shuffled"]["ceiling"])
        for setting, hits in self.hits.items():
            for name in ("none", "fv", "layer_mean"):
                put(f"{setting}_{name}", hits[name])
            put(f"{setting}_fv_gain", hits["fv"], hits["none"],
                stat=lambda a, b: float(a.mean() - b.mean()))
            nulls = self.null_accuracy.get(setting, {})
            for suffix, key, what in (("", "random_heads", "random-head FV matched by layer"),
                                      ("_vector", "random_vector", "equal-norm random vector")):
                if nulls.get(key):
                    row[f"{setting}_fv_null{suffix}"] = compare(
                        row[f"{setting}_fv"], nulls[key], null=what).to_dict()
        return row


@dataclass
class FVRun:
    """Function vectors of several ICL tasks from one shared head set.

    Attributes:
        heads: the top-``k`` ``(layer, head)`` of the mean effect over tasks.
        layers: the evaluated layers; fv_layer: the layer the headline numbers use.
        tasks: per task :class:`TaskFV`.
        settings: the run's parameters.
        null_heads: the random head sets of the null, each with the FV heads' count per
            layer (:func:`~modelweave.metrics.nulls.matched_draws`, the FV heads excluded).
    """

    model: str
    heads: list[tuple[int, int]]
    layers: list[int]
    fv_layer: int
    tasks: list[TaskFV]
    settings: dict = field(default_factory=dict)
    null_heads: list[list[tuple[int, int]]] = field(default_factory=list)

    @property
    def mean_effects(self) -> torch.Tensor:
        """[n_layers, n_heads] effects averaged over tasks."""
        return torch.stack([t.effects for t in self.tasks]).mean(0)

    def headline(self) -> list[dict]:
        """Per task, held-out accuracy at ``fv_layer`` (:meth:`TaskFV.summary`: zero-shot and
        shuffled, none / FV / layer-mean with intervals, the FV's gain and its two nulls) and
        the ceiling."""
        i = self.layers.index(self.fv_layer)
        rows = []
        for t in self.tasks:
            row = t.summary()
            if not t.hits:  # a run saved before per-prompt hits, or a task with no FV
                row["ceiling_10shot"] = t.ceiling
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
                "null_heads": self.null_heads, "headline": self.headline()}
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
                   info["fv_layer"], tasks, info["settings"],
                   [[tuple(h) for h in hs] for hs in info.get("null_heads", [])])


def _words(batch: TaskBatch) -> set[str]:
    """Every input and label word of a batch's prompts (queries and demonstrations)."""
    out = set()
    for ex in batch.examples:
        out |= {ex.meta["x"].lower(), ex.meta["y"].lower()}
        out |= {w.lower() for pair in ex.meta.get("demos", []) for w in pair}
    return out


def disjoint_rows(batch: TaskBatch, ok: torch.Tensor, n_clean: int, n_corrupt: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows whose activations form the means and the rows whose shuffled-label versions
    give the effects: the batch's first ``n_clean / (n_clean + n_corrupt)`` share of prompts
    and the rest (examples dropped in tokenisation shrink both), each kept where ``ok`` [N];
    an effect prompt whose clean text equals a mean prompt's is dropped. Returns two [k]
    long tensors of disjoint rows."""
    cut = round(len(batch) * n_clean / (n_clean + n_corrupt))
    rows = torch.arange(len(batch))
    mean_rows = (ok & (rows < cut)).nonzero()[:, 0]
    texts = {batch.examples[i].clean for i in range(cut)}
    effect = [i for i in (ok & (rows >= cut)).nonzero()[:, 0].tolist()
              if batch.examples[i].clean not in texts]
    return mean_rows, torch.tensor(effect, dtype=torch.long)


def random_head_sets(model, heads: list[tuple[int, int]], n_draws: int, seed: int = 0
                     ) -> list[list[tuple[int, int]]]:
    """``n_draws`` random head sets with ``heads``' count per layer, none of ``heads``
    (:func:`~modelweave.metrics.nulls.matched_draws` over every head of the model)."""
    from ...metrics.nulls import heads_universe, matched_draws

    names = [f"a{layer}.h{head}" for layer, head in heads]
    draws = matched_draws(names, heads_universe(model.cfg.n_layers, model.cfg.n_heads),
                          n_draws, seed)
    return [[tuple(int(p[1:]) for p in name.split(".")) for name in draw] for draw in draws]


def run_function_vectors(model, tasks: list[str], *, n_clean: int = 30, n_corrupt: int = 10,
                         n_eval: int = 30, top_k: int = 10, shots: int = 10,
                         layers: list[int] | None = None, fv_layer: int | None = None,
                         effect_layers: list[int] | None = None, seed: int = 0,
                         heads: list[tuple[int, int]] | None = None,
                         only_correct: bool = True, test_fraction: float = 0.3,
                         null_draws: int = 20, progress: Progress = None) -> FVRun:
    """The function-vector pipeline (module docstring) over ICL ``tasks`` (dataset names).

    Each task's word pairs are split by query word (seed ``seed``,
    :func:`~modelweave.tasks.icl.split_pairs`): the means and effects use train-split
    prompts only, every accuracy test-split prompts only, so no evaluation query word is in
    an extraction prompt (checked; a :class:`SteeringError` otherwise).

    Args:
        n_clean: clean prompts per task run for the means (the correct ones are averaged).
        n_corrupt: further clean prompts per task; the shuffled-label versions of the
            correct ones give the effects (disjoint from the means' prompts).
        n_eval: prompts per task for the accuracy evaluation (zero-shot and shuffled).
        top_k: heads in the FV (ignored when ``heads`` is given).
        layers: layers at which the FV is evaluated (default: every layer).
        fv_layer: the headline layer (default: about a third of the depth, ``n_layers // 3``).
        effect_layers: layers whose heads' effects are measured (default: every layer).
        heads: use these ``(layer, head)`` instead of the top-``k`` by effect.
        only_correct: keep only queries answered correctly ``shots``-shot (the paper);
            ``False`` keeps every prompt (for untrained test models).
        test_fraction: the share of pairs held out for evaluation.
        null_draws: random-head FVs and equal-norm random vectors evaluated at ``fv_layer``
            beside the FV (0: none).
        progress: phases per dataset ``d``, as ``"<d>/<phase>"``: ``prompts`` (the clean
            prompts' activations), ``effects`` (:func:`head_effects`), ``eval`` (accuracy
            with the vector at every layer).
    """
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [check_layer(model, x) for x in layers]
    fv_layer = check_layer(model, n_layers // 3 if fv_layer is None else fv_layer)
    if effect_layers is not None:
        effect_layers = [check_layer(model, x) for x in effect_layers]
    if fv_layer not in layers:
        layers = sorted({*layers, fv_layer})
    datasets = [dataset_of(icl_task_name(t)) for t in tasks]
    split = {"test_fraction": test_fraction, "split_seed": seed}
    for d in datasets:  # a split too small for the prompts fails before any model work
        for part in ("train", "test"):
            get_task(icl_task_name(d), shots=shots, split=part, **split).generate(1)
    results, means, extraction = [], {}, {}
    for d in datasets:
        p = nested(progress, d)
        stage = Steps(p, "prompts", 1)
        batch = make_batch(model, icl_task_name(d), n=n_clean + n_corrupt, seed=seed,
                           shots=shots, split="train", **split)
        extraction[d] = _words(batch)
        acts = last_token_acts(model, batch)
        ok = (correct_rows(acts, batch) if only_correct
              else torch.ones(len(batch), dtype=torch.bool))
        kept, corrupt_rows = disjoint_rows(batch, ok, n_clean, n_corrupt)
        stage.advance()
        queries = {"mean": [batch.examples[i].meta["x"] for i in kept.tolist()],
                   "corrupt": [batch.examples[i].meta["x"] for i in corrupt_rows.tolist()]}
        n_mean = round(len(batch) * n_clean / (n_clean + n_corrupt))
        if not len(kept) or not len(corrupt_rows):
            results.append(TaskFV(d, n_mean, len(kept), len(corrupt_rows),
                                  torch.full((n_layers, model.cfg.n_heads), float("nan")),
                                  queries=queries))
            means[d] = None
            continue
        good = acts.select(kept)
        means[d] = (good.z.mean(0), good.result.mean(0), good.resid.mean(0))
        corrupt = batch.select(corrupt_rows)
        effects = head_effects(model, corrupt, means[d][0], effect_layers, progress=p)
        results.append(TaskFV(d, n_mean, len(kept), len(corrupt), effects,
                              queries=queries))
    measured = [t.effects for t in results if t.n_correct and t.n_corrupt]
    mean_effects = torch.stack(measured).mean(0) if measured else None
    if heads is None:
        heads = top_heads(mean_effects, top_k) if mean_effects is not None else []
    heads = [tuple(h) for h in heads]
    null_heads = random_head_sets(model, heads, null_draws, seed) if heads and null_draws else []
    for t in results:
        if means[t.task] is None:
            continue
        _, result_mean, resid_mean = means[t.task]
        t.vector, t.layer_means = function_vector(result_mean, heads), resid_mean
        stage = Steps(nested(progress, t.task), "eval", 3)
        name = icl_task_name(t.task)
        zero = make_batch(model, name, n=n_eval, seed=seed + 1, shots=0, split="test", **split)
        few = make_batch(model, name, n=n_eval, seed=seed + 1, shots=shots, split="test",
                         **split)
        t.queries["eval"] = [ex.meta["x"] for ex in few.examples]
        seen = {q.lower() for q in t.queries["eval"] + [ex.meta["x"] for ex in zero.examples]}
        if seen & extraction[t.task]:  # the split guarantees it; a changed split must not
            raise SteeringError(f"{t.task}: evaluation query words "
                                f"{sorted(seen & extraction[t.task])[:5]} appear in the "
                                "extraction prompts")
        nulls = _null_vectors(t.vector, result_mean, null_heads, null_draws, seed)
        i = layers.index(fv_layer)
        for setting, b, which in (("zero_shot", zero, "clean"), ("shuffled", few, "corrupt")):
            hits = addition_hits(model, b, {"none": None, "fv": t.vector,
                                            "layer_mean": resid_mean[layers]}, layers, which)
            t.accuracy[setting] = {k: h.float().mean(1).tolist() for k, h in hits.items()}
            t.hits[setting] = {k: h[i].int().tolist() for k, h in hits.items()}
            if nulls:
                null_hits = addition_hits(model, b, nulls, [fv_layer], which)
                t.null_accuracy[setting] = {
                    kind: [float(null_hits[k][0].float().mean()) for k in nulls
                           if k.startswith(kind)] for kind in ("random_heads", "random_vector")}
            stage.advance()
        ceiling = addition_hits(model, few, {"none": None}, [fv_layer])["none"][0]
        t.hits["shuffled"]["ceiling"] = ceiling.int().tolist()
        t.ceiling = float(ceiling.float().mean())
        stage.advance()
    settings = dict(n_clean=n_clean, n_corrupt=n_corrupt, n_eval=n_eval, top_k=top_k,
                    shots=shots, seed=seed, effect_layers=effect_layers,
                    only_correct=only_correct, test_fraction=test_fraction,
                    null_draws=null_draws, split="train (extraction) / test (evaluation)")
    return FVRun(model.name, heads, layers, fv_layer, results, settings,
                 [list(h) for h in null_heads])


def _null_vectors(vector: torch.Tensor, result_mean: torch.Tensor,
                  null_heads: list[list[tuple[int, int]]], n_draws: int, seed: int
                  ) -> dict[str, torch.Tensor]:
    """The null vectors at the FV layer: the random-head FVs (the same task means, summed
    over each random head set) and ``n_draws`` random vectors of the FV's norm."""
    from ...metrics.nulls import equal_norm_vectors

    out = {f"random_heads{j}": function_vector(result_mean, hs)
           for j, hs in enumerate(null_heads)}
    if n_draws and float(vector.norm()) > 0:
        for j, v in enumerate(equal_norm_vectors(vector.float(), n_draws, seed)):
            out[f"random_vector{j}"] = v
    return out
