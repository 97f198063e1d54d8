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
