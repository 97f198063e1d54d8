"""Cross-model activation patching between a model and a perturbed copy (a 'fine-tune')."""

import copy

import pytest
import torch

from modelweave import Model
from modelweave.analysis import cmap
from modelweave.circuits import CircuitError
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model


@pytest.fixture(scope="module")
def pair():
    tok = make_tokenizer("bytelevel")
    base = tiny_hf_model("llama", vocab_size=len(tok))
    tuned = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a LoRA-like fine-tune: only projection matrices move
        for name, param in tuned.named_parameters():
            if (".self_attn." in name or ".mlp." in name) and name.endswith("proj.weight"):
                param.add_(0.3 * torch.randn(param.shape, generator=gen) * param.std())
    base, tuned = Model(base, tok), Model(tuned, tok)
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
