"""Where the contrastive reader takes a text's activation: its last token, the mean over its
own tokens (never the padding of a shorter text), or one token index; each against the text
run alone."""

from __future__ import annotations

import pytest
import torch

from modelweave.errors import SteeringError
from modelweave.methods.steering.vectors import read_site
from modelweave.models import Model
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model

SITE = "blocks.1.hook_resid_post"
TEXTS = ["When Mary and John went to the store", "Mary went", "John gave a drink to"]


@pytest.fixture(scope="module")
def model():
    tok = make_tokenizer("bytelevel")
    return Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)


def _alone(model, text: str) -> torch.Tensor:
    """[pos, d_model] the site's activations of ``text`` run on its own (no padding)."""
    return model.run_with_cache(text, [SITE])[1][SITE][0].float()


@pytest.mark.numeric
def test_positions_read_each_text_as_if_it_ran_alone(model):
    alone = [_alone(model, t) for t in TEXTS]
    lengths = [a.shape[0] for a in alone]
    assert len(set(lengths)) == 3  # the batch is right-padded
    tol = dict(atol=1e-5 * max(float(a.abs().max()) for a in alone), rtol=0)
    got = {p: read_site(model, TEXTS, [SITE], position=p)[SITE]
           for p in ("mean", "last", -1, -2, 1)}
    torch.testing.assert_close(got["mean"], torch.stack([a.mean(0) for a in alone]), **tol)
    torch.testing.assert_close(got["last"], torch.stack([a[-1] for a in alone]), **tol)
    torch.testing.assert_close(got[-1], got["last"], **tol)
    torch.testing.assert_close(got[-2], torch.stack([a[-2] for a in alone]), **tol)
    torch.testing.assert_close(got[1], torch.stack([a[1] for a in alone]), **tol)


def test_a_position_outside_the_shortest_text_is_an_error(model):
    shortest = min(len(model.to_tokens(t)[0]) for t in TEXTS)
    read_site(model, TEXTS, [SITE], position=shortest - 1)  # the last of the shortest: fine
    read_site(model, TEXTS, [SITE], position=-shortest)
    for bad in (shortest, -shortest - 1):
        with pytest.raises(SteeringError, match=f"position {bad} is outside a text of "
                           f"{shortest} tokens"):
            read_site(model, TEXTS, [SITE], position=bad)
    with pytest.raises(SteeringError, match="position must be 'last', 'mean' or a token index"):
        read_site(model, TEXTS, [SITE], position="first")
