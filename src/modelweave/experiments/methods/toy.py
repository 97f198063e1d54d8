"""``toy``: ground-truth analyses of a toy checkpoint (a model trained by ``train-toy``).

``- toy: {analyses: [composition, induction, grokking]}`` runs, once per model: Q/K/V
composition scores (any model), the induction circuit by head roles, K-composition and EAP-IG
(models of two layers or more), and -- when the model is a ``train-toy`` run's ``final``
folder of modular addition -- the Fourier analysis and the progress measures over the run's
checkpoints. Train first (``modelweave train-toy ... --out runs/toy/grok``), then list
``runs/toy/grok/final`` under ``models:``. With ``require: true`` every listed analysis runs on
any model and one that cannot is a one-line :class:`~modelweave.toy.ToyError` (``modelweave
toy-analyse`` runs one analysis so); by default those that do not apply are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...io import read_json, write_json
from ...tasks.toy import toy_meta
from .base import ConfigError, MethodKind, Progress, ReportContext, Settings, Unit, register

if TYPE_CHECKING:
    from ...models import Model
    from ...planner import PlanSpec

ANALYSES = ("composition", "induction", "grokking")


@register
class Toy(MethodKind):
    """Writes ``<analysis>.json`` per analysis run (what ``toy-analyse --out`` has always
    written) and ``toy.json``, the index ``{analysis: file}``; the summary holds the headline
    numbers. :meth:`draw` makes ``composition.html`` and, for grokking,
    ``training_curves.html``, ``fourier_spectrum.html`` and ``progress_measures.html``."""

    name = "toy"
    params = {"analyses": None, "require": (False, True)}
    per_model = True
    title, section, noun, order = "Toy models", "toy", "toy-model", 90

    def check_params(self, params: dict, where: str) -> dict:
        params = super().check_params(params, where)
        chosen = params.get("analyses", list(ANALYSES))
        if isinstance(chosen, str):
            chosen = [chosen]
        bad = [a for a in chosen if a not in ANALYSES]
        if bad:
            field = f"{where}.analyses: " if where else ""
            raise ConfigError(f"{field}unknown analysis {bad[0]!r}; use {', '.join(ANALYSES)}")
        return {**params, "analyses": list(chosen)}

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        chosen = unit.params.get("analyses", list(ANALYSES))
        require = bool(unit.params.get("require", False))
        meta = toy_meta(model) or {}
        deep = model.cfg.n_layers > 1
        applies = {"composition": deep, "induction": deep and meta.get("task") == "induction",
                   "grokking": meta.get("task") == "modular_addition"}
        results, summary = {}, {}
        for name in (a for a in ANALYSES if a in chosen):
            if not (require or applies[name]):
                continue
            try:
                results[name] = _ANALYSE[name](model, experiment.seed)
            except ValueError as err:  # a model the analysis cannot read
                from ...toy import ToyError

                raise ToyError(f"{name}: {err}") from None
            summary.update(_SUMMARY[name](results[name]))
            write_json(folder / f"{name}.json", results[name], indent=1)
        write_json(folder / "toy.json", {k: f"{k}.json" for k in results})
        return summary

    def draw(self, folder: Path, record: dict) -> list[Path]:
        """The composition heatmaps and the grokking figures of the analyses the unit ran."""
        from ...report import toy as figures

        data = self.load(folder, record)
        files: list[Path] = []
        if "grokking" in data:
            files += figures.save_grokking(data["grokking"], folder)
        if "composition" in data:
            files += figures.save_composition(data["composition"], folder)
        return files

    def command_output(self, record: dict, files: list[Path]) -> dict:
        """For one analysis (``toy-analyse``) its numbers -- composition: ``top_k``,
        ``top_q``, ``top_v``, ``baseline``; induction: ``agree``, ``accuracy``,
        ``previous_token``, ``induction``; grokking: ``key_frequencies``, ``key_share``,
        ``neuron_key_share``, ``last`` -- otherwise the summary; and ``files``."""
        found = {f.stem: f for f in files if f.suffix == ".json" and f.stem in ANALYSES}
        out = dict(record["summary"]) if len(found) != 1 else {}
        for name, path in found.items() if len(found) == 1 else ():
            out.update(_COMMAND[name](read_json(path)))
        return {**out, "files": [str(f) for f in files]}

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name,
                           note="toy analyses: planned as forward passes")

    def load(self, folder: Path, record: dict) -> dict:
        """The analyses' results as plain dicts: analysis -> its data (see ``toy.json``)."""
        index = read_json(folder / "toy.json")
        return {name: read_json(folder / entry) if isinstance(entry, str)
                else entry for name, entry in index.items()}  # older units: data inline

    def headline(self, summary: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in summary.items())[:200] or "no analysis applied"

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


