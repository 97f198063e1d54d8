"""Heuristic classification (modelweave.analysis.heuristics.classify) on synthetic maps.

A planted neuron is ``1.0 * [prompt in P_H] + 0.3 * noise``; the classifier must name H (first,
with the highest score), not name unrelated families, and label pure noise with nothing.
"""

from __future__ import annotations

import pytest
import torch

from modelweave.analysis.heuristics import (
    HeuristicMatch,
    build_candidates,
    classify_map,
    classify_maps,
    heuristic_sets,
)
from modelweave.errors import ModelWeaveError


def _grid(lo1: int, hi1: int, lo2: int, hi2: int, keep=None) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.arange(lo1, hi1).repeat_interleave(hi2 - lo2)
    b = torch.arange(lo2, hi2).repeat(hi1 - lo1)
    if keep is not None:
        mask = keep(a, b)
        a, b = a[mask], b[mask]
    return a, b


GRIDS = {
    "+": _grid(0, 100, 0, 100),
    "-": _grid(0, 100, 0, 100, lambda a, b: a >= b),
    "*": _grid(0, 30, 0, 30),
    "/": _grid(1, 100, 1, 30),
}


def _result(a: torch.Tensor, b: torch.Tensor, op: str) -> torch.Tensor:
    return {"+": a + b, "-": a - b, "*": a * b, "/": torch.div(a, b, rounding_mode="floor")}[op]


