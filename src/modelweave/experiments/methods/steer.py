"""``steer``: a contrastive steering vector and generations with and without it (per model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .base import ConfigError, MethodKind, Progress, ReportContext, Settings, Unit, register

if TYPE_CHECKING:
    from ...models import Model
    from ...planner import PlanSpec


def _share(texts: list[str], words: set[str]) -> float:
    found = [bool({w.strip(".,!?;:'\"()").lower() for w in t.split()} & words) for t in texts]
    return sum(found) / max(len(found), 1)


@register
class Steer(MethodKind):
    """``- steer: {pairs: pairs.jsonl, prompts: ["I think"], layer: 6, scale: 4.0,
    words: [good, great]}``: the mean-difference (or ``method: pca``) vector of the pairs at
    the block output of ``layer``, added with ``scale`` at ``positions`` while generating
    ``max_new_tokens`` greedy tokens per prompt; writes ``steer.json`` (generations, and with
    ``words`` the share of continuations containing one of them) and the vector."""

    name = "steer"
    params = {"pairs": None, "prompts": None, "layer": None, "scale": None, "positions": None,
              "method": ("mean", "pca", "pca_centred"), "max_new_tokens": None, "words": None}
    per_model = True
    id_params = ("layer",)
    title, section, noun, order = "Steering", "steer", "steering", 71

    def check_params(self, params: dict, where: str) -> dict:
        params = super().check_params(params, where)
        if not params.get("pairs"):
            raise ConfigError(f"{where}.pairs: a contrastive pairs file is required")
        prompts = params.get("prompts")
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ConfigError(f"{where}.prompts: a list of prompts to continue")
        return params

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...methods.steering.vectors import contrastive_vectors, load_pairs_file

        p = unit.params
        layer = p.get("layer", model.cfg.n_layers // 5)
        positives, negatives = load_pairs_file(p["pairs"])
        sv = contrastive_vectors(model, positives, negatives, layers=layer,
                                 method=p.get("method", "mean"))
        sv.save(folder / "vector")
        prompts, n_new = list(p["prompts"]), int(p.get("max_new_tokens", 20))
        plain = model.generate(prompts, n_new)
        with model.steer(sv.at(sv.layers[0]), layer=sv.layers[0], scale=p.get("scale", 4.0),
                         positions=p.get("positions")):
            steered = model.generate(prompts, n_new)
        rows = [{"prompt": q, "unsteered": u, "steered": s}
                for q, u, s in zip(prompts, plain.texts, steered.texts, strict=True)]
        summary = {"layer": sv.layers[0], "scale": p.get("scale", 4.0),
                   "norm": float(sv.vectors[0].norm()), "n_pairs": sv.n_pairs}
        if p.get("words"):
            words = {w.lower() for w in p["words"]}
            summary["share_unsteered"] = _share(plain.texts, words)
            summary["share_steered"] = _share(steered.texts, words)
        (folder / "steer.json").write_text(json.dumps({**summary, "generations": rows}))
        return summary

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name,
                           note="steering: planned as forward passes")

    def load(self, folder: Path, record: dict) -> dict:
        return json.loads((folder / "steer.json").read_text())

    def headline(self, summary: dict) -> str:
        if "share_steered" in summary:
            return (f"share with words {summary['share_unsteered']:.2f} -> "
                    f"{summary['share_steered']:.2f}")
        return f"layer {summary['layer']}, scale {summary['scale']}"

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """Per unit: the vector's layer, scale and effect, and the generations."""
        from ...report.blocks import escape
        from ...report.steering import samples_table

        parts = []
        for uid, record in units:
            result = self.load(ctx.folder(uid), record)
            effect = (f"; share with target words {result['share_unsteered']:.2f} -> "
                      f"{result['share_steered']:.2f}" if "share_steered" in result else "")
            parts.append(f"<h3>{escape(record['model'])}: layer {result['layer']}, scale "
                         f"{result['scale']}, {result['n_pairs']} pairs, norm "
                         f"{result['norm']:.2f}{escape(effect)}</h3>")
            parts.append(samples_table(result["generations"]))
        return "".join(parts)
