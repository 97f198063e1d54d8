"""``heads``: head-role scores of a model (once per model, not per task)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import MethodKind, Progress, ReportContext, Settings, Unit, register

if TYPE_CHECKING:
    import pandas as pd

    from ...models import Model
    from ...planner import PlanSpec


@register
class Heads(MethodKind):
    """``- heads: {}``: writes ``head_roles.csv`` (layer, head, one column per role); its
    summary holds each role's top five heads."""

    name = "heads"
    per_model = True
    title, section, noun, order = "Head roles", "heads", "head-role", 50

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...methods.head_roles import head_roles

        roles = head_roles(model, seed=experiment.seed)
        roles.to_dataframe().to_csv(folder / "head_roles.csv", index=False)
        return {role: [{"head": f"{layer}.{head}", "score": score}
                       for layer, head, score in roles.top(role, 5)] for role in roles.scores}

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name,
                           note="head roles: planned as forward passes over short prompts")

    def load(self, folder: Path, record: dict) -> pd.DataFrame:
        """The role scores as a DataFrame: layer, head, one column per role."""
        import pandas as pd

        return pd.read_csv(folder / "head_roles.csv")

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """Each role's top heads (of the run's first model)."""
        from ...report.blocks import table

        summary = units[0][1]["summary"]
        rows = [[role, ", ".join(f"{h['head']} ({h['score']:.2f})" for h in top)]
                for role, top in summary.items()]
        return table(["role", "top heads (score)"], rows)
