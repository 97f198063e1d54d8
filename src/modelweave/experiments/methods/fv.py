"""``fv``: function vectors of ICL tasks (once per model, a head set shared by its tasks)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import ConfigError, MethodKind, Progress, ReportContext, Settings, Unit, register

if TYPE_CHECKING:
    from ...methods.steering.fv_eval import FVRun
    from ...models import Model
    from ...planner import PlanSpec

#: experiment parameter -> run_function_vectors argument
SETTINGS = ("n_clean", "n_corrupt", "n_eval", "top_k", "shots", "layers", "effect_layers",
            "test_fraction", "null_draws")


@register
class FunctionVectors(MethodKind):
    """``- fv: {datasets: [antonym, capitalize], top_k: 10, layer: 10, layers: [4, 8, 12]}``:
    runs :func:`~modelweave.methods.steering.fv_eval.run_function_vectors` and writes
    ``fv.json`` and ``fv.safetensors`` (effects and vectors per task); its summary holds the
    heads, the swept layers and each task's held-out-word accuracies at the FV layer with
    their intervals (``x_ci``) and nulls (``x_null``: random-head FVs matched by layer;
    ``x_null_vector``: equal-norm random vectors); :meth:`draw` makes the effects heatmap and
    the layer sweep. ``test_fraction`` (0.3) of each task's word pairs is held out for the
    evaluation; ``null_draws`` (20) random head sets and vectors form the nulls.
    ``datasets`` may name ``all`` (every ICL dataset); ``layers`` and ``effect_layers`` may
    be written as on the command line, ``"0,4,8"`` or ``all`` (every layer).
    ``modelweave fv`` runs one unit (``--task`` is ``datasets``)."""

    name = "fv"
    params = {"datasets": None, "layer": None, **dict.fromkeys(SETTINGS)}
    per_model = True
    title, section, noun, order = "Function vectors", "fv", "function-vector", 70

    def check_params(self, params: dict, where: str) -> dict:
        from ...tasks import TaskError
        from ...tasks.icl import DATASETS, dataset_of, icl_task_name

        params = super().check_params(params, where)
        datasets = params.get("datasets") or list(DATASETS)
        datasets = [datasets] if isinstance(datasets, str) else list(datasets)
        if "all" in datasets:
            datasets = list(DATASETS)
        try:
            params["datasets"] = [dataset_of(icl_task_name(d)) for d in datasets]
        except TaskError as err:
            if not where:  # a command's --task: the task's own one-line error
                raise
            raise ConfigError(f"{where}.datasets: {err}") from None
        for key in ("layers", "effect_layers"):
            if key in params:
                params[key] = _layer_list(params[key], f"{where}.{key}" if where else key)
            value = params.get(key)
            if value is not None and not (isinstance(value, list)
                                          and all(isinstance(x, int) for x in value)):
                raise ConfigError(f"{where}.{key}: a list of layer numbers")
        return params

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...methods.steering.fv_eval import run_function_vectors

        p = dict(unit.params)
        datasets = p.pop("datasets")
        layer = p.pop("layer", None)
        run = run_function_vectors(model, datasets, fv_layer=layer, seed=experiment.seed,
                                   progress=progress,
                                   **{k: v for k, v in p.items() if v is not None})
        run.save(folder)
        return {"heads": [list(h) for h in run.heads], "fv_layer": run.fv_layer,
                "layers": run.layers, "tasks": run.headline()}

    def draw(self, folder: Path, record: dict) -> list[Path]:
        """The head effects heatmap (``fv_effects.png``/``.html``) and the layer sweep
        (``fv_layer_sweep.html``/``.png``)."""
        from ...report.steering import save_fv_figures

        return save_fv_figures(self.load(folder, record), folder)

    def command_output(self, record: dict, files: list[Path]) -> dict:
        """``model``, ``heads``, ``fv_layer``, ``layers``, ``headline`` (each task's
        accuracies) and ``files``."""
        s = record["summary"]
        return {"model": (record.get("run") or {}).get("model", record["model"]),
                "heads": s["heads"], "fv_layer": s["fv_layer"], "layers": s.get("layers"),
                "headline": s["tasks"], "files": [str(f) for f in files]}

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name,
                           note="function vectors: planned as forward passes")

    def load(self, folder: Path, record: dict) -> FVRun:
        from ...methods.steering.fv_eval import FVRun

        return FVRun.load(folder)

    def summary_row(self, record: dict) -> dict:
        """Per task: zero-shot and shuffled accuracy with the FV and without."""
        row: dict = {"fv_layer": record["summary"]["fv_layer"]}
        for t in record["summary"]["tasks"]:
            for key in ("ceiling_10shot", "zero_shot_none", "zero_shot_fv", "shuffled_none",
                        "shuffled_fv"):
                if key in t:
                    row[f"{t['task']} {key}"] = t[key]
            for key in ("zero_shot_fv_null", "shuffled_fv_null"):
                if key in t:
                    row[f"{t['task']} {key}_mean"] = t[key]["null_mean"]
                    row[f"{t['task']} {key}_p"] = t[key]["p_value"]
        return row

    def headline(self, summary: dict) -> str:
        def one(t: dict) -> str:
            text = (f"{t['task']}: zero-shot {t.get('zero_shot_none', 0):.2f}->"
                    f"{t.get('zero_shot_fv', 0):.2f}")
            if "zero_shot_fv_null" in t:
                text += f" (random heads {t['zero_shot_fv_null']['null_mean']:.2f})"
            return text

        return "; ".join(one(t) for t in summary["tasks"])[:240]

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """Per model: the headline table, the AIE heatmap and the layer sweep."""
        from ...report import steering as figs
        from ...report.blocks import escape, figure

        parts = []
        for u, (uid, record) in enumerate(units):
            run = self.load(ctx.folder(uid), record)
            parts.append(f"<h3>{escape(record['model'])}: FV at layer {run.fv_layer}, heads "
                         + escape(", ".join(f"a{L}.h{h}" for L, h in run.heads)) + "</h3>")
            parts.append(figs.headline_table(run))
            parts.append(figure(figs.effects_figure(run), f"fv-{u}-effects"))
            parts.append(figure(figs.sweep_figure(run), f"fv-{u}-sweep"))
        return "".join(parts)


def _layer_list(value, where: str):
    """``"0,4,8"`` (a command line's spelling) as ``[0, 4, 8]``, ``"all"`` as None (every
    layer); other values unchanged."""
    if not isinstance(value, str):
        return value
    if value.strip() == "all":
        return None
    try:
        return [int(x) for x in value.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"{where} {value!r}: give comma-separated layer "
                          "numbers or 'all'") from None
