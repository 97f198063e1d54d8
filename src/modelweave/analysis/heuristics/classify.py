"""Heuristic classification of neurons (Nikankin et al. 2024, "bag of heuristics").

Algorithm, top to bottom:

1. **Grid.** ``op1``, ``op2`` (1-D, N prompts, possibly a subsample of all legal pairs) and the
   operator give ``result = op1 op op2`` (``/`` is floor division). M = max operand + 1 (or
   ``max_operand``), R = max result + 1, f = N / M^2.
2. **Candidates** (:func:`build_candidates`, once per grid): every heuristic H below is a prompt
   set P_H, stored as a row of a bool matrix ``masks [H, N]`` with its ``k [H]``. Kept only if
   1 <= |P_H| <= ``max_base_rate`` * N; of candidates with identical prompt sets (on 0..99 grids
   ``op1_pattern_.7.`` is ``op1_range_70_80``, ``op1_pattern_..7`` is ``op1_7mod10``) the first in
   family order (that of the list below) is kept, separately for operand and result heuristics.
3. **Scoring** (:func:`classify_maps`): each map is argsorted once (ties broken by a fixed random
   permutation of the prompts, so ReLU zeros do not favour low operands) into ranks; for every H,
   ``count = |top-k prompts ∩ P_H|`` is a gather + segment sum over the non-zeros of ``masks``
   (batched over maps, bounded memory), ``score = count / k``. Operand heuristics use the key map,
   result heuristics (names starting with ``result``) the key-value map (``kv_maps``; the key map
   when None). With ``gated=True`` the bottom-k is scored too for the two-sided families
   (op_mod, op_range, both_mod, both_range, op_pattern, result_mod) and the larger count kept.
4. **Match** iff score >= ``threshold`` and the chance guard holds; matches sorted by score.

The candidate families, their names, the digit-pattern syntax and the ``/`` multi-value
family are defined in :mod:`.families`.

**Chance guard** (so that noise maps match nothing): (a) the base-rate cap above: a heuristic
covering more than ``max_base_rate`` (0.55) of the grid is no candidate (with k = |P_H| a random
map scores about the base rate, and above ~0.71 every map passes 0.6); (b) significance: under a
random ranking count is hypergeometric (N, |P_H|, k); a match needs P(count >= observed) <=
``alpha`` / (number of tests: candidates, plus the two-sided ones when gated), i.e. a
Bonferroni family-wise level ``alpha`` (0.01) per map; multi-value sets are corrected for the
C(#results, j) sets they were chosen from. ``alpha=None`` turns (b) off.

Deviations from the released code: k = |P_H| by default (option ``k_rule="code"``); the pattern
scan (:mod:`.families`); the base-rate cap and significance test replace its ad-hoc removals
(``/``: result ranges at 0 and multi-value sets {0..j-1}; ``*``: zero patterns when
``result_value_000`` is perfect); identical prompt sets are reported once. Nested heuristics are
inherent to the score: a neuron implementing H also matches H' ⊇ H when
|P_H| / |P_H'| >= threshold (it scores lower).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ...tasks import TaskError
from .families import (
    DEFAULT_MODS,
    PAPER_MODS,
    HeuristicCandidates,
    HeuristicSet,
    build_candidates,
    heuristic_sets,
    validate_grid,
)

__all__ = ["DEFAULT_MODS", "PAPER_MODS", "HeuristicCandidates", "HeuristicMatch", "HeuristicSet",
           "build_candidates", "classify_map", "classify_maps", "heuristic_sets"]

_ELEMENTS = 1 << 23  # per-batch budget of gathered elements (bounded memory)


@dataclass(frozen=True)
class HeuristicMatch:
    """One heuristic a neuron implements: ``score = |top-k (or bottom-k) ∩ P_H| / k``."""

    name: str
    score: float
    family: str
    k: int
    direction: str = "top"


def _log_tails(n: int, size: Tensor, k: Tensor) -> Tensor:
    """log P(X >= x), X ~ Hypergeometric(N=n, K=size, draws=k), for x = 0..max(min(k, K)).

    ``size``, ``k``: [m] -> float64 [m, T]; beyond min(k, K) the tail is 0 (-inf).
    """
    big, kk = size.double()[:, None], k.double()[:, None]
    y = torch.arange(int(torch.minimum(size, k).max()) + 1, dtype=torch.float64)[None]

    def lc(top: Tensor, bot: Tensor) -> Tensor:
        return torch.lgamma(top + 1) - torch.lgamma(bot + 1) - torch.lgamma(top - bot + 1)

    valid = (y <= torch.minimum(big, kk)) & (y >= kk - (n - big))
    top, rest = torch.minimum(y, big), torch.minimum((kk - y).clamp(min=0), n - big)
    logpmf = lc(big, top) + lc(n - big, rest) - lc(torch.tensor(float(n)), kk)
    logpmf = torch.where(valid, logpmf, torch.tensor(-math.inf, dtype=torch.float64))
    return torch.logcumsumexp(logpmf.flip(1), dim=1).flip(1)


def _needed(cand: HeuristicCandidates, threshold: float, alpha: float | None,
            gated: bool) -> Tensor:
    """Smallest count that matches, per heuristic: int64 [H] (threshold and chance guard)."""
    key = ("need", threshold, alpha, gated)
    if key not in cand._cache:
        need = torch.ceil(threshold * cand.k.double() - 1e-9).long().clamp(min=1)
        if alpha is not None:
            tests = max(1, len(cand) + (int(cand.two_sided.sum()) if gated else 0))
            log_a = math.log(alpha / tests)
            # Hoeffding: P(X >= x) <= exp(-2 k (x/k - K/N)^2); exact tails only where it fails
            excess = need / cand.k - cand.size / cand.n_prompts
            exact = ((excess <= 0) | (-2 * cand.k * excess ** 2 > log_a)).nonzero().flatten()
            exact = exact[torch.argsort(torch.minimum(cand.size, cand.k)[exact])]
            for chunk in exact.split(max(1, (1 << 22) // (int(cand.k.max()) + 1))) \
                    if exact.numel() else ():
                tails = _log_tails(cand.n_prompts, cand.size[chunk], cand.k[chunk])
                need[chunk] = torch.maximum(need[chunk], (tails > log_a).sum(1))
        cand._cache[key] = need
    return cand._cache[key]


def _sparse(cand: HeuristicCandidates, on_result: bool, bottom: bool,
            device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(rows [h], prompt idx [nnz], local row [nnz], k [nnz] int32) of one scoring group."""
    key = ("sparse", on_result, bottom, str(device))
    if key not in cand._cache:
        sel = cand.on_result == on_result
        if bottom:
            sel &= cand.two_sided
        rows = sel.nonzero().flatten()
        local, idx = cand.masks[rows].nonzero(as_tuple=True)
        kk = cand.k[rows][local].int()
        cand._cache[key] = tuple(t.to(device) for t in (rows, idx, local, kk))
    return cand._cache[key]


