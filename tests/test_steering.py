"""Steering on tiny models of every family: steered KV-cached generation equals an uncached
steered pass, directional ablation (hooks and weight edits), contrastive vectors, bad input."""

from __future__ import annotations

import pytest
import torch

from modelweave.errors import (
    LayerRangeError,
    PairCountError,
    SteeringError,
    VectorWidthError,
    WeightEditError,
)
from modelweave.methods.steering.ablation import (
    ablate_direction,
    ablate_weights,
    residual_writes,
    save_ablated,
)
from modelweave.methods.steering.vectors import contrastive_vectors, direction, load_pairs_file
from modelweave.models import Model
from modelweave.models.steering import position_mask

from tiny import FAMILIES, random_tokens, tiny_hf_model


@pytest.fixture(scope="module")
def models():
    return {family: Model(tiny_hf_model(family)) for family in FAMILIES}


def _unit(d: int, seed: int) -> torch.Tensor:
    r = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return r / r.norm()


@pytest.mark.parametrize("family", FAMILIES)
def test_steered_generation_with_cache_equals_uncached_pass(models, family):
    model = models[family]
    prompt = random_tokens(1, 5, seed=3)
    vector = 3.0 * _unit(model.cfg.d_model, 1)
    with model.steer(vector, layer=1, scale=2.0, positions=slice(3, None)):
        steered = model.generate(prompt, 8, stop_at_eos=False)
        full = torch.cat([prompt, steered.tokens], dim=1)
        uncached = model(full)
    # greedy: the uncached pass's argmax at every position before a generated token
    assert torch.equal(uncached[0, 4:-1].argmax(-1), steered.tokens[0])
    # the vector acts: the steered pass differs from the plain one from position 3 on only
    plain = model(full)
    assert torch.equal(plain[0, :3], uncached[0, :3])
    assert not torch.allclose(plain[0, 3:], uncached[0, 3:])
    # and no hook remains after the context
    assert torch.equal(model(full), plain)


@pytest.mark.numeric
@pytest.mark.parametrize("family", ["llama", "gpt2", "olmo2"])
def test_steering_adds_scale_times_the_vector_at_its_site(models, family):
    """Block 1's output (as block 2 reads it) moves by exactly ``scale * vector`` at the
    steered positions 1 and 2 and not at all elsewhere: doubling the scale doubles the move,
    a negative scale reverses it. Tolerance: float32 rounding of the residual's scale."""
    model = models[family]
    tokens = random_tokens(2, 6, seed=9)
    vector = 3.0 * _unit(model.cfg.d_model, 5)
    after = "blocks.2.hook_resid_pre"
    _, plain = model.run_with_cache(tokens, [after])
    deltas = {}
    for scale in (1.5, 3.0, -1.5):
        with model.steer(vector, layer=1, scale=scale, positions="1:3"):
            _, cache = model.run_with_cache(tokens, [after])
        deltas[scale] = (cache[after] - plain[after]).float()
    tol = 1e-5 * (float(plain[after].abs().max()) + 3.0 * float(vector.abs().max()))
    for scale, delta in deltas.items():
        want = torch.zeros_like(delta)
        want[:, 1:3] = scale * vector
        assert float((delta - want).abs().max()) <= tol, scale
    assert float((deltas[3.0] - 2 * deltas[1.5]).abs().max()) <= 2 * tol
    assert float((deltas[-1.5] + deltas[1.5]).abs().max()) <= 2 * tol
    assert float(deltas[3.0][:, 1:3].norm(dim=-1).min()) >= 2.9 * float(vector.norm())


@pytest.mark.parametrize("family", ["llama", "olmo2", "gpt_neox"])
def test_last_position_hits_the_prompt_end_and_every_generated_token(models, family):
    """The function-vector convention: ``positions="last"`` in cached generation steers the
    prompt's last token and then each new token, as an uncached pass steering ``4:`` does."""
    model = models[family]
    prompt = random_tokens(1, 5, seed=6)
    vector = 3.0 * _unit(model.cfg.d_model, 4)
    with model.steer(vector, layer=2, positions="last"):
        steered = model.generate(prompt, 6, stop_at_eos=False)
    full = torch.cat([prompt, steered.tokens], dim=1)
    with model.steer(vector, layer=2, positions="4:"):
        uncached = model(full)
    assert torch.equal(uncached[0, 4:-1].argmax(-1), steered.tokens[0])
    with model.steer(vector, layer=2, positions="last"):  # uncached: only the very last token
        only_last = model(full)
    assert torch.equal(only_last[0, :-1], model(full)[0, :-1])


