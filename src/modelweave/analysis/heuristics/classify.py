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

Families (i = 1, 2; ranges half-open; "code k" is the released code's closed form, used with
``k_rule="code"``; the default ``k_rule="paper"`` takes k = |P_H|, which it approximates):

- op_mod ``op{i}_{m}mod{n}``: op_i % n == m, n in ``mods`` (2..10), m < n; code k (M//n)*M*f.
- op_range ``op{i}_range_{a}_{b}``: a <= op_i < b = a + w, a = 0, w, 2w.. < M; w: + - /: 10, 30,
  50, 100; *: 3, 5, 10; code k |P_H|.
- both_mod ``both_operands_{m}mod{n}``: op1 % n == op2 % n == m; code k (M//n)^2*f.
- both_range ``both_operands_range_{a}_{b}``: both operands in [a, b), as op_range; |P_H|.
- same_operand: op1 == op2; code k M (*: isqrt(S)).
- op_pattern ``op{i}_pattern_{p}`` and ``op{i}_value_{v}``: digits (below); code k int(M*f).
- result_mod ``result_{m}mod{n}`` (not /); code k (M//n)^2*f (*: min(., M)).
- result_range ``result_range_{a}_{b}``: a <= result < a + w, a = 0, s, 2s.. < R with s =
  max(w//3, 10); w: + -: 10, 30, 50; *: 10, 30, 50, 100; /: 2, 10, 100; code k |P_H| (* /:
  min(., M)).
- result_pattern ``result_pattern_{p}`` (not /) and ``result_value_{v}``; code k int(M*f).
- result_multi_value ``result_multi_value_{j}=[v1,v2..]`` (/ only, below); k = k0.

S = ``max_single_token`` (default R - 1). **Digit patterns**: a value is written with D = max(3,
digits of the largest value) zero-padded digits (42 -> ``042``); a pattern has D characters,
each a digit or ``.`` (any digit): ``op1_pattern_.7.`` = tens digit 7, ``result_pattern_..3`` =
units digit 3, ``op2_pattern_1.3``. Patterns whose fixed digits are a prefix (``1..``, ``12.``)
are ranges and are skipped; a pattern with no wildcard is a value, ``op1_value_123``,
``result_value_042``. Values are candidates for every operator, result patterns not for ``/``.
Unlike the code (which counts the 7 patterns of each top-k value, keeps those seen >= k//10, best
5, score = count/k), every pattern present in the grid is a candidate scored like the others.

**result_multi_value** (``/``): histogram of the results of the top-k0 prompts of the kv map,
k0 = ``multi_value_k`` (default min(N, max(50, min(1000, N // 90))): the code's 1000 of ~299^2
prompts); the smallest j <= ``multi_value_max`` whose j most frequent results V hold >=
``multi_value_share`` (0.95) of the k0 prompts; each must be over-represented (count > k0 *
|P_v| / N, each count significant at ``alpha``), else noise joins V; reported if j >= 2 as
``result_multi_value_{j}=[v1,v2]`` (code: ``[v1, v2]``), score = that share, k = k0.

**Chance guard** (so that noise maps match nothing): (a) the base-rate cap above: a heuristic
covering more than ``max_base_rate`` (0.55) of the grid is no candidate (with k = |P_H| a random
map scores about the base rate, and above ~0.71 every map passes 0.6); (b) significance: under a
random ranking count is hypergeometric (N, |P_H|, k); a match needs P(count >= observed) <=
``alpha`` / (number of tests: candidates, plus the two-sided ones when gated), i.e. a
Bonferroni family-wise level ``alpha`` (0.01) per map; multi-value sets are corrected for the
C(#results, j) sets they were chosen from. ``alpha=None`` turns (b) off.

Deviations from the released code: k = |P_H| by default (option ``k_rule="code"``); the pattern
scan above; the base-rate cap and significance test replace its ad-hoc removals (``/``: result
ranges at 0 and multi-value sets {0..j-1}; ``*``: zero patterns when ``result_value_000`` is
perfect); identical prompt sets are reported once. Nested heuristics are inherent to the score:
a neuron implementing H also matches H' ⊇ H when |P_H| / |P_H'| >= threshold (it scores lower).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ...tasks import TaskError

OPERATORS = ("+", "-", "*", "/")
OPERAND_RANGE_WIDTHS = {"+": (10, 30, 50, 100), "-": (10, 30, 50, 100), "*": (3, 5, 10),
                        "/": (10, 30, 50, 100)}
RESULT_RANGE_WIDTHS = {"+": (10, 30, 50), "-": (10, 30, 50), "*": (10, 30, 50, 100),
                       "/": (2, 10, 100)}
DEFAULT_MODS = tuple(range(2, 11))  # the released code
PAPER_MODS = (2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 15)
TWO_SIDED_FAMILIES = frozenset({"op_mod", "op_range", "both_mod", "both_range", "op_pattern",
                                "result_mod"})
_ELEMENTS = 1 << 23  # per-batch budget of gathered elements (bounded memory)


@dataclass(frozen=True)
class HeuristicMatch:
    """One heuristic a neuron implements: ``score = |top-k (or bottom-k) ∩ P_H| / k``."""

    name: str
    score: float
    family: str
    k: int
    direction: str = "top"


@dataclass(frozen=True)
class HeuristicSet:
    """A candidate heuristic over one grid: ``mask`` bool [N] is P_H, ``k`` its top-k size."""

    name: str
    family: str
    mask: Tensor
    k: int

    @property
    def size(self) -> int:
        return int(self.mask.sum())


@dataclass(eq=False)
class HeuristicCandidates:
    """All candidate heuristics of one grid (H rows). Build with :func:`build_candidates`."""

    operator: str
    result: Tensor  # int64 [N]
    names: list[str]
    families: list[str]
    masks: Tensor  # bool [H, N]
    k: Tensor  # int64 [H]
    size: Tensor  # int64 [H], |P_H|
    on_result: Tensor  # bool [H], scored on the key-value map
    two_sided: Tensor  # bool [H], bottom-k scored too when gated
    max_base_rate: float
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_prompts(self) -> int:
        return self.masks.shape[1]

    def __len__(self) -> int:
        return len(self.names)

    def sets(self) -> dict[str, HeuristicSet]:
        """name -> :class:`HeuristicSet` (the data-driven multi-value family is not listed)."""
        return {n: HeuristicSet(n, f, self.masks[h], int(self.k[h]))
                for h, (n, f) in enumerate(zip(self.names, self.families, strict=True))}


def _grid(op1: Tensor, op2: Tensor, operator: str) -> tuple[Tensor, Tensor, Tensor]:
    """Validated int64 ``op1, op2, result`` [N]; raises :class:`TaskError` on bad input."""
    if operator not in OPERATORS:
        raise TaskError(f"operator {operator!r} is not one of + - * / (/ is integer division)")
    a, b = torch.as_tensor(op1).detach().cpu(), torch.as_tensor(op2).detach().cpu()
    if a.dim() != 1 or b.dim() != 1 or a.numel() != b.numel():
        raise TaskError(f"op1 and op2 must be 1-D of the same length, got shapes "
                        f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.numel() == 0:
        raise TaskError("the grid is empty: give at least one (op1, op2) pair")
    if (a.is_floating_point() and (a != a.round()).any()) or \
            (b.is_floating_point() and (b != b.round()).any()):
        raise TaskError("operands must be integers")
    a, b = a.long(), b.long()
    if (a < 0).any() or (b < 0).any():
        raise TaskError("operands must be non-negative")
    if operator == "/" and (b == 0).any():
        raise TaskError("division grid has op2 = 0: operands of / start at 1")
    r = {"+": a + b, "-": a - b, "*": a * b}.get(operator)
    r = torch.div(a, b, rounding_mode="floor") if r is None else r
    if (r < 0).any():
        raise TaskError("subtraction grid has op1 < op2: results must be non-negative")
    return a, b, r


def _digit_heuristics(prefix: str, x: Tensor, patterns: bool) -> Iterable[tuple[str, Tensor]]:
    """``{prefix}_value_{v}`` for every value of x, then ``{prefix}_pattern_{p}`` (see above)."""
    d = max(3, len(str(int(x.max()))))
    vals, inv = torch.unique(x, return_inverse=True)
    for j, v in enumerate(vals.tolist()):
        yield f"{prefix}_value_{v:0{d}d}", inv == j
    if not patterns:
        return
    digits = torch.stack([(x // 10 ** (d - 1 - j)) % 10 for j in range(d)], dim=1)  # [N, d]
    for bits in range(1, 2 ** d - 1):
        fixed = [j for j in range(d) if bits >> j & 1]
        if fixed == list(range(len(fixed))):  # a prefix: a range, not a pattern
            continue
        key = sum(digits[:, j] * 10 ** t for t, j in enumerate(fixed))
        for u in torch.unique(key).tolist():
            text = ["."] * d
            for t, j in enumerate(fixed):
                text[j] = str(u // 10 ** t % 10)
            yield f"{prefix}_pattern_{''.join(text)}", key == u


def build_candidates(op1: Tensor, op2: Tensor, operator: str, *, mods: Sequence[int] = DEFAULT_MODS,
                     k_rule: str = "paper", max_base_rate: float = 0.55,
                     max_operand: int | None = None,
                     max_single_token: int | None = None) -> HeuristicCandidates:
    """Every candidate heuristic of the grid ``op1, op2`` [N] (module docstring, steps 1-2).

    ``k_rule``: "paper" (k = |P_H|) or "code" (the released code's closed forms, clamped to
    [1, N]). ``max_operand``: exclusive bound M of the operands (default: largest + 1).
    """
    a, b, r = _grid(op1, op2, operator)
    if k_rule not in ("paper", "code"):
        raise TaskError(f"k_rule {k_rule!r} is not 'paper' or 'code'")
    if not mods or any(int(n) < 2 for n in mods):
        raise TaskError(f"mods must be integers >= 2, got {list(mods)}")
    if not 0 < max_base_rate <= 1:
        raise TaskError(f"max_base_rate must be in (0, 1], got {max_base_rate}")
    n = a.numel()
    m = int(max_operand) if max_operand is not None else int(max(a.max(), b.max())) + 1
    f, r_end = n / m ** 2, int(r.max()) + 1
    s_tok = int(max_single_token) if max_single_token is not None else r_end - 1
    rows: list[tuple[str, str, Tensor, float | None, int | None]] = []  # name family mask k cap

    def add(name: str, family: str, mask: Tensor, code_k: float | None = None,
            cap: int | None = None) -> None:
        rows.append((name, family, mask, code_k, cap))

    def mod_family(prefix: str, family: str, values: list[Tensor],
                   code_k: Callable[[int], float], cap: int | None = None) -> None:
        for md in map(int, mods):
            for v in range(md):
                mask = torch.stack([x % md == v for x in values]).all(0)
                add(f"{prefix}_{v}mod{md}", family, mask, code_k(md), cap)

    def range_family(prefix: str, family: str, values: list[Tensor], widths: Sequence[int],
                     end: int, stride: Callable[[int], int], cap: int | None = None) -> None:
        for w in widths:
            for lo in range(0, end, stride(w)):
                add(f"{prefix}_range_{lo}_{lo + w}", family,
                    torch.stack([(x >= lo) & (x < lo + w) for x in values]).all(0), None, cap)

    for i, x in ((1, a), (2, b)):
        mod_family(f"op{i}", "op_mod", [x], lambda md: (m // md) * m * f)
    for i, x in ((1, a), (2, b)):
        range_family(f"op{i}", "op_range", [x], OPERAND_RANGE_WIDTHS[operator], m, lambda w: w)
    mod_family("both_operands", "both_mod", [a, b], lambda md: (m // md) ** 2 * f)
    range_family("both_operands", "both_range", [a, b], OPERAND_RANGE_WIDTHS[operator], m,
                 lambda w: w)
    add("same_operand", "same_operand", a == b, math.isqrt(s_tok) if operator == "*" else m)
    for i, x in ((1, a), (2, b)):
        for name, mask in _digit_heuristics(f"op{i}", x, True):
            add(name, "op_pattern", mask, m * f)
    cap = m if operator in ("*", "/") else None
    if operator != "/":
        mod_family("result", "result_mod", [r], lambda md: (m // md) ** 2 * f, cap)
    range_family("result", "result_range", [r], RESULT_RANGE_WIDTHS[operator], r_end,
                 lambda w: max(w // 3, 10), cap)
    for name, mask in _digit_heuristics("result", r, operator != "/"):
        add(name, "result_pattern", mask, m * f)

    masks = torch.stack([row[2] for row in rows])
    row_of, col_of = masks.nonzero(as_tuple=True)
    size = torch.bincount(row_of, minlength=len(rows))
    weights = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hashes = torch.zeros(len(rows), dtype=torch.float64).index_add_(0, row_of, weights[col_of])
    ok = ((size >= 1) & (size <= max_base_rate * n)).tolist()
    first: dict[tuple[bool, float], list[int]] = {}  # identical prompt sets: keep the first
    keep: list[int] = []
    for h, hashed in enumerate(hashes.tolist()):
        same = first.setdefault((rows[h][0].startswith("result"), hashed), [])
        if ok[h] and not any(torch.equal(masks[h], masks[g]) for g in same):
            same.append(h)
            keep.append(h)
    ks = []
    for h in keep:
        name, family, _, code_k, cap = rows[h]
        k = int(size[h]) if k_rule == "paper" or code_k is None else int(code_k)
        ks.append(max(1, min(n, k if k_rule == "paper" or cap is None else min(k, cap))))
    names = [rows[h][0] for h in keep]
    families = [rows[h][1] for h in keep]
    return HeuristicCandidates(
        operator=operator, result=r, names=names, families=families, masks=masks[keep],
        k=torch.tensor(ks, dtype=torch.long), size=size[keep],
        on_result=torch.tensor([nm.startswith("result") for nm in names], dtype=torch.bool),
        two_sided=torch.tensor([fa in TWO_SIDED_FAMILIES for fa in families], dtype=torch.bool),
        max_base_rate=max_base_rate)


def heuristic_sets(op1: Tensor, op2: Tensor, operator: str, **options) -> dict[str, HeuristicSet]:
    """name -> :class:`HeuristicSet` (bool mask [N] + family + k) of the grid's candidates.

    ``options`` are those of :func:`build_candidates` (``mods``, ``k_rule``, ...).
    """
    return build_candidates(op1, op2, operator, **options).sets()


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
        cand, (_, _, res) = candidates, _grid(op1, op2, operator)
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
