"""Bad input to the methods (heuristics, knockouts, AtP*/locate, influence, steering) is one
clear ``ModelWeaveError`` line: the bad value and what is allowed."""

from __future__ import annotations

import pytest

from test_bad_input import one_line


@pytest.mark.parametrize(("setting", "message"), [
    ({"first_layer": 3}, r"first_layer 3 out of range \(model has 3 layers: 0\.\.2\)"),
    ({"grid_fraction": 0.0}, r"grid_fraction must be in \(0, 1\], got 0\.0"),
    ({"step": -1}, "step must be >= 0, got -1"),
    ({"classify_k": 0}, "classify_k must be >= 1, got 0"),
    ({"n_discovery": 0}, "n_discovery must be >= 1, got 0"),
    ({"n_eval": 0}, "n_eval must be >= 1, got 0"),
    ({"n_prompts": 1}, "n_prompts must be >= 2, got 1"),
    ({"decodable": "mlp"}, "decodability method must be 'probe' or 'lens', got 'mlp'"),
    ({"decodable_margin": 1.0}, r"decodability margin must be in \[0, 1\), got 1\.0"),
    ({"threshold": 0.0}, r"threshold must be in \(0, 1\], got 0\.0"),
    ({"null_draws": 0}, "null_draws and permutation_draws must be >= 1, got 0 and 20"),
    ({"nulls": ("random", "bogus")}, "unknown null 'bogus'; nulls are random"),
])
def test_heuristics_settings_name_the_bad_value(tiny, setting, message):
    """Checked up front by ``find_heuristics`` (before any prompt is drawn)."""
    from modelweave.analysis.heuristics.pipeline import find_heuristics
    from modelweave.tasks import TaskError

    with pytest.raises(TaskError, match=message) as info:
        find_heuristics(tiny, "+", **setting)
    one_line(info)


def test_heuristics_operators_decodability_emergence_and_results(tiny):
    import torch

    from modelweave.analysis.heuristics.emergence import emergence
    from modelweave.analysis.heuristics.neurons import decode_layers, decoding
    from modelweave.analysis.heuristics.pipeline import find_heuristics
    from modelweave.analysis.heuristics.results import HeuristicsRun, UnknownOperatorError
    from modelweave.experiments.methods import ConfigError, get_method
    from modelweave.tasks import TaskError

    for call, message in (
            (lambda: find_heuristics(tiny, "+,%"), r"unknown arithmetic operator '%'; "
             r"operators are \+, -, \*, /"),
            (lambda: decoding(tiny, None, method="mlp"), "decodability method must be 'probe' "
             "or 'lens', got 'mlp'"),
            (lambda: decode_layers(torch.zeros(3, 8, 4), torch.zeros(8), method="x"),
             "got 'x'"),
            (lambda: decode_layers(torch.zeros(3, 8, 4), torch.zeros(8), margin=-0.1),
             r"decodability margin must be in \[0, 1\), got -0\.1"),
            (lambda: decode_layers(torch.zeros(3, 3, 4), torch.zeros(3)),
             "decodability needs at least 4 prompts, got 3"),
            (lambda: emergence([(1, "unused")], "+", first_layer=-1),
             "first_layer must be >= 0, got -1")):
        with pytest.raises(TaskError, match=message) as info:
            call()
        one_line(info)
    with pytest.raises(ConfigError, match=r"^methods\[0\]\.heuristics: grid_fraction must be in "
                       r"\(0, 1\], got 2$") as info:  # an experiment's entry, before any model
        get_method("heuristics").check_params({"grid_fraction": 2}, "methods[0].heuristics")
    one_line(info)
    with pytest.raises(UnknownOperatorError, match=r"no result for operator '\*'; operators "
                       "analysed: none") as info:
        HeuristicsRun({}, []).by_operator("*")
    one_line(info, KeyError)


class _ArithBatch:
    """The part of an arithmetic ``TaskBatch`` a knockout reads before running the model."""

    def __init__(self, *rows):
        from types import SimpleNamespace

        self.examples = [SimpleNamespace(meta={"op": op, "op1": a, "op2": b})
                         for op, a, b in rows]

    def __len__(self):
        return len(self.examples)


def test_knockout_operators_heuristic_names_and_layers(tiny):
    import torch

    from modelweave.analysis.heuristics.knockout import heuristic_knockout, holds
    from modelweave.analysis.heuristics.neurons import neuron_attribution
    from modelweave.tasks import TaskError

    mixed = _ArithBatch(("+", 2, 3), ("-", 5, 1))
    even = _ArithBatch(("+", 2, 3), ("+", 4, 1))
    for call, message in (
            (lambda: heuristic_knockout(tiny, mixed, "op1_0mod2", [(0, 1)], [(0, 2)]),
             r"knockouts need prompts of one operator, got \['\+', '-'\]"),
            (lambda: heuristic_knockout(tiny, even, "op1_0mod2", [(0, 1)], [(0, 2)]),
             "heuristic 'op1_0mod2' holds for 2 of 2 prompts: a knockout needs prompts on "
             "both sides"),
            (lambda: holds("op1_is_big", torch.tensor([1]), torch.tensor([2]), "+"),
             "unknown heuristic name 'op1_is_big'"),
            (lambda: neuron_attribution(tiny, None, layers=[0, 3]),
             r"layer 3 out of range \(model has 3\)")):
        with pytest.raises(TaskError, match=message) as info:
            call()
        one_line(info)


