"""Leak-free ICL splits and matched nulls for steering vectors, directional ablation and
function vectors: splits disjoint by query word on every shipped dataset, effect prompts
disjoint from the means' prompts, equal-norm vectors applied at the vector's own site,
random-head FVs matched by layer, and planted cases where the real vector beats its null and
a random one does not."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from modelweave.errors import ModelWeaveError, SteeringError
from modelweave.methods.steering.controls import (
    ablation_null,
    check_disjoint_prompts,
    steering_null,
)
from modelweave.methods.steering.fv_eval import (
    disjoint_rows,
    random_head_sets,
    run_function_vectors,
)
from modelweave.models import Model
from modelweave.tasks import TaskError, get_task, make_batch
from modelweave.tasks.icl import DATASETS, load_pairs, split_pairs, split_word_pairs
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model


def _model(family: str = "llama") -> Model:
    tok = make_tokenizer("bytelevel")
    return Model(tiny_hf_model(family, vocab_size=len(tok)), tok)


def _words(pairs) -> set[str]:
    return {w.lower() for pair in pairs for w in pair}


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_splits_are_disjoint_by_query_word_on_the_real_data(dataset):
    pairs = load_pairs(dataset)
    for seed in (0, 1, 2):
        train, test = split_pairs(dataset, 0.3, seed)
        assert len(test) == round(0.3 * len(pairs)) and len(train) >= 20
        assert set(train) | set(test) <= set(pairs) and not set(train) & set(test)
        assert not {x.lower() for x, _ in test} & _words(train)  # no test query in train
        assert split_pairs(dataset, 0.3, seed) == (train, test)  # deterministic
    assert split_pairs(dataset, 0.3, 0)[1] != split_pairs(dataset, 0.3, 1)[1]
    # the prompts built from each split: every train prompt (queries, demonstrations, labels)
    # avoids every test query word, and test prompts draw only test pairs
    train_ex = get_task(f"icl_{dataset.replace('-', '_')}", split="train",
                        split_seed=1).generate(40, seed=0)
    test_ex = get_task(f"icl_{dataset.replace('-', '_')}", split="test",
                       split_seed=1).generate(40, seed=0)
    seen = set()
    for ex in train_ex:
        seen |= {ex.meta["x"].lower(), ex.meta["y"].lower()} | _words(ex.meta["demos"])
    queries = {ex.meta["x"].lower() for ex in test_ex}
    assert queries and not queries & seen
    test_pairs = set(split_pairs(dataset, 0.3, 1)[1])
    assert all((ex.meta["x"], ex.meta["y"]) in test_pairs for ex in test_ex)
    assert all(tuple(d) in test_pairs for ex in test_ex for d in ex.meta["demos"])


def test_a_split_without_evaluation_items_is_one_clear_error():
    with pytest.raises(TaskError, match="leaves 1 train and 0 test"):
        split_word_pairs([("hot", "cold")], 0.3)
    with pytest.raises(TaskError, match="test_fraction"):
        split_word_pairs(load_pairs("antonym"), 1.5)
    # 4 test pairs cannot make a 10-shot prompt (it needs 12 distinct pairs)
    with pytest.raises(TaskError, match=r"test split has 4 pairs\).*shots \+ 2"):
        get_task("icl_antonym", split="test", test_fraction=0.05).generate(1)
    with pytest.raises(ModelWeaveError, match="test split"):
        run_function_vectors(_model("gpt2"), ["antonym"], n_clean=2, n_corrupt=2, n_eval=2,
                             shots=10, top_k=1, layers=[0], fv_layer=0, only_correct=False,
                             test_fraction=0.05, null_draws=2)


def test_effect_prompts_are_disjoint_from_the_means_prompts():
    model = _model("gpt2")
    batch = make_batch(model, "icl_antonym", n=8, seed=0, shots=2, split="train")
    dup = batch.select([0, 1, 2, 3, 0, 1])  # the last two rows repeat mean prompts
    ok = torch.ones(len(dup), dtype=torch.bool)
    mean_rows, effect_rows = disjoint_rows(dup, ok, 2, 1)
    assert mean_rows.tolist() == [0, 1, 2, 3] and effect_rows.tolist() == []
    mean_rows, effect_rows = disjoint_rows(batch, ok[:len(batch)], 1, 1)
    assert not set(mean_rows.tolist()) & set(effect_rows.tolist())
    assert not ({batch.examples[i].clean for i in mean_rows.tolist()}
                & {batch.examples[i].clean for i in effect_rows.tolist()})
    run = run_function_vectors(model, ["antonym", "present-past"], n_clean=4, n_corrupt=4,
                               n_eval=4, top_k=2, shots=2, layers=[1], fv_layer=1,
                               only_correct=False, null_draws=3)
    for t in run.tasks:
        assert t.n_corrupt >= 1 and t.n_correct + t.n_corrupt <= 8
        train, test = split_pairs(t.task, 0.3, 0)
        held = {x.lower() for x, _ in test}
        assert {q.lower() for q in t.queries["eval"]} <= held
        assert not {q.lower() for q in t.queries["mean"] + t.queries["corrupt"]} & held
        row = t.summary()
        low, high = row["zero_shot_fv_ci"]
        assert low <= row["zero_shot_fv"] <= high
        assert row["zero_shot_fv_null"]["draws"] == 3
        assert row["shuffled_fv_null_vector"]["null"] == "equal-norm random vector"


def test_random_head_fvs_are_matched_by_layer():
    model = _model("llama")
    heads = [(2, 1), (2, 3), (0, 0)]
    draws = random_head_sets(model, heads, 25, seed=3)
    assert len(draws) == 25 and len({tuple(d) for d in draws}) > 1
    for d in draws:
        assert Counter(layer for layer, _ in d) == Counter(layer for layer, _ in heads)
        assert not set(d) & set(heads) and len(set(d)) == len(d)
    from modelweave.metrics.nulls import NullError

    too_many = [(1, h) for h in range(model.cfg.n_heads)]
    with pytest.raises(NullError, match="layer 1"):
        random_head_sets(model, too_many, 2)


def _delta_at(model, prompts, layer):
    """A score that records the change of the residual at block ``layer``'s output and at
    its input (last token), relative to an unsteered pass."""
    seen: list[dict] = []
    tokens, mask = model.encode(prompts)
    last = mask.sum(-1) - 1
    rows = torch.arange(len(prompts))
    names = [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer + 1}.hook_resid_pre"]
    _, clean = model.run_with_cache(tokens, names, attention_mask=mask)

    def score():
        _, cache = model.run_with_cache(tokens, names, attention_mask=mask)
        seen.append({n: (cache[n] - clean[n]).float()[rows, last] for n in names})
        return seen[-1][names[1]].norm(dim=-1)

    return score, seen, names


def test_equal_norm_vectors_have_the_norm_and_are_applied_at_the_same_site():
    model = _model("llama")
    torch.manual_seed(0)
    vector = torch.randn(model.cfg.d_model) * 3
    score, seen, (before, after) = _delta_at(model, ["a b c", "hello there"], 1)
    result = steering_null(model, vector, score, layer=1, scale=2.0, positions="last",
                           n_draws=6, seed=4)
    assert result.record["site"] == "blocks.1.hook_resid_post"
    assert result.record["layer"] == 1 and result.record["scale"] == 2.0
    assert np.allclose(result.record["null_norms"], float(vector.norm()), rtol=1e-5)
    assert len(seen) == 8  # unsteered, steered, 6 draws
    for delta in seen[1:]:  # every steered pass: 2 * |v| added at block 1's output only
        assert torch.allclose(delta[after].norm(dim=-1), torch.full((2,), 2 * vector.norm()),
                              rtol=1e-4)
        assert float(delta[before].abs().max()) < 1e-5
    assert float(seen[0][after].abs().max()) < 1e-5


@pytest.mark.numeric
def test_null_effects_are_the_draws_own_effects_and_the_vector_is_compared_with_them():
    """A score linear in the steered site (block 1's output at each prompt's last token, as
    block 2 reads it, projected on ``u``): the vector's effect is exactly ``scale * v . u``,
    each equal-norm draw's ``scale * r . u``, and the p-value counts the draws whose effect
    reaches the vector's, (1 + hits) / (1 + draws)."""
    from modelweave.metrics.nulls import equal_norm_vectors

    model = _model("llama")
    d = model.cfg.d_model
    g = torch.Generator().manual_seed(3)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    vector = 0.6 * u + 0.25 * torch.randn(d, generator=g)
    tokens, mask = model.encode(PROMPTS)
    last, rows = mask.sum(-1) - 1, torch.arange(len(PROMPTS))
    name = "blocks.2.hook_resid_pre"

    def score():
        _, cache = model.run_with_cache(tokens, [name], attention_mask=mask)
        return cache[name].float()[rows, last] @ u

    scale, n = 1.5, 12
    result = steering_null(model, vector, score, layer=1, scale=scale, positions="last",
                           n_draws=n, seed=7)
    want_nulls = (scale * (equal_norm_vectors(vector, n, 7).double() @ u.double())).numpy()
    want = scale * float(vector.double() @ u.double())
    tol = 1e-4 * scale * float(vector.norm())
    assert abs(result.effect - want) <= tol
    assert np.abs(np.asarray(result.null_effects) - want_nulls).max() <= tol
    assert np.abs(want_nulls - want).min() > 10 * tol  # no tie: the count below is exact
    hits = int((want_nulls >= want).sum())
    assert result.effect_null["p_value"] == pytest.approx((1 + hits) / (1 + n))
    assert result.effect_null["null_mean"] == pytest.approx(float(want_nulls.mean()), abs=tol)


