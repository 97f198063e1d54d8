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
    """``- lens: {k: 5}``: writes the ``LensResult`` (``lens.*``, with each prompt's P(answer)
    at its last position); the summary's ``answer_prob_final`` (after the last layer) has its
    ``_ci`` over prompts and ``answer_prob_end_band`` the band of the whole curve;
    :meth:`draw` makes the ``answer_prob`` heatmap and the curve with its band."""

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
        band = result.band(seed=experiment.seed)
        return {"n": len(batch), "layers": result.layers,
                "answer_prob_end": result.answer_prob[:, -1].tolist(),
                "answer_prob_end_band": {"low": band.low, "high": band.high},
                "answer_prob_final": band.value[-1],
                "answer_prob_final_ci": [band.low[-1], band.high[-1]],
                "answer_rank_end": rank_end, "first_top1_layer": first}

    def draw(self, folder: Path, record: dict) -> list[Path]:
        """The P(answer) heatmap, layer × position (``answer_prob.png`` and ``.html``), and
        P(answer) at the last position per layer with its band (``answer_prob_end.png``)."""
        from ...report.bands import save_band_figure
        from ...report.figures import save_heatmap

        result = self.load(folder, record)
        files = save_heatmap(result.answer_prob, result.layers, result.positions, "layer",
                             "pos", f"Logit lens: P(answer) on {result.task}, {result.model}",
                             folder / "answer_prob", center=False)
        if result.answer_prob_last is not None:
            files += save_band_figure({"P(answer), last position": result.band()},
                                      folder / "answer_prob_end", "after layer", "P(answer)",
                                      f"Logit lens on {result.task}, {result.model}",
                                      xticks=result.layers)
        return files

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name,
                           note="logit lens: planned as a forward pass over the prompts")

    def headline(self, summary: dict) -> str:
        end = summary.get("answer_prob_end")
        if not end:
            return super().headline(summary)
        first = summary.get("first_top1_layer")
        ci = summary.get("answer_prob_final_ci")
        value = (f"{summary['answer_prob_final']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci
                 else f"{end[-1]:.3f}")
        return (f"P(answer) {value} after the last layer; answer first ranked top-1 "
                f"after layer {first}" if first is not None else
                f"P(answer) {value} after the last layer; never ranked top-1")

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
            ci = r["summary"].get("answer_prob_final_ci")
            if ci:
                parts.append(f"<p>P(answer) at the last position after the last layer: "
                             f"{r['summary']['answer_prob_final']:.3f} [{ci[0]:.3f}, "
                             f"{ci[1]:.3f}] (95% bootstrap over {r['summary']['n']} "
                             f"prompts)</p>")
        return "".join(parts)
