"""Declarative interventions do what the equivalent hand-written hooks do."""

import pytest
import torch

from modelweave import Model, SiteError
from modelweave.engine import Intervention, intervene
from modelweave.tasks import TaskError, make_batch
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model


@pytest.fixture(scope="module")
def setup():
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    batch = make_batch(model, "ioi", n=6, same_length=True)
    _, clean = model.run_with_cache(batch.clean)
    _, corrupt = model.run_with_cache(batch.corrupt)
    return model, batch, {"clean": clean, "corrupt": corrupt}


def test_patching_the_whole_residual_restores_the_source_run(setup):
    model, batch, sources = setup
    iv = Intervention("blocks.0.hook_resid_pre", "patch", source="clean")
    with intervene(model, [iv], sources):
        logits = model(batch.corrupt)
    assert torch.allclose(logits, model(batch.clean), atol=1e-5)


def test_named_position_per_prompt(setup):
    model, batch, sources = setup
    iv = Intervention("blocks.1.attn.hook_z", "patch", index=(2,), positions="S2",
                      source="clean")
    with intervene(model, [iv], sources, batch.positions):
        got = model(batch.corrupt)
    s2, src = batch.position("S2"), sources["clean"]["blocks.1.attn.hook_z"]

    def manual(z, hook):
        z = z.clone()
        rows = torch.arange(z.shape[0])
        z[rows, s2, 2] = src[rows, s2, 2]
        return z

    expected = model.run_with_hooks(batch.corrupt, [("blocks.1.attn.hook_z", manual)])
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, model(batch.corrupt), atol=1e-4)


def test_zero_mean_resample_add_scale(setup):
    model, batch, sources = setup
    site = "blocks.2.mlp.hook_post"
    ref = sources["corrupt"][site]

    def run(iv):
        with intervene(model, [iv], sources):
            return model(batch.clean)

    def manual(fn):
        return model.run_with_hooks(batch.clean, [(site, fn)])

    def setter(value_fn):
        def fn(t, hook):
            t = t.clone()
            t[:, [1, 3], 5] = value_fn(t)
            return t
        return fn

    cases = [
        (Intervention(site, "zero", index=(5,), positions=(1, 3)), lambda t: 0),
        (Intervention(site, "mean", index=(5,), positions=(1, 3), source="corrupt"),
         lambda t: ref.mean(0, keepdim=True).expand_as(t)[:, [1, 3], 5]),
        (Intervention(site, "scale", index=(5,), positions=(1, 3), factor=3.0),
         lambda t: t[:, [1, 3], 5] * 3),
    ]
    for iv, value in cases:
        assert torch.allclose(run(iv), manual(setter(value)), atol=1e-6), iv.kind
    first = run(Intervention(site, "resample", source="corrupt", seed=4))
    assert torch.equal(first, run(Intervention(site, "resample", source="corrupt", seed=4)))
    # resampling = each prompt gets the whole site of one other corrupted prompt, every
    # corrupted prompt used once: find, for each prompt, the donor that explains its logits
    n = len(batch)

    def donor(j):
        def fn(t, hook):
            return ref[j].expand_as(t)
        return fn

    candidates = torch.stack([manual(donor(j)) for j in range(n)])  # [donor, prompt, ...]
    match = [[j for j in range(n) if torch.allclose(candidates[j, b], first[b], atol=1e-6)]
             for b in range(n)]
    assert all(len(m) == 1 for m in match), match
    perm = [m[0] for m in match]
    assert sorted(perm) == list(range(n)) and perm != list(range(n))
    vec = tuple(float(x) for x in torch.arange(model.cfg.d_model))
    added = run(Intervention("blocks.0.hook_resid_post", "add", vector=vec))
    expected = model.run_with_hooks(batch.clean, [("blocks.0.hook_resid_post",
                                                   lambda t, h: t + torch.tensor(vec))])
    assert torch.allclose(added, expected, atol=1e-5)


def test_round_trip_and_errors(setup):
    model, batch, sources = setup
    iv = Intervention("blocks.1.attn.hook_z", "patch", index=(1, 2), positions="END",
                      source="clean")
    assert Intervention.from_dict(iv.to_dict()) == iv
    with pytest.raises(TaskError, match="kinds: patch"):
        Intervention("blocks.0.hook_resid_pre", "swap")
    with pytest.raises(TaskError, match="needs a source"):
        Intervention("blocks.0.hook_resid_pre", "patch")
    with pytest.raises(TaskError, match="named position 'S9'"), \
            intervene(model, [Intervention("blocks.0.hook_resid_pre", "zero", positions="S9")],
                      sources, batch.positions):
        pass
    with pytest.raises(TaskError, match="index 7 out of range"), \
            intervene(model, [Intervention("blocks.0.attn.hook_z", "zero", index=(7,))]):
        model(batch.clean)
    with pytest.raises(SiteError, match="layer 5 out of range"), \
            intervene(model, [Intervention("blocks.5.attn.hook_z", "zero")]):
        pass
