"""``patch``: exact, attribution (AtP), AtP* or verified-localisation (``locate``) sweeps over a
grid of sites (heatmaps); estimated values are marked as estimates in the report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...names import DIRECTIONS, GRIDS, PATCH_ALIASES, PATCH_GRID, PATCH_METHOD, PATCH_METHODS
from .base import MethodKind, Progress, ReportContext, Settings, Unit, register, unit_batch

if TYPE_CHECKING:
    from ...methods.result import PatchingResult
    from ...models import Model
    from ...planner import PlanSpec


@register
class Patch(MethodKind):
    """``- patch: {grid: heads, method: exact, direction: denoising, layers: [0, 1]}``: writes
    the ``PatchingResult`` (``result.*``); :meth:`draw` makes its heatmap
    (``heatmap.png``/``.html``). ``method: atp*`` stores AtP* estimates; ``method: locate``
    (with ``k``, ``budget``) stores exact values for the verified units and AtP* estimates
    elsewhere, plus the mask of exact values (``exact.safetensors``; ``locate.json`` holds the
    verification record with the mask flattened) and the locate summary in the unit's record.
    ``method: atp`` is an alias of ``attribution``. The methods and grids are those of
    :func:`modelweave.methods.patch`."""

    name = "patch"
    id_params = ("grid", "method", "direction")
    title, section, noun, order = "Activation patching", "patching", "patching", 20

    @property
    def params(self) -> dict[str, tuple | None]:  # the names of the library call's
        grids = tuple(sorted(GRIDS, key=lambda g: not g.startswith(PATCH_GRID)))  # default 1st
        return {"grid": grids, "method": (*PATCH_METHODS, *PATCH_ALIASES),
                "direction": DIRECTIONS, "layers": None, "k": None, "budget": None}

    def check_params(self, params: dict, where: str) -> dict:
        """The default checks, then ``method`` with its alias resolved (``atp`` ->
        ``attribution``)."""
        params = super().check_params(params, where)
        if "method" in params:
            params["method"] = PATCH_ALIASES.get(params["method"], params["method"])
        return params

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...io import save_tensors, write_json
        from ...methods.patching import patch

        batch = unit_batch(model, unit, experiment)
        # a param left out takes the library call's default
        given = {key: unit.params[key] for key in ("grid", "method", "direction", "layers", "k",
                                                  "budget") if key in unit.params}
        if "k" in given:
            given["k"] = int(given["k"])
        found = patch(model, batch, **given, progress=progress)
        found.result.save(folder / "result")
        if found.located is not None:
            save_tensors(folder / "exact.safetensors", {"exact": found.exact})
            write_json(folder / "locate.json", indent=None, data=(
                {**found.located.summary(), "exact_mask": found.exact.flatten().tolist()}))
        return found.summary(len(batch))

    def draw(self, folder: Path, record: dict) -> list[Path]:
        """The grid's heatmap (``heatmap.png`` and ``.html``)."""
        from ...report.figures import patching_figure

        return patching_figure(self.load(folder, record), folder / "heatmap")

    def command_output(self, record: dict, files: list[Path]) -> dict:
        """The summary with ``locate``'s k, n_exact, n_components, stopped and risk at the
        top level, plus ``files``."""
        summary = dict(record["summary"])
        located = summary.pop("locate", None) or {}
        lifted = {k: located[k] for k in ("k", "n_exact", "n_components", "stopped", "risk")
                  if k in located}
        return {**summary, **lifted, "files": [str(f) for f in files]}

    def plan(self, params: dict) -> PlanSpec:
        """Exact sweeps and ``locate`` as exact suffix patching (locate: an upper bound in
        time), attribution and AtP* as one gradient pass."""
        from ...planner import PlanError, PlanSpec

        method = params.get("method", PATCH_METHOD)
        method = PATCH_ALIASES.get(method, method)
        if method not in _PLANS:
            raise PlanError(f"unknown method {self.name!r} with method {method!r}; methods: "
                            f"{', '.join(_PLANS)}")
        kind, note = _PLANS[method]
        return PlanSpec.of(kind, note, f"{self.name}/{method}")

    def load(self, folder: Path, record: dict) -> PatchingResult:
        from ...methods.result import PatchingResult

        return PatchingResult.load(folder / "result")

    def headline(self, summary: dict) -> str:
        if not isinstance(summary.get("clean_metric"), int | float):
            return super().headline(summary)
        line = f"clean metric {summary['clean_metric']:.3f}"
        ci = summary.get("top_effect_ci")
        if isinstance(summary.get("top_effect"), int | float) and ci:
            line += f", top effect {summary['top_effect']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
        return line

    def components(self, folder: Path, record: dict) -> list[str] | None:
        """``locate``'s verified top-k components (:func:`component_name`), else None (a
        full sweep discovers no set)."""
        located = (record.get("summary") or {}).get("locate")
        if not located or "top" not in (self._located(folder) or {}):
            return None
        grid = located.get("grid", record["summary"].get("grid"))
        return [component_name(grid, u) for u in self._located(folder)["top"]]

    @staticmethod
    def _located(folder: Path) -> dict | None:
        from ...io import read_json

        path = folder / "locate.json"
        return read_json(path) if path.exists() else None

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
            fig = heatmap_figure(values, [escape(x) for x in rows], [escape(x) for x in cols],
                                 row_name, col_name, escape(title))
            with_intervals(fig, result, row_name, col_name)
            parts.append(figure(fig, f"patch-{i}"))
            mask_file = ctx.folder(uid) / "exact.safetensors"
            if mask_file.exists():
                from ...io import load_tensors

                parts.append(exact_table(result, load_tensors(mask_file)["exact"]))
        return "".join(parts)


