"""Hooked runs of every family agree with the unmodified HF model."""

import pytest
import torch

from modelweave import Model, SiteError

from parity import (
    check_decompositions,
    check_no_intervention,
    check_pattern,
    check_self_patching,
    max_diff,
)
from tiny import FAMILIES, random_tokens, tiny_hf_model

pytestmark = pytest.mark.numeric  # float tolerances against the unmodified HF model


@pytest.fixture(params=FAMILIES)
def model(request):
    return Model(tiny_hf_model(request.param))


def test_config_matches_hf(model):
    hf = model.hf_model.config
    assert model.cfg.n_layers == hf.num_hidden_layers
    assert model.cfg.n_heads == 4 and model.cfg.d_model == 32
    assert model.cfg.d_head == 8 and model.cfg.d_vocab == hf.vocab_size
    assert model.cfg.n_kv_heads == (getattr(hf, "num_key_value_heads", None) or 4)


def test_parity(model):
    tokens = random_tokens()
    cache = check_no_intervention(model, tokens)
    check_decompositions(model, cache)
    check_pattern(model, cache)
    check_self_patching(model, tokens, model.sites())


def test_shapes(model):
    cfg, tokens = model.cfg, random_tokens(batch=2, pos=5)
    _, cache = model.run_with_cache(tokens)
    assert cache["blocks.1.attn.hook_z"].shape == (2, 5, cfg.n_heads, cfg.d_head)
    assert cache["blocks.1.attn.hook_q"].shape == (2, 5, cfg.n_heads, cfg.d_head)
    assert cache["blocks.1.attn.hook_k"].shape == (2, 5, cfg.n_kv_heads, cfg.d_head)
    assert cache["blocks.1.attn.hook_result"].shape == (2, 5, cfg.n_heads, cfg.d_model)
    assert cache["blocks.1.mlp.hook_post"].shape == (2, 5, cfg.d_mlp)
    assert cache["logits"].shape == (2, 5, cfg.d_vocab)
    assert cache.stack("resid_post").shape == (cfg.n_layers, 2, 5, cfg.d_model)


def test_zeroing_a_head_in_z_equals_zeroing_its_result(model):
    tokens = random_tokens()

    def zero_head(t, hook):
        t = t.clone()
        t[:, :, 2] = 0
        return t

    via_z = model.run_with_hooks(tokens, [("blocks.1.attn.hook_z", zero_head)])
    via_result = model.run_with_hooks(tokens, [("blocks.1.attn.hook_result", zero_head)])
    assert max_diff(via_z, model(tokens)) > 1e-3  # the ablation does something
    if not model.cfg.post_norm:
        assert max_diff(via_z, via_result) <= 1e-5
        return
    # post-norm: zeroing z re-normalises the other heads; zeroing the frozen-scale share
    # removes exactly that share from hook_attn_out
    _, cache = model.run_with_cache(tokens, ["blocks.1.attn.hook_result"])
    share = cache["blocks.1.attn.hook_result"][:, :, 2]

    def minus_share(t, hook):
        return t - share

    via_attn_out = model.run_with_hooks(tokens, [("blocks.1.hook_attn_out", minus_share)])
    assert max_diff(via_result, via_attn_out) <= 1e-5
    assert max_diff(via_z, via_result) > 1e-4


def test_post_norm_scale_site_rescales_the_norm(model):
    if not model.cfg.post_norm:
        with pytest.raises(SiteError, match="no post-norm"):
            model.run_with_cache(random_tokens(), ["blocks.0.attn.hook_scale"])
        return
    tokens = random_tokens()
    _, cache = model.run_with_cache(tokens, ["blocks.1.attn.hook_scale", "blocks.1.hook_mlp_out",
                                             "blocks.1.mlp.hook_scale"])
    assert cache["blocks.1.attn.hook_scale"].shape == (*tokens.shape, 1)
    doubled = model.run_with_hooks(tokens, [("blocks.1.mlp.hook_scale", lambda s, hook: 2 * s)])
    out = cache["blocks.1.hook_mlp_out"]
    added = model.run_with_hooks(tokens, [("blocks.1.hook_mlp_out", lambda t, hook: t + out)])
    assert max_diff(doubled, added) <= 1e-5 and max_diff(doubled, model(tokens)) > 1e-3


def test_patching_resid_mid_matches_patching_attn_out(model):
    tokens = random_tokens()
    if model.cfg.parallel_attn_mlp:  # the site is absent, and says why
        with pytest.raises(SiteError, match="in parallel"):
            model.run_with_hooks(tokens, [("blocks.0.hook_resid_mid", lambda t, h: t)])
        return
    delta = torch.randn(model.cfg.d_model)
    a = model.run_with_hooks(tokens, [("blocks.0.hook_resid_mid", lambda t, h: t + delta)])
    b = model.run_with_hooks(tokens, [("blocks.0.hook_attn_out", lambda t, h: t + delta)])
    assert max_diff(a, model(tokens)) > 1e-3
    assert max_diff(a, b) <= 1e-5


def test_patch_changes_only_later_positions(model):
    tokens = random_tokens(pos=8)
    patched = model.run_with_hooks(
        tokens, [("blocks.0.hook_resid_post", lambda t, h: torch.cat([t[:, :4], 0 * t[:, 4:]], 1))]
    )
    clean = model(tokens)
    assert max_diff(patched[:, :4], clean[:, :4]) <= 1e-5
    assert max_diff(patched[:, 4:], clean[:, 4:]) > 1e-3


def test_hooks_and_attention_are_restored_after_an_error(model):
    tokens = random_tokens()
    implementation = model.hf_model.config._attn_implementation

    def boom(t, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        model.run_with_hooks(tokens, [("blocks.1.attn.hook_pattern", boom),
                                      ("blocks.0.attn.hook_z", lambda t, h: t)])
    assert model.hf_model.config._attn_implementation == implementation
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.hf_model.modules())
    with torch.no_grad():
        assert torch.equal(model(tokens), model.hf_model(input_ids=tokens).logits)


def test_unembed_of_the_last_residual_is_the_logits(model):
    tokens = random_tokens()
    logits, cache = model.run_with_cache(tokens, [f"blocks.{model.cfg.n_layers - 1}"
                                                  ".hook_resid_post"])
    with torch.no_grad():
        again = model.unembed(cache["resid_post", model.cfg.n_layers - 1])
    assert max_diff(again, logits) <= 1e-5
