"""``toy``: ground-truth analyses of a toy checkpoint (a model trained by ``train-toy``).

``- toy: {analyses: [composition, induction, grokking]}`` runs, once per model: Q/K/V
composition scores (any model), the induction circuit by head roles, K-composition and EAP-IG
(models of two layers or more), and -- when the model is a ``train-toy`` run's ``final``
folder of modular addition -- the Fourier analysis and the progress measures over the run's
checkpoints. Train first (``modelweave train-toy ... --out runs/toy/grok``), then list
``runs/toy/grok/final`` under ``models:``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .base import ConfigError, MethodKind, Progress, ReportContext, Settings, Unit, register

if TYPE_CHECKING:
    from ...models import Model
    from ...planner import PlanSpec

ANALYSES = ("composition", "induction", "grokking")


@register
class Toy(MethodKind):
    """Writes ``toy.json`` (one entry per analysis); the summary holds the headline numbers."""

    name = "toy"
    params = {"analyses": None}
    per_model = True
    title, section, noun, order = "Toy models", "toy", "toy-model", 90

    def check_params(self, params: dict, where: str) -> dict:
        params = super().check_params(params, where)
        chosen = params.get("analyses", list(ANALYSES))
        if isinstance(chosen, str):
            chosen = [chosen]
        bad = [a for a in chosen if a not in ANALYSES]
        if bad:
            raise ConfigError(f"{where}.analyses: unknown analysis {bad[0]!r}; use "
                              f"{', '.join(ANALYSES)}")
        return {**params, "analyses": list(chosen)}

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...toy.composition import composition_scores

        chosen = unit.params.get("analyses", list(ANALYSES))
        meta = getattr(model.hf_model.config, "modelweave_toy", None) or {}
        results, summary = {}, {}
        if "composition" in chosen and model.cfg.n_layers > 1:
            comp = composition_scores(model)
            results["composition"] = comp.to_dict()
            la, ha, lb, hb, score = comp.top("k", 1)[0]
            summary["top_k_composition"] = f"a{la}.h{ha}->a{lb}.h{hb} ({score:.3f})"
        if "induction" in chosen and model.cfg.n_layers > 1 and meta.get("task") == "induction":
            from ...toy.induction import induction_circuit

            found = induction_circuit(model, seed=experiment.seed)
            results["induction"] = found.to_dict()
            summary["induction_agree"] = found.agree
            summary["induction_accuracy"] = found.accuracy
        run_dir = Path(model.name).parent
        if "grokking" in chosen and meta.get("task") == "modular_addition":
            from ...models import load_model
            from ...toy.fourier import analyse_grokking
            from ...toy.series import find_checkpoints

            ckpts = find_checkpoints(run_dir) if (run_dir / "checkpoints").is_dir() else []
            analysis = analyse_grokking(model, [(s, load_model(p, device="cpu"))
                                                for s, p in ckpts])
            history = []
            if (run_dir / "train.json").is_file():
                history = json.loads((run_dir / "train.json").read_text())["history"]
            results["grokking"] = {**analysis.to_dict(), "history": history}
            summary["key_frequencies"] = ", ".join(map(str, analysis.key_frequencies))
            if history:
                summary["test_acc"] = history[-1]["test_acc"]
        (folder / "toy.json").write_text(json.dumps(results))
        return summary

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name,
                           note="toy analyses: planned as forward passes")

    def load(self, folder: Path, record: dict) -> dict:
        """The analyses' results as plain dicts (see ``toy.json``)."""
        return json.loads((folder / "toy.json").read_text())

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """Per model: training curves, Fourier spectrum and progress measures (grokking),
        composition heatmaps, the induction circuit table."""
        from ...report import toy as figs
        from ...report.blocks import escape, figure, table

        parts = []
        for i, (uid, record) in enumerate(units):
            data = self.load(ctx.folder(uid), record)
            parts.append(f"<h3>{escape(record['model'])}</h3>")
            grok = data.get("grokking")
            if grok:
                if grok.get("history"):
                    parts.append(figure(figs.curves_figure(grok["history"]), f"toy-curves-{i}"))
                parts.append(figure(figs.spectrum_figure(grok["embedding_spectrum"],
                                                         grok["key_frequencies"]),
                                    f"toy-spectrum-{i}"))
                if grok.get("progress"):
                    parts.append(figure(figs.progress_figure(grok["progress"]),
                                        f"toy-progress-{i}"))
            if "composition" in data:
                parts.append(figure(figs.composition_figure(data["composition"]["scores"]),
                                    f"toy-composition-{i}"))
            ind = data.get("induction")
            if ind:
                rows = [[m, "a{}.h{}".format(*ind["previous_token"][m]),
                         "a{}.h{}".format(*ind["induction"][m])] for m in ind["previous_token"]]
                parts.append(table(["method", "previous-token head", "induction head"], rows))
                parts.append(f"<p>all three agree: {escape(str(ind['agree']))}; accuracy "
                             f"{ind['accuracy']:.3f}</p>")
        return "\n".join(parts)