#: patch method -> (memory kind, note)
_PLANS = {
    "exact": ("patch", ""),
    "attribution": ("attribution", "attribution patching: one gradient pass over all prompts "
                    "(approximate)"),
    "atp*": ("attribution", "AtP*: planned as attribution patching (its QK fix-up passes are "
             "not modelled)"),
    "locate": ("patch", "locate: AtP* estimates then exact patches of candidates; planned as "
               "the exact sweep, an upper bound in time"),
}


def component_name(grid: str, unit: dict) -> str:
    """A located unit ``{"layer", "pos", "index"}`` as a component name: heads ``aL.hH``,
    neurons ``mL.nI`` (the names of :mod:`modelweave.metrics.nulls`), with ``@p`` for a
    position; site grids ``resid L@p``, ``attn L@p``, ``mlp L@p``."""
    layer, pos, index = unit["layer"], unit.get("pos"), unit.get("index")
    where = "" if pos is None else f"@{pos}"
    if grid.startswith("heads"):
        return f"a{layer}.h{index}{where}"
    if grid.startswith("neurons"):
        return f"m{layer}.n{index}{where}"
    return f"{grid} {layer}{where}"


def with_intervals(fig, result, row_name: str, col_name: str) -> None:
    """Put each cell's 95% interval over prompts into the heatmap's hover text (when the
    result has intervals); the figure is otherwise unchanged."""
    from dataclasses import replace

    from ...report.figures import flat_grid

    if result.low is None or result.high is None:
        return
    low = flat_grid(replace(result, values=result.low))[0].float().numpy()
    high = flat_grid(replace(result, values=result.high))[0].float().numpy()
    import numpy as np

    fig.data[0].customdata = np.stack([low, high], axis=-1)
    fig.data[0].hovertemplate = (f"{row_name} %{{y}}<br>{col_name} %{{x}}<br>value %{{z:.3f}} "
                                 "[%{customdata[0]:.3f}, %{customdata[1]:.3f}] (95% over "
                                 "prompts)<extra></extra>")


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
