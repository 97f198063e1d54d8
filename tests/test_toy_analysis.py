"""Toy analyses against planted ground truth: composition scores equal their closed form on
hand-set weights; a hand-built 2-layer induction model is recovered by head roles,
K-composition and EAP-IG alike."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from modelweave.models import Model
from modelweave.toy.composition import composition_scores, head_weights
from modelweave.toy.induction import induction_circuit
from modelweave.toy.vocab import build_tokenizer


def _gpt2(d_model, heads, layers, vocab, n_ctx, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=n_ctx, n_embd=d_model, n_layer=layers,
                     n_head=heads, n_inner=1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     tie_word_embeddings=False)
    return GPT2LMHeadModel(cfg).eval()


def _set_head(block, head, d_head, d_model, W_Q=None, W_K=None, W_V=None, W_O=None):
    """Write one head's [d_model, d_head] / [d_head, d_model] maps into GPT-2's Conv1D."""
    cols = slice(head * d_head, (head + 1) * d_head)
    with torch.no_grad():
        for i, w in enumerate((W_Q, W_K, W_V)):
            if w is not None:
                block.attn.c_attn.weight[:, i * d_model:(i + 1) * d_model][:, cols] = w
        if W_O is not None:
            block.attn.c_proj.weight[cols] = W_O


def _unit(v):
    return v / v.norm()


def test_composition_scores_equal_the_closed_form():
    d, H, dh = 12, 3, 4
    hf = _gpt2(d, H, 2, 10, 8)
    gen = torch.Generator().manual_seed(1)
    u, v, a, b, c, e = (torch.randn(d, generator=gen) for _ in range(6))
    e0 = torch.zeros(dh)
    e0[0] = 1
    # head A = a0.h1: W_OV = v u^T (reads v, writes u); head B = a1.h2: W_QK = a b^T,
    # W_OV = c e^T; layer 1's input norm has a random gain g
    _set_head(hf.transformer.h[0], 1, dh, d, W_V=torch.outer(v, e0), W_O=torch.outer(e0, u))
    _set_head(hf.transformer.h[1], 2, dh, d, W_Q=torch.outer(a, e0), W_K=torch.outer(b, e0),
              W_V=torch.outer(c, e0), W_O=torch.outer(e0, e))
    g = torch.rand(d, generator=gen) + 0.5
    with torch.no_grad():
        hf.transformer.h[1].ln_1.weight.copy_(g)
    scores = composition_scores(Model(hf)).scores
    cos = lambda x, y: float(torch.dot(_unit(x), _unit(y)).abs())  # noqa: E731
    assert abs(float(scores["k"][0, 1, 1, 2]) - cos(u, g * b)) < 1e-5
    assert abs(float(scores["q"][0, 1, 1, 2]) - cos(u, g * a)) < 1e-5
    assert abs(float(scores["v"][0, 1, 1, 2]) - cos(u, g * c)) < 1e-5
    assert torch.isnan(scores["k"][1, :, 0]).all() and torch.isnan(scores["k"][0, :, 0]).all()
    # every other pair against the definition on the weights read back from the model
    w0, w1 = head_weights(Model(hf), 0), head_weights(Model(hf), 1)
    for ha in range(H):
        for hb in range(H):
            ov, qk = w0.OV[ha], w1.QK[hb]
            expect = torch.linalg.norm(ov @ qk.T) / (torch.linalg.norm(ov) * torch.linalg.norm(qk))
            assert abs(float(scores["k"][0, ha, 1, hb]) - float(expect)) < 1e-5
    # W_Q read back equals what the model computes: hook_q of layer 0
    model = Model(hf)
    tokens = torch.tensor([[1, 2, 3]])
    _, cache = model.run_with_cache(tokens, ["blocks.0.attn.hook_q", "blocks.0.hook_resid_pre"])
    ln = hf.transformer.h[0].ln_1
    x = torch.nn.functional.layer_norm(cache["blocks.0.hook_resid_pre"], (d,), eps=ln.eps)
    q = torch.einsum("bpd,hde->bphe", x, w0.W_Q) + hf.transformer.h[0].attn.c_attn.bias[:d].view(
        H, dh)
    assert torch.allclose(q, cache["blocks.0.attn.hook_q"], atol=1e-5)


def planted_induction_model() -> Model:
    """A 2-layer attention-only GPT-2 whose weights implement induction by hand.

    Words 0..7 (then <pad> 8, <bos> 9), sequences of length 5 (n_ctx 11). The residual stream
    (d_model 40) is split into orthonormal, zero-mean directions: tok(i), pos(t), prev(i),
    out(i). a0.h0 attends from t to t-1 (pos(t) . pos(t-1)) and writes prev(token) ; a1.h1
    attends where prev(token at s) matches the current token and writes out(token at s);
    the unembedding reads out(i). Every other head, every MLP and every bias is zero.
    """
    d, H, dh, vocab, n_ctx = 40, 2, 20, 10, 11
    hf = _gpt2(d, H, 2, vocab, n_ctx)
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.cat([torch.ones(d, 1), torch.randn(d, d - 1, generator=gen)],
                                         1))
    tok, pos, prev, out = basis[:, 1:11], basis[:, 11:22], basis[:, 22:32], basis[:, 32:40]
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        for block in hf.transformer.h:
            block.ln_1.weight.fill_(1.0)
            block.ln_2.weight.fill_(1.0)
        hf.transformer.ln_f.weight.fill_(1.0)
        hf.transformer.wte.weight.copy_(tok.T)
        hf.transformer.wpe.weight.copy_(pos.T)
        eye = torch.eye(dh)
        beta = 5.0
        # previous-token head: query reads pos(j+1), key reads pos(j), j = 0..9
        _set_head(hf.transformer.h[0], 0, dh, d, W_Q=beta * pos[:, 1:11] @ eye[:10],
                  W_K=pos[:, 0:10] @ eye[:10], W_V=tok @ eye[:10],
                  W_O=eye[:10].T @ prev.T / 20 ** 0.5)
        # induction head: query reads tok(i), key reads prev(i); copies tok(i) to out(i)
        _set_head(hf.transformer.h[1], 1, dh, d, W_Q=8.0 * tok @ eye[:10],
                  W_K=prev @ eye[:10], W_V=tok @ eye[:10],
                  W_O=eye[:10, :].T[:, :8] @ out.T / (40 / 3) ** 0.5)
        hf.lm_head.weight[:8] = 5.0 * out.T
    hf.config.modelweave_toy = {"task": "induction", "task_params": {"vocab": 8, "length": 5},
                                "attn_only": True}
    tokenizer = build_tokenizer([str(i) for i in range(8)], add_bos=True)
    return Model(hf, tokenizer, name="planted-induction")


def test_planted_induction_circuit_is_recovered():
    model = planted_induction_model()
    found = induction_circuit(model, n=16, steps=3)
    assert found.accuracy >= 0.95
    assert set(found.previous_token.values()) == {(0, 0)}, found.previous_token
    assert set(found.induction.values()) == {(1, 1)}, found.induction
    assert found.agree
    ev = found.evidence
    assert ev["head_roles"]["previous_token"] > 0.9
    assert ev["head_roles"]["induction"] > 2 * ev["head_roles"]["induction_runner_up"]
    assert ev["k_composition"]["k_composition"] > 0.1 and ev["k_composition"]["runner_up"] == 0
    assert abs(ev["eap_ig"]["edge_into_key"]) > 5 * abs(ev["eap_ig"]["runner_up_into_key"])


def test_fourier_spectrum_finds_planted_frequencies():
    import math

    from modelweave.toy.fourier import (
        embedding_spectrum,
        fourier_basis,
        key_frequencies,
        progress_point,
        train_mask_of,
    )

    p, d = 13, 16
    basis, names = fourier_basis(p)
    assert torch.allclose(basis @ basis.T, torch.eye(p), atol=1e-5) and names[1:3] == ["cos 1",
                                                                                        "sin 1"]
    hf = _gpt2(d, 2, 1, p + 3, 3)
    x = torch.arange(p, dtype=torch.float32)
    u, v, w = torch.eye(d)[:3]
    planted = (torch.cos(2 * math.pi * 3 * x / p)[:, None] * u
               + torch.sin(2 * math.pi * 3 * x / p)[:, None] * v
               + torch.cos(2 * math.pi * 5 * x / p)[:, None] * w)
    with torch.no_grad():
        hf.transformer.wte.weight[:p] = planted
    hf.config.modelweave_toy = {"task": "modular_addition",
                                "task_params": {"p": p, "frac": 0.3, "data_seed": 0}}
    model = Model(hf)
    spectrum = embedding_spectrum(model)
    assert abs(float(spectrum[3]) - 2 / 3) < 1e-5 and abs(float(spectrum[5]) - 1 / 3) < 1e-5
    assert key_frequencies(spectrum) == [3, 5]
    # removing no frequency leaves the train loss; keeping none leaves only the mean residual
    mask = train_mask_of(model)
    assert int(mask.sum()) == round(0.3 * p * p)
    none = progress_point(model, [], mask)
    assert abs(none.excluded_loss - none.train_loss) < 1e-5
    everything = progress_point(model, list(range(1, p // 2 + 1)), mask)
    assert everything.key_share > 0.999


def _toy_meta(hf, p):
    hf.config.modelweave_toy = {"task": "modular_addition",
                                "task_params": {"p": p, "frac": 0.3, "data_seed": 0}}
    return Model(hf)


def test_neuron_spectrum_and_losses_read_the_last_layer_at_equals():
    """On a random 2-layer GPT-2, against the HF modules read directly: the neurons
    :func:`neuron_spectrum` decomposes are the last MLP's activations at ``=`` (a forward
    hook on its activation function), and a progress point's train loss is the cross-entropy
    of the HF logits at ``=`` over the training pairs."""
    from modelweave.toy import fourier

    p = 7
    hf = _gpt2(16, 2, 2, p + 3, 3, seed=3)
    hf.config.n_inner = 8
    model = _toy_meta(hf, p)
    grabbed = []
    handle = hf.transformer.h[-1].mlp.act.register_forward_hook(
        lambda module, args, out: grabbed.append(out[:, -1].detach()))
    pairs = torch.stack([torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)], 1)
    tokens = torch.cat([pairs, torch.full((p * p, 1), p)], 1)
    with torch.no_grad():
        logits = hf(input_ids=tokens).logits[:, -1, :p]
    handle.remove()
    acts = grabbed[0]  # [p*p, d_mlp]
    assert acts.std(0).min() > 1e-3  # every neuron varies over the grid
    expected = fourier.grid_spectrum(acts.T.reshape(-1, p, p))
    got = fourier.neuron_spectrum(model)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)  # shares in [0, 1]
    mask = fourier.train_mask_of(model)
    labels = pairs.sum(1) % p
    loss = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    point = fourier.progress_point(model, [1], mask, n_resamples=0)
    assert abs(point.train_loss - float(loss)) < 1e-5 * float(loss)


def test_restricted_and_excluded_losses_on_a_planted_residual(monkeypatch):
    """A planted final residual over Z_13^2, s = a + b: a mean m, a key frequency 2
    (u1 cos 2s + u2 sin 2s), another frequency of the sum (u3 cos 5s) and a function of a
    alone (u4 cos 3a). All four parts are orthogonal over the grid, so with key frequency 2
    the restricted residual is m + the key part, the excluded one m + the other two; their
    losses are recomputed here from those sums, through the model's own unembedding."""
    import math

    from modelweave.toy import fourier

    p, d = 13, 16
    hf = _gpt2(d, 2, 1, p + 3, 3, seed=1)
    with torch.no_grad():
        hf.lm_head.weight *= 50  # logits of order 1: losses that tell residuals apart
    model = _toy_meta(hf, p)
    a = torch.arange(p).repeat_interleave(p).float()
    b = torch.arange(p).repeat(p).float()
    s, w = a + b, 2 * math.pi / p
    g = torch.Generator().manual_seed(0)
    m, u1, u2, u3, u4 = (3 * torch.randn(d, generator=g) for _ in range(5))
    key = torch.cos(2 * w * s)[:, None] * u1 + torch.sin(2 * w * s)[:, None] * u2
    other = torch.cos(5 * w * s)[:, None] * u3 + torch.cos(3 * w * a)[:, None] * u4
    resid = m + key + other
    monkeypatch.setattr(fourier, "_final_state", lambda model, p, chunk=4096: (
        resid, torch.zeros(p * p, 4)))
    mask = fourier.train_mask_of(model)
    labels = s.long() % p

    def loss(x, rows):
        with torch.no_grad():
            logits = model.unembed(x).float()[:, :p]
        return float(torch.nn.functional.cross_entropy(logits[rows], labels[rows]))

    point = fourier.progress_point(model, [2], mask, n_resamples=0)
    everywhere = torch.ones_like(mask)
    want = {"train_loss": loss(resid, mask), "test_loss": loss(resid, ~mask),
            "restricted_loss": loss(m + key, everywhere),
            "excluded_loss": loss(m + other, mask)}
    for name, value in want.items():
        assert abs(getattr(point, name) - value) < 1e-4 * value, (name, getattr(point, name),
                                                                  value)
    # what a wrong projection or wrong rows would give is far outside that tolerance
    for right, wrong in ((want["restricted_loss"], loss(key, everywhere)),
                         (want["excluded_loss"], loss(other, mask)),
                         (want["excluded_loss"], loss(m + other, ~mask))):
        assert abs(right - wrong) > 1e-2 * right, (right, wrong)