def _composition(model: Model, seed: int) -> dict:
    from ...toy.composition import composition_scores

    return composition_scores(model).to_dict()


def _induction(model: Model, seed: int) -> dict:
    from ...toy.induction import induction_circuit

    return induction_circuit(model, seed=seed).to_dict()


def _grokking(model: Model, seed: int) -> dict:
    """The Fourier analysis of ``model`` (a run's ``final``) and the progress measures over
    the run's checkpoints (intervals over unordered pairs), with its training history and,
    for a ``train-toy`` run, the random-init null of the key shares (20 untrained models of
    the run's config, their own top-|K| frequencies)."""
    from ...models import load_model
    from ...toy import grokking_stats as gs
    from ...toy.fourier import analyse_grokking
    from ...toy.series import find_checkpoints
    from ...toy.train import load_run

    run_dir = Path(model.name).parent
    ckpts = find_checkpoints(run_dir) if (run_dir / "checkpoints").is_dir() else []
    analysis = analyse_grokking(model, ((s, load_model(p, device="cpu")) for s, p in ckpts))
    data = {"run": str(run_dir), **analysis.to_dict(), "history": []}
    if (run_dir / "train.json").is_file():
        run = load_run(run_dir)
        data["history"] = run.history
        null = gs.random_init_null(run.config, len(analysis.key_frequencies), draws=20)
        data["nulls"] = gs.null_comparisons(gs.headline(data), null, "untrained models of "
                                            "the same config, top-|K| frequencies")
    return data


def _top_k(data: dict) -> dict:
    from ...toy.composition import CompositionScores

    la, ha, lb, hb, score = CompositionScores.from_dict(data).top("k", 1)[0]
    return {"top_k_composition": f"a{la}.h{ha}->a{lb}.h{hb} ({score:.3f})"}


def _composition_numbers(data: dict) -> dict:
    from ...toy.composition import CompositionScores

    scores = CompositionScores.from_dict(data)
    return {"top_k": scores.top("k", 3), "top_q": scores.top("q", 3),
            "top_v": scores.top("v", 3), "baseline": scores.baseline}


def _grokking_summary(data: dict) -> dict:
    """Headline numbers: the last checkpoint's test accuracy (all test pairs, swap-free,
    swap-trained) with intervals over unordered pairs, the key shares with their nulls."""
    from ...toy.grokking_stats import headline

    numbers = headline(data)
    out = {"key_frequencies": ", ".join(map(str, data["key_frequencies"]))}
    if "test_acc" not in numbers and data["history"]:
        out["test_acc"] = data["history"][-1]["test_acc"]
    for name in ("test_acc", "swap_free_acc", "swap_trained_acc", "key_share",
                 "neuron_key_share"):
        if numbers.get(name) is not None:
            out[name] = numbers[name]
            if f"{name}_ci" in numbers:
                out[f"{name}_ci"] = numbers[f"{name}_ci"]
            if f"{name}_null" in data.get("nulls", {}):
                out[f"{name}_null"] = data["nulls"][f"{name}_null"]
    return out


def _grokking_numbers(data: dict) -> dict:
    return {**_grokking_summary(data), "key_frequencies": data["key_frequencies"],
            "last": data["progress"][-1] if data["progress"] else None}


#: analysis -> its computation, its summary (the unit's record) and its command output
_ANALYSE = {"composition": _composition, "induction": _induction, "grokking": _grokking}
_SUMMARY = {"composition": _top_k,
            "induction": lambda d: {"induction_agree": d["agree"],
                                    "induction_accuracy": d["accuracy"]},
            "grokking": _grokking_summary}
_COMMAND = {"composition": _composition_numbers,
            "induction": lambda d: {k: d[k] for k in ("agree", "accuracy", "previous_token",
                                                      "induction")},
            "grokking": _grokking_numbers}
