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
    """``- heads: {}``: writes ``head_roles.csv`` (layer, head, one column per role) and the
    per-item scores (``head_roles_items.safetensors``); its summary holds each role's top five
    heads with bootstrap intervals over items (``score_ci``) and ``<role>_null``: their mean
    score beside random heads of the same layers. A unit with a task (``modelweave heads --task``)
    also attributes the task's logit difference to each head (``dla.safetensors``,
    ``dla_logit_diff`` in the summary) and saves the attention patterns of the three heads of
    largest |DLA| (``patterns.*``). :meth:`draw` makes one heatmap per role (and DLA) and one
    per saved pattern."""

    name = "heads"
    per_model = True
    title, section, noun, order = "Head roles", "heads", "head-role", 50

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...io import atomic_write, save_tensors
        from ...methods.head_roles import head_roles, role_null
        from ...metrics.nulls import NullError

        roles = head_roles(model, seed=experiment.seed)
        atomic_write(folder / "head_roles.csv", roles.to_dataframe().to_csv(index=False))
        save_tensors(folder / "head_roles_items.safetensors",
                     {k: v.contiguous() for k, v in roles.items.items()})
        summary: dict = {role: roles.top_intervals(role, 5, seed=experiment.seed)
                         for role in roles.scores}
        for role in roles.scores:
            try:
                top = [(layer, head) for layer, head, _ in roles.top(role, 5)]
                summary[f"{role}_null"] = role_null(roles, role, top,
                                                    seed=experiment.seed).to_dict()
            except NullError as err:  # the top heads fill a layer: no other heads to draw
                summary[f"{role}_null_note"] = str(err)
        if unit.task:
            summary.update(_dla(model, unit, experiment, folder))
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
            saved = load_tensors(folder / "dla.safetensors")
            grids["dla"] = saved["heads"]
            files = draw_patterns(folder, lambda name: "pattern_" + name[1:].replace(".h", "_"))
            if "attn_per_prompt" in saved:
                from ...metrics.uncertainty import bootstrap_curve
                from ...report.bands import save_band_figure

                bands = {f"{kind} layer": bootstrap_curve(saved[f"{kind}_per_prompt"])
                         for kind in ("attn", "mlp")}
                files += save_band_figure(bands, folder / "dla_layers", "layer",
                                          "direct effect on the logit difference",
                                          f"DLA per layer on {record['task']}, "
                                          f"{record['model']}")
        layers, heads = [str(i) for i in range(n_layers)], [str(h) for h in range(n_heads)]
        for role, values in grids.items():
            files += save_heatmap(values, layers, heads, "layer", "head",
                                  f"{role} score per head, {record['model']}", folder / role,
                                  center=role == "dla")
        return files

    def headline(self, summary: dict) -> str:
        tops = [f"{role} {rows[0]['head']}" for role, rows in _roles(summary).items() if rows]
        return "top heads: " + ", ".join(tops) if tops else super().headline(summary)

    def command_output(self, record: dict, files: list[Path]) -> dict:
        """``top``: role -> its top heads as ``{"layer", "head", "score", "score_ci"}``;
        ``<role>_null``; with a task ``dla_logit_diff`` (and ``_ci``, ``dla_top``); ``files``."""
        summary = record["summary"]
        top = {role: [{"layer": int(h["head"].split(".")[0]), "head": int(h["head"].split(".")[1]),
                       "score": h["score"], **({"score_ci": h["score_ci"]} if "score_ci" in h
                                               else {})} for h in rows]
               for role, rows in _roles(summary).items()}
        extra = {k: v for k, v in summary.items()
                 if k.startswith("dla") or k.endswith(("_null", "_null_note"))}
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
        """Each role's top heads with their intervals, and their mean beside random heads of
        the same layers (of the run's first model)."""
        from ...report.blocks import table

        summary = units[0][1]["summary"]
        rows = []
        for role, top in _roles(summary).items():
            null = summary.get(f"{role}_null")
            rows.append([role, ", ".join(_head_cell(h) for h in top),
                         f"{null['observed']:.2f} vs {null['null_mean']:.2f} "
                         f"[{null['null_low']:.2f}, {null['null_high']:.2f}], "
                         f"p {null['p_value']:.2g}" if null else "-"])
        return table(["role", "top heads (score [95% CI over items])",
                      "top-5 mean vs random heads of their layers"], rows)


def _roles(summary: dict) -> dict[str, list[dict]]:
    """The summary's role -> top-heads rows (not the DLA rows or the nulls)."""
    return {k: v for k, v in summary.items() if isinstance(v, list) and not k.startswith("dla")}


def _head_cell(row: dict) -> str:
    ci = row.get("score_ci")
    if not ci or ci[0] != ci[0]:  # no interval (older results, or NaN)
        return f"{row['head']} ({row['score']:.2f})"
    return f"{row['head']} ({row['score']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}])"


def _grid(column, n_layers: int, n_heads: int):
    """A role's column of ``head_roles.csv`` (layer-major rows) as a [layer, head] tensor."""
    import torch

    return torch.tensor(column.to_numpy(), dtype=torch.float32).view(n_layers, n_heads)


def _dla(model: Model, unit: Unit, experiment: Settings, folder: Path) -> dict:
    """Each head's direct logit attribution on the unit's task (``dla.safetensors``, with the
    per-prompt values) and the patterns of the three heads of largest |DLA|; returns
    ``dla_logit_diff`` with its interval over prompts and the top-3 heads' DLA with theirs."""
    from ...io import save_tensors
    from ...methods.dla import direct_logit_attribution
    from ...metrics.uncertainty import bootstrap_stat
    from ._patterns import save_patterns
    from .base import unit_batch

    batch = unit_batch(model, unit, experiment)
    dla = direct_logit_attribution(model, batch)
    seed = experiment.seed
    out: dict = {"dla_logit_diff": dla.logit_diff}
    if dla.per_prompt:
        agg = bootstrap_stat(dla.per_prompt["logit_diff"], seed=seed)
        out["dla_logit_diff_ci"] = [agg.ci_low, agg.ci_high]
    if dla.heads is not None:
        save_tensors(folder / "dla.safetensors", {
            "heads": dla.heads.contiguous(),
            **{f"{k}_per_prompt": v.contiguous() for k, v in dla.per_prompt.items()}})
        order = dla.heads.flatten().abs().argsort(descending=True)[:3].tolist()
        n_heads = model.cfg.n_heads
        pairs = [(i // n_heads, i % n_heads) for i in order]
        save_patterns(model, batch, pairs, folder, "|DLA| top-3")
        rows = []
        for layer, head in pairs:
            row = {"head": f"{layer}.{head}", "dla": float(dla.heads[layer, head])}
            if "heads" in dla.per_prompt:
                agg = bootstrap_stat(dla.per_prompt["heads"][:, layer, head], seed=seed)
                row["dla_ci"] = [agg.ci_low, agg.ci_high]
            rows.append(row)
        out["dla_top"] = rows
    return out
