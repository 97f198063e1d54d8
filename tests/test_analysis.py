"""Logit lens, direct logit attribution and head roles."""

import pytest
import torch

from modelweave import Model
from modelweave.methods.dla import direct_logit_attribution
from modelweave.methods.head_roles import head_roles, ov_logits, pattern_scores
from modelweave.methods.lens import LensResult, logit_lens
from modelweave.metrics import final_logits
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import FAMILIES, tiny_hf_model


def tiny(family):
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model(family, vocab_size=len(tok)), tok)
    return model, make_batch(model, "ioi", n=6)


@pytest.mark.parametrize("family", FAMILIES)
def test_dla_adds_up_to_the_logit_difference(family):
    model, batch = tiny(family)
    result = direct_logit_attribution(model, batch, neuron_layers=[1])
    assert result.total == pytest.approx(result.logit_diff, abs=1e-4)
    assert abs(result.logit_diff) > 1e-3
    block = model.block(1)
    if block.get_submodule(model.adapter.out_proj).bias is None:
        assert torch.allclose(result.heads.sum(1), result.attn, atol=1e-5)
    down = block.get_submodule(model.adapter.mlp_down)
    if down.bias is None:  # also through OLMo-2's post-norm, frozen at its scale
        assert result.neurons[1].sum().item() == pytest.approx(result.mlp[1].item(), abs=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2", "cohere", "cohere2"])
def test_logit_lens_last_layer_is_the_model(family, tmp_path):
    model, _ = tiny(family)
    batch = make_batch(model, "ioi", n=6, same_length=True)
    result = logit_lens(model, batch, k=3)
    assert result.answer_prob.shape == (model.cfg.n_layers + 1, batch.clean.shape[1])
    logits = model(batch.clean, attention_mask=batch.mask)
    probs = final_logits(logits, batch).softmax(-1)
    expected = probs.gather(1, batch.answers[:, None]).mean()
    assert result.answer_prob[-1, -1].item() == pytest.approx(expected.item(), abs=1e-5)
    # every position of the first prompt: the lens's top-k probabilities are the model's
    top = logits[0].softmax(-1).topk(3).values
    assert torch.allclose(result.top_probs[-1], top, atol=1e-5)
    assert len(result.top_tokens[-1][-1]) == 3
    result.save(tmp_path / "lens")
    again = LensResult.load(tmp_path / "lens")
    assert torch.equal(again.answer_rank, result.answer_rank) and again.layers == result.layers


@pytest.mark.parametrize("family", ["llama", "cohere", "cohere2", "olmo", "gpt2"])
def test_ov_logits_are_the_unembedded_head_outputs(family):
    """On a one-token input a head attends only to itself, so its ``hook_result`` is its OV
    map of the residual; read out by the model's own unembedding (final norm, logit scale)
    it gives :func:`ov_logits`."""
    model, _ = tiny(family)
    tokens = torch.arange(10, 22)[:, None]  # 12 one-token prompts
    layer, columns = 1, [3, 5, 8, 13, 21]
    names = [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_result"]
    _, cache = model.run_with_cache(tokens, names)
    got = ov_logits(model, layer, cache[names[0]][:, 0], columns)  # [n, head, columns]
    with torch.no_grad():
        expected = model.unembed(cache[names[1]][:, 0])[..., columns]
    assert got.shape == (12, model.cfg.n_heads, 5)
    assert torch.allclose(got, expected, atol=1e-5)
    assert got.abs().max() > 1e-2


def test_pattern_scores_are_attention_fractions():
    model, _ = tiny("llama")
    scores = pattern_scores(model, batch=2, length=6)
    for grid in scores.values():
        assert grid.shape == (3, 4) and (grid >= 0).all() and (grid <= 1).all()


def test_role_prompts_repeat_only_the_first_half_and_avoid_special_ids():
    from modelweave.methods.head_roles import _random_tokens

    model, _ = tiny("llama")
    tokens = _random_tokens(model, batch=4, length=20, seed=0)
    special = set(model.tokenizer.all_special_ids) | {model.tokenization.pad_token_id}
    body = tokens[:, 1:] if model.tokenization.prepend_bos else tokens
    for row in body:
        first, second = row[:20], row[20:]
        assert torch.equal(first, second) and len(set(first.tolist())) == 20
        assert not set(first.tolist()) & special


@pytest.mark.slow
@pytest.mark.xdist_group("smollm")
def test_embedded_model_has_induction_and_previous_token_heads(smollm):
    roles = head_roles(smollm)
    assert roles.top("induction", 1)[0][2] > 0.5
    assert roles.top("previous_token", 1)[0][2] > 0.5
    assert roles.top("copying", 1)[0][2] > 0.3
    frame = roles.to_dataframe()
    assert len(frame) == 30 * 9 and {"induction", "successor"} <= set(frame)


def test_attention_patterns_match_the_cache():
    from modelweave.methods.patterns import attention_patterns

    model, batch = tiny("gpt2")
    prompt = batch.clean[0, : batch.lengths[0]]
    patterns, labels = attention_patterns(model, prompt, [(0, 1), (2, 3)])
    _, cache = model.run_with_cache(prompt[None], ["blocks.2.attn.hook_pattern"])
    assert torch.equal(patterns[(2, 3)], cache["pattern", 2][0, 3])
    assert len(labels) == len(prompt) and patterns[(0, 1)].shape == (len(prompt),) * 2


def test_head_roles_fit_a_short_context():
    """A model whose context is shorter than the default role prompts (a toy model) still gets
    every score, from prompts shortened to fit."""
    import transformers as tf

    from modelweave.methods.head_roles import head_roles

    hf = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=4,
                                          n_positions=17)).eval()
    roles = head_roles(Model(hf))
    assert roles.scores["induction"].shape == (2, 4)
    assert torch.isfinite(roles.scores["copying"]).all()
