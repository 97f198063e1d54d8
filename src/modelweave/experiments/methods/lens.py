"""``lens``: the logit lens, P(answer) after each layer at each position."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import MethodKind, Progress, ReportContext, Settings, Unit, register, unit_batch

if TYPE_CHECKING:
    from ...methods.lens import LensResult
    from ...models import Model
    from ...planner import PlanSpec


@register
class Lens(MethodKind):
    """``- lens: {k: 5}``: writes the ``LensResult`` (``lens.*``); :meth:`draw` makes its
    ``answer_prob`` heatmap."""

    name = "lens"
    params = {"k": None}
    title, section, noun, order = "Logit lens", "lens", "logit-lens", 40

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...methods.lens import logit_lens

        batch = unit_batch(model, unit, experiment)
        result = logit_lens(model, batch, k=unit.params.get("k", 5))
        result.save(folder / "lens")
        rank_end = result.answer_rank[:, -1].tolist()
        first = next((layer for layer, rank in zip(result.layers, rank_end, strict=True)
                      if rank < 0.5), None)
        return {"n": len(batch), "layers": result.layers,
                "answer_prob_end": result.answer_prob[:, -1].tolist(),
                "answer_rank_end": rank_end, "first_top1_layer": first}

    def draw(self, folder: Path, record: dict) -> list[Path]:
        """The P(answer) heatmap, layer × position (``answer_prob.png`` and ``.html``)."""
        from ...report.figures import save_heatmap

        result = self.load(folder, record)
        return save_heatmap(result.answer_prob, result.layers, result.positions, "layer", "pos",
                            f"Logit lens: P(answer) on {result.task}, {result.model}",
                            folder / "answer_prob", center=False)

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name,
                           note="logit lens: planned as a forward pass over the prompts")

    def headline(self, summary: dict) -> str:
        end = summary.get("answer_prob_end")
        if not end:
            return super().headline(summary)
        first = summary.get("first_top1_layer")
        return (f"P(answer) {end[-1]:.3f} after the last layer; answer first ranked top-1 "
                f"after layer {first}" if first is not None else
                f"P(answer) {end[-1]:.3f} after the last layer; never ranked top-1")

    def load(self, folder: Path, record: dict) -> LensResult:
        from ...methods.lens import LensResult

        return LensResult.load(folder / "lens")

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """One P(answer) heatmap (layer × position) per unit."""
        from ...report.blocks import escape, figure
        from ...report.figures import heatmap_figure

        parts = []
        for i, (uid, r) in enumerate(units):
            result = self.load(ctx.folder(uid), r)
            positions = [f"{j}:{escape(p)}" for j, p in enumerate(result.positions)]
            parts.append(figure(heatmap_figure(result.answer_prob, result.layers, positions,
                                               "layer", "position",
                                               escape(f"{r['task']}: P(answer) after each layer"),
                                               center=False), f"lens-{i}"))
        return "".join(parts)
