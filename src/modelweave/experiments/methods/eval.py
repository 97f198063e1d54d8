"""``eval``: accuracy and logit difference of a model on a task (``metrics.evaluate``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .base import MethodKind, Progress, ReportContext, register

if TYPE_CHECKING:
    from ...models import Model
    from ..config import Experiment, Unit


@register
class Eval(MethodKind):
    """``- eval: {n: 64, scoring: first}``: writes ``eval.json`` (with per-example values)."""

    name = "eval"
    params = {"n": None, "scoring": ("first", "full")}
    title, section, noun, order = "Tasks", "tasks", "eval", 10

    def run(self, model: Model, unit: Unit, experiment: Experiment, folder: Path,
            progress: Progress = None) -> dict:
        from ...metrics import evaluate

        result = evaluate(model, unit.task, n=unit.params.get("n", experiment.n),
                          seed=experiment.seed, scoring=unit.params.get("scoring", "first"))
        (folder / "eval.json").write_text(json.dumps(result.to_dict(per_example=True)))
        return result.to_dict()

    def load(self, folder: Path, record: dict) -> dict:
        """The evaluation as a dict, per-example values included."""
        return json.loads((folder / "eval.json").read_text())

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
