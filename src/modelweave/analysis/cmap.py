"""Cross-model activation patching (CMAP, Prakash et al. 2024).

Run the *source* model (e.g. a fine-tune) and the *target* model (e.g. its base) on the same
prompts; replace the outputs of a group of the target's components (heads' ``hook_result``,
MLPs' ``hook_mlp_out``) by the source's, and measure how much of the source's advantage the
group recovers:

    recovery = (m(target with the group from source) - m(target)) / (m(source) - m(target))

1 = the group alone carries the whole difference, 0 = none of it. The two models must share an
architecture (same layers, heads and widths). What is not a component stays the target's
(embeddings, norms, output-projection biases, unembedding): for a fine-tune that moved only the
projection matrices (LoRA), patching every component reproduces the source exactly.
"""

from __future__ import annotations

import torch

from ..circuits import CircuitError
from ..metrics.scores import metric_fn
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
    score = metric_fn(metric)
    tokens, mask = batch.clean.to(target.device), batch.mask.to(target.device)
    parsed = {name: [_parse(c, target) for c in members] for name, members in groups.items()}
    sites = sorted({f"blocks.{layer}.{site}" for members in parsed.values()
                    for site, layer, _ in members})
    source_logits, cache = source.run_with_cache(tokens, sites, attention_mask=mask)
    m_source = float(score(source_logits, batch).mean())
    m_target = float(score(target(tokens, attention_mask=mask), batch).mean())
    out = {"_source": m_source, "_target": m_target}
    for name, members in parsed.items():
        def patch(value: torch.Tensor, hook, members=members) -> torch.Tensor:
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
        patched = float(score(target.run_with_hooks(tokens, hooks, attention_mask=mask),
                              batch).mean())
        gap = m_source - m_target
        if gap:
            out[name] = (patched - m_target) / gap
        else:  # nothing to recover: all of it is recovered iff the patched run is the source's
            out[name] = 1.0 if patched == m_source else float("nan")
    return out
