"""Site names: parsing, absent sites, clear errors."""

import pytest

from modelweave import Model, SiteError, act_name
from modelweave.models.sites import all_sites

from tiny import random_tokens, tiny_hf_model


@pytest.fixture(scope="module")
def neox():
    return Model(tiny_hf_model("gpt_neox"))


@pytest.fixture(scope="module")
def llama():
    return Model(tiny_hf_model("llama"))


def test_act_name():
    assert act_name("z", 3) == "blocks.3.attn.hook_z"
    assert act_name("post", 0) == "blocks.0.mlp.hook_post"
    assert act_name("resid_pre", 2) == "blocks.2.hook_resid_pre"
    assert act_name("embed") == "hook_embed"
    with pytest.raises(SiteError, match="needs a layer"):
        act_name("z")


def test_parallel_block_has_no_resid_mid(neox, llama):
    assert not any(s.endswith("resid_mid") for s in all_sites(neox.cfg))
    assert "blocks.0.hook_resid_mid" in llama.sites()
    with pytest.raises(SiteError, match="parallel"):
        neox.run_with_cache(random_tokens(), "blocks.0.hook_resid_mid")


def test_bad_sites_raise_one_clear_error(llama):
    with pytest.raises(SiteError, match="layer 7 out of range"):
        llama.run_with_hooks(random_tokens(), [("blocks.7.attn.hook_z", lambda t, h: t)])
    with pytest.raises(SiteError, match="unknown site"):
        llama.run_with_cache(random_tokens(), ["blocks.0.attn.hook_zz"])
    with pytest.raises(SiteError, match="no learned position"):
        llama.run_with_cache(random_tokens(), ["hook_pos_embed"])
    assert "\n" not in str(SiteError("x"))


def test_filters_and_cache_keys(llama):
    _, cache = llama.run_with_cache(random_tokens(), lambda n: n.endswith("hook_z"))
    assert sorted(cache) == [f"blocks.{i}.attn.hook_z" for i in range(3)]
    assert cache["z", 1] is cache["blocks.1.attn.hook_z"]
    with pytest.raises(KeyError, match="was not cached"):
        cache["q", 0]


def test_hook_receives_its_name_and_layer(llama):
    seen = []
    llama.run_with_hooks(random_tokens(), [(lambda n: n.endswith("attn_out"),
                                            lambda t, h: seen.append((h.name, h.layer)))])
    assert seen == [(f"blocks.{i}.hook_attn_out", i) for i in range(3)]


def test_wrong_replacement_shape_is_an_error(llama):
    with pytest.raises(ValueError, match="returned shape"):
        llama.run_with_hooks(random_tokens(), [("blocks.0.hook_resid_pre", lambda t, h: t[:, :1])])
