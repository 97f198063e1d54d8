"""``patch``: exact or attribution patching sweeps over a grid of sites (heatmaps)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import MethodKind, Progress, ReportContext, register, unit_batch

if TYPE_CHECKING:
    from ...methods.result import PatchingResult
    from ...models import Model
    from ..config import Experiment, Unit


@register
class Patch(MethodKind):
    """``- patch: {grid: heads, method: exact, direction: denoising, layers: [0, 1]}``: writes
    the ``PatchingResult`` (``result.*``) and its heatmap (``heatmap.png``/``.html``)."""

    name = "patch"
    params = {"grid": ("heads", "heads-by-pos", "resid", "attn", "mlp", "neurons"),
              "method": ("exact", "attribution"), "direction": ("denoising", "noising"),
              "layers": None}
    id_params = ("grid", "method", "direction")
    title, section, noun, order = "Activation patching", "patching", "patching", 20

    def run(self, model: Model, unit: Unit, experiment: Experiment, folder: Path,
            progress: Progress = None) -> dict:
        from ...methods import attribution_sweep, patch_sweep
        from ...report.figures import patching_figure

        batch = unit_batch(model, unit, experiment)
        p = unit.params
        grid, direction = p.get("grid", "heads"), p.get("direction", "denoising")
        if p.get("method", "exact") == "attribution":
            result = attribution_sweep(model, batch, grid, direction=direction,
                                       layers=p.get("layers"))
        else:
            result = patch_sweep(model, batch, grid, direction=direction, layers=p.get("layers"),
                                 progress=progress)
        result.save(folder / "result")
        patching_figure(result, folder / "heatmap")
        top = [{"unit": [result.labels[a][i] for a, i in zip(result.axes, idx, strict=True)],
                "value": value} for idx, value in result.top(5)]
        return {"grid": grid, "direction": direction, "metric": result.metric, "n": len(batch),
                "clean_metric": result.clean_metric, "corrupt_metric": result.corrupt_metric,
                "top": top}

    def load(self, folder: Path, record: dict) -> PatchingResult:
        from ...methods.result import PatchingResult

        return PatchingResult.load(folder / "result")

    def headline(self, summary: dict) -> str:
        if not isinstance(summary.get("clean_metric"), int | float):
            return super().headline(summary)
        return f"clean metric {summary['clean_metric']:.3f}"

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """One interactive heatmap per unit."""
        from ...report.blocks import escape, figure
        from ...report.figures import flat_grid, heatmap_figure

        parts = []
        for i, (uid, r) in enumerate(units):
            result = self.load(ctx.folder(uid), r)
            values, rows, cols, row_name, col_name = flat_grid(result)
            title = (f"{r['task']}: {result.method} {result.direction} patching of "
                     f"{result.grid} ({result.metric}, 1 = clean)")
            parts.append(figure(heatmap_figure(values, [escape(x) for x in rows],
                                               [escape(x) for x in cols], row_name, col_name,
                                               escape(title)), f"patch-{i}"))
        return "".join(parts)
