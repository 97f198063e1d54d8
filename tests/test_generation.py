"""Generation: seeded sampling reproduces, temperature and top-k shape the distribution drawn
from, top-k=1 is greedy, and each row stops at its own end-of-sequence."""

from __future__ import annotations

import pytest
import torch

from modelweave.models import Model
from modelweave.models.generation import _pick
from tokenizers_zoo import make_tokenizer

from tiny import random_tokens, tiny_hf_model


@pytest.fixture(scope="module")
def model():
    return Model(tiny_hf_model("llama"))  # no tokenizer: no EOS, pad id 0


def _draws(logits: torch.Tensor, n: int, temperature: float, top_k: int | None = None,
           seed: int = 0) -> torch.Tensor:
    """[n] ids sampled by ``_pick`` from ``n`` copies of one logits row [vocab]."""
    gen = torch.Generator().manual_seed(seed)
    return _pick(logits.expand(n, -1), temperature, top_k, gen)


def _assert_frequencies(draws: torch.Tensor, probs: torch.Tensor) -> None:
    """Empirical frequencies of ``draws`` within 5 binomial standard errors of ``probs``."""
    n = draws.numel()
    freq = torch.bincount(draws, minlength=probs.numel()).double() / n
    sigma = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= 5 * sigma + 1e-9).all(), (freq, probs)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampling_draws_from_the_softmax_at_the_temperature(temperature):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], dtype=torch.float64)
    draws = _draws(logits.float(), 20000, temperature)
    _assert_frequencies(draws, (logits / temperature).softmax(-1))


def test_top_k_draws_only_the_k_largest_in_their_renormalised_proportions():
    logits = torch.tensor([0.3, 2.0, -1.0, 1.5, 1.0, 0.9, -2.0], dtype=torch.float64)
    k = 3
    draws = _draws(logits.float(), 20000, 1.0, top_k=k)
    keep = logits.topk(k).indices
    assert set(draws.unique().tolist()) == set(keep.tolist())  # all k, and nothing else
    want = torch.zeros_like(logits)
    want[keep] = logits[keep].softmax(-1)
    _assert_frequencies(draws, want)


def test_a_seeded_sample_reproduces_and_another_seed_differs(model):
    prompt = random_tokens(2, 5, seed=1)
    a = model.generate(prompt, 12, temperature=1.5, seed=3).tokens
    assert torch.equal(a, model.generate(prompt, 12, temperature=1.5, seed=3).tokens)
    # 24 draws over a 97-token vocabulary at a high temperature: equal by chance ~never
    assert not torch.equal(a, model.generate(prompt, 12, temperature=1.5, seed=4).tokens)
    assert not torch.equal(a, model.generate(prompt, 12).tokens)  # it does sample


def test_top_k_one_is_greedy_and_top_k_stays_in_the_k_largest_logits(model):
    prompt = random_tokens(2, 5, seed=2)
    greedy = model.generate(prompt, 8).tokens
    assert torch.equal(model.generate(prompt, 8, temperature=2.0, top_k=1, seed=5).tokens,
                       greedy)
    k = 4
    sampled = model.generate(prompt, 8, temperature=3.0, top_k=k, seed=6).tokens
    logits = model(torch.cat([prompt, sampled], 1))[:, prompt.shape[1] - 1:-1]  # [B, new, V]
    kth = logits.topk(k, dim=-1).values[..., -1]
    picked = logits.gather(-1, sampled[..., None])[..., 0]
    # the uncached pass's logits differ from the cached ones by float rounding only
    tol = 1e-4 * float(logits.abs().max())
    assert (picked >= kth - tol).all()
    assert not torch.equal(sampled, greedy)  # it does sample among the k


def test_each_row_stops_at_its_own_end_of_sequence():
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", seed=1, vocab_size=len(tok)), tok)
    pad = model.tokenization.pad_token_id
    tokens, mask = model.encode(["When Mary and John went to", "1 2 3"], padding_side="left")
    n = 10
    ref = model.generate(tokens, n, attention_mask=mask, stop_at_eos=False).tokens
    # an end-of-sequence id that row 0 emits at least two steps before row 1 (if ever)
    first = [{t: j for j, t in reversed(list(enumerate(row)))} for row in ref.tolist()]
    eos = next(t for t, j in sorted(first[0].items(), key=lambda x: x[1])
               if t != pad and first[1].get(t, n) >= j + 2)
    tok.eos_token = tok.convert_ids_to_tokens(eos)
    assert tok.eos_token_id == eos
    ends = [min(n, first[r].get(eos, n) + 1) for r in range(2)]  # steps up to and with EOS
    out = model.generate(tokens, n, attention_mask=mask)
    assert out.tokens.shape[1] == max(ends)  # it stops when every row has ended
    for r, end in enumerate(ends):
        assert torch.equal(out.tokens[r, :end], ref[r, :end])
        assert (out.tokens[r, end:] == pad).all()  # padded after its EOS
    # without stopping the rows run on to the limit
    assert model.generate(tokens, n, attention_mask=mask, stop_at_eos=False).tokens.shape[1] == n


@pytest.mark.parametrize("family", ["gpt2", "llama"])  # learned positions; rotary
def test_cached_steps_draw_from_the_uncached_logits_at_every_position(family):
    """With a KV cache each new token sits at its own absolute position: replaying the seeded
    draws on one uncached pass over prompt + continuation gives the same tokens (a sample
    depends on the whole distribution, not only its argmax), and greedy is its argmax."""
    model = Model(tiny_hf_model(family, seed=2))
    prompt = random_tokens(2, 5, seed=7)
    temperature, seed, n = 1.0, 11, 10
    new = model.generate(prompt, n, temperature=temperature, seed=seed).tokens
    uncached = model(torch.cat([prompt, new], 1))[:, prompt.shape[1] - 1:-1]  # [B, n, V]
    gen = torch.Generator().manual_seed(seed)
    replay = torch.stack([_pick(uncached[:, t], temperature, None, gen) for t in range(n)], 1)
    assert torch.equal(replay, new)
    greedy = model.generate(prompt, n).tokens
    assert torch.equal(model(torch.cat([prompt, greedy], 1))[:, 4:-1].argmax(-1), greedy)