def _projection_score(model, prompts, u):
    tokens, mask = model.encode(prompts)
    last, rows = mask.sum(-1) - 1, torch.arange(len(prompts))
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"

    def score():
        _, cache = model.run_with_cache(tokens, [name], attention_mask=mask)
        return cache[name].float()[rows, last] @ u

    return score


PROMPTS = ["a b c d", "hello there", "one two", "the cat sat", "x y", "to be or not"]


def test_planted_direction_beats_its_null_and_a_random_vector_does_not():
    model = _model("llama")
    g = torch.Generator().manual_seed(0)
    u = torch.randn(model.cfg.d_model, generator=g)
    u = u / u.norm()
    score = _projection_score(model, PROMPTS, u)
    real = steering_null(model, 4 * u, score, layer=1, scale=1.0, n_draws=40, seed=1)
    assert real.effect > 0 and real.effect_ci[0] > 0
    assert real.effect_null["p_value"] <= 1 / 41 + 1e-9  # beats every random vector
    assert real.effect > 3 * abs(real.effect_null["null_mean"])
    other = torch.randn(model.cfg.d_model, generator=g)
    rand = steering_null(model, 4 * other / other.norm(), score, layer=1, n_draws=40, seed=1)
    assert rand.effect_null["p_value"] > 0.05
    assert abs(rand.effect) < real.effect / 3