def _order(maps: Tensor, perm: Tensor) -> Tensor:
    """Prompt indices [B, N] by decreasing value, ties in the order of ``perm``."""
    return perm[torch.sort(maps[:, perm], dim=1, descending=True, stable=True).indices]


def _count(ranks: Tensor, group: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    """|first-k ∩ P_H| per map and heuristic of the group: int32 [B, h]; ranks int32 [B, N]."""
    rows, idx, local, kk = group
    hits = (ranks[:, idx] < kk).int()
    return torch.zeros(ranks.shape[0], len(rows), dtype=torch.int32,
                       device=ranks.device).index_add_(1, local, hits)


def _maps(maps: Tensor, n: int, what: str) -> Tensor:
    maps = torch.as_tensor(maps)
    if maps.dim() != 2 or maps.shape[1] != n:
        raise TaskError(f"{what} must have shape [n_neurons, {n}] (one value per prompt of the "
                        f"grid), got {tuple(maps.shape)}")
    maps = maps.detach().float()
    if not torch.isfinite(maps).all():
        raise TaskError(f"{what} has NaN or infinite values")
    return maps


def classify_maps(key_maps: Tensor, op1: Tensor, op2: Tensor, operator: str, *,
                  kv_maps: Tensor | None = None, threshold: float = 0.6, gated: bool = False,
                  alpha: float | None = 0.01, candidates: HeuristicCandidates | None = None,
                  mods: Sequence[int] = DEFAULT_MODS, k_rule: str = "paper",
                  max_base_rate: float = 0.55, multi_value_k: int | None = None,
                  multi_value_share: float = 0.95, multi_value_max: int = 5,
                  batch_size: int | None = None, tie_seed: int = 0) -> list[list[HeuristicMatch]]:
    """The heuristics each neuron implements (module docstring, steps 3-4).

    ``key_maps``: [n_neurons, N] activations at the last position over the grid's prompts;
    ``kv_maps``: [n_neurons, N] key-value maps for result heuristics (None: the key maps).
    ``candidates``: from :func:`build_candidates` on this grid, to reuse across calls (then
    ``mods``, ``k_rule``, ``max_base_rate`` are ignored). Returns, per neuron, its matches by
    decreasing score.
    """
    if candidates is None:
        cand = build_candidates(op1, op2, operator, mods=mods, k_rule=k_rule,
                                max_base_rate=max_base_rate)
    else:
        cand, (_, _, res) = candidates, validate_grid(op1, op2, operator)
        if operator != cand.operator or not torch.equal(res, cand.result):
            raise TaskError("candidates were built for another grid or operator")
    n = cand.n_prompts
    if not 0 < threshold <= 1 or not 0 < multi_value_share <= 1 or multi_value_max < 2:
        raise TaskError(f"need 0 < threshold <= 1 (got {threshold}), 0 < multi_value_share <= 1 "
                        f"(got {multi_value_share}), multi_value_max >= 2 (got {multi_value_max})")
    keys = _maps(key_maps, n, "key_maps")
    kvs = None if kv_maps is None else _maps(kv_maps, n, "kv_maps")
    if kvs is not None and kvs.shape != keys.shape:
        raise TaskError(f"kv_maps shape {tuple(kvs.shape)} differs from key_maps "
                        f"{tuple(keys.shape)}")
    dev = keys.device
    need = _needed(cand, threshold, alpha, gated).to(dev)
    groups = [(res, bot, _sparse(cand, res, bot, dev)) for res in (False, True)
              for bot in ((False, True) if gated else (False,))]
    biggest = max([n] + [len(g[2][1]) for g in groups])
    batch = batch_size or max(1, _ELEMENTS // biggest)
    gen = torch.Generator().manual_seed(tie_seed)
    perm = torch.randperm(n, generator=gen).to(dev)
    arange = torch.arange(n, dtype=torch.int32, device=dev)
    k_float = cand.k.to(dev).float()
    out: list[list[HeuristicMatch]] = []
    for start in range(0, keys.shape[0], batch):
        kb = keys[start:start + batch]
        b = kb.shape[0]
        orders = {False: _order(kb, perm)}
        orders[True] = orders[False] if kvs is None else _order(kvs[start:start + batch], perm)
        ranks = {}
        for res in (False, True):
            ranks[res] = torch.empty(b, n, dtype=torch.int32, device=dev)
            ranks[res].scatter_(1, orders[res], arange.expand(b, n))
        best = torch.zeros(b, len(cand), dtype=torch.int32, device=dev)
        from_bottom = torch.zeros(b, len(cand), dtype=torch.bool, device=dev)
        for res, bot, group in groups:
            counts = _count((n - 1) - ranks[res] if bot else ranks[res], group)
            rows = group[0]
            if bot:
                from_bottom[:, rows] = counts > best[:, rows]
                best[:, rows] = torch.maximum(best[:, rows], counts)
            else:
                best[:, rows] = counts
        matched = best >= need
        scores, from_bottom = (best.float() / k_float).cpu(), from_bottom.cpu()
        found: list[list[HeuristicMatch]] = [[] for _ in range(b)]
        for i, h in matched.nonzero().tolist():
            found[i].append(HeuristicMatch(cand.names[h], float(scores[i, h]), cand.families[h],
                                           int(cand.k[h]),
                                           "bottom" if from_bottom[i, h] else "top"))
        if cand.operator == "/":
            for i, match in enumerate(_multi_value(orders[True], cand, multi_value_k,
                                                   multi_value_share, multi_value_max, alpha)):
                if match is not None:
                    found[i].append(match)
        out.extend(sorted(ms, key=lambda mt: (-mt.score, mt.name)) for ms in found)
    return out


def classify_map(key_map: Tensor, op1: Tensor, op2: Tensor, operator: str, *,
                 kv_map: Tensor | None = None, threshold: float = 0.6, gated: bool = False,
                 **options) -> list[HeuristicMatch]:
    """The heuristics one neuron implements, by decreasing score.

    ``key_map``, ``kv_map``: [N] over the grid's prompts (``kv_map=None``: the key map scores
    the result heuristics too). ``options``: those of :func:`classify_maps`.
    """
    key_map = torch.as_tensor(key_map)
    if key_map.dim() != 1 or (kv_map is not None and torch.as_tensor(kv_map).dim() != 1):
        raise TaskError(f"key_map and kv_map must be 1-D (one value per prompt), got shape "
                        f"{tuple(key_map.shape)}")
    kv = None if kv_map is None else torch.as_tensor(kv_map)[None]
    return classify_maps(key_map[None], op1, op2, operator, kv_maps=kv, threshold=threshold,
                         gated=gated, **options)[0]


def _multi_value(orders: Tensor, cand: HeuristicCandidates, k0: int | None, share: float,
                 j_max: int, alpha: float | None) -> list[HeuristicMatch | None]:
    """``result_multi_value`` of each map from its prompt order [B, N] (module docstring)."""
    n = cand.n_prompts
    k0 = min(n, int(k0) if k0 is not None else max(50, min(1000, n // 90)))
    result = cand.result.to(orders.device)
    top = result[orders[:, :k0]]  # [B, k0]
    hist = torch.zeros(top.shape[0], int(result.max()) + 1, device=orders.device)
    hist.scatter_add_(1, top, torch.ones_like(top, dtype=hist.dtype))
    counts, values = hist.sort(dim=1, descending=True)
    cum = counts[:, :j_max].cumsum(1)
    reach = cum >= share * k0 - 1e-6
    sizes = torch.bincount(cand.result)
    n_values = int((sizes > 0).sum())
    found: list[HeuristicMatch | None] = [None] * top.shape[0]
    for i in (reach.any(1) & ~reach[:, 0]).nonzero().flatten().tolist():
        j = int(reach[i].int().argmax()) + 1
        vals = sorted(values[i, :j].tolist())
        size, count = int(sizes[vals].sum()), int(cum[i, j - 1])
        each = hist[i, vals].long().cpu()  # every value of V must be over-represented
        if size > cand.max_base_rate * n or (each * n <= k0 * sizes[vals]).any():
            continue
        if alpha is not None:
            tails = _log_tails(n, sizes[vals], torch.full((j,), k0))
            if (tails[torch.arange(j), each] > math.log(alpha)).any():
                continue
            log_p = _log_tails(n, torch.tensor([size]), torch.tensor([k0]))[0, count]
            log_sets = (math.lgamma(n_values + 1) - math.lgamma(j + 1)
                        - math.lgamma(n_values - j + 1))
            if float(log_p) + log_sets + math.log(max(1, j_max - 1)) > math.log(alpha):
                continue
        name = f"result_multi_value_{j}=[{','.join(map(str, vals))}]"
        found[i] = HeuristicMatch(name, count / k0, "result_multi_value", k0)
    return found
