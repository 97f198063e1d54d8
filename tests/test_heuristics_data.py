"""Leak-free data for fine-tunes and the heuristics study: the training items a fine-tune
records, their exclusion from every prompt the analysis reads (asserted on the real arithmetic
grid), reference means over the analysed operators only, and per-prompt faithfulness without
the prompts whose denominator is ~0."""

import numpy as np
import pytest
import torch

from arith_zoo import arith_tokenizer
from modelweave import Model, load_model
from modelweave.analysis.heuristics.emergence import shared_ratio
from modelweave.analysis.heuristics.pipeline import Settings, reference_means, split_prompts
from modelweave.analysis.heuristics.prompts import arithmetic_batch, grid_batch
from modelweave.circuits.nodes import position_means
from modelweave.errors import ModelWeaveError
from modelweave.metrics.stats import faithfulness, per_prompt_faithfulness, stable_prompts
from modelweave.models.finetune import (
    EXCLUDED,
    TRAINING_DATA,
    finetune,
    load_training_data,
    training_operands,
    without_training,
)
from modelweave.tasks import TaskError, make_batch
from modelweave.tasks.arith import arith_grid

from tiny import tiny_hf_model

PARAMS = {"operators": "+,-", "op_max": 10, "end": "\n"}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    tok = arith_tokenizer("digit")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok, name="tiny")
    result = finetune(model, "arith", out, steps=3, lora_r=2, lr=1e-2, batch_size=8, n=60,
                      scoring="full", save_every=2, task_params=PARAMS)
    return out, model, result


def _triples(batch) -> list[tuple[int, str, int]]:
    return [(ex.meta["op1"], ex.meta["op"], ex.meta["op2"]) for ex in batch.examples]


def test_finetune_records_exactly_the_training_items(tuned):
    out, model, _ = tuned
    # the rows the 3 steps of 8 trained on, as finetune draws them
    batch = make_batch(model, "arith", n=60, seed=0, scoring="full", **PARAMS)
    order = torch.randperm(len(batch), generator=torch.Generator().manual_seed(0))
    seen = [batch.examples[i] for i in order[:24].tolist()]
    want = {(ex.clean, ex.meta["op1"], ex.meta["op"], ex.meta["op2"]) for ex in seen}
    rows = load_training_data(out)
    assert {(r["prompt"], r["op1"], r["op"], r["op2"]) for r in rows} == want
    assert len(rows) == len(want)  # one item per distinct prompt
    for r in rows:
        result = r["op1"] + r["op2"] if r["op"] == "+" else r["op1"] - r["op2"]
        assert r["answers"] == [f"{result}\n"]
    # the same items beside the merged model; a checkpoint has those of its own steps
    assert load_training_data(out / "merged") == rows
    early = load_training_data(out / "checkpoints" / "step-2")
    assert {r["prompt"] for r in early} == {ex.clean for ex in seen[:16]}
    assert (out / "merged" / TRAINING_DATA).is_file()
    assert load_training_data(out / "adapter") is None  # no model folder of a fine-tune


def test_analysis_prompts_never_include_training_prompts(tuned):
    out, _, result = tuned
    train = training_operands(out)
    assert len(train) >= 15
    for model in (load_model(out / "merged"), result.model):  # loaded, and as returned
        assert training_operands(model) == train
        for op in ("+", "-"):
            legal = {(p.op1, p.operator, p.op2) for p in arith_grid(op, 0, 10)}
            leaked = arithmetic_batch(model, op, op_max=10, n=None, require_correct=False,
                                      exclude=())
            assert set(_triples(leaked)) & train  # without the exclusion they are there
            batch = arithmetic_batch(model, op, op_max=10, n=None, require_correct=False,
                                     counterfactual_operators="+,-")
            assert not set(_triples(batch)) & train
            cf = {(ex.meta["cf_op1"], ex.meta["cf_op"], ex.meta["cf_op2"])
                  for ex in batch.examples}
            assert not cf & train  # nor any counterfactual
            # every legal prompt of both operators is either analysed or a training prompt
            assert batch.dropped[EXCLUDED] == len(train)
            assert set(_triples(batch)) <= legal - train
            keys = grid_batch(model, op, op_max=10)
            assert not set(_triples(keys)) & train
            assert keys.dropped[EXCLUDED] == len(train & legal)
            assert len(keys) == len(legal - train)


def test_split_of_a_fine_tune_is_disjoint_from_its_training(tuned):
    out, _, _ = tuned
    model = load_model(out / "merged")
    s = Settings(operators=("+", "-"), op_max=10, n_prompts=None, n_discovery=10, n_eval=100)
    batch = arithmetic_batch(model, "+", op_max=10, n=None, require_correct=False,
                             counterfactual_operators="+,-")
    disc, evalset = split_prompts(batch, s)
    train = training_operands(out)
    assert len(evalset) > 0 and not (set(_triples(disc)) | set(_triples(evalset))) & train


