"""Cross-model activation patching (CMAP, Prakash et al. 2024), with intervals and a null.

Run the *source* model (e.g. a fine-tune) and the *target* model (e.g. its base) on the same
prompts; replace the outputs of a group of the target's components (heads' ``hook_result``,
MLPs' ``hook_mlp_out``) by the source's, and measure how much of the source's advantage the
group recovers:

    recovery = (m(target with the group from source) - m(target)) / (m(source) - m(target))

1 = the group alone carries the whole difference, 0 = none of it. The two models must share an
architecture (same layers, heads and widths). What is not a component stays the target's
(embeddings, norms, output-projection biases, unembedding): for a fine-tune that moved only the
projection matrices (LoRA), patching every component reproduces the source exactly.

:func:`cmap` returns the point recoveries. :func:`cmap_nulls` adds, per group:

- a bootstrap-over-prompts interval of the recovery (the per-prompt metrics of the patched,
  target and source runs resampled together, the mean-then-ratio recomputed on each resample,
  :func:`~modelweave.metrics.uncertainty.bootstrap_stat`);
- a matched null: ``null_draws`` random groups of heads with the group's count of heads per
  layer (:func:`~modelweave.metrics.nulls.matched_draws` over every head of the model, the
  group's own heads excluded), each patched the same way, and the group's recovery compared
  with theirs (:func:`~modelweave.metrics.nulls.compare`: null mean, 2.5-97.5% range, p-value).
  A group whose layers cannot supply enough other heads (or that holds MLPs, which have no
  random counterpart of the same layer) is a :class:`~modelweave.metrics.nulls.NullError`,
  or, with ``on_unmatched="skip"``, a group without a null and the reason recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..circuits import CircuitError
from ..metrics.nulls import NullComparison, NullError, compare, heads_universe, matched_draws
from ..metrics.scores import metric_fn
from ..metrics.uncertainty import bootstrap_stat
from ..models import Model
from ..tasks import TaskBatch


def _parse(component: str, model: Model) -> tuple[str, int, int | None]:
    """``"a3.h1"`` -> ("attn.hook_result", 3, 1); ``"m2"`` -> ("hook_mlp_out", 2, None)."""
    try:
        if component.startswith("a"):
            layer, head = (int(x) for x in component[1:].split(".h"))
            site = ("attn.hook_result", layer, head)
        elif component.startswith("m"):
            site = ("hook_mlp_out", int(component[1:]), None)
        else:
            raise ValueError
    except ValueError:
        raise CircuitError(f"component {component!r} is not a head (a3.h1) or an MLP (m2)")\
            from None
    if not 0 <= site[1] < model.cfg.n_layers or (site[2] is not None and
                                                 not 0 <= site[2] < model.cfg.n_heads):
        raise CircuitError(f"component {component!r} is outside a {model.cfg.n_layers}-layer, "
                           f"{model.cfg.n_heads}-head model")
    return site


def _check_pair(source: Model, target: Model) -> None:
    keys = ("architecture", "n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_mlp")
    a, b = source.cfg.to_dict(), target.cfg.to_dict()
    differ = [k for k in keys if a[k] != b[k]]
    if differ:
        raise CircuitError("CMAP needs two models of one architecture; they differ in "
                           + ", ".join(f"{k} ({a[k]} vs {b[k]})" for k in differ))


class _Patcher:
    """The source's cached outputs and the target: per-prompt metrics of patched runs."""

    def __init__(self, source: Model, target: Model, batch: TaskBatch, metric: str,
                 sites: set[str]):
        _check_pair(source, target)
        self.target, self.batch, self.score = target, batch, metric_fn(metric)
        self.tokens, self.mask = batch.clean.to(target.device), batch.mask.to(target.device)
        logits, self.cache = source.run_with_cache(self.tokens, sorted(sites),
                                                   attention_mask=self.mask)
        self.source = self._values(logits)
        self.plain = self._values(target(self.tokens, attention_mask=self.mask))

    def _values(self, logits: torch.Tensor) -> np.ndarray:
        return self.score(logits, self.batch).detach().double().cpu().numpy()

    def patched(self, members: list[tuple[str, int, int | None]]) -> np.ndarray:
        """[N] per-prompt metric of the target with ``members`` taken from the source."""
        if not members:
            return self.plain.copy()
        cache = self.cache

        def patch(value: torch.Tensor, hook) -> torch.Tensor:
            value = value.clone()
            for site, layer, head in members:
                if hook.name == f"blocks.{layer}.{site}":
                    if head is None:
                        value[:] = cache[hook.name]
                    else:
                        value[:, :, head] = cache[hook.name][:, :, head]
            return value

        hooks = [(s, patch) for s in sorted({f"blocks.{layer}.{site}"
                                              for site, layer, _ in members})]
        return self._values(self.target.run_with_hooks(self.tokens, hooks,
                                                       attention_mask=self.mask))


