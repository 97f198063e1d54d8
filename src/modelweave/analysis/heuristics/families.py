"""Candidate heuristics of an operand grid: every family as a set of prompts
(Nikankin et al. 2024; names follow the released code).

A grid is ``op1``, ``op2`` (1-D, N prompts, possibly a subsample of all legal pairs) and the
operator; ``result = op1 op op2`` (``/`` is floor division). M = max operand + 1 (or
``max_operand``), R = max result + 1, f = N / M^2. :func:`build_candidates` turns every
heuristic H below into a prompt set P_H, a row of a bool matrix ``masks [H, N]`` with its
``k [H]``; it keeps H only if 1 <= |P_H| <= ``max_base_rate`` * N, and of candidates with
identical prompt sets the first in family order.

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


def validate_grid(op1: Tensor, op2: Tensor, operator: str) -> tuple[Tensor, Tensor, Tensor]:
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
    a, b, r = validate_grid(op1, op2, operator)
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