def test_exclusion_leaving_nothing_is_one_clear_error(tuned):
    out, _, _ = tuned
    model = load_model(out / "merged")
    everything = [(p.op1, p.operator, p.op2) for p in arith_grid("+", 0, 10)]
    with pytest.raises(TaskError) as err:
        arithmetic_batch(model, "+", op_max=10, n=None, require_correct=False,
                         exclude=everything)
    message = str(err.value)
    assert "\n" not in message and "all 100 legal prompts of '+'" in message
    assert "training prompts" in message
    # one prompt left (with a counterfactual of -): nothing for evaluation after discovery
    keep = {(1, "+", 2), (5, "-", 1)}
    rest = [(p.op1, p.operator, p.op2) for p in arith_grid("+,-", 0, 10)]
    one = arithmetic_batch(model, "+", op_max=10, n=None, require_correct=False,
                           counterfactual_operators="+,-",
                           exclude=[t for t in rest if t not in keep])
    assert len(one) == 1 and one.dropped[EXCLUDED] == len(rest) - 2
    with pytest.raises(TaskError, match=r"^1 correct prompt\(s\) after excluding 153 training "
                       r"prompt\(s\).*none is left for evaluation") as err:
        split_prompts(one, Settings(n_discovery=5))
    assert "\n" not in str(err.value)
    # any task batch: the generic exclusion by prompt text
    batch = make_batch(model, "arith", n=60, seed=0, scoring="full", **PARAMS)
    kept = without_training(model, batch)
    prompts = {r["prompt"] for r in load_training_data(out)}
    assert not {ex.clean for ex in kept.examples} & prompts
    assert kept.dropped[EXCLUDED] == len(batch) - len(kept) > 0
    with pytest.raises(ModelWeaveError, match="all 4 prompts of the arith batch are training"):
        without_training(model, batch.select([0, 1, 2, 3]),
                         {ex.clean for ex in batch.examples})


def test_reference_means_use_the_analysed_operators_only(tuned, monkeypatch):
    _, model, _ = tuned  # the untuned model: no exclusion, every legal prompt
    asked = []
    grid = Settings.grid

    def spy(self, m, op, n=None):
        asked.append(op)
        return grid(self, m, op, n)

    monkeypatch.setattr(Settings, "grid", spy)
    s = Settings(operators=("+", "-"), op_max=10, n_reference=1000)
    means = reference_means(model, s)
    assert asked == ["+", "-"]  # never * or / when only + and - are analysed
    picked = [grid_batch(model, op, op_max=10, n=1000) for op in ("+", "-")]
    width = max(int(g.lengths.max()) for g in picked)
    pad = model.tokenization.pad_token_id
    tokens = torch.cat([torch.nn.functional.pad(g.clean, (0, width - g.clean.shape[1]),
                                                value=pad) for g in picked])
    mask = torch.cat([torch.nn.functional.pad(g.mask, (0, width - g.mask.shape[1]))
                      for g in picked])
    direct = position_means(model, tokens, mask)
    assert means.counts == direct.counts
    for site in ("blocks.1.mlp.hook_post", "blocks.2.attn.hook_z"):
        assert torch.allclose(means.overall[site], direct.overall[site], atol=1e-6)
    asked.clear()
    reference_means(model, Settings(operators=("+",), op_max=10, n_reference=50,
                                    reference_operators="+,-,*,/"))
    assert asked == ["+", "-", "*", "/"]  # the paper's choice, when asked for


def test_per_prompt_faithfulness_leaves_out_a_near_zero_denominator():
    # three prompts with F = 0.5; the fourth's model barely beats the empty circuit
    circuit = np.array([1.0, 2.0, 0.5, 0.3])
    full = np.array([2.0, 4.0, 1.0, 1e-9])
    empty = np.zeros(4)
    ratios = per_prompt_faithfulness(circuit, full, empty)
    assert np.isnan(ratios[3]) and np.allclose(ratios[:3], 0.5)
    assert faithfulness(circuit, full, empty, "per_prompt") == pytest.approx(0.5)
    assert stable_prompts(full, empty).tolist() == [True, True, True, False]
    # min_fraction=0 is the plain ratio: the one prompt dominates (3e8)
    assert per_prompt_faithfulness(circuit, full, empty, min_fraction=0)[3] > 1e8
    with pytest.raises(ValueError, match="min_fraction"):
        stable_prompts(full, empty, -1)


def test_emergence_ratio_is_a_ratio_of_means_with_an_interval():
    rng = np.random.default_rng(0)
    n = 60
    empty = rng.normal(0.2, 0.05, n)
    full = empty + rng.normal(1.0, 0.2, n)
    every = empty + 0.8 * (full - empty) + rng.normal(0, 0.05, n)
    shared = empty + 0.6 * (full - empty) + rng.normal(0, 0.05, n)
    full[0] = empty[0] + 1e-9  # one prompt: the model barely beats the empty circuit
    every[0], shared[0] = empty[0] + 0.5, empty[0] - 0.5  # and its noise decides the old ratio
    got = shared_ratio(shared, every, full, empty)
    assert got.mean == pytest.approx(0.75, abs=0.04)
    assert got.ci_low < 0.75 < got.ci_high and got.ci_high - got.ci_low < 0.1
    # a ratio of per-prompt faithfulnesses (the old computation) is thrown far off by it
    old = (faithfulness(shared, full, empty, "per_prompt", min_fraction=0)
           / faithfulness(every, full, empty, "per_prompt", min_fraction=0))
    assert abs(old - 0.75) > 0.3
    # heuristic neurons that recover nothing: no ratio
    assert shared_ratio(shared, empty + 1e-3, full, empty) is None