def _planted(mask: torch.Tensor, seed: int = 0, sign: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return sign * mask.float() + 0.3 * torch.randn(mask.shape, generator=gen)


def _noise(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def plus():
    a, b = GRIDS["+"]
    return a, b, build_candidates(a, b, "+")


def _names(matches: list[HeuristicMatch]) -> list[str]:
    return [m.name for m in matches]


@pytest.mark.parametrize(("name", "family", "predicate"), [
    ("op1_range_20_30", "op_range", lambda a, b, r: (a >= 20) & (a < 30)),
    ("op2_3mod5", "op_mod", lambda a, b, r: b % 5 == 3),
    ("result_2mod4", "result_mod", lambda a, b, r: r % 4 == 2),
    ("both_operands_1mod2", "both_mod", lambda a, b, r: (a % 2 == 1) & (b % 2 == 1)),
    ("same_operand", "same_operand", lambda a, b, r: a == b),
    ("both_operands_range_10_20", "both_range",
     lambda a, b, r: (a >= 10) & (a < 20) & (b >= 10) & (b < 20)),
    ("op2_value_042", "op_pattern", lambda a, b, r: b == 42),
])
def test_planted_heuristic_is_named_first(plus, name, family, predicate):
    a, b, cand = plus
    matches = classify_map(_planted(predicate(a, b, a + b)), a, b, "+", candidates=cand)
    assert matches and matches[0].name == name, _names(matches)
    assert matches[0].family == family and matches[0].direction == "top"
    assert matches[0].score >= 0.65
    assert matches[0].k == int(predicate(a, b, a + b).sum())  # k = |P_H|
    assert all(x.score >= y.score for x, y in zip(matches, matches[1:], strict=False))


def test_wrong_families_are_not_reported(plus):
    a, b, cand = plus
    names = _names(classify_map(_planted((a >= 20) & (a < 30)), a, b, "+", candidates=cand))
    assert names == ["op1_range_20_30"]
    names = _names(classify_map(_planted(b % 5 == 3), a, b, "+", candidates=cand))
    assert "op2_3mod5" in names and not any(n.startswith(("op1", "result", "both")) for n in names)


def test_result_range_via_kv_map(plus):
    a, b, cand = plus
    r = a + b
    planted = _planted((r >= 60) & (r < 70))
    matches = classify_map(_noise(len(a), 1), a, b, "+", kv_map=planted, candidates=cand)
    assert matches[0].name == "result_range_60_70" and matches[0].family == "result_range"
    assert all(n.startswith("result") for n in _names(matches))


def test_kv_map_scores_result_heuristics_only(plus):
    a, b, cand = plus
    r = a + b
    key, kv = _noise(len(a), 2), _noise(len(a), 3)
    op_planted = _planted((a >= 20) & (a < 30))
    res_planted = _planted((r >= 60) & (r < 70))
    # an operand heuristic planted in the kv map is invisible: operands are read off the key map
    assert classify_map(key, a, b, "+", kv_map=op_planted, candidates=cand) == []
    # a result heuristic planted in the key map is invisible when a kv map is given
    assert classify_map(res_planted, a, b, "+", kv_map=kv, candidates=cand) == []
    # without kv map the key map scores both
    assert "result_range_60_70" in _names(classify_map(res_planted, a, b, "+", candidates=cand))


def test_digit_pattern_tens_digit():
    a, b = _grid(0, 300, 0, 20)
    tens7 = (a // 10) % 10 == 7
    matches = classify_map(_planted(tens7), a, b, "+")
    assert matches[0].name == "op1_pattern_.7." and matches[0].family == "op_pattern"
    assert "op1_range_70_80" not in _names(matches)  # a third of the pattern only
    # on a 0..99 grid the same neuron is a range: the identical pattern is folded into it
    a, b = GRIDS["+"]
    names = _names(classify_map(_planted((a // 10) % 10 == 7), a, b, "+"))
    assert names[0] == "op1_range_70_80" and "op1_pattern_.7." not in names


def test_division_multi_value():
    a, b = GRIDS["/"]
    r = _result(a, b, "/")
    matches = classify_map(_noise(len(a), 4), a, b, "/", kv_map=_planted((r == 3) | (r == 7)))
    multi = [m for m in matches if m.family == "result_multi_value"]
    assert [m.name for m in multi] == ["result_multi_value_2=[3,7]"], _names(matches)
    assert multi[0].score >= 0.95
    # a single-valued neuron is a value, not a multi-value set
    matches = classify_map(_noise(len(a), 4), a, b, "/", kv_map=_planted(r == 5))
    assert matches[0].name == "result_value_005"
    assert not any(m.family == "result_multi_value" for m in matches)


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
@pytest.mark.parametrize("gated", [False, True])
def test_noise_maps_match_nothing(op, gated):
    a, b = GRIDS[op]
    gen = torch.Generator().manual_seed(len(op) + 7 * gated + ord(op))
    maps = torch.randn(24, len(a), generator=gen)
    maps[1] = maps[1].relu()  # many ties at zero
    maps[2] = 0.0  # all tied
    maps[3] = torch.randn(len(a), generator=gen).exp()  # heavy tail
    kvs = torch.randn(24, len(a), generator=gen)
    assert classify_maps(maps, a, b, op, gated=gated) == [[]] * 24
    assert classify_maps(maps, a, b, op, kv_maps=kvs, gated=gated) == [[]] * 24


def test_high_base_rate_heuristic_is_no_candidate():
    a, b = GRIDS["-"]
    r = a - b
    sets = heuristic_sets(a, b, "-")
    assert ((r < 50).float().mean() > 0.7) and "result_range_0_50" not in sets
    # a neuron on it is not reported, not even by a perfect map
    assert "result_range_0_50" not in _names(classify_map((r < 50).float(), a, b, "-"))


def test_gated_bottom_k():
    a, b = GRIDS["+"]
    negative = _planted((a >= 20) & (a < 30), sign=-1.0)
    assert "op1_range_20_30" not in _names(classify_map(negative, a, b, "+"))
    matches = classify_map(negative, a, b, "+", gated=True)
    assert matches[0].name == "op1_range_20_30" and matches[0].direction == "bottom"
    positive = classify_map(_planted((a >= 20) & (a < 30)), a, b, "+", gated=True)
    assert positive[0].name == "op1_range_20_30" and positive[0].direction == "top"
    # result ranges are one-sided (as in the released code)
    r = a + b
    matches = classify_map(_planted((r >= 60) & (r < 70), sign=-1.0), a, b, "+", gated=True)
    assert "result_range_60_70" not in _names(matches)


def test_subsampled_grid():
    a, b = GRIDS["+"]
    keep = torch.rand(len(a), generator=torch.Generator().manual_seed(5)) < 0.3
    a, b = a[keep], b[keep]
    r = a + b
    matches = classify_map(_planted((a >= 20) & (a < 30)), a, b, "+")
    assert matches[0].name == "op1_range_20_30"
    assert matches[0].k == int(((a >= 20) & (a < 30)).sum())
    matches = classify_map(_noise(len(a), 6), a, b, "+", kv_map=_planted(r % 4 == 2))
    assert matches[0].name == "result_2mod4"
    assert classify_maps(torch.randn(10, len(a)), a, b, "+") == [[]] * 10


def test_multiplication_and_subtraction_plants():
    a, b = GRIDS["*"]
    matches = classify_map(_planted((b >= 6) & (b < 9)), a, b, "*")
    assert matches[0].name == "op2_range_6_9"
    a, b = GRIDS["-"]
    r = a - b
    assert classify_map(_planted(r % 7 == 3), a, b, "-")[0].name == "result_3mod7"


def test_heuristic_sets_and_k_rules():
    a, b = GRIDS["+"]
    sets = heuristic_sets(a, b, "+")
    s = sets["op1_range_20_30"]
    assert s.family == "op_range" and torch.equal(s.mask, (a >= 20) & (a < 30)) and s.k == 1000
    assert sets["result_value_042"].size == 43 and "op1_range_0_100" not in sets  # all prompts
    code = heuristic_sets(a, b, "+", k_rule="code")
    assert code["same_operand"].k == 100 and code["op1_value_042"].k == 100
    assert code["both_operands_1mod3"].k == 33 ** 2  # (M//n)^2 * f, f = 1
    a3, b3 = _grid(0, 300, 0, 20)
    names = heuristic_sets(a3, b3, "+").keys()
    assert {"op1_pattern_.7.", "op1_pattern_1.3", "op1_pattern_.23", "op1_value_123"} <= names
    assert "op1_pattern_..7" not in names and "op1_7mod10" in names  # the same prompts
    assert not any(n.startswith(("op1_pattern_1..", "op1_pattern_12.")) for n in names)
    a4, b4 = GRIDS["/"]
    names = heuristic_sets(a4, b4, "/").keys()
    assert "result_value_003" in names and not any(n.startswith("result_pattern") for n in names)
    assert not any("mod" in n and n.startswith("result") for n in names)
    # the code's k still labels the planted neuron
    matches = classify_map(_planted(a % 5 == 3), a, b, "+", k_rule="code")
    assert matches[0].name == "op1_3mod5" and matches[0].k == 2000


def test_tiny_grid_has_no_candidates():
    a, b = torch.tensor([3]), torch.tensor([4])
    assert heuristic_sets(a, b, "+") == {}
    assert classify_maps(torch.ones(2, 1), a, b, "+", gated=True) == [[], []]


def test_batched_equals_single(plus):
    a, b, cand = plus
    maps = torch.stack([_planted((a >= 20) & (a < 30), seed=s) for s in range(5)])
    batched = classify_maps(maps, a, b, "+", candidates=cand, batch_size=2)
    assert batched == [classify_map(m, a, b, "+", candidates=cand) for m in maps]


@pytest.mark.parametrize(("call", "message"), [
    (lambda a, b, m: classify_map(m, a, b, "%"), "operator"),
    (lambda a, b, m: classify_map(m, a, b[:-1], "+"), "same length"),
    (lambda a, b, m: classify_map(m[:0], a[:0], b[:0], "+"), "empty"),
    (lambda a, b, m: classify_map(m[:-1], a, b, "+"), "shape"),
    (lambda a, b, m: classify_map(m, a, b, "+", kv_map=m[:-1]), "shape"),
    (lambda a, b, m: classify_map(m, b, a, "-"), "op1 < op2"),
    (lambda a, b, m: classify_map(m, a, b, "/"), "op2 = 0"),
    (lambda a, b, m: classify_map(m * float("nan"), a, b, "+"), "NaN"),
    (lambda a, b, m: classify_map(m, a, b, "+", threshold=1.5), "threshold"),
    (lambda a, b, m: classify_map(m, a, b, "+", candidates=build_candidates(a, b, "-")),
     "another grid"),
    (lambda a, b, m: classify_map(m, a, b, "+", k_rule="other"), "k_rule"),
    (lambda a, b, m: classify_map(m, a - 50, b, "+"), "non-negative"),
])
def test_bad_input(call, message):
    a, b = _grid(0, 10, 0, 10, lambda a, b: a >= b)
    with pytest.raises(ModelWeaveError, match=message) as info:
        call(a, b, torch.randn(len(a)))
    assert "\n" not in str(info.value)
