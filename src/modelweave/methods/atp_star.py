"""AtP*: attribution patching with the QK fix and GradDrop (Kramár et al. 2024, "AtP*: An
efficient and scalable method for localizing LLM behaviour to components", arXiv 2403.00745).
With both fixes off it is plain attribution patching, the one implementation of it
(:func:`~modelweave.methods.attribution_patching.attribution_sweep` reports it).

Plain AtP (Nanda 2022) estimates the effect of patching a node ``n`` from the source run into
the base run as ``I_AtP(n) = (n_src - n_base) · ∂m/∂n`` at the base run. AtP* changes two
things, both implemented here as the paper defines them:

**QK fix** (paper §3.1.1, eqs. 7-10). For a *query* node (head ``h`` at position ``t``) the
attention row ``t`` of ``h`` is recomputed exactly with the source query against the base keys,
``A'_t = softmax(q'_t K^T · scale + mask)``, and only the step from the pattern to the metric is
linearised: ``I(q_t) = (A'_t - A_t) · ∂m/∂A_t``. For a *key* node (key/value head ``g`` at
position ``s``) every row ``t >= s`` of every query head of group ``g`` is recomputed with only
the score ``S_ts`` changed to its source value, and the rows' terms are summed:
``I(k_s) = sum_{h in g, t} (A'_t(s) - A_t) · ∂m/∂A_t``. Queries and keys are taken after rotary
(and after q/k norms); the patch they stand for is that of ``hook_q``/``hook_k`` at the same
head and position (rotary and q/k norms act per position, so a patched pre-rotary value
rotates into the source's post-rotary value). Softcapping is applied to the patched scores too.

**GradDrop** (paper §3.1.2, eq. 11). ``L`` extra gradients, the ``l``-th with the backward pass
through layer ``l``'s residual contribution (its attention and MLP outputs) zeroed; then
``ĉ_GD(n) = E_prompts[ 1/(L-1) · sum_{l=1..L} |I_l(n)| ]``, with ``I_l`` the AtP (+QK fix)
estimate under the ``l``-th gradient. Dropping layer ``l`` leaves the gradient of nodes above
``l`` unchanged and zeroes that of nodes in ``l``, so each drop needs a backward pass only
through layers ``< l`` (a vector-Jacobian product from the residual stream entering ``l``,
seeded with the undropped gradient leaving ``l``): ``~L/2`` full backward passes in all.

Units and what applies to them:

- ``queries``/``keys`` (head or key/value head × position): QK fix (+ GradDrop).
- The exact grids of :mod:`.grids` (``heads-by-pos``, ``heads`` = a head's ``hook_z`` at every
  position, ``mlp``, ``attn``, ``resid``, ``neurons``): AtP (+ GradDrop). The QK fix has
  nothing to fix here: a head's own softmax lies *upstream* of its ``hook_z``, whose source
  value AtP already uses exactly; the paper applies the fix to query and key nodes only, not to
  how an upstream node moves downstream heads' queries and keys.

Where this differs from the paper:

- Ranking score: ``max(|E[I]|, ĉ_GD)`` instead of ``ĉ_GD`` alone, so that GradDrop can only
  raise a node's rank (``ĉ_GD`` of a node in layer 0 contains no undropped term at all).
- Signed estimates (``estimate``) are the paper's un-dropped AtP / AtP+QK-fix means over
  prompts, in metric units, as exact patching reports them; the paper ranks by magnitude only.
- The paper's fast key-fix (its Algorithm 4) is not used: the key fix here materialises one
  softmax row per (query, key) pair, ``[batch, heads, pos, pos, pos]`` per layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..metrics.scores import metric_on_last
from ..models import Model
from ..models.attention import captured_attention
from ..models.parts import attention
from ..tasks import TaskBatch, TaskError
from .grids import SITES, Unit, check_sweep, grid_units
from .result import PatchingResult

#: Unit kinds the QK fix applies to: (attention input, axis-2 width name).
QK_GRIDS = ("queries", "keys")
ATP_GRIDS = (*SITES, *QK_GRIDS)


@contextmanager
def _capture_attention(model: Model, layers: list[int]) -> Iterator[dict[int, dict]]:
    """Within: runs record each of ``layers``' attention inputs (see
    :func:`modelweave.models.attention.captured_attention`), by layer."""
    modules = [attention(model, layer) for layer in layers]
    with captured_attention(model.hf_model, modules) as records:
        yield dict(zip(layers, records, strict=True))


@dataclass
class AtPStarEstimate:
    """Per-unit AtP / AtP* estimates of one grid.

    Attributes:
        grid, direction, metric, method (``atp*`` or ``atp``): what was estimated.
        units: the units, in the grid's row-major order.
        estimate: [units] signed estimated effect on the mean metric (metric units; patched
            minus base run).
        score: [units] ranking magnitude: ``max(|estimate|, ĉ_GD)`` with GradDrop, else
            ``|estimate|``.
        per_prompt: [batch, units] the un-dropped estimate of each prompt.
        base_metric, source_metric: mean metric of the base and source runs.
        axes: the grid's axis names.
        base_rows, source_rows: [batch] per-prompt metric of the base and source runs (a
            prompt's estimated patched metric is its base value plus its ``per_prompt`` term).
    """

    grid: str
    direction: str
    metric: str
    method: str
    units: list[Unit]
    estimate: torch.Tensor
    score: torch.Tensor
    per_prompt: torch.Tensor
    base_metric: float
    source_metric: float
    axes: tuple[str, ...]
    base_rows: torch.Tensor | None = None
    source_rows: torch.Tensor | None = None

    def order(self) -> list[Unit]:
        """Units by decreasing score."""
        return [self.units[i] for i in self.score.argsort(descending=True, stable=True)]

    def to_result(self, model: Model, batch: TaskBatch,
                  method: str | None = None) -> PatchingResult:
        """The estimates as a :class:`PatchingResult` (``method``: by default this
        estimate's, ``atp*``/``atp``): base metric + estimate, normalised like exact
        patching."""
        raw = {u: self.base_metric + float(e) for u, e in zip(self.units, self.estimate,
                                                               strict=True)}
        clean, corrupt = ((self.source_metric, self.base_metric)
                          if self.direction == "denoising"
                          else (self.base_metric, self.source_metric))
        return PatchingResult.from_units(model, batch, self.grid, self.direction, self.metric,
                                         self.axes, self.units, raw, clean, corrupt,
                                         method=method or self.method, **self.rows())

    def rows(self, exact: dict | None = None) -> dict:
        """``from_units``' per-prompt arguments: each unit's estimated per-prompt metric
        (base + its term; ``exact``: unit -> [N] exact per-prompt *effect* replacing it) and
        the clean / corrupted runs' per-prompt metric; empty without them."""
        if self.base_rows is None or self.source_rows is None:
            return {}
        base = self.base_rows.float().cpu()
        terms = self.per_prompt.float().cpu()
        exact = exact or {}
        per_prompt = {u: base + (exact[u] if u in exact else terms[:, i])
                      for i, u in enumerate(self.units)}
        clean, corrupt = ((self.source_rows, self.base_rows) if self.direction == "denoising"
                          else (self.base_rows, self.source_rows))
        return {"per_prompt": per_prompt, "clean_rows": clean, "corrupt_rows": corrupt}


def qk_units(model: Model, grid: str, length: int, layers: list[int] | None = None,
             indices: list[int] | None = None) -> tuple[list[Unit], tuple[str, ...]]:
    """Units of the ``queries`` (head × pos) or ``keys`` (key/value head × pos) grids, in
    row-major (layer, head, pos) order."""
    cfg = model.cfg
    layers = list(range(cfg.n_layers)) if layers is None else layers
    bad = [layer for layer in layers if not 0 <= layer < cfg.n_layers]
    if bad:
        raise TaskError(f"layer {bad[0]} out of range: layers are 0..{cfg.n_layers - 1}")
    width = cfg.n_heads if grid == "queries" else cfg.n_kv_heads
    indices = list(range(width)) if indices is None else indices
    bad = [i for i in indices if not 0 <= i < width]
    if bad:
        raise TaskError(f"head index {bad[0]} out of range (0..{width - 1})")
    units = [Unit(L, p, h) for L in layers for h in indices for p in range(length)]
    return units, ("layer", "head", "pos")


def units_of(model: Model, grid: str, length: int, layers=None, indices=None,
             positions: list[int] | None = None):
    """Units and axes of any grid AtP* estimates (:data:`ATP_GRIDS`). ``positions`` keeps
    the units at those positions; for ``heads`` and ``neurons`` (every position) it makes
    one unit per position, the grid gaining a trailing ``pos`` axis."""
    if grid in QK_GRIDS:
        units, axes = qk_units(model, grid, length, layers, indices)
    elif grid not in SITES:
        raise TaskError(f"unknown grid {grid!r}; grids: {', '.join(ATP_GRIDS)}")
    else:
        units, axes = grid_units(model, grid, length, layers, indices)
    if positions is None:
        return units, axes
    bad = [p for p in positions if not 0 <= p < length]
    if bad:
        raise TaskError(f"position {bad[0]} out of range (prompts have {length} tokens)")
    if units[0].pos is None:
        return [Unit(u.layer, p, u.index) for u in units for p in positions], (*axes, "pos")
    return [u for u in units if u.pos in positions], axes


def _reduce(grid: str, prod: torch.Tensor) -> torch.Tensor:
    """Per-prompt unit terms of one layer's site, [batch, pos or 1, width or 1], from the
    elementwise product ``(a_src - a_base) * grad`` of the site ([batch, pos, ...])."""
    if grid == "heads-by-pos":
        return prod.sum(-1)
    if grid == "heads":
        return prod.sum((1, 3))[:, None]
    if grid == "neurons":
        return prod.sum(1)[:, None]
    if grid == "neurons-by-pos":
        return prod
    return prod.sum(-1)[..., None]  # resid, attn, mlp: one unit per position


def _gather(per_layer: dict[int, torch.Tensor], units: list[Unit]) -> torch.Tensor:
    """[batch, units] from per-layer [batch, pos or 1, width or 1] terms; a layer missing
    from ``per_layer`` contributes zeros."""
    some = next(iter(per_layer.values()))
    layers = sorted({u.layer for u in units})
    where = {layer: i for i, layer in enumerate(layers)}
    stacked = torch.stack([per_layer[layer] if layer in per_layer else torch.zeros_like(some)
                           for layer in layers])  # [layers, B, pos or 1, width or 1]
    li = torch.tensor([where[u.layer] for u in units])
    pi = torch.tensor([0 if stacked.shape[2] == 1 else u.pos for u in units])
    wi = torch.tensor([0 if stacked.shape[3] == 1 else u.index for u in units])
    return stacked[li, :, pi, wi].T


def _query_terms(base: dict, src: dict, grad_pattern: torch.Tensor) -> torch.Tensor:
    """QK-fixed query terms [batch, pos, heads] (eqs. 7-8): row ``t`` of each head
    recomputed with the source query ``q'_t`` against the base keys."""
    query, key = src["query"], base["key"]
    groups = query.shape[1] // key.shape[1]
    scores = torch.matmul(query, key.repeat_interleave(groups, 1).transpose(-1, -2))
    scores = scores * base["scaling"]
    if base["softcap"] is not None:
        scores = torch.tanh(scores / base["softcap"]) * base["softcap"]
    if base["mask"] is not None:
        scores = scores + base["mask"][..., : key.shape[-2]]
    new = torch.softmax(scores.float(), dim=-1)
    delta = new - base["pattern"].detach().float()
    return (delta * grad_pattern).sum(-1).transpose(1, 2)  # [B, H, T] -> [B, T, H]


def _key_terms(base: dict, src: dict, grad_pattern: torch.Tensor) -> torch.Tensor:
    """QK-fixed key terms [batch, pos, kv_heads] (eqs. 9-10): for key ``s``, every row ``t``
    recomputed with only the score ``S_ts`` moved to its source value, summed over rows and
    over the query heads of the key's group."""
    q, k, k_src = base["query"].float(), base["key"].float(), src["key"].float()
    b, h, t, _ = q.shape
    groups = h // k.shape[1]
    k_all, ks_all = k.repeat_interleave(groups, 1), k_src.repeat_interleave(groups, 1)
    raw = torch.matmul(q, k_all.transpose(-1, -2)) * base["scaling"]  # [B, H, T, S]
    raw_src = torch.matmul(q, ks_all.transpose(-1, -2)) * base["scaling"]
    cap = base["softcap"]
    if cap is not None:
        raw, raw_src = torch.tanh(raw / cap) * cap, torch.tanh(raw_src / cap) * cap
    mask = (base["mask"][..., : k.shape[-2]].float() if base["mask"] is not None
            else torch.zeros(t, t).masked_fill(torch.ones(t, t).triu(1).bool(), -1e30))
    mask = mask.expand(b, h, t, t)
    scores = raw + mask
    # rows with only score s moved: [B, H, T(query), S(patched key), U(key)]
    eye = torch.eye(t, dtype=torch.bool)
    moved = torch.where(eye, (raw_src + mask)[..., :, None], scores[..., None, :])
    new = torch.softmax(moved, dim=-1)
    pattern = base["pattern"].detach().float()
    delta = new - pattern[..., None, :]
    terms = (delta * grad_pattern[..., None, :]).sum(-1).sum(2)  # [B, H, S]
    return terms.view(b, h // groups, groups, t).sum(2).transpose(1, 2)


def atp_star(model: Model, batch: TaskBatch, grid: str, *, direction: str = "denoising",
             metric: str = "logit_diff", layers: list[int] | None = None,
             indices: list[int] | None = None, positions: list[int] | None = None,
             qk_fix: bool = True, grad_drop: bool = True) -> AtPStarEstimate:
    """AtP* (or plain AtP with ``qk_fix=False, grad_drop=False``) estimates of every unit of
    ``grid`` (:data:`ATP_GRIDS`); see the module docstring for the definitions.

    Costs one forward pass of the source run, one forward and backward pass of the base run,
    and with ``grad_drop`` about ``n_layers / 2`` more backward passes.
    """
    check_sweep(batch, direction)
    units, axes = units_of(model, grid, batch.clean.shape[1], layers, indices, positions)
    by_pos = {"heads": "heads-by-pos", "neurons": "neurons-by-pos"}
    red = by_pos.get(grid, grid) if positions is not None else grid
    base_tokens, source_tokens = ((batch.corrupt, batch.clean) if direction == "denoising"
                                  else (batch.clean, batch.corrupt))
    n_layers = model.cfg.n_layers
    unit_layers = sorted({u.layer for u in units})
    qk = grid in QK_GRIDS
    use_pattern = qk and qk_fix
    names = {} if qk else {L: f"blocks.{L}.{SITES[grid]}" for L in unit_layers}
    if qk and not qk_fix:  # plain AtP on the pre-rotary query/key sites
        kind = "attn.hook_q" if grid == "queries" else "attn.hook_k"
        names = {L: f"blocks.{L}.{kind}" for L in unit_layers}
    resid_names = [f"blocks.{L}.hook_resid_pre" for L in range(n_layers)]
    final_name = f"blocks.{n_layers - 1}.hook_resid_post"
    acts: dict[str, torch.Tensor] = {}

    def keep(tensor, hook):
        acts[hook.name] = tensor.clone()
        return acts[hook.name]

    hooked = list(names.values()) + (resid_names + [final_name] if grad_drop else [])
    capture_layers = unit_layers if use_pattern else []
    with torch.no_grad(), _capture_attention(model, capture_layers) as src_rec:
        source_logits, source = model.run_with_cache(source_tokens, list(names.values()))
        src_rec = {L: {k: (v.detach() if torch.is_tensor(v) else v) for k, v in r.items()}
                   for L, r in src_rec.items()}
    with torch.enable_grad(), _capture_attention(model, capture_layers) as base_rec:
        logits = model.run_with_hooks(base_tokens, [(nm, keep) for nm in hooked], grad=True)
        per_prompt_metric = metric_on_last(metric, logits[:, -1], batch)[0]
        value = per_prompt_metric.sum()  # gradient rows = per-prompt gradients
        targets = ({L: base_rec[L]["pattern"] for L in unit_layers} if use_pattern
                   else {L: acts[names[L]] for L in unit_layers})
        drop_points = ([acts[nm] for nm in resid_names] + [acts[final_name]]
                       if grad_drop else [])
        wanted = list(targets.values()) + drop_points
        grads = torch.autograd.grad(value, wanted, retain_graph=grad_drop, allow_unused=True)
        target_grads = dict(zip(targets, grads[:len(targets)], strict=True))
        resid_grads = list(grads[len(targets):])

        def terms(layer: int, grad: torch.Tensor) -> torch.Tensor:
            grad = torch.zeros_like(targets[layer]) if grad is None else grad.detach().float()
            if use_pattern:
                fn = _query_terms if grid == "queries" else _key_terms
                return fn(base_rec[layer], src_rec[layer], grad).to(model.device)
            # float32 differences of bf16/fp16 activations, products and sums, gathered on
            # the input device (a split model's layers sit elsewhere)
            delta = source[names[layer]].float() - acts[names[layer]].detach().float()
            return _reduce("heads-by-pos" if qk else red, delta * grad).to(model.device)

        plain = _gather({L: terms(L, g) for L, g in target_grads.items()}, units)  # [B, U]
        score = plain.mean(0).abs()
        if grad_drop:
            layer_of = torch.tensor([u.layer for u in units], device=plain.device)
            total = plain.abs() * layer_of.float()  # drops below a unit's layer: unchanged
            for dropped in range(1, n_layers):
                below = [layer for layer in unit_layers if layer < dropped]
                if not below:
                    continue
                seed = resid_grads[dropped + 1]  # gradient leaving the dropped layer
                out = torch.autograd.grad(acts[resid_names[dropped]], [targets[L] for L in below],
                                          grad_outputs=seed, retain_graph=True,
                                          allow_unused=True)
                per_layer = {L: terms(L, g) for L, g in zip(below, out, strict=True)}
                total += _gather(per_layer, units).abs()  # zeros at layers >= dropped
            score = torch.maximum(score, (total / (n_layers - 1)).mean(0))
    base_m = per_prompt_metric.mean().item()
    source_rows = metric_on_last(metric, source_logits[:, -1], batch)[0]
    source_m = source_rows.mean().item()
    method = "atp*" if (qk_fix or grad_drop) else "atp"
    return AtPStarEstimate(grid, direction, metric, method, units, plain.mean(0).detach(),
                           score.detach(), plain.detach(), base_m, source_m, tuple(axes),
                           per_prompt_metric.detach().float().cpu(),
                           source_rows.detach().float().cpu())