def test_atp_star_and_locate_ranges_methods_and_budgets(tiny):
    from types import SimpleNamespace

    import torch

    from modelweave.methods.atp_star import atp_star, units_of
    from modelweave.methods.locate import locate
    from modelweave.tasks import TaskError

    few = SimpleNamespace(units=list(range(6)), score=torch.arange(6.0))
    for call, message in (
            (lambda: units_of(tiny, "queries", 5, indices=[4]),
             r"head index 4 out of range \(0\.\.3\)"),
            (lambda: units_of(tiny, "keys", 5, indices=[2]),  # 2 key/value heads
             r"head index 2 out of range \(0\.\.1\)"),
            (lambda: units_of(tiny, "queries", 5, layers=[-1]),
             r"layer -1 out of range: layers are 0\.\.2"),
            (lambda: units_of(tiny, "neurons", 5, indices=[48]),
             r"neuron index 48 out of range \(0\.\.47\)"),
            (lambda: units_of(tiny, "heads", 5, indices=[0, 7]),
             r"head index 7 out of range \(0\.\.3\)"),
            (lambda: units_of(tiny, "resid", 5, positions=[5]),
             r"position 5 out of range \(prompts have 5 tokens\)"),
            (lambda: units_of(tiny, "values", 5), "unknown grid 'values'; grids: "),
            (lambda: atp_star(tiny, None, "heads", direction="sideways"),
             "direction must be 'denoising' or 'noising', got 'sideways'"),
            (lambda: locate(tiny, None, "heads", method="exact"),
             r"locate method must be one of atp\*, atp, got 'exact'"),
            (lambda: locate(tiny, None, "heads", calibrate="some"),
             "calibrate must be 'tail' or 'all', got 'some'"),
            (lambda: locate(tiny, None, "heads", k=3, budget=2, estimate=few),
             "a budget of 2 exact patches cannot verify k=3 components")):
        with pytest.raises(TaskError, match=message) as info:
            call()
        one_line(info)


def test_influence_batches_max_tokens_short_documents_and_layer_specs(tiny):
    import torch

    from modelweave.methods.influence import (
        Document,
        InfluenceError,
        InfluenceScores,
        InfluenceSettings,
        Query,
        plan_influence,
    )
    from modelweave.methods.influence.modules import parse_layers

    docs = [Document("long", "When Mary and John went to the store"), Document("d1", "a")]
    queries = [Query("q", "t", "The store", " sold")]
    for settings, message in (
            (InfluenceSettings(train_batch=0), "train_batch and query_batch must be at least 1, "
             "got 0 and "),
            (InfluenceSettings(query_batch=-2), r"got \d+ and -2"),
            (InfluenceSettings(max_tokens=1), r"max_tokens must be at least 2 \(a next-token "
             r"loss needs two tokens\), got 1")):
        with pytest.raises(InfluenceError, match=message) as info:
            plan_influence(tiny, docs[:1], queries, settings, calibrate=False)
        one_line(info)
    for call, message in (
            (lambda: plan_influence(tiny, docs, queries, calibrate=False),
             "document 'd1' has fewer than 2 tokens; nothing to learn"),
            (lambda: plan_influence(tiny, [], queries, calibrate=False), "no documents given"),
            (lambda: plan_influence(tiny, docs[:1], [], calibrate=False), "no queries given"),
            (lambda: parse_layers("1,x"), r"--layers '1,x': expected numbers and ranges like "
             "'20-29' or '3,5,7'"),
            (lambda: parse_layers("5-3"), "--layers '5-3': the range '5-3' is reversed; write "
             "3-5")):
        with pytest.raises(InfluenceError, match=message) as info:
            call()
        one_line(info)
    assert parse_layers("0-2, 5") == [0, 1, 2, 5]
    with pytest.raises(InfluenceError, match=r"scores 'ekfac' have shape \(1, 2\), expected "
                       r"\(1, 1\)") as info:
        InfluenceScores({"ekfac": torch.zeros(1, 2)}, queries, docs[:1])
    one_line(info)


def test_steering_positions_slice_steps_and_vectors(tiny):
    import torch

    from modelweave.errors import SteeringError
    from modelweave.methods.steering.controls import steering_null
    from modelweave.metrics.nulls import NullError
    from modelweave.models.steering import parse_positions

    for spec, message in ((slice(0, 6, 2), r"positions slice\(0, 6, 2\): slices take no step; "
                           r"use slice\(N, M\) or 'N:M'"),
                          ("0:6:2", r"positions '0:6:2': use all, last, N, N: or N:M \(no "
                           r"step\)"),
                          ("first", "positions 'first': use all, last"),
                          ([1, "2"], r"positions \[1, '2'\]: a list of token indices must hold "
                           "ints")):
        with pytest.raises(SteeringError, match=message) as info:
            parse_positions(spec)
        one_line(info)
    assert parse_positions(slice(2, None, 1)) == slice(2, None, 1)
    with pytest.raises(SteeringError, match="slices take no step"), tiny.steer(
            torch.ones(32), layer=0, positions=slice(None, None, -1)):
        pass  # refused when the context opens, before any forward pass
    for bad in (torch.full((32,), float("nan")), torch.full((32,), float("inf"))):
        with pytest.raises(SteeringError, match="steering vector has NaN or infinite entries; "
                           "it needs finite values") as info, tiny.steer(bad, layer=1):
            pass
        one_line(info)
    with pytest.raises(SteeringError, match=r"steering vector of type list: expected a tensor "
                       r"of numbers of shape \[32\]") as info, tiny.steer(["a"] * 32, layer=1):
        pass
    one_line(info)
    with pytest.raises(NullError, match="an equal-norm null needs a finite, non-zero "
                       "vector") as info:  # a zero direction has no equal-norm null
        steering_null(tiny, torch.zeros(32), lambda: torch.zeros(2), layer=1)
    one_line(info)


