"""``influence``: EK-FAC training-data attribution of the experiment's task completions (or of
query files) to a document corpus; once per model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import ConfigError, MethodKind, Progress, ReportContext, Settings, Unit, register

if TYPE_CHECKING:
    from ...methods.influence import InfluenceScores
    from ...models import Model
    from ...planner import PlanSpec

#: experiment parameter -> InfluenceSettings field
SETTINGS = {"modules": "modules", "layers": "layers", "damping": "damping",
            "max_tokens": "max_tokens", "train_batch": "train_batch",
            "query_batch": "query_batch", "query_rank": "query_rank",
            "lambda_examples": "lambda_max_examples", "threads": "threads",
            "eigen_threads": "eigen_threads", "baseline": "baseline",
            "max_memory_gb": "max_memory_gb"}


@register
class Influence(MethodKind):
    """``- influence: {docs: corpus.jsonl, queries: [facts.jsonl, arith], layers: 20-29}``:
    writes the score table (``scores.safetensors``, ``influence.json``; factors under
    ``cache/``). Queries default to the experiment's tasks (``n`` examples each, its seed);
    its summary holds, per task, the mean top-10 share and the answer-in-top-10 count, the
    same-task vs different-task correlation test and, where queries name their ``sources``,
    source retrieval by EK-FAC and every baseline side by side with intervals
    (:func:`retrieval_summary`). The command line's spellings are accepted:
    ``modules: "a.b,c.d"`` (a comma-separated list; ``mlp`` and ``all`` as they are),
    ``layers: "20-29"``, ``query_rank: 0`` (full rank, as None). ``modelweave influence``
    builds its settings from the same parameters (:func:`influence_settings`)."""

    name = "influence"
    params = {"docs": None, "queries": None, "top_k": None, **dict.fromkeys(SETTINGS)}
    per_model = True
    title, section, noun, order = "Training-data influence", "influence", "influence", 70

    def check_params(self, params: dict, where: str) -> dict:
        params = super().check_params(params, where)
        if not params.get("docs"):
            raise ConfigError(f"{where}.docs: required (a .jsonl, .txt or .parquet corpus)")
        if not Path(str(params["docs"])).is_file():
            raise ConfigError(f"{where}.docs: file not found: {params['docs']}")
        queries = params.get("queries")
        if queries is not None:
            params["queries"] = [queries] if isinstance(queries, str) else list(queries)
        if isinstance(params.get("layers"), str | int):
            from ...methods.influence.modules import parse_layers  # as --layers

            params["layers"] = parse_layers(str(params["layers"]))
        if isinstance(params.get("modules"), str):
            params["modules"] = parse_modules(params["modules"])
        if params.get("query_rank") == 0:
            params["query_rank"] = None
        return params

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...methods.influence import (
            load_documents,
            plan_influence,
            resolve_queries,
            run_influence,
            task_correlation_test,
        )

        p = dict(unit.params)
        docs = load_documents(p.pop("docs"))
        specs = p.pop("queries", None) or list(experiment.tasks)
        top_k = int(p.pop("top_k", 10))
        settings = influence_settings(p, experiment.seed)
        queries = [q for spec in specs for q in resolve_queries(
            spec, n=experiment.n, seed=experiment.seed, tokenizer=model.tokenizer)]
        plan = plan_influence(model, docs, queries, settings, calibrate=False)
        result = run_influence(plan, folder, cache=folder / "cache", progress=progress)
        rows = result.per_query(k=top_k)
        tasks = {}
        for task in result.tasks():
            mine = [r for r in rows if r["task"] == task]
            tasks[task] = {
                "queries": len(mine),
                f"top{top_k}_share": sum(r[f"top{top_k}_share"] for r in mine) / len(mine),
                f"answer_in_top{top_k}": sum(r[f"answer_in_top{top_k}"] for r in mine)
                / len(mine)}
        summary = {"documents": len(docs), "queries": len(queries), "tasks": tasks,
                   "seconds": result.seconds, "peak_memory_gb": result.peak_memory_gb}
        if any(q.sources for q in result.queries):
            summary.update(retrieval_summary(result, experiment.seed))
        if len(result.tasks()) > 1:
            test = task_correlation_test(result.matrix(), [q.task for q in result.queries],
                                         n_perm=1000, seed=experiment.seed)
            summary["correlation"] = {k: test[k] for k in ("same_task", "different_task",
                                                           "p_value")}
        return summary

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("attribution", label=self.name,
                           note=("influence: planned as one gradient pass per batch; "
                                 "`modelweave influence` has its own estimate of the factors"))

    def load(self, folder: Path, record: dict) -> InfluenceScores:
        from ...methods.influence import InfluenceScores

        return InfluenceScores.load(folder)

    def summary_row(self, record: dict) -> dict:
        s = record["summary"]
        row = {"documents": s["documents"], "queries": s["queries"]}
        for task, values in s["tasks"].items():
            for key, value in values.items():
                if key != "queries":
                    row[f"{task} {key}"] = value
        for method, block in s.get("retrieval", {}).items():
            t = block["top1"]
            row[f"{method} source top-1"] = f"{t['hits']}/{t['n']}"
        if "correlation" in s:
            row["same-task corr"] = s["correlation"]["same_task"]
            row["corr p"] = s["correlation"]["p_value"]
        return row

    def headline(self, summary: dict) -> str:
        return f"{summary['queries']} queries x {summary['documents']} documents"

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """Per model: the summary table, top documents per query (answer highlighted), the
        concentration curves and the query-query correlation heatmap."""
        from ...report import influence as figs
        from ...report.blocks import escape, figure, note, table

        parts = []
        for u, (uid, record) in enumerate(units):
            result = self.load(ctx.folder(uid), record)
            row = self.summary_row(record)
            parts.append(f"<h3>{escape(record['model'])}</h3>"
                         + table(list(row), [list(row.values())]))
            parts.append(note("Scores: d log p(completion) / d(up-weighting the document); "
                              "EK-FAC over " + str(len(result.settings.get(
                                  "resolved_modules", []))) + " modules."))
            if "retrieval" in record["summary"]:
                parts.append(note("Source retrieval: EK-FAC beside the gradient, cosine-"
                                  "gradient, BM25 and IDF-overlap baselines (intervals: "
                                  "bootstrap over queries)."))
                parts.append(figs.retrieval_html(record["summary"]["retrieval"]))
            parts.append(figs.top_documents_html(result, k=3))
            parts.append(figure(figs.concentration_figure(result), f"influence-{u}-conc"))
            parts.append(figure(figs.correlation_figure(result), f"influence-{u}-corr"))
        return "".join(parts)


def retrieval_summary(result, seed: int = 0) -> dict:
    """Source retrieval of every method side by side (EK-FAC, the gradient and cosine
    baselines, BM25, IDF overlap): ``retrieval`` (per method the top-1/3/5 hits with their
    bootstrap intervals over queries, the mean reciprocal rank, the paired top-1 difference
    from BM25), and the headline ``source_top1`` (EK-FAC's share) with ``source_top1_ci`` and
    ``source_top1_baselines`` (each baseline's share)."""
    from ...methods.influence.evaluate import retrieval

    table = retrieval(result, seed=seed)
    for block in table.values():
        block.pop("ranks")
    head = table.get("ekfac", next(iter(table.values())))["top1"]
    return {"retrieval": table, "source_top1": head["share"], "source_top1_ci": head["share_ci"],
            "source_top1_baselines": {m: b["top1"]["share"] for m, b in table.items()
                                      if m != "ekfac"}}


def parse_modules(text: str) -> str | list[str]:
    """``mlp``, ``all`` or a comma-separated list of module paths."""
    text = text.strip()
    return text if text in ("mlp", "all") else [m.strip() for m in text.split(",") if m.strip()]


def influence_settings(params: dict, seed: int):
    """The :class:`~modelweave.methods.influence.InfluenceSettings` of checked parameters
    (``docs``, ``queries`` and ``top_k`` are left out)."""
    from ...methods.influence import InfluenceSettings

    return InfluenceSettings(seed=seed, **{SETTINGS[k]: v for k, v in params.items()
                                           if k in SETTINGS})