def test_finetune_command_reports_the_training_items(tuned, tmp_path):
    import json

    from typer.testing import CliRunner

    from modelweave.cli import app

    out, _, _ = tuned
    result = CliRunner().invoke(app, ["finetune", "--model", str(out / "merged"), "--task",
                                      "arith", "-p", "operators=+", "-p", "op_max=10",
                                      "--steps", "2", "--batch-size", "4", "--n", "20",
                                      "--lora-r", "2", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["training_items"] == len(load_training_data(tmp_path)) > 0
    assert printed["training_data"] == str(tmp_path / TRAINING_DATA)


def test_evaluation_of_a_fine_tune_leaves_its_training_prompts_out(tuned, tmp_path):
    import shutil

    from modelweave.experiments.methods.base import RunSettings, Unit, unit_batch
    from modelweave.io import write_jsonl
    from modelweave.metrics import evaluate

    out, _, _ = tuned
    loaded = load_model(out / "merged")
    trained = {r["prompt"] for r in load_training_data(loaded)}
    drawn = make_batch(loaded, "arith", n=60, seed=0, **PARAMS)
    overlap = sum(ex.clean in trained for ex in drawn.examples)
    assert overlap > 0
    result = evaluate(loaded, "arith", n=60, **PARAMS)
    assert result.n == len(drawn) - overlap and result.dropped[EXCLUDED] == overlap
    assert evaluate(loaded, "arith", n=60, exclude_training=False, **PARAMS).n == len(drawn)
    # a unit's batch (the method kinds' front door): record 5 of its default prompts as trained
    folder = tmp_path / "tuned"
    shutil.copytree(out / "merged", folder)
    plain = make_batch(loaded, "arith", n=40, seed=3, same_length=True)
    picked = list(dict.fromkeys(ex.clean for ex in plain.examples))[:5]
    hits = sum(ex.clean in picked for ex in plain.examples)
    write_jsonl(folder / TRAINING_DATA, [{"prompt": p, "answers": []} for p in picked])
    kept = unit_batch(load_model(folder), Unit("m", "arith", "eval"), RunSettings(n=40, seed=3))
    assert kept.dropped[EXCLUDED] == hits >= 5 and len(kept) == len(plain) - hits
    assert not {ex.clean for ex in kept.examples} & set(picked)


def test_neuron_circuit_keeps_top_neurons_from_first_layer_on():
    """A ranking whose best neurons are planted per layer ([4 layers, 8 neurons], layer L's
    best two are L and L + 4): from first_layer 1 on, each layer keeps exactly its two
    planted neurons, layer 0 stays a whole MLP, and k = d_mlp keeps every MLP whole."""
    from modelweave.analysis.heuristics.neurons import neuron_circuit

    ranking = torch.rand(4, 8, generator=torch.Generator().manual_seed(0))
    for L in range(4):
        ranking[L, [L, L + 4]] += 10
    heads = frozenset({(0, 0), (2, 1)})
    circuit = neuron_circuit(heads, ranking, 1, 2)
    assert circuit.heads == heads and circuit.mlps == frozenset({0})
    assert {L: tuple(v) for L, v in circuit.neurons.items()} == {
        L: (L, L + 4) for L in (1, 2, 3)}
    whole = neuron_circuit(heads, ranking, 1, 8)
    assert whole.mlps == frozenset(range(4)) and not whole.neurons


def test_emergence_share_is_of_the_final_checkpoints_matches(monkeypatch):
    """Planted matches per checkpoint (no model is run): the final checkpoint has 4
    (heuristic, neuron) matches, step 100 has 6 of which 1 is final's, step 200 has 2 of
    final's. The share present is the fraction of the final matches found: 1/4, 2/4, 1."""
    from modelweave.analysis.heuristics import emergence as em

    final = {("op1_range_0_5", 1, n) for n in range(4)}
    planted = {100: {("op1_range_0_5", 1, 0)} | {("same_operand", 2, n) for n in range(5)},
               200: {("op1_range_0_5", 1, 1), ("op1_range_0_5", 1, 2)}, 300: final}
    monkeypatch.setattr(em.Settings, "prompts", lambda self, model, op: None)
    monkeypatch.setattr(em, "checkpoint_matches", lambda model, step, *a, **k: (
        em.CheckpointMatches(step, 1.0, planted[step])))
    monkeypatch.setattr(em, "split_prompts", lambda *a: (_ for _ in ()).throw(TaskError("no")))
    out = em.emergence([(100, "a"), (200, "b"), (300, "c")], "+", load=lambda path: None,
                       first_layer=1)
    assert out["share_present"] == [0.25, 0.5, 1.0]  # counts of 4 matches: exact in binary
    assert out["n_matches"] == [6, 2, 4] and out["n_heuristic_neurons"] == [6, 2, 4]
