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
    summary holds each role's top five heads. A unit with a task (``modelweave heads --task``)
    also attributes the task's logit difference to each head (``dla.safetensors``,
    ``dla_logit_diff`` in the summary) and saves the attention patterns of the three heads of
    largest |DLA| (``patterns.*``). :meth:`draw` makes one heatmap per role (and DLA) and one
    per saved pattern."""

    name = "heads"
    per_model = True
    title, section, noun, order = "Head roles", "heads", "head-role", 50

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...io import atomic_write
        from ...methods.head_roles import head_roles

        roles = head_roles(model, seed=experiment.seed)
        atomic_write(folder / "head_roles.csv", roles.to_dataframe().to_csv(index=False))
        summary: dict = {role: [{"head": f"{layer}.{head}", "score": score}
                                for layer, head, score in roles.top(role, 5)]
                         for role in roles.scores}
        if unit.task:
            summary["dla_logit_diff"] = _dla(model, unit, experiment, folder)
        return summary

    def draw(self, folder: Path, record: dict) -> list[Path]:
        """``<role>.png``/``.html`` per role (and ``dla``), layer × head, and
        ``pattern_<layer>_<head>.*`` per saved attention pattern."""
        from ...io import load_tensors
        from ...report.figures import save_heatmap
        from ._patterns import draw_patterns

        frame = self.load(folder, record)
        n_layers, n_heads = int(frame["layer"].max()) + 1, int(frame["head"].max()) + 1
        grids = {role: _grid(frame[role], n_layers, n_heads) for role in frame.columns
                 if role not in ("layer", "head")}
        files = []
        if "dla_logit_diff" in record["summary"] and (folder / "dla.safetensors").exists():
            grids["dla"] = load_tensors(folder / "dla.safetensors")["heads"]
            files = draw_patterns(folder, lambda name: "pattern_" + name[1:].replace(".h", "_"))
        layers, heads = [str(i) for i in range(n_layers)], [str(h) for h in range(n_heads)]
        for role, values in grids.items():
            files += save_heatmap(values, layers, heads, "layer", "head",
                                  f"{role} score per head, {record['model']}", folder / role,
                                  center=role == "dla")
        return files

    def headline(self, summary: dict) -> str:
        tops = [f"{role} {rows[0]['head']}" for role, rows in summary.items()
                if isinstance(rows, list) and rows]
        return "top heads: " + ", ".join(tops) if tops else super().headline(summary)

    def command_output(self, record: dict, files: list[Path]) -> dict:
        """``top``: role -> its top heads as ``{"layer", "head", "score"}``; with a task
        ``dla_logit_diff``; ``files``."""
        summary = record["summary"]
        top = {role: [{"layer": int(h["head"].split(".")[0]), "head": int(h["head"].split(".")[1]),
                       "score": h["score"]} for h in rows]
               for role, rows in summary.items() if isinstance(rows, list)}
        extra = {"dla_logit_diff": summary["dla_logit_diff"]} if "dla_logit_diff" in summary else {}
        return {"top": top, **extra, "files": [str(f) for f in files]}

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
                for role, top in summary.items() if isinstance(top, list)]
        return table(["role", "top heads (score)"], rows)


def _grid(column, n_layers: int, n_heads: int):
    """A role's column of ``head_roles.csv`` (layer-major rows) as a [layer, head] tensor."""
    import torch

    return torch.tensor(column.to_numpy(), dtype=torch.float32).view(n_layers, n_heads)


def _dla(model: Model, unit: Unit, experiment: Settings, folder: Path) -> float:
    """Each head's direct logit attribution on the unit's task (``dla.safetensors``) and the
    patterns of the three heads of largest |DLA|; returns the mean logit difference."""
    from ...io import save_tensors
    from ...methods.dla import direct_logit_attribution
    from ._patterns import save_patterns
    from .base import unit_batch

    batch = unit_batch(model, unit, experiment)
    dla = direct_logit_attribution(model, batch)
    if dla.heads is not None:
        save_tensors(folder / "dla.safetensors", {"heads": dla.heads.contiguous()})
        order = dla.heads.flatten().abs().argsort(descending=True)[:3].tolist()
        n_heads = model.cfg.n_heads
        save_patterns(model, batch, [(i // n_heads, i % n_heads) for i in order], folder,
                      "|DLA| top-3")
    return dla.logit_diff
