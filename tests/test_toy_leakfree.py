"""Leak-free toy splits on the real datasets, the Fourier spectrum's 2-D terms counted once,
dense checkpoints through a grokking transition, intervals on the progress measures."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from modelweave.models import Model
from modelweave.tasks import get_task
from modelweave.toy import ToyError, fourier, make_dataset
from modelweave.toy.train import ToyConfig, list_checkpoints, train_toy


def _unordered(pairs: torch.Tensor) -> set:
    return {(min(a, b), max(a, b)) for a, b in pairs.tolist()}


@pytest.mark.parametrize("params", [{}, {"p": 59, "frac": 0.4}, {"p": 17, "data_seed": 3}])
def test_modular_addition_splits_by_unordered_pair(params):
    data = make_dataset("modular_addition", **params)
    p = data.params["p"]
    train, test = data.split("train"), data.split("test")
    assert len(train) + len(test) == p * p
    assert len({tuple(x) for x in torch.cat([train, test]).tolist()}) == p * p
    assert not _unordered(train) & _unordered(test)  # a b and b a on the same side
    assert abs(len(train) - round(data.params["frac"] * p * p)) <= 1
    assert len(data.split("test_swap_trained")) == 0
    assert torch.equal(data.split("test_swap_free"), test)
    assert set(data.eval_subsets()) == {"swap_free"}
    # the task's held-out examples never have either order trained
    trained = {tuple(x) for x in train.tolist()}
    for ex in get_task("toy_modular_addition", **params).generate(40, seed=2):
        a, b = ex.meta["a"], ex.meta["b"]
        assert (a, b) not in trained and (b, a) not in trained


def test_the_ordered_split_leaks_swaps_and_reports_them():
    """The old split (unordered=False) is the issue's measurement: 29.6% of the test pairs of
    p=113, frac=0.3 have their swap trained; the two subsets partition the test set."""
    data = make_dataset("modular_addition", unordered=False)
    test, leaked = data.split("test"), data.split("test_swap_trained")
    free = data.split("test_swap_free")
    assert len(leaked) + len(free) == len(test) == 113 * 113 - round(0.3 * 113 * 113)
    assert abs(len(leaked) / len(test) - 0.296) < 0.001
    trained = {tuple(x) for x in data.split("train").tolist()}
    assert all((b, a) in trained for a, b in leaked.tolist())
    assert not any((b, a) in trained for a, b in free.tolist())
    assert set(data.eval_subsets()) == {"swap_free", "swap_trained"}
    with pytest.raises(ToyError, match="no split 'val'"):
        data.split("val")


def test_sorting_holds_out_multisets_and_other_lists_stay_disjoint():
    sort = make_dataset("sorting")
    n = sort.params["n"]

    def inputs(rows):
        return [[sort.words[i] for i in r[:n]] for r in rows.tolist()]

    train = {tuple(sorted(map(int, x))) for step in range(4)
             for x in inputs(sort.batch(step, 0, 256)[0])}
    test = {tuple(sorted(map(int, x))) for x in inputs(sort.test_set(512)[0])}
    assert train and test and not train & test  # no reordering of a test list is trained
    for name in ("reversal", "parentheses"):
        d = make_dataset(name)
        k = d.n_ctx - (d.params["n"] - 1 if name == "reversal" else 0)
        tr = {tuple(r[:k]) for r in d.batch(0, 0, 256)[0].tolist()}
        te = {tuple(r[:k]) for r in d.test_set(256)[0].tolist()}
        assert not tr & te
    ind = make_dataset("induction")
    tr = {tuple(r) for r in ind.batch(0, 0, 512)[0].tolist()}
    assert not tr & {tuple(r) for r in ind.test_set(512)[0].tolist()}


def test_old_checkpoints_read_as_the_ordered_split():
    from modelweave.tasks.toy_data import checkpoint_params

    assert checkpoint_params("modular_addition", {"p": 13})["unordered"] is False
    assert checkpoint_params("modular_addition", {"p": 13, "unordered": True})["unordered"]
    assert "unordered" not in checkpoint_params("induction", {"vocab": 8})


def _planted_grid_model(p: int) -> Model:
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=p + 3, n_positions=3, n_embd=8, n_layer=1,
                                    n_head=2, n_inner=4)).eval()
    hf.config.modelweave_toy = {"task": "modular_addition",
                                "task_params": {"p": p, "frac": 0.3, "data_seed": 0}}
    return Model(hf, name="planted-neurons")


def test_neuron_spectrum_counts_a_two_d_term_once(monkeypatch):
    """Planted neurons over (a, b) in Z_113^2 with spectra computed by hand:
    cos(19a) cos(45b) is one 2-D term (cos 19 x cos 45): half its variance at 19, half at 45;
    cos(19a) is (cos 19 x const): all at 19; cos(19(a+b)) = cos19a cos19b - sin19a sin19b:
    two terms, both (19, 19): all at 19. The old code counted the first under both
    frequencies (a spectrum summing to 2, a key share of 2 on {19, 45})."""
    p = 113
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    w = 2 * math.pi / p
    neurons = torch.stack([torch.cos(19 * w * a) * torch.cos(45 * w * b),
                           torch.cos(19 * w * a), torch.cos(19 * w * (a + b)),
                           torch.full_like(a, 0.7)], 1).float()  # the last is dead
    monkeypatch.setattr(fourier, "_final_state",
                        lambda model, p, chunk=4096: (torch.zeros(p * p, 8), neurons))
    model = _planted_grid_model(p)
    spectrum = fourier.neuron_spectrum(model)
    expected = torch.zeros(4, p // 2 + 1)
    expected[0, 19] = expected[0, 45] = 0.5
    expected[1, 19] = expected[2, 19] = 1.0
    assert abs(float(spectrum[0].sum()) - 1.0) < 1e-5, float(spectrum[0].sum())  # old: 2.0
    assert torch.allclose(spectrum[:3], expected[:3], atol=1e-5)
    assert torch.allclose(spectrum[3], expected[3], atol=1e-5)  # constant: no variance
    assert torch.allclose(spectrum.sum(1), torch.tensor([1.0, 1.0, 1.0, 0.0]), atol=1e-5)
    analysis = fourier.analyse_grokking(model, key_freqs=[19, 45], n_resamples=0)
    assert abs(analysis.neuron_key_share - 1.0) < 1e-5  # three live neurons, all on {19, 45}
    only19 = fourier.analyse_grokking(model, key_freqs=[19], n_resamples=0)
    assert abs(only19.neuron_key_share - 2.5 / 3) < 1e-5  # (0.5 + 1 + 1) / 3
    assert sum(analysis.neuron_frequency_counts.values()) == 3


SMALL = dict(task="modular_addition", task_params={"p": 11, "frac": 0.5}, d_model=32, heads=4,
             d_mlp=64, lr=1e-2, weight_decay=0.1, steps=200, eval_every=100, save_every=100)


def test_dense_checkpoints_through_the_transition(tmp_path):
    """After an evaluation with train acc >= 0.99 > test acc (memorised, not generalised) the
    run evaluates and saves every ``dense_every`` steps until an evaluation leaves that phase;
    off, only the regular cadence. p = 11 memorises at once and does not generalise within
    200 steps (the planted situation, asserted)."""
    run = train_toy(ToyConfig(**SMALL, dense_every=25), tmp_path / "dense")
    steps = {int(c.name.split("-")[1]) for c in list_checkpoints(run.out)}
    phase = {h["step"]: h["train_acc"] >= 0.99 > h["test_acc"] for h in run.history}
    assert phase[100]  # memorised by the first regular evaluation
    for s in range(25, 201, 25):
        previous = max(e for e in phase if e < s)  # the last evaluation before step s
        dense = phase[previous]
        assert (s in steps) == (s % 100 == 0 or dense), (s, run.history)
        assert (s in phase) == (s % 100 == 0 or dense)
    assert 125 in steps  # at least one dense checkpoint
    assert all("test_swap_free_acc" in h and "test_swap_trained_acc" not in h
               for h in run.history)
    sparse = train_toy(ToyConfig(**SMALL, dense_every=0), tmp_path / "sparse")
    assert [c.name for c in list_checkpoints(sparse.out)] == ["step-100", "step-200"]
    assert [h["step"] for h in sparse.history] == [1, 100, 200]
    with pytest.raises(ToyError, match="dense_every"):
        ToyConfig(**SMALL, dense_every=-1).validate()


def test_progress_measures_carry_intervals_over_pairs():
    p = 13
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=p + 3, n_positions=3, n_embd=16, n_layer=1,
                                    n_head=2, n_inner=8)).eval()
    hf.config.modelweave_toy = {"task": "modular_addition",
                                "task_params": {"p": p, "frac": 0.3, "data_seed": 0,
                                                "unordered": False}}
    model = Model(hf)
    mask = fourier.train_mask_of(model)
    point = fourier.progress_point(model, [1, 2], mask, n_resamples=200)
    for name in fourier.PAIR_MEASURES:
        low, high = point.ci[name]
        assert low <= getattr(point, name) + 1e-9 and getattr(point, name) <= high + 1e-9
    # each subset's accuracy is the model's own on exactly those pairs (HF logits at "=")
    leaked = make_dataset("modular_addition", p=p, frac=0.3, unordered=False)

    def direct_acc(pairs):
        tokens = torch.cat([pairs, torch.full((len(pairs), 1), p)], 1)
        with torch.no_grad():
            top = hf(input_ids=tokens).logits[:, -1, :p].argmax(-1)
        return float((top == pairs.sum(1) % p).double().mean())

    for split, name in (("test_swap_free", "swap_free_acc"),
                        ("test_swap_trained", "swap_trained_acc"), ("test", "test_acc"),
                        ("train", "train_acc")):
        assert abs(getattr(point, name) - direct_acc(leaked.split(split))) < 1e-9, name
    back = fourier.ProgressPoint.from_dict(point.to_dict())
    assert back == point


def test_composition_on_olmo2_is_one_clear_error(tmp_path):
    """OLMo-2 normalises queries and keys after W_Q / W_K, so composition scores are not a
    function of the weights: ``toy-analyse composition`` says so in one line (no traceback)."""
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    from modelweave.cli import app
    from modelweave.errors import ModelWeaveError

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import tiny_hf_model

    tiny_hf_model("olmo2").save_pretrained(tmp_path / "olmo2")
    result = CliRunner().invoke(app, ["toy-analyse", "composition", str(tmp_path / "olmo2"),
                                      "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, ModelWeaveError), result.output
    message = str(result.exception)
    assert message.startswith("composition: ") and "olmo2" in message and "\n" not in message
