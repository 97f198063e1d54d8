"""``eval``: accuracy and logit difference of a model on a task (``metrics.evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...io import read_json, write_json
from .base import MethodKind, Progress, ReportContext, Settings, Unit, register

if TYPE_CHECKING:
    from ...models import Model
    from ...planner import PlanSpec


@register
class Eval(MethodKind):
    """``- eval: {n: 64, scoring: first, corruption: ...}``: writes ``eval.json`` (with
    per-example values and every aggregate's interval); the summary gives each headline
    number ``x`` its 95% bootstrap-over-prompts interval as ``x_ci``: ``accuracy_ci``,
    ``logit_diff_ci``, ``logit_diff_corrupt_ci``, ``metric_value_ci``."""

    name = "eval"
    params = {"n": None, "scoring": ("first", "full"), "corruption": None}
    title, section, noun, order = "Tasks", "tasks", "eval", 10

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...metrics import evaluate

        result = evaluate(model, unit.task, n=unit.params.get("n", experiment.n),
                          seed=experiment.seed, scoring=unit.params.get("scoring", "first"),
                          corruption=unit.params.get("corruption"))
        aggregates = {name: getattr(result, name).to_dict() for name in _AGGREGATES}
        write_json(folder / "eval.json", {**result.to_dict(per_example=True),
                                          "aggregates": aggregates})
        return _summary(result)

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name)

    def load(self, folder: Path, record: dict) -> dict:
        """The evaluation as a dict, per-example values included."""
        return read_json(folder / "eval.json")

    def headline(self, summary: dict) -> str:
        if not isinstance(summary.get("accuracy"), int | float):
            return super().headline(summary)
        line = f"accuracy {summary['accuracy']:.3f}"
        for key, label in (("accuracy", ""), ("logit_diff", "logit diff")):
            ci = summary.get(f"{key}_ci")
            if ci:
                line += (f", {label} {summary[key]:.3f}" if label else "") + \
                    f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        return line

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """The accuracy table: one row per task."""
        from ...report.blocks import table

        rows = [[r["task"], s["n"], s["accuracy"], _ci(s, "accuracy"), s["logit_diff"],
                 _ci(s, "logit_diff"), s["logit_diff_corrupt"], s["metric"], s["metric_value"],
                 _ci(s, "metric_value"), s["dropped"]]
                for _, r in units for s in [r["summary"]]]
        return table(["task", "n", "accuracy", "95% CI", "logit diff", "95% CI", "corrupted",
                      "metric", "value", "95% CI", "dropped"], sorted(rows))


def _ci(summary: dict, key: str) -> str:
    ci = summary.get(f"{key}_ci")
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def _summary(result) -> dict:
    """The result's summary with every aggregate's interval as ``<name>_ci``."""
    out = result.to_dict()
    for name in _AGGREGATES:
        agg = getattr(result, name)
        out[f"{name}_ci"] = [agg.ci_low, agg.ci_high]
    return out


#: the aggregates (mean and interval) ``eval.json`` keeps whole
_AGGREGATES = ("accuracy", "logit_diff", "logit_diff_corrupt", "metric_value")
