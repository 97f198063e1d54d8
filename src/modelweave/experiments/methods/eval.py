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
    per-example values and every aggregate's interval)."""

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
        return result.to_dict()

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name)

    def load(self, folder: Path, record: dict) -> dict:
        """The evaluation as a dict, per-example values included."""
        return read_json(folder / "eval.json")

    def headline(self, summary: dict) -> str:
        if not isinstance(summary.get("accuracy"), int | float):
            return super().headline(summary)
        return f"accuracy {summary['accuracy']:.3f}"

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """The accuracy table: one row per task."""
        from ...report.blocks import table

        rows = [[r["task"], s["n"], s["accuracy"], f"[{s['accuracy_ci'][0]:.2f}, "
                 f"{s['accuracy_ci'][1]:.2f}]", s["logit_diff"], s["logit_diff_corrupt"],
                 s["metric"], s["metric_value"], s["dropped"]]
                for _, r in units for s in [r["summary"]]]
        return table(["task", "n", "accuracy", "95% CI", "logit diff", "corrupted", "metric",
                      "value", "dropped"], sorted(rows))


#: the aggregates (mean and interval) ``eval.json`` keeps whole
_AGGREGATES = ("accuracy", "logit_diff", "logit_diff_corrupt", "metric_value")
