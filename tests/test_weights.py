"""The weight accessors (``W_Q[L]`` ... ``W_U``) reproduce each family's own computation: a
transposed weight or a mis-split fused q/k/v matrix fails these checks."""

import pytest
import torch

from modelweave import Model, ModelWeaveError
from modelweave.models.weights import repeat_kv

from tiny import FAMILIES, random_tokens, tiny_hf_model

LAYER = 1


@pytest.fixture(params=FAMILIES, scope="module")
def run(request):
    model = Model(tiny_hf_model(request.param))
    tokens = random_tokens(batch=2, pos=6)
    logits, cache = model.run_with_cache(tokens)
    return model, tokens, logits, cache


def close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=1e-4)


def _norm(model, path, x):
    return x if path is None else model.block(LAYER).get_submodule(path)(x)


def _attn_input(model, cache):
    return _norm(model, model.adapter.attn_in_norm, cache[f"blocks.{LAYER}.hook_resid_pre"])


def _mlp_input(model, cache):
    site = "hook_resid_pre" if model.cfg.parallel_attn_mlp else "hook_resid_mid"
    return _norm(model, model.adapter.mlp_in_norm, cache[f"blocks.{LAYER}.{site}"])


def test_shapes(run):
    model, *_ = run
    c = model.cfg
    assert model.W_Q[LAYER].shape == (c.n_heads, c.d_model, c.d_head)
    assert model.W_K[LAYER].shape == model.W_V[LAYER].shape == (c.n_kv_heads, c.d_model, c.d_head)
    assert model.W_O[LAYER].shape == (c.n_heads, c.d_head, c.d_model)
    assert model.b_Q[LAYER].shape == (c.n_heads, c.d_head)
    assert model.b_K[LAYER].shape == (c.n_kv_heads, c.d_head)
    assert model.b_O[LAYER].shape == model.b_out[LAYER].shape == (c.d_model,)
    assert model.W_in[LAYER].shape == (c.d_model, c.d_mlp)
    assert model.W_out[LAYER].shape == (c.d_mlp, c.d_model)
    assert model.W_U.shape == (c.d_model, c.d_vocab) and model.b_U.shape == (c.d_vocab,)
    assert model.W_E.shape == (c.d_vocab, c.d_model)
    assert len(model.W_Q) == c.n_layers and len(list(model.W_out)) == c.n_layers


@pytest.mark.parametrize("kind", ["q", "k", "v"])
def test_qkv_reproduce_the_hook_sites(run, kind):
    model, _, _, cache = run
    a = model.adapter
    w = getattr(model, f"W_{kind.upper()}")[LAYER]
    b = getattr(model, f"b_{kind.upper()}")[LAYER]
    proj = torch.einsum("bpm,hmd->bphd", _attn_input(model, cache), w) + b
    if a.qkv_proj is not None and kind != "v":  # the site is after a q/k norm
        norm = model.block(LAYER).get_submodule(getattr(a.qkv, kind))
        proj = norm(proj) if a.qk_norm == "per_head" else norm(proj.flatten(-2)).view_as(proj)
    if getattr(a.qkv, "clip", None) is not None:
        proj = proj.clamp(-a.qkv.clip, a.qkv.clip)
    close(proj, cache[f"blocks.{LAYER}.attn.hook_{kind}"])


def test_w_o_reproduces_attn_out_and_result(run):
    model, _, _, cache = run
    z = cache[f"blocks.{LAYER}.attn.hook_z"]
    per_head = torch.einsum("bphd,hdm->bphm", z, model.W_O[LAYER])
    out = per_head.sum(-2) + model.b_O[LAYER]
    if model.adapter.attn_out_norm is None:
        close(per_head, cache[f"blocks.{LAYER}.attn.hook_result"])
    close(_norm(model, model.adapter.attn_out_norm, out), cache[f"blocks.{LAYER}.hook_attn_out"])


