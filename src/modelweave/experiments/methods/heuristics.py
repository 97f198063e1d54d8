"""``heuristics``: arithmetic heuristic neurons of a model (once per model, not per task)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import ConfigError, MethodKind, Progress, ReportContext, Settings, Unit, register

if TYPE_CHECKING:
    from ...analysis.heuristics.results import HeuristicsRun
    from ...models import Model
    from ...planner import PlanSpec

#: experiment parameter -> ``find_heuristics`` setting
SETTINGS = {"op_min": "op_min", "max_op": "op_max", "result_max": "result_max", "step": "step",
            "n_prompts": "n_prompts", "n_discovery": "n_discovery", "n_eval": "n_eval",
            "n_reference": "n_reference", "top_k": "classify_k", "first_layer": "first_layer",
            "grid_fraction": "grid_fraction", "threshold": "threshold",
            "min_neurons": "min_neurons", "max_knockouts": "max_knockouts",
            "null_draws": "null_draws", "permutation_draws": "permutation_draws",
            "decodable_margin": "decodable_margin",
            "reference_operators": "reference_operators"}


@register
class Heuristics(MethodKind):
    """``- heuristics: {operators: "+,-", max_op: 100, top_k: 50}``: writes the analysis of
    :func:`~modelweave.analysis.heuristics.pipeline.find_heuristics` (``heuristics.json``, one
    ``<op>.safetensors`` per operator); its summary holds each operator's headline numbers.
    With ``checkpoints: DIR`` (a fine-tune's ``--save-every`` output) it also follows each
    operator's heuristic neurons over those checkpoints
    (:func:`~modelweave.analysis.heuristics.emergence.emergence`). :meth:`draw` makes each
    operator's figures (``add_maps.html``, ``add_families.html``, ``add_curves.html``,
    ``add_knockouts.html``; ``sub``, ``mul``, ``div`` for the others). ``modelweave
    heuristics`` runs one unit. With ``base: MODEL`` (the un-fine-tuned model of a fine-tune)
    the classification's base-model null is computed (else it is reported as not computed);
    the random-neuron and permuted-map nulls always are. The summary gives each operator's
    ``share_matched`` with ``share_matched_ci`` and ``share_matched_null`` (random neurons),
    ``share_matched_null_base``, ``share_matched_null_permuted``
    (:class:`~modelweave.metrics.nulls.NullComparison` dicts)."""

    name = "heuristics"
    params = {"operators": None, "checkpoints": None, "base": None, **dict.fromkeys(SETTINGS)}
    per_model = True
    id_params = ("operators",)
    title, section, noun, order = "Arithmetic heuristic neurons", "heuristics", "heuristics", 60

    def check_params(self, params: dict, where: str) -> dict:
        from ...tasks import TaskError
        from ...tasks.arith import parse_operators

        params = super().check_params(params, where)
        try:
            params["operators"] = ",".join(parse_operators(params.get("operators", "+")))
        except TaskError as err:
            if not where:  # a command's --operators: the task's own one-line error
                raise
            raise ConfigError(f"{where}.operators: {err}") from None
        from ...analysis.heuristics.pipeline import Settings as Analysis

        values = {SETTINGS[k]: v for k, v in params.items() if k in SETTINGS and v is not None}
        try:  # a bad setting fails before any model loads
            Analysis(**values).check_values()
        except TaskError as err:
            if not where:
                raise
            raise ConfigError(f"{where}: {err}") from None
        return params

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...analysis.heuristics.emergence import emergence, find_checkpoints
        from ...analysis.heuristics.pipeline import find_heuristics
        from ...analysis.heuristics.results import save_results, summary
        from ...progress import nested

        p = dict(unit.params)
        operators = p.pop("operators", "+")
        checkpoints = p.pop("checkpoints", None)
        base_name = p.pop("base", None)
        settings = {SETTINGS[k]: v for k, v in p.items() if v is not None or k == "first_layer"}
        base = None
        if base_name:
            from ...models import load_model

            base = load_model(str(base_name), device=model.device)
        results = find_heuristics(model, operators, progress=progress, seed=experiment.seed,
                                  base=base, **settings)
        meta = {"model": unit.model, "base": base_name,
                "settings": {"operators": operators, **settings}}
        out = {"operators": [summary(r, model.cfg.d_mlp) for r in results]}
        if checkpoints:
            found = find_checkpoints(checkpoints)
            meta["emergence"] = [emergence(found, r.operator, seed=experiment.seed,
                                           progress=nested(progress, f"{r.operator} emergence"),
                                           **{**settings, "first_layer": r.neurons.first_layer})
                                 for r in results]
            out["emergence_share_present"] = {e["operator"]: e["share_present"]
                                              for e in meta["emergence"]}
        save_results(results, folder, meta)
        return out

    def draw(self, folder: Path, record: dict) -> list[Path]:
        """Per operator: its key-map, family, faithfulness-curve and knockout figures."""
        from ...analysis.heuristics.results import OP_NAMES
        from ...report.heuristics import save_figures

        files: list[Path] = []
        for result in self.load(folder, record).results:
            files += save_figures(result, folder, OP_NAMES[result.operator])
        return files

    def command_output(self, record: dict, files: list[Path]) -> dict:
        """``model``, ``operators`` (each operator's headline numbers) and ``files``."""
        return {"model": (record.get("run") or {}).get("model", record["model"]),
                **record["summary"], "files": [str(f) for f in files]}

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name,
                           note="arithmetic heuristics: planned as forward passes")

    def load(self, folder: Path, record: dict) -> HeuristicsRun:
        from ...analysis.heuristics.results import load_results

        return load_results(folder)

    def components(self, folder: Path, record: dict) -> list[str] | None:
        """The classified top neurons that match at least one heuristic (any operator), as
        ``mL.nI`` names, sorted."""
        run = self.load(folder, record)
        return sorted({f"m{L}.n{n}" for r in run.results for (L, n), ms in r.matches.items()
                       if ms}, key=lambda x: tuple(int(v) for v in x[1:].split(".n")))

    def summary_row(self, record: dict) -> dict:
        """One column per operator and headline number (``+ neurons_per_layer`` ...)."""
        row = {}
        for s in record["summary"]["operators"]:
            for key in ("heads", "circuit_faithfulness", "neurons_per_layer",
                        "neuron_faithfulness", "share_matched"):
                row[f"{s['operator']} {key}"] = s[key]
            for key in ("share_matched_null", "share_matched_null_base",
                        "share_matched_null_permuted"):
                null = s.get(key) or {}
                if "p_value" in null:
                    row[f"{s['operator']} {key} ratio"] = null["ratio"]
                    row[f"{s['operator']} {key} p"] = null["p_value"]
        return row

    def headline(self, summary: dict) -> str:
        def null(s):
            n = s.get("share_matched_null") or {}
            return (f" (random neurons {n['null_mean']:.0%}, p = {n['p_value']:.2g})"
                    if "p_value" in n else "")

        return "; ".join(f"{s['operator']}: {s['neurons_per_layer']} neurons/layer, "
                         f"{s['share_matched']:.0%} matched{null(s)}"
                         for s in summary["operators"])

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """Per unit and operator: the headline table, the faithfulness curves, heuristic
        families per layer, key / key-value maps of the top neurons, knockouts."""
        from ...report import heuristics as figs
        from ...report.blocks import escape, figure, table

        parts = []
        for u, (uid, record) in enumerate(units):
            run = self.load(ctx.folder(uid), record)
            rows = [[s["operator"], s["n_discovery"], s["n_eval"], s["heads"],
                     s["circuit_faithfulness"], s["first_layer"], s["neurons_per_layer"],
                     s["neuron_faithfulness"], figs.share_text(s), figs.null_text(s, ""),
                     figs.null_text(s, "_base"), figs.null_text(s, "_permuted"),
                     s["knockouts"]]
                    for s in record["summary"]["operators"]]
            parts.append(f"<h3>{escape(record['model'])}</h3>" + table(
                ["op", "discovery", "eval", "heads", "F heads+MLPs", "first layer",
                 "neurons/layer", "F neurons", "share matched [95% CI]",
                 "random neurons (ratio, p)", "base model (ratio, p)",
                 "permuted maps (ratio, p)", "knockouts"], rows))
            for o, result in enumerate(run.results):
                for name, make in (("curves", figs.curves_figure),
                                   ("families", figs.families_figure),
                                   ("maps", figs.maps_figure),
                                   ("knockouts", figs.knockout_figure)):
                    parts.append(figure(make(result), f"heuristics-{u}-{o}-{name}"))
            for o, emerged in enumerate(run.meta.get("emergence", [])):
                parts.append(figure(figs.emergence_figure(emerged),
                                    f"heuristics-{u}-{o}-emergence"))
        return "".join(parts)
