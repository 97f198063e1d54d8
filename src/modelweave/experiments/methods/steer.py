"""``steer``: a contrastive steering vector and generations with and without it (per model)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import SteeringError
from ...io import read_json, write_json
from .base import ConfigError, MethodKind, Progress, ReportContext, Settings, Unit, register

if TYPE_CHECKING:
    from ...models import Model
    from ...planner import PlanSpec


@register
class Steer(MethodKind):
    """``- steer: {pairs: pairs.jsonl, prompts: ["I think"], layer: 6, scale: 4.0,
    words: [good, great]}``: the mean-difference (or ``method: pca``) vector of the pairs at
    ``site`` (default the block output) of ``layer``, added with ``scale`` at ``positions``
    (``all``, ``last``, ``N``, ``N:`` or ``N:M``) while generating ``max_new_tokens`` tokens per
    prompt (greedy; ``temperature`` > 0 samples with the run's seed); writes ``steer.json``
    (generations, and with ``words`` the share of continuations containing one of them) and
    the vector (``vector.safetensors`` + ``vector.json``). With ``words``, the effect (steered
    minus unsteered share, and the change in the words' next-token log-probability) comes
    with its bootstrap interval over prompts (``x_ci``) and beside ``null_draws`` (10)
    equal-norm random vectors applied at the same site, layer, positions and scale
    (``x_null``; :func:`~modelweave.methods.steering.controls.steering_null`). A prompt that
    is (the start of) a pair text is refused. ``modelweave steer`` runs one unit (``--prompt``
    is ``prompts``)."""

    name = "steer"
    params = {"pairs": None, "prompts": None, "layer": None, "scale": None, "positions": None,
              "method": ("mean", "pca", "pca_centred"), "site": None, "max_new_tokens": None,
              "temperature": None, "words": None, "null_draws": None}
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
        from ...methods.steering.controls import check_disjoint_prompts
        from ...methods.steering.vectors import load_pairs_file
        from ...models.steering import parse_positions

        def disjoint(pairs) -> None:
            check_disjoint_prompts(prompts, *load_pairs_file(pairs))

        for key, check in (("positions", parse_positions), ("pairs", load_pairs_file),
                           ("pairs", disjoint)):
            try:  # a bad spec or pairs file fails before any model loads
                check(params.get(key))
            except ModelWeaveError as err:
                if not where:  # a command's flag: the library's own one-line error
                    raise
                raise ConfigError(f"{where}.{key}: {err}") from None
        draws = 10 if params.get("null_draws") is None else params["null_draws"]
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 0:
            raise ConfigError(f"{where}.null_draws: a count of random vectors, 0 or more "
                              f"(got {draws!r})")
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
        if not float(sv.vectors[0].norm()) > 0:
            raise SteeringError(f"the pairs in {p['pairs']} give a zero direction at {site} of "
                                f"layer {sv.layers[0]} (each pair reads the same activation "
                                "there); use another layer or pairs that differ")
        sv.meta["pairs"] = str(p["pairs"])
        sv.save(folder / "vector")
        prompts, n_new = list(p["prompts"]), int(p.get("max_new_tokens", 20))
        sampling = {"temperature": p.get("temperature", 0.0), "seed": experiment.seed}
        where = {"layer": sv.layers[0], "scale": p.get("scale", 4.0),
                 "positions": p.get("positions"), "site": site}
        summary = {"layer": sv.layers[0], "scale": where["scale"],
                   "norm": float(sv.vectors[0].norm()), "n_pairs": sv.n_pairs}
        vector = sv.at(sv.layers[0])
        draws = 10 if p.get("null_draws") is None else int(p["null_draws"])
        if p.get("words") and draws:
            summary.update(_with_null(model, vector, prompts, p["words"], n_new, sampling,
                                      where, draws, experiment.seed))
            plain, steered = summary.pop("texts")
        else:
            plain = model.generate(prompts, n_new, **sampling).texts
            with model.steer(vector, **where):
                steered = model.generate(prompts, n_new, **sampling).texts
            if p.get("words"):
                from ...methods.steering.controls import words_of

                words = {w.lower() for w in p["words"]}
                summary["share_unsteered"], summary["share_steered"] = (
                    sum(bool(words_of(t) & words) for t in texts) / len(texts)
                    for texts in (plain, steered))
        rows = [{"prompt": q, "unsteered": u, "steered": s}
                for q, u, s in zip(prompts, plain, steered, strict=True)]
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
        if "effect_null" in summary:
            n = summary["effect_null"]
            return (f"share with words {summary['share_unsteered']:.2f} -> "
                    f"{summary['share_steered']:.2f} (effect {summary['effect']:+.2f} "
                    f"[{summary['effect_ci'][0]:+.2f}, {summary['effect_ci'][1]:+.2f}]; "
                    f"equal-norm random vectors {n['null_mean']:+.2f}, p = {n['p_value']:.2g})")
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
            if "effect_null" in result:
                effect += "; " + self.headline(result).split("(", 1)[1].rstrip(")")
            parts.append(f"<h3>{escape(record['model'])}: layer {result['layer']}, scale "
                         f"{result['scale']}, {result['n_pairs']} pairs, norm "
                         f"{result['norm']:.2f}{escape(effect)}</h3>")
            parts.append(samples_table(result["generations"]))
        return "".join(parts)


def _with_null(model, vector, prompts: list[str], words: list[str], n_new: int,
               sampling: dict, where: dict, draws: int, seed: int) -> dict:
    """Word shares and log-probabilities with intervals, beside equal-norm random vectors
    (``texts``: the unsteered and steered continuations)."""
    from ...methods.steering.controls import (
        steering_null,
        target_logprob,
        word_hits,
        word_token_ids,
    )
    from ...metrics.uncertainty import bootstrap_stat

    texts: list[list[str]] = []
    share = steering_null(model, vector, word_hits(model, prompts, words, n_new, texts,
                                                   **sampling),
                          n_draws=draws, seed=seed, **where)
    logp = steering_null(model, vector, target_logprob(model, prompts,
                                                       word_token_ids(model, words)),
                         n_draws=draws, seed=seed, **where)
    out = {"texts": (texts[0], texts[1]), "n_prompts": len(prompts), "null_draws": draws,
           "applied": share.record}
    for key, values in (("share_unsteered", share.base), ("share_steered", share.treated)):
        agg = bootstrap_stat(values)
        out[key], out[f"{key}_ci"] = agg.mean, [agg.ci_low, agg.ci_high]
    out.update(effect=share.effect, effect_ci=share.effect_ci, effect_null=share.effect_null,
               logprob_effect=logp.effect, logprob_effect_ci=logp.effect_ci,
               logprob_effect_null=logp.effect_null)
    return out