@pytest.mark.parametrize("family", ["llama", "gpt2", "cohere2"])
def test_left_padded_batch_generation_matches_single_rows(models, family):
    model = models[family]
    long, short = random_tokens(1, 6, seed=4)[0], random_tokens(1, 4, seed=5)[0]
    tokens = torch.stack([long, torch.cat([torch.zeros(2, dtype=torch.long), short])])
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    vector = 3.0 * _unit(model.cfg.d_model, 2)
    with model.steer(vector, layer=0, positions="2:"):
        batched = model.generate(tokens, 5, attention_mask=mask, stop_at_eos=False)
        alone = [model.generate(row, 5, stop_at_eos=False).tokens[0] for row in (long, short)]
    assert torch.equal(batched.tokens[0], alone[0])
    assert torch.equal(batched.tokens[1], alone[1])


def test_position_specs():
    index = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 2]])
    last = torch.tensor([[False, False, False, True], [False, False, False, True]])
    assert position_mask("last", index, last).tolist() == last.tolist()
    assert position_mask("2:", index, last).tolist() == [[False, False, True, True],
                                                         [False, False, False, True]]
    assert position_mask([0, 3], index, last).tolist() == [[True, False, False, True],
                                                           [True, True, False, False]]
    assert position_mask(None, index, last).all()
    assert position_mask("1:3", index, last).tolist() == [[False, True, True, False],
                                                          [False, False, True, True]]
    with pytest.raises(SteeringError, match="slices take no step"):
        position_mask(slice(0, 4, 2), index, last)
    with pytest.raises(SteeringError):
        position_mask("first", index, last)


@pytest.mark.parametrize("family", FAMILIES)
def test_directional_ablation_removes_the_direction_everywhere(models, family):
    model = models[family]
    r = _unit(model.cfg.d_model, 7)
    tokens = random_tokens(2, 6, seed=1)
    names = residual_writes(model) + [f"blocks.{layer}.hook_resid_{k}" for layer in
                                      range(model.cfg.n_layers) for k in ("pre", "post")]
    _, plain = model.run_with_cache(tokens, names)
    assert max(float((plain[n] @ r).abs().max()) for n in names) > 1e-2
    with ablate_direction(model, 5.0 * r):
        logits, cache = model.run_with_cache(tokens, names)
    for name in names:
        assert float((cache[name].float() @ r).abs().max()) <= 1e-5, name
    if model.cfg.post_norm:  # OLMo-2: the edit would not be equivalent, and says so
        with pytest.raises(WeightEditError, match="post-norms"):
            ablate_weights(model, r)
        return
    edited = ablate_weights(model, r)
    assert float((edited(tokens) - logits).abs().max()) <= 1e-4
    assert not torch.allclose(model(tokens), logits)  # the original is untouched


@pytest.mark.parametrize("family", ["gpt2", "cohere2"])  # biases + learned positions; tied
def test_saved_ablated_checkpoint_loads_with_the_same_logits(models, family, tmp_path):
    from modelweave import load_model

    model = models[family]
    r = _unit(model.cfg.d_model, 8)
    tokens = random_tokens(2, 6, seed=2)
    with ablate_direction(model, r):
        hooked = model(tokens)
    reloaded = load_model(str(save_ablated(model, r, tmp_path / "ablated")))
    assert float((reloaded(tokens) - hooked).abs().max()) <= 1e-4
    emb = reloaded.hf_model.get_input_embeddings().weight.detach()
    assert float((emb.float() @ r).abs().max()) <= 1e-5
    out = reloaded.hf_model.get_output_embeddings().weight.detach()
    assert out.data_ptr() != emb.data_ptr()  # untied: the unembedding keeps the direction
    assert float((out.float() @ r).abs().max()) > 1e-2