def _recovery(patched, target, source) -> float:
    """Mean-then-ratio recovery of paired per-prompt arrays."""
    gap = float(np.mean(source) - np.mean(target))
    if gap:
        return (float(np.mean(patched)) - float(np.mean(target))) / gap
    # nothing to recover: all of it is recovered iff the patched run is the source's
    return 1.0 if np.array_equal(patched, source) else float("nan")


def _sites(parsed: Iterable[tuple[str, int, int | None]]) -> set[str]:
    return {f"blocks.{layer}.{site}" for site, layer, _ in parsed}


def cmap(source: Model, target: Model, batch: TaskBatch, groups: dict[str, list[str]],
         metric: str = "logit_diff") -> dict[str, float]:
    """Recovery of the source's advantage by each group of components (see module docstring).

    Args:
        groups: name -> components (``aL.hH`` heads, ``mL`` MLPs), e.g. a circuit's heads
            split by role.
        metric: a task metric, averaged over the batch's clean prompts.

    Returns:
        group name -> recovery; also ``"_source"`` and ``"_target"``: the two models' metrics.
        When they are equal (a model into itself) there is nothing to recover: a group
        recovers 1.0 if the patched run's metric equals the source's (NaN otherwise).
    """
    _check_pair(source, target)
    parsed = {name: [_parse(c, target) for c in members] for name, members in groups.items()}
    patcher = _Patcher(source, target, batch, metric,
                       set().union(*map(_sites, parsed.values())) if parsed else set())
    out = {"_source": float(patcher.source.mean()), "_target": float(patcher.plain.mean())}
    for name, members in parsed.items():
        out[name] = _recovery(patcher.patched(members), patcher.plain, patcher.source)
    return out


@dataclass
class GroupRecovery:
    """One group's recovery with its interval and matched null.

    Attributes:
        components: the group's components.
        recovery: the mean-then-ratio recovery on the batch; ``recovery_ci`` its 95%
            bootstrap-over-prompts interval (NaN ends when the gap is zero).
        per_prompt: [N] the patched run's per-prompt metric.
        null: the recovery beside ``null_draws`` matched random head groups (None when the
            group has no null: ``null_note`` says why).
        draws: the components of each null draw; ``null_values`` their recoveries.
    """

    components: list[str]
    recovery: float
    recovery_ci: list[float]
    per_prompt: list[float]
    null: NullComparison | None = None
    draws: list[list[str]] = field(default_factory=list)
    null_values: list[float] = field(default_factory=list)
    null_note: str = ""

    def to_dict(self) -> dict:
        return {"components": self.components, "n_components": len(self.components),
                "recovery": self.recovery, "recovery_ci": self.recovery_ci,
                "recovery_null": self.null.to_dict() if self.null else None,
                "null_note": self.null_note, "null_values": self.null_values,
                "draws": self.draws, "per_prompt": self.per_prompt}

    @classmethod
    def from_dict(cls, data: dict) -> GroupRecovery:
        null = data.get("recovery_null")
        return cls(list(data["components"]), data["recovery"], list(data["recovery_ci"]),
                   list(data["per_prompt"]), NullComparison(**null) if null else None,
                   [list(d) for d in data.get("draws", [])], list(data.get("null_values", [])),
                   data.get("null_note", ""))


