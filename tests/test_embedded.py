"""The embedded SmolLM2 model: shapes, parity and trained behaviour."""

import pytest
import torch

from modelweave.models import embedded

from parity import check_decompositions, check_no_intervention, check_pattern, check_self_patching

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm")]

IOI = "When Mary and John went to the store, John gave a drink to"


def test_config(smollm):
    c = smollm.cfg
    assert (c.architecture, c.n_layers, c.n_heads, c.n_kv_heads) == ("llama", 30, 9, 3)
    assert (c.d_model, c.d_head, c.d_mlp, c.d_vocab) == (576, 64, 1536, 49152)
    assert embedded.is_cached()


def test_ioi_prediction(smollm):
    logits = smollm(IOI)
    assert smollm.to_string([logits[0, -1].argmax().item()]) == " Mary"


def test_no_bos_for_this_tokenizer(smollm):
    tokens = smollm.to_tokens(IOI)
    assert tokens[0, 0].item() != smollm.tokenizer.bos_token_id
    assert smollm.to_str_tokens(IOI)[:3] == ["When", " Mary", " and"]
    with_bos = smollm.to_tokens(IOI, prepend_bos=True)
    assert with_bos[0, 0].item() == smollm.tokenizer.bos_token_id
    assert torch.equal(with_bos[0, 1:], tokens[0])


def test_parity(smollm):
    tokens = smollm.to_tokens(["1 2 3 4 5 6 ", "When Mary and John went"])
    cache = check_no_intervention(smollm, tokens)
    check_decompositions(smollm, cache, atol=1e-4)
    check_pattern(smollm, cache, atol=1e-5)
    sites = [s for s in smollm.sites() if not s.startswith("blocks.") or
             s.split(".")[1] in ("0", "14", "29")]
    check_self_patching(smollm, tokens, sites)


def test_gguf_file_loads_to_the_same_model(smollm):
    from modelweave import load_model

    direct = load_model(embedded.gguf_path())
    tokens = smollm.to_tokens(IOI)
    assert torch.allclose(direct(tokens), smollm(tokens), atol=1e-5)
