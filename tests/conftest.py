import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // int(os.environ.get(
    "PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture(scope="session")
def smollm():
    """The embedded model (dequantised into the cache on first use)."""
    from modelweave import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def tiny():
    """A 3-layer llama (4 heads, 2 key/value heads, d_model 32, d_mlp 48) with a tokenizer."""
    from modelweave.models import Model
    from tokenizers_zoo import make_tokenizer

    from tiny import tiny_hf_model

    tok = make_tokenizer("bytelevel")
    return Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)