def test_ablating_the_planted_direction_beats_random_directions():
    model = _model("llama")
    tokens, mask = model.encode(PROMPTS)
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    _, cache = model.run_with_cache(tokens, [name], attention_mask=mask)
    r = cache[name].float()[torch.arange(len(PROMPTS)), mask.sum(-1) - 1].mean(0)
    r = r / r.norm()  # the prompts' mean direction: every projection is positive
    score = _projection_score(model, PROMPTS, r)
    real = ablation_null(model, r, score, n_draws=30, seed=2)
    assert abs(float(np.mean(real.treated))) < 1e-4  # ablated: nothing left along r
    assert real.effect > 0 and real.effect_null["p_value"] <= 1 / 31 + 1e-9
    g = torch.Generator().manual_seed(5)
    rand = ablation_null(model, torch.randn(model.cfg.d_model, generator=g), score,
                         n_draws=30, seed=2)
    assert rand.effect_null["p_value"] > 0.05 and abs(rand.effect) < real.effect / 5
    assert np.allclose(real.record["null_norms"], 1.0)


def test_steering_prompts_must_not_be_pair_texts(tmp_path):
    check_disjoint_prompts(["My weekend was"], ["I loved it."], ["I hated it."])
    with pytest.raises(SteeringError, match="fitted on"):
        check_disjoint_prompts(["I loved"], ["I loved it."], ["I hated it."])
    import json

    from modelweave.experiments import ConfigError
    from modelweave.experiments.methods import get_method

    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps({"positive": "Good day", "negative": "Bad day"}))
    with pytest.raises(ConfigError, match=r"^m\.pairs: evaluation prompt 'Bad day'"):
        get_method("steer").check_params({"pairs": str(pairs), "prompts": ["Bad day"]}, "m")
    with pytest.raises(ConfigError, match="null_draws"):
        get_method("steer").check_params({"pairs": str(pairs), "prompts": ["x"],
                                          "null_draws": -1}, "m")


@pytest.mark.slow
@pytest.mark.xdist_group("smollm")
def test_embedded_fv_of_known_heads_beats_random_head_fvs_on_held_out_words(smollm):
    from modelweave.methods.steering.fv import function_vector, last_token_acts
    from modelweave.methods.steering.fv_eval import addition_hits

    train = make_batch(smollm, "icl_capitalize", n=10, seed=0, split="train")
    acts = last_token_acts(smollm, train)
    heads = [(20, 5), (14, 1), (18, 6)]
    result_mean = acts.result.mean(0)
    fv = function_vector(result_mean, heads)
    zero = make_batch(smollm, "icl_capitalize", n=12, seed=1, shots=0, split="test")
    nulls = {f"r{i}": function_vector(result_mean, hs)
             for i, hs in enumerate(random_head_sets(smollm, heads, 19, seed=0))}
    hits = addition_hits(smollm, zero, {"fv": fv, **nulls}, [15])
    from modelweave.metrics.nulls import compare

    observed = float(hits["fv"].float().mean())
    comparison = compare(observed, [float(hits[k].float().mean()) for k in nulls])
    assert observed >= 0.2 and comparison.p_value <= 0.05, (observed, comparison)