def test_contrastive_vectors_mean_and_pca(models):
    from tokenizers_zoo import make_tokenizer

    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    pos = ["Mary went to the store", "John gave a drink", "Alice had a book"]
    neg = ["Mary went to the park", "John gave a ring", "Alice had a key"]
    sv = contrastive_vectors(model, pos, neg, layers=[0, 2])
    _, cp = model.run_with_cache(pos, ["blocks.2.hook_resid_post"])
    _, cn = model.run_with_cache(neg, ["blocks.2.hook_resid_post"])
    lp = model.encode(pos)[1].sum(-1) - 1
    ln = model.encode(neg)[1].sum(-1) - 1
    rows = torch.arange(3)
    want = (cp["blocks.2.hook_resid_post"][rows, lp] - cn["blocks.2.hook_resid_post"][rows, ln])
    assert torch.allclose(sv.at(2), want.mean(0), atol=1e-5)
    at_minus_one = contrastive_vectors(model, pos, neg, layers=2, position=-1)
    assert torch.allclose(at_minus_one.at(2), sv.at(2))
    first = contrastive_vectors(model, pos, neg, layers=2, position=0, method="pca_centred")
    assert first.vectors.shape == (1, model.cfg.d_model) and first.method == "pca_centred"
    with pytest.raises(SteeringError, match="outside"):
        contrastive_vectors(model, pos, neg, layers=2, position=40)
    with pytest.raises(PairCountError, match="2 negative"):
        contrastive_vectors(model, pos, neg[:2], layers=0)


def test_pca_directions_recover_planted_directions():
    """Differences ``m e1 + (c + t_i) e2`` with ``t_i = +-s`` (``m > s > c > 0``): the
    uncentred PCA finds the large shared shift ``e1`` (the mean's direction, as the mean
    method), the centred PCA the direction ``e2`` along which the pairs vary, each pointing
    the way the positives differ from the negatives (+e1, +e2) and as long as the mean."""
    m, s, c = 3.0, 1.0, 0.2
    e = torch.eye(6)
    t = torch.tensor([s, -s] * 4)
    gen = torch.Generator().manual_seed(0)
    diffs = m * e[0] + (c + t)[:, None] * e[1] + 1e-3 * torch.randn(8, 6, generator=gen)
    mean = direction(diffs, "mean")
    assert torch.allclose(mean, diffs.mean(0))
    for method, axis in (("pca", 0), ("pca_centred", 1)):
        d = direction(diffs, method)
        cos = float(d @ e[axis]) / float(d.norm())
        assert cos > 0.99, (method, cos)  # the planted axis, with the positives' sign
        assert abs(float(d.norm()) - float(mean.norm())) <= 1e-4 * float(mean.norm())
    flipped = direction(-diffs, "pca")  # the pairs swapped: the direction flips
    assert float(flipped @ e[0]) / float(flipped.norm()) < -0.99


def test_mean_position_averages_each_text_over_its_own_tokens():
    """``position="mean"``: each text's activations averaged over its real tokens, as when
    the text is run alone (texts of different lengths share a padded batch)."""
    from tokenizers_zoo import make_tokenizer

    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    pos = ["Mary went to the store today", "John gave", "Alice had a book"]
    neg = ["Mary went", "John gave a drink to her", "Alice had a key"]
    sv = contrastive_vectors(model, pos, neg, layers=1, position="mean")
    name = "blocks.1.hook_resid_post"

    def alone(text: str) -> torch.Tensor:
        _, cache = model.run_with_cache([text], [name])
        return cache[name][0].float().mean(0)

    want = torch.stack([alone(p) - alone(n) for p, n in zip(pos, neg, strict=True)]).mean(0)
    assert float((sv.at(1) - want).abs().max()) <= 1e-4 * float(want.abs().max())


def test_bad_input_is_one_clear_error(models, tmp_path):
    model = models["llama"]
    with pytest.raises(VectorWidthError, match=r"expected \[32\]"), model.steer(
            torch.zeros(7), layer=0):
        pass
    with pytest.raises(LayerRangeError, match="out of range"), model.steer(
            torch.zeros(32), layer=3):
        pass
    with pytest.raises(VectorWidthError), ablate_direction(model, torch.zeros(31)):
        pass
    pairs = tmp_path / "pairs.json"
    pairs.write_text('{"positive": ["a", "b"], "negative": ["c"]}')
    with pytest.raises(PairCountError):
        load_pairs_file(pairs)
    with pytest.raises(WeightEditError):
        ablate_weights(models["olmo2"], torch.ones(32))
    for zero in (torch.zeros(32), torch.full((32,), float("nan"))):
        with pytest.raises(SteeringError, match=r"direction of norm (0|nan): it needs a "
                           "non-zero, finite vector"), ablate_direction(model, zero):
            pass
    with pytest.raises(SteeringError, match="direction of norm 0"):
        ablate_weights(model, torch.zeros(32))
    odd = tmp_path / "pairs.txt"
    odd.write_text("a\tb\n")
    with pytest.raises(SteeringError, match=r"unknown suffix '.txt'; use .jsonl, .json"):
        load_pairs_file(odd)
