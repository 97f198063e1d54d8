"""Parity checks shared by the tiny-model and embedded-model tests."""

from __future__ import annotations

import torch

from modelweave.models.adapters import linear_weight
from modelweave.models.postnorm import at_scale, inverse_scale


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def hf_logits(model, tokens, attn_implementation=None):
    """Logits of the bare HF model, optionally under another attention implementation."""
    previous = model.hf_model.config._attn_implementation
    model.hf_model.set_attn_implementation(attn_implementation or previous)
    try:
        with torch.no_grad():
            return model.hf_model(input_ids=tokens).logits
    finally:
        model.hf_model.set_attn_implementation(previous)


def check_no_intervention(model, tokens, atol=1e-5):
    """A hooked run that caches every site returns the HF logits.

    Hooking ``hook_pattern`` needs materialised attention, so those runs are compared with the
    HF model's own eager attention (fused SDPA differs from eager by float rounding, ~2e-6
    relative on the embedded model); every other site leaves the model's kernel alone."""
    reference = hf_logits(model, tokens)
    assert reference.abs().mean() > 1e-2  # the comparison is between real numbers
    no_pattern = [s for s in model.sites() if not s.endswith("hook_pattern")]
    logits, _ = model.run_with_cache(tokens, no_pattern)
    assert max_diff(logits, reference) <= atol
    logits, cache = model.run_with_cache(tokens)
    assert max_diff(logits, hf_logits(model, tokens, "eager")) <= atol
    return cache


def check_decompositions(model, cache, atol=1e-5):
    """result sums to attn_out, down(post) is mlp_out, the residual adds up, layers chain."""
    cfg, a = model.cfg, model.adapter
    for layer in range(cfg.n_layers):
        block = model.block(layer)
        out_proj = block.get_submodule(a.out_proj)
        attn = cache[f"blocks.{layer}.attn.hook_result"].sum(dim=-2)
        if out_proj.bias is not None:
            attn = attn + out_proj.bias
        down = block.get_submodule(a.mlp_down)
        mlp = cache[f"blocks.{layer}.mlp.hook_post"] @ linear_weight(down).T
        if down.bias is not None:
            mlp = mlp + down.bias
        if cfg.post_norm:  # frozen-scale shares: linear in the heads and neurons
            scales = cache["attn_scale", layer], cache["mlp_scale", layer]
            attn_norm = block.get_submodule(a.attn_out_norm)
            with torch.no_grad():
                assert max_diff(scales[0], inverse_scale(attn_norm, out_proj(
                    cache["z", layer].flatten(-2)))) <= atol
                if out_proj.bias is not None:
                    attn = cache[f"blocks.{layer}.attn.hook_result"].sum(dim=-2) + at_scale(
                        attn_norm, out_proj.bias, scales[0])
                mlp = at_scale(block.get_submodule(a.mlp_out_norm), mlp, scales[1])
        attn_out, mlp_out = cache["attn_out", layer], cache["mlp_out", layer]
        assert max_diff(attn, attn_out) <= atol, f"layer {layer}: sum of hook_result"
        assert max_diff(mlp, mlp_out) <= atol, f"layer {layer}: down(hook_post)"
        pre, post = cache["resid_pre", layer], cache["resid_post", layer]
        if cfg.parallel_attn_mlp:
            assert max_diff(pre + attn_out + mlp_out, post) <= atol
        else:
            mid = cache["resid_mid", layer]
            assert max_diff(pre + attn_out, mid) <= atol
            assert max_diff(mid + mlp_out, post) <= atol
        if layer + 1 < cfg.n_layers:
            assert torch.equal(post, cache["resid_pre", layer + 1])


def check_pattern(model, cache, atol=1e-5):
    """Patterns are causal distributions, and z is the pattern-weighted mix of v."""
    cfg = model.cfg
    for layer in range(cfg.n_layers):
        pattern = cache["pattern", layer]  # [batch, head, q, k]
        batch, _, pos, _ = pattern.shape
        assert pattern.shape == (batch, cfg.n_heads, pos, pos)
        assert max_diff(pattern.sum(-1), torch.ones_like(pattern.sum(-1))) <= atol
        assert pattern.triu(1).abs().max() == 0
        v = cache["v", layer].repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=2)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        assert max_diff(z, cache["z", layer]) <= atol


def check_self_patching(model, tokens, sites, atol=1e-5):
    """Replacing any site with (a copy of) its own cached value changes nothing."""
    reference, eager = hf_logits(model, tokens), hf_logits(model, tokens, "eager")
    plain = [s for s in sites if not s.endswith("hook_pattern")]
    _, cache = model.run_with_cache(tokens, plain)
    _, pattern_cache = model.run_with_cache(tokens, [s for s in sites if s not in plain])
    cache.update(pattern_cache)
    for name in sites:
        logits = model.run_with_hooks(tokens, [(name, lambda t, hook: cache[hook.name].clone())])
        expected = eager if name.endswith("hook_pattern") else reference
        assert max_diff(logits, expected) <= atol, name