def test_random_init_null_is_fresh_untrained_models():
    """Each draw of the random-init null is a model built with the next weight seed: its
    top-k embedding share (the constant left out) is recomputed from those models here."""
    from dataclasses import replace

    from modelweave.toy.fourier import embedding_spectrum
    from modelweave.toy.grokking_stats import random_init_null, top_keys, top_share
    from modelweave.toy.train import ToyConfig, build_model

    cfg = ToyConfig(task="modular_addition", task_params={"p": 11, "frac": 0.5}, d_model=16,
                    heads=2, d_mlp=32)
    null = random_init_null(cfg, 2, draws=3, seed=50)
    data = cfg.validate()
    for i, value in enumerate(null["key_share"]):
        spectrum = embedding_spectrum(Model(build_model(replace(cfg, seed=50 + i), data)))
        shares = spectrum[1:]  # the constant is no frequency
        assert abs(value - float(shares.sort().values[-2:].sum())) < 1e-5
        assert sorted(top_keys(spectrum, 2)) == sorted(
            int(k) + 1 for k in shares.argsort()[-2:])
    assert len(set(null["key_share"])) == 3 and len(null["neuron_key_share"]) == 3
    # a spectrum whose constant is its largest entry: the top share skips it
    spectrum = torch.tensor([0.6, 0.1, 0.25, 0.05])
    assert abs(top_share(spectrum, 1) - 0.25) < 1e-6 and top_keys(spectrum, 1) == [2]


def test_head_roles_look_for_the_previous_token_head_before_the_induction_layer(monkeypatch):
    """Planted role scores for 2 layers x 2 heads: the induction head is (1, 1); the highest
    previous-token score, 0.95, is (1, 0) in the induction head's own layer, which cannot
    feed its keys; the previous-token head is the best of layer 0, (0, 0) at 0.6."""
    from types import SimpleNamespace

    from modelweave.methods import head_roles
    from modelweave.toy.induction import by_head_roles

    roles = {"induction": torch.tensor([[0.1, 0.2], [0.3, 0.9]]),
             "previous_token": torch.tensor([[0.6, 0.1], [0.95, 0.2]])}
    monkeypatch.setattr(head_roles, "pattern_scores", lambda model, **kw: roles)
    prev, ind, evidence = by_head_roles(SimpleNamespace(cfg=SimpleNamespace(n_layers=2)), 5)
    assert ind == (1, 1) and prev == (0, 0)
    assert abs(evidence["previous_token"] - 0.6) < 1e-6
