"""``patch``: exact, attribution (AtP), AtP* or verified-localisation (``locate``) sweeps over a
grid of sites (heatmaps); estimated values are marked as estimates in the report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file

from ...io import save_tensors
from .base import MethodKind, Progress, ReportContext, register, unit_batch

if TYPE_CHECKING:
    from ...methods.result import PatchingResult
    from ...models import Model
    from ..config import Experiment, Unit


@register
class Patch(MethodKind):
    """``- patch: {grid: heads, method: exact, direction: denoising, layers: [0, 1]}``: writes
    the ``PatchingResult`` (``result.*``) and its heatmap (``heatmap.png``/``.html``).
    ``method: atp*`` stores AtP* estimates; ``method: locate`` (with ``k``, ``budget``) stores
    exact values for the verified units and AtP* estimates elsewhere, plus ``exact.safetensors``
    (the mask of exact values) and the locate summary in the unit's record."""

    name = "patch"
    params = {"grid": ("heads", "heads-by-pos", "resid", "attn", "mlp", "neurons"),
              "method": ("exact", "attribution", "atp*", "locate"),
              "direction": ("denoising", "noising"), "layers": None, "k": None, "budget": None}
    id_params = ("grid", "method", "direction")
    title, section, noun, order = "Activation patching", "patching", "patching", 20

    def run(self, model: Model, unit: Unit, experiment: Experiment, folder: Path,
            progress: Progress = None) -> dict:
        from ...methods import attribution_sweep, patch_sweep
        from ...methods.atp_star import atp_star
        from ...methods.locate import locate
        from ...report.figures import patching_figure

        batch = unit_batch(model, unit, experiment)
        p = unit.params
        grid, direction = p.get("grid", "heads"), p.get("direction", "denoising")
        method, extra = p.get("method", "exact"), {}
        if method == "attribution":
            result = attribution_sweep(model, batch, grid, direction=direction,
                                       layers=p.get("layers"))
        elif method == "atp*":
            result = atp_star(model, batch, grid, direction=direction,
                              layers=p.get("layers")).to_result(model, batch)
        elif method == "locate":
            found = locate(model, batch, grid, k=int(p.get("k", 20)), budget=p.get("budget"),
                           direction=direction, layers=p.get("layers"))
            result, mask = found.to_result(model, batch)
            save_tensors(folder / "exact.safetensors", {"exact": mask})
            extra = {"locate": {key: v for key, v in found.summary().items() if key != "top"}}
        else:
            result = patch_sweep(model, batch, grid, direction=direction, layers=p.get("layers"),
                                 progress=progress)
        result.save(folder / "result")
        patching_figure(result, folder / "heatmap")
        top = [{"unit": [result.labels[a][i] for a, i in zip(result.axes, idx, strict=True)],
                "value": value} for idx, value in result.top(5)]
        return {"grid": grid, "direction": direction, "metric": result.metric, "n": len(batch),
                "clean_metric": result.clean_metric, "corrupt_metric": result.corrupt_metric,
                "top": top, **extra}

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
            kind = exactness(result.method, r.get("summary", r).get("locate"))
            title = (f"{r['task']}: {result.method} {result.direction} patching of "
                     f"{result.grid} ({result.metric}, 1 = clean; {kind})")
            parts.append(figure(heatmap_figure(values, [escape(x) for x in rows],
                                               [escape(x) for x in cols], row_name, col_name,
                                               escape(title)), f"patch-{i}"))
            mask_file = ctx.folder(uid) / "exact.safetensors"
            if mask_file.exists():
                parts.append(exact_table(result, load_file(str(mask_file))["exact"]))
        return "".join(parts)


def exactness(method: str, located: dict | None) -> str:
    """How exact a stored grid's values are, in words."""
    if method == "exact":
        return "every value exact"
    if located:
        return (f"{located['n_exact']} of {located['n_components']} values exact (verified), "
                f"the rest AtP* estimates; estimated risk of a missed top-{located['k']} unit "
                f"{located['risk']:.2g}")
    return "every value an estimate"


def exact_table(result, mask) -> str:
    """The ten largest units of a located grid, each marked exact or estimate."""
    from ...report.blocks import escape

    rows = []
    for idx, value in result.top(10):
        unit = ", ".join(f"{a} {result.labels[a][i]}" for a, i in zip(result.axes, idx,
                                                                       strict=True))
        tag = "exact" if bool(mask[idx]) else "estimate"
        rows.append(f"<tr><td>{escape(unit)}</td><td>{value:.3f}</td>"
                    f"<td class='{tag}'>{tag}</td></tr>")
    return ("<table class='exactness'><tr><th>unit</th><th>value</th><th>value is</th></tr>"
            + "".join(rows) + "</table>")
