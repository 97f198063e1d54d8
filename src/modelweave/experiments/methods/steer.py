"""``steer``: a contrastive steering vector and generations with and without it (per model)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...io import read_json, write_json
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
    ``site`` (default the block output) of ``layer``, added with ``scale`` at ``positions``
    (``all``, ``last``, ``N``, ``N:`` or ``N:M``) while generating ``max_new_tokens`` tokens per
    prompt (greedy; ``temperature`` > 0 samples with the run's seed); writes ``steer.json``
    (generations, and with ``words`` the share of continuations containing one of them) and
    the vector (``vector.safetensors`` + ``vector.json``). ``modelweave steer`` runs one unit
    (``--prompt`` is ``prompts``)."""

    name = "steer"
    params = {"pairs": None, "prompts": None, "layer": None, "scale": None, "positions": None,
              "method": ("mean", "pca", "pca_centred"), "site": None, "max_new_tokens": None,
              "temperature": None, "words": None}
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
        from ...errors import ModelWeaveError
        from ...methods.steering.vectors import load_pairs_file
        from ...models.steering import parse_positions

        for key, check in (("positions", parse_positions), ("pairs", load_pairs_file)):
            try:  # a bad spec or pairs file fails before any model loads
                check(params.get(key))
            except ModelWeaveError as err:
                if not where:  # a command's flag: the library's own one-line error
                    raise
                raise ConfigError(f"{where}.{key}: {err}") from None
        return params

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...methods.steering.vectors import contrastive_vectors, load_pairs_file

        p = unit.params
        layer = p.get("layer", model.cfg.n_layers // 5)
        site = p.get("site", "hook_resid_post")
        positives, negatives = load_pairs_file(p["pairs"])
        sv = contrastive_vectors(model, positives, negatives, layers=layer, site=site,
                                 method=p.get("method", "mean"))
        sv.meta["pairs"] = str(p["pairs"])
        sv.save(folder / "vector")
        prompts, n_new = list(p["prompts"]), int(p.get("max_new_tokens", 20))
        sampling = {"temperature": p.get("temperature", 0.0), "seed": experiment.seed}
        plain = model.generate(prompts, n_new, **sampling)
        with model.steer(sv.at(sv.layers[0]), layer=sv.layers[0], scale=p.get("scale", 4.0),
                         positions=p.get("positions"), site=site):
            steered = model.generate(prompts, n_new, **sampling)
        rows = [{"prompt": q, "unsteered": u, "steered": s}
                for q, u, s in zip(prompts, plain.texts, steered.texts, strict=True)]
        summary = {"layer": sv.layers[0], "scale": p.get("scale", 4.0),
                   "norm": float(sv.vectors[0].norm()), "n_pairs": sv.n_pairs}
        if p.get("words"):
            words = {w.lower() for w in p["words"]}
            summary["share_unsteered"] = _share(plain.texts, words)
            summary["share_steered"] = _share(steered.texts, words)
        write_json(folder / "steer.json", {**summary, "generations": rows})
        return summary

    def command_output(self, record: dict, files: list[Path]) -> dict:
        """``model``, ``layer``, ``site``, ``scale``, ``positions``, ``method``, ``n_pairs``,
        ``norm`` (and the word shares), ``generations`` and ``files``."""
        p = record["params"]
        saved = next(f for f in files if f.name == "steer.json")
        return {"model": (record.get("run") or {}).get("model", record["model"]),
                **record["summary"], "site": p.get("site", "hook_resid_post"),
                "positions": p.get("positions", "all"), "method": p.get("method", "mean"),
                "generations": read_json(saved)["generations"],
                "files": [str(f) for f in files]}

    def plan(self, params: dict) -> PlanSpec:
        from ...planner import PlanSpec

        return PlanSpec.of("eval", label=self.name,
                           note="steering: planned as forward passes")

    def load(self, folder: Path, record: dict) -> dict:
        return read_json(folder / "steer.json")

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
