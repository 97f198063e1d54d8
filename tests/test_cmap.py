"""Cross-model activation patching between a model and a perturbed copy (a 'fine-tune')."""


import pytest
import torch

from modelweave import Model
from modelweave.analysis import cmap
from modelweave.circuits import CircuitError
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import lora_like_pair, tiny_hf_model


@pytest.fixture(scope="module")
def pair():
    base, tuned = lora_like_pair()
    return base, tuned, make_batch(base, "ioi", n=8, seed=0)


def test_all_components_recover_everything_and_groups_split_it(pair):
    base, tuned, batch = pair
    cfg = base.cfg
    heads = [f"a{layer}.h{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    mlps = [f"m{layer}" for layer in range(cfg.n_layers)]
    out = cmap(tuned, base, batch, {"all": heads + mlps, "none": [], "heads": heads,
                                    "mlps": mlps, "a1.h2": ["a1.h2"]})
    assert out["_source"] != pytest.approx(out["_target"])
    assert out["all"] == pytest.approx(1.0, abs=1e-4)  # the tuned model, exactly
    assert out["none"] == 0.0
    assert out["heads"] != pytest.approx(out["mlps"])
    # a model into itself: every group recovers exactly 100% of the (zero) difference
    same = cmap(base, base, batch, {"heads": heads, "one": ["m1"], "all": heads + mlps})
    assert same["_source"] == same["_target"]
    assert same["heads"] == same["one"] == same["all"] == 1.0


def test_cmap_rejects_bad_components_and_mismatched_models(pair):
    base, tuned, batch = pair
    with pytest.raises(CircuitError, match="outside"):
        cmap(tuned, base, batch, {"g": ["a9.h0"]})
    with pytest.raises(CircuitError, match="not a head"):
        cmap(tuned, base, batch, {"g": ["x1"]})
    tok = make_tokenizer("bytelevel")
    other = Model(tiny_hf_model("gpt2", vocab_size=len(tok)), tok)
    with pytest.raises(CircuitError, match="one architecture"):
        cmap(other, base, batch, {"g": ["m0"]})


def test_group_recoveries_equal_a_hand_computation(pair):
    """Each group's recovery, recomputed with the slow reference forward: the source's
    head and MLP outputs recorded, written into the target's run by site edits, and the
    recovery formula applied to the logit differences by hand."""
    from reference import Reference

    base, tuned, batch = pair
    groups = {"a1.h2": ["a1.h2"], "mix": ["a0.h1", "a2.h3", "m1"], "m0+m2": ["m0", "m2"]}
    out = cmap(tuned, base, batch, groups)
    rows, last = torch.arange(len(batch)), batch.lengths - 1

    def metric(logits):  # the logit difference, against the mean of the wrong answers
        final = logits[rows, last]
        wrong = batch.wrong_ids
        valid = (wrong >= 0).float()
        wrong_mean = (final.gather(1, wrong.clamp(min=0)) * valid).sum(1) / valid.sum(1)
        return float((final.gather(1, batch.answer_ids[:, :1])[:, 0] - wrong_mean).mean())

    source, target = Reference(tuned), Reference(base)
    recorded = {}

    def keep(name):
        def fn(t):
            recorded[name] = t
            return t
        return fn

    sites = [f"blocks.{layer}.{kind}" for layer in range(3)
             for kind in ("attn.hook_result", "hook_mlp_out")]
    with torch.no_grad():
        m_source = metric(source.run(batch.clean, edits={s: keep(s) for s in sites})[0])
        m_target = metric(target.run(batch.clean)[0])
        for name, members in groups.items():
            edits, heads = {}, {}
            for c in members:
                if c.startswith("m"):
                    site = f"blocks.{c[1:]}.hook_mlp_out"
                    edits[site] = lambda t, site=site: recorded[site]
                else:
                    layer, head = (int(x) for x in c[1:].split(".h"))
                    heads.setdefault(f"blocks.{layer}.attn.hook_result", []).append(head)
            for site, chosen in heads.items():
                def swap(t, site=site, chosen=chosen):
                    t = t.clone()
                    t[:, :, chosen] = recorded[site][:, :, chosen]
                    return t
                edits[site] = swap
            patched = metric(target.run(batch.clean, edits=edits)[0])
            expected = (patched - m_target) / (m_source - m_target)
            assert out[name] == pytest.approx(expected, abs=1e-5), name
    assert out["_source"] == pytest.approx(m_source, abs=1e-5)
    assert out["_target"] == pytest.approx(m_target, abs=1e-5)