def test_mlp_weights_reproduce_the_neurons_and_the_output(run):
    model, _, _, cache = run
    a = model.adapter
    x = _mlp_input(model, cache)
    mlp = model.block(LAYER).get_submodule(a.mlp_down.rpartition(".")[0])
    act = getattr(mlp, "act_fn", None) or mlp.act
    up = x @ model.W_in[LAYER] + model.b_in[LAYER]
    if a.mlp_gate is not None:
        post = act(x @ model.W_gate[LAYER] + model.b_gate[LAYER]) * up
    else:
        post = act(up)
        with pytest.raises(ModelWeaveError, match="no W_gate"):
            model.W_gate[LAYER]
    close(post, cache[f"blocks.{LAYER}.mlp.hook_post"])
    out = cache[f"blocks.{LAYER}.mlp.hook_post"] @ model.W_out[LAYER] + model.b_out[LAYER]
    close(_norm(model, a.mlp_out_norm, out), cache[f"blocks.{LAYER}.hook_mlp_out"])


def test_embed_and_unembed(run):
    model, tokens, logits, cache = run
    close(model.W_E[tokens], cache["hook_embed"])
    if model.adapter.pos_embed:
        close(model.W_pos[: tokens.shape[1]], cache["hook_pos_embed"][0])
    else:
        with pytest.raises(ModelWeaveError, match="no learned position"):
            _ = model.W_pos
    close((cache["ln_final.hook_normalized"] @ model.W_U + model.b_U) * model.logit_scale,
          logits)


def test_per_query_head_repeats_kv_heads(run):
    model, *_ = run
    c = model.cfg
    group = c.n_heads // c.n_kv_heads
    for name in ("W_K", "W_V", "b_K", "b_V"):
        acc = getattr(model, name)
        repeated = acc(LAYER, per_query_head=True)
        assert repeated.shape[0] == c.n_heads
        for h in range(c.n_heads):
            assert torch.equal(repeated[h], acc[LAYER][h // group])
    with pytest.raises(ModelWeaveError, match="per_query_head"):
        model.W_Q(LAYER, per_query_head=True)


def test_reads_one_layer_without_copying():
    model = Model(tiny_hf_model("llama"))
    q_proj = model.block(2).self_attn.q_proj.weight
    assert model.W_Q[2].data_ptr() == q_proj.data_ptr()
    assert model.W_Q[-1].data_ptr() == q_proj.data_ptr()
    assert repr(model.W_Q) == "LayerWeights(W_Q, layers=3)"
    with pytest.raises(ModelWeaveError, match="layer must be an int"):
        model.W_Q[3]
    with pytest.raises(ModelWeaveError, match="divide"):
        repeat_kv(torch.zeros(3, 2), 4)


def test_has_bias_and_block_parts():
    from modelweave.models import parts
    from modelweave.models.weights import has_bias

    with_bias, plain, gpt2 = (Model(tiny_hf_model(f)) for f in ("llama", "llama3", "gpt2"))
    assert has_bias(with_bias, "b_Q") and has_bias(with_bias, "b_O", 2)
    assert not has_bias(plain, "b_Q") and not torch.any(plain.b_Q[0])
    assert has_bias(gpt2, "b_in") and has_bias(gpt2, "b_out") and not has_bias(gpt2, "b_U")
    with pytest.raises(ModelWeaveError, match="no bias named"):
        has_bias(gpt2, "W_Q")
    assert parts.is_gated(plain) and not parts.is_gated(gpt2)
    assert parts.mlp_path(gpt2, 1) == "transformer.h.1.mlp"
    assert parts.mlp_module(gpt2, 1) is gpt2.block(1).mlp
    assert parts.unembed_paths(gpt2) == {"lm_head"}
    (fused, kinds), = parts.qkv_modules(gpt2, 0)
    assert fused is gpt2.block(0).attn.c_attn and kinds == ("q", "k", "v")
    assert parts.out_norm(plain, 0, "attn") is None
    assert parts.qkv_clip(plain) is None and parts.qkv_clip(Model(tiny_hf_model("olmo"))) == 0.8
    with pytest.raises(ModelWeaveError, match="part must be"):
        parts.out_norm(plain, 0, "mlp_out")
