"""Function vectors on tiny models: head outputs mapped without bias, indirect effects equal
plain patched runs, the evaluation equals plain steered runs, the pipeline's files; the
embedded model's 10-shot ICL and FV."""

from __future__ import annotations

import json

import pytest
import torch

from modelweave.methods.steering.fv import (
    function_vector,
    head_effects,
    last_token_acts,
    project_head,
    top_heads,
)
from modelweave.methods.steering.fv_eval import FVRun, addition_accuracy, run_function_vectors
from modelweave.models import Model
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import FAMILIES, tiny_hf_model


def _model(family: str) -> Model:
    tok = make_tokenizer("bytelevel")
    return Model(tiny_hf_model(family, vocab_size=len(tok)), tok)


@pytest.mark.parametrize("family", FAMILIES)
def test_fv_of_one_head_is_its_hook_result_mean_without_bias(family):
    model = _model(family)
    batch = make_batch(model, "icl_antonym", n=3, seed=0, shots=2)
    acts = last_token_acts(model, batch, chunk=2)
    layer, head = model.cfg.n_layers - 1, 1
    _, cache = model.run_with_cache(batch.clean, [f"blocks.{layer}.attn.hook_result"],
                                    attention_mask=batch.mask)
    rows = torch.arange(len(batch))
    result = cache[f"blocks.{layer}.attn.hook_result"][rows, batch.lengths - 1, head]
    fv = function_vector(acts.result.mean(0), [(layer, head)])
    assert torch.allclose(fv, result.float().mean(0), atol=1e-5)
    # two heads: what both wrote into the residual stream, added
    _, first = model.run_with_cache(batch.clean, ["blocks.0.attn.hook_result"],
                                    attention_mask=batch.mask)
    both = result.float().mean(0) + first["blocks.0.attn.hook_result"][
        rows, batch.lengths - 1, 2].float().mean(0)
    two = function_vector(acts.result.mean(0), [(layer, head), (0, 2)])
    assert torch.allclose(two, both, atol=1e-5)
    if model.cfg.post_norm:  # OLMo-2: per prompt, z through W_O, the gain and its own scale
        mapped = project_head(model, layer, head, acts.z[:, layer, head],
                              acts.scale[:, layer, None])
        assert torch.allclose(mapped, result.float(), atol=1e-5)
    else:  # linear: the mean z through the head's W_O slice, and no output bias
        mapped = project_head(model, layer, head, acts.z[:, layer, head].mean(0))
        assert torch.allclose(mapped, fv, atol=1e-5)
        bias = getattr(model.block(layer).get_submodule(model.adapter.out_proj), "bias", None)
        if bias is not None:
            assert float(bias.detach().norm()) > 0.1
            assert not torch.allclose(mapped + bias.detach(), fv, atol=1e-3)


@pytest.mark.parametrize("family", ["llama", "gpt2", "olmo2", "cohere2"])
def test_head_effects_equal_plain_patched_runs(family):
    model = _model(family)
    batch = make_batch(model, "icl_antonym", n=4, seed=1, shots=2)
    acts = last_token_acts(model, batch)
    z_mean = acts.z.mean(0)
    effects = head_effects(model, batch, z_mean, layers=[0, 2], max_rows=8)
    assert torch.isnan(effects[1]).all()
    rows = torch.arange(len(batch))
    last = batch.lengths - 1

    def prob(logits):
        return logits[rows, last].float().softmax(-1)[rows, batch.answers].mean().item()

    base = prob(model(batch.corrupt, attention_mask=batch.mask))
    for layer, head in [(0, 1), (2, 3)]:
        def patch(z, _hook, layer=layer, head=head):
            out = z.clone()
            out[rows, last, head] = z_mean[layer, head].to(z.dtype)
            return out

        patched = prob(model.run_with_hooks(batch.corrupt, [(
            f"blocks.{layer}.attn.hook_z", patch)], attention_mask=batch.mask))
        assert effects[layer, head].item() == pytest.approx(patched - base, abs=1e-5)
    assert top_heads(effects, 2)[0][0] in (0, 2)


def test_addition_accuracy_equals_steered_forward():
    model = _model("llama")
    batch = make_batch(model, "icl_next_item", n=6, seed=2, shots=1)
    vec = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 4
    acc = addition_accuracy(model, batch, {"none": None, "fv": vec}, [0, 2])
    for i, layer in enumerate([0, 2]):
        with model.steer(vec, layer=layer, positions="last"):
            logits = model(batch.clean, attention_mask=batch.mask)
        pred = logits[torch.arange(len(batch)), batch.lengths - 1].argmax(-1)
        assert acc["fv"][i] == pytest.approx((pred == batch.answers).float().mean().item())
    plain = model(batch.clean, attention_mask=batch.mask)
    pred = plain[torch.arange(len(batch)), batch.lengths - 1].argmax(-1)
    assert acc["none"] == [pytest.approx((pred == batch.answers).float().mean().item())] * 2


def test_pipeline_saves_and_loads(tmp_path):
    model = _model("gpt2")
    run = run_function_vectors(model, ["antonym", "present-past"], n_clean=4, n_corrupt=2,
                               n_eval=3, top_k=2, shots=2, layers=[0, 2], fv_layer=1,
                               only_correct=False)
    assert run.layers == [0, 1, 2] and len(run.heads) == 2
    t = run.tasks[0]
    assert t.vector.shape == (model.cfg.d_model,) and set(t.accuracy) == {"zero_shot",
                                                                          "shuffled"}
    assert len(t.accuracy["shuffled"]["fv"]) == 3
    loaded = FVRun.load(run.save(tmp_path / "fv"))
    assert loaded.heads == run.heads
    assert torch.equal(loaded.tasks[1].effects, run.tasks[1].effects)
    assert torch.equal(loaded.tasks[0].layer_means, run.tasks[0].layer_means)
    assert torch.equal(loaded.tasks[0].vector, t.vector)
    assert json.dumps(loaded.headline()) == json.dumps(run.headline())  # NaN ratios too
    from modelweave.report.steering import save_fv_figures

    paths = save_fv_figures(loaded, tmp_path / "figs")
    assert all(p.exists() for p in paths)


@pytest.mark.slow
@pytest.mark.xdist_group("smollm")
def test_embedded_model_does_icl_and_the_fv_moves_zero_shot(smollm):
    torch.manual_seed(0)
    batch = make_batch(smollm, "icl_antonym", n=8, seed=0)
    acts = last_token_acts(smollm, batch)
    correct = (acts.predicted == batch.answers).float().mean().item()
    assert correct >= 0.6  # 10-shot antonyms: the 135M model does them
    # FV of known-good heads (found by the study) added at layer 10 on zero-shot prompts
    heads = [(20, 5), (14, 1), (20, 0), (18, 6), (17, 3)]
    fv = function_vector(acts.result.mean(0), heads)
    zero = make_batch(smollm, "icl_antonym", n=12, seed=1, shots=0)
    acc = addition_accuracy(smollm, zero, {"none": None, "fv": fv}, [10])
    assert acc["fv"][0] > acc["none"][0]
