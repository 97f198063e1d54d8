"""The progress protocol ``progress(phase, done, total)``: its helpers, and library calls on
tiny models reporting cumulative, non-decreasing counts that end at their totals."""

import pytest

from modelweave import Model
from modelweave.circuits import discover
from modelweave.methods import patch_sweep
from modelweave.progress import Steps, nested, report
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model


class Recorder:
    """A progress callable keeping every call, with the protocol's checks per phase."""

    def __init__(self):
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, phase, done, total):
        assert isinstance(phase, str) and isinstance(done, int) and isinstance(total, int)
        self.calls.append((phase, done, total))

    @property
    def phases(self) -> list[str]:
        return list(dict.fromkeys(p for p, _, _ in self.calls))

    def check(self) -> dict[str, tuple[int, int]]:
        """Per phase: done never decreases, total never changes, the last call has
        ``done == total`` (when the total is known); returns the last (done, total)."""
        last = {}
        for phase in self.phases:
            seen = [(d, t) for p, d, t in self.calls if p == phase]
            dones = [d for d, _ in seen]
            assert dones == sorted(dones), (phase, dones)
            assert len({t for _, t in seen}) == 1, phase
            done, total = seen[-1]
            if total:
                assert done == total, (phase, done, total)
            last[phase] = (done, total)
        return last


def test_report_and_steps():
    rec = Recorder()
    report(rec, "load", 1, 1)
    report(None, "load", 1, 1)  # nobody listens
    steps = Steps(rec, "patch", total=5)
    steps.advance(2)
    steps.advance()
    steps.set(5)
    assert rec.calls == [("load", 1, 1), ("patch", 0, 5), ("patch", 2, 5), ("patch", 3, 5),
                         ("patch", 5, 5)]
    quiet = Steps(None, "patch", 3)
    quiet.advance(3)
    assert quiet.done == 3 and quiet.within() is None


def test_nested_and_within():
    rec = Recorder()
    assert nested(None, "fv") is None
    assert nested(rec, "") is rec
    nested(rec, "fv")("heads", 2, 2)
    steps = Steps(rec, "effects", total=5)
    for n in (2, 3):  # two sub-calls, each counting from 0
        sub = steps.within()
        sub("patch", 0, n)
        sub("patch", n, n)
    assert rec.calls[0] == ("fv/heads", 2, 2)
    assert [c for c in rec.calls if c[0] == "effects"][-1] == ("effects", 5, 5)
    rec.check()


@pytest.fixture(scope="module")
def gpt2():
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("gpt2", vocab_size=len(tok)), tok)
    return model, make_batch(model, "ioi", n=8, seed=0)


def test_exact_patch_sweep_reports_units(gpt2):
    model, batch = gpt2
    rec = Recorder()
    result = patch_sweep(model, batch, "heads", progress=rec)
    assert rec.phases == ["patch"]
    assert rec.check()["patch"] == (result.values.numel(),) * 2


@pytest.mark.parametrize("method", ["eap-ig", "exact", "acdc", "prune"])
def test_discovery_reports_score_then_curve(gpt2, method):
    model, batch = gpt2
    rec = Recorder()
    discover(model, batch, method, target=0.8, progress=rec)
    assert rec.phases == ["score", "curve"]
    last = rec.check()
    assert last["curve"][1] > 0 and last["score"][1] > 0


def test_path_search_counts_without_a_total(gpt2):
    model, batch = gpt2
    rec = Recorder()
    discover(model, batch, "path", target=0.8, progress=rec)
    assert rec.phases == ["score", "curve"]
    done, total = rec.check()["score"]
    assert total == 0 and done > 0


def test_toy_training_reports_train_steps_and_records_apart(tmp_path):
    from modelweave.toy.train import ToyConfig, train_toy

    cfg = ToyConfig(task="modular_addition", task_params={"p": 11, "frac": 0.5}, d_model=16,
                    heads=2, d_mlp=32, steps=6, eval_every=3, save_every=6, lr=1e-2)
    rec, records = Recorder(), []
    train_toy(cfg, tmp_path / "run", progress=rec,
              on_step=lambda step, record: records.append((step, record)))
    assert rec.phases == ["train"]
    assert rec.check()["train"] == (6, 6)
    assert [s for s, _ in records] == list(range(1, 7))
    assert [s for s, r in records if r] == [1, 3, 6]