@dataclass
class CMAPResult:
    """CMAP of every group with intervals and nulls (:func:`cmap_nulls`).

    Attributes:
        source, target: the two models' mean metrics, with ``*_ci`` intervals over prompts.
        groups: name -> :class:`GroupRecovery`.
        source_per_prompt, target_per_prompt: [N] each model's per-prompt metric.
    """

    metric: str
    n: int
    source: float
    source_ci: list[float]
    target: float
    target_ci: list[float]
    groups: dict[str, GroupRecovery]
    source_per_prompt: list[float]
    target_per_prompt: list[float]
    null_draws: int = 0
    seed: int = 0

    @property
    def recoveries(self) -> dict[str, float]:
        """group -> recovery, as :func:`cmap` returns (with ``_source``, ``_target``)."""
        return {"_source": self.source, "_target": self.target,
                **{k: g.recovery for k, g in self.groups.items()}}

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("metric", "n", "source", "source_ci", "target",
                                             "target_ci", "source_per_prompt",
                                             "target_per_prompt", "null_draws", "seed")}
        return {**out, "groups": {k: g.to_dict() for k, g in self.groups.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> CMAPResult:
        fields = {k: v for k, v in data.items() if k != "groups"}
        return cls(**fields, groups={k: GroupRecovery.from_dict(g)
                                     for k, g in data["groups"].items()})

    def save(self, path) -> None:
        from ..io import write_json

        write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path) -> CMAPResult:
        from ..io import read_json

        return cls.from_dict(read_json(path))


def _interval(values, **kw) -> list[float]:
    agg = bootstrap_stat(values, **kw)
    return [agg.ci_low, agg.ci_high]


def cmap_nulls(source: Model, target: Model, batch: TaskBatch, groups: dict[str, list[str]],
               metric: str = "logit_diff", *, null_draws: int = 20,
               null_groups: Iterable[str] | None = None, on_unmatched: str = "raise",
               seed: int = 0, n_resamples: int = 2000) -> CMAPResult:
    """:func:`cmap` with a bootstrap interval and a matched head null per group.

    Args:
        groups: name -> components (``aL.hH``, ``mL``).
        null_draws: random head groups per group (0: no null).
        null_groups: the groups that get a null (default: every group).
        on_unmatched: ``"raise"`` a :class:`NullError` for a group that cannot be matched,
            or ``"skip"`` its null (the reason goes to ``null_note``).
        seed: of the null draws and of the bootstrap.

    Returns:
        a :class:`CMAPResult`; ``result.recoveries`` equals :func:`cmap`'s output.
    """
    if on_unmatched not in ("raise", "skip"):
        raise NullError(f"on_unmatched must be 'raise' or 'skip', got {on_unmatched!r}")
    _check_pair(source, target)
    cfg = target.cfg
    parsed = {name: [_parse(c, target) for c in members] for name, members in groups.items()}
    wanted = set(groups if null_groups is None else null_groups)
    unknown = wanted - set(groups)
    if unknown:
        raise NullError(f"null_groups names unknown group(s): {', '.join(sorted(unknown))}")
    universe = heads_universe(cfg.n_layers, cfg.n_heads)
    draws: dict[str, list[list[str]]] = {}
    notes: dict[str, str] = {}
    for name in groups:
        if name not in wanted or null_draws < 1 or not groups[name]:
            continue
        try:
            if any(not c.startswith("a") for c in groups[name]):
                raise NullError(f"group {name!r} holds MLPs: a matched head null needs a "
                                f"group of heads only")
            draws[name] = matched_draws(groups[name], universe, null_draws, seed=seed)
        except NullError as err:
            if on_unmatched == "raise":
                raise NullError(f"CMAP group {name!r}: {err}") from None
            notes[name] = str(err)
    sites = set().union(*map(_sites, parsed.values())) if parsed else set()
    for sets in draws.values():  # null draws sit in the group's layers: their sites too
        sites |= {f"blocks.{c[1:].split('.')[0]}.attn.hook_result" for d in sets for c in d}
    patcher = _Patcher(source, target, batch, metric, sites)
    src, tgt = patcher.source, patcher.plain
    boot = {"n_resamples": n_resamples, "seed": seed}
    out = {}
    for name, members in parsed.items():
        values = patcher.patched(members)
        ci = bootstrap_stat([values, tgt, src], _recovery, **boot)
        group = GroupRecovery(list(groups[name]), _recovery(values, tgt, src),
                              [ci.ci_low, ci.ci_high], values.tolist(),
                              null_note=notes.get(name, ""))
        if name in draws:
            group.draws = draws[name]
            group.null_values = [_recovery(patcher.patched([_parse(c, target) for c in d]),
                                           tgt, src) for d in draws[name]]
            group.null = compare(group.recovery, group.null_values,
                                 null=f"{null_draws} random head groups with the group's "
                                      f"count of heads per layer")
        out[name] = group
    return CMAPResult(metric, len(batch), float(src.mean()), _interval(src, **boot),
                      float(tgt.mean()), _interval(tgt, **boot), out, src.tolist(),
                      tgt.tolist(), null_draws, seed)
