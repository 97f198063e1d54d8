"""The shared training loop: its schedule, when its hooks run, and that a resumed run follows
the uninterrupted one."""

import copy

import pytest
import torch

from modelweave.errors import ModelWeaveError
from modelweave.models.training import adamw, train_steps

from tiny import VOCAB, tiny_hf_model


def batches(step):
    gen = torch.Generator().manual_seed(step)
    inputs = torch.randint(0, VOCAB, (4, 6), generator=gen)
    targets = torch.cat([inputs[:, 1:], torch.full((4, 1), -100)], 1)
    return inputs, targets, None


def test_schedule_warms_up_then_decays():
    param = torch.nn.Parameter(torch.zeros(1))
    opt, sched = adamw([param], lr=1.0, steps=10, warmup=4, schedule="linear")
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[:4] == pytest.approx([0.25, 0.5 * 0.9, 0.75 * 0.8, 0.7])
    assert rates[4:] == pytest.approx([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    opt, sched = adamw([param], lr=0.5, steps=3)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.defaults["weight_decay"] == 0.01
    with pytest.raises(ModelWeaveError, match="schedule"):
        adamw([param], lr=1.0, steps=3, schedule="cosine")


def test_hooks_run_at_their_steps_in_eval_mode():
    model = tiny_hf_model("llama")
    calls = []

    def evaluate(done):
        calls.append(("eval", done, model.training))
        return {"step": done}

    def save(done):
        calls.append(("save", done, model.training))

    seen = []
    opt, sched = adamw(model.parameters(), lr=1e-3, steps=7)
    losses = train_steps(model, batches, opt, sched, steps=7, evaluate=evaluate, eval_every=3,
                         save=save, save_every=4,
                         on_step=lambda done, loss, record: seen.append((done, loss, record)))
    assert [c[:2] for c in calls] == [("eval", 1), ("eval", 3), ("save", 4), ("eval", 6),
                                      ("eval", 7), ("save", 7)]
    assert not any(training for *_, training in calls) and not model.training
    assert [s[0] for s in seen] == list(range(1, 8)) and [s[1] for s in seen] == losses
    assert [s[2] is not None for s in seen] == [True, False, True, False, False, True, True]


def test_resumed_run_follows_the_whole_run():
    def optimiser(model):
        return adamw(model.parameters(), lr=1e-2, steps=6, warmup=2, schedule="linear")

    whole = tiny_hf_model("llama")
    all_losses = train_steps(whole, batches, *optimiser(whole), steps=6)
    part = tiny_hf_model("llama")
    opt, sched = optimiser(part)
    first = train_steps(part, batches, opt, sched, steps=3)  # stopped after step 3
    assert first == all_losses[:3]
    state = copy.deepcopy((part.state_dict(), opt.state_dict(), sched.state_dict()))
    resumed = tiny_hf_model("llama", seed=1)  # other weights, replaced by the saved ones
    resumed.load_state_dict(state[0])
    opt, sched = optimiser(resumed)
    opt.load_state_dict(state[1])
    sched.load_state_dict(state[2])
    assert train_steps(resumed, batches, opt, sched, steps=6, start=3) == all_losses[3:]
    for a, b in zip(resumed.parameters(), whole.parameters(), strict=True):
        assert torch.equal(a, b)
