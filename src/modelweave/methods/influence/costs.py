"""Memory and time estimates of an influence run, made before it starts."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .settings import InfluenceSettings


def available_gb() -> float:
    """Memory available now (GiB; MemAvailable), infinite where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def estimate_memory(model, shapes: dict, settings: InfluenceSettings, longest: int,
                    n_queries: int) -> dict:
    """Rough peak memory (GB) per stage, from the tracked shapes and batch sizes."""
    gb = 2.0**30
    cfg = model.cfg
    params = sum(p.numel() for p in model.hf_model.parameters()) * 4
    weights = 2 * params  # the model and its float32 copy
    tokens = settings.train_batch * longest
    activations = tokens * (cfg.n_layers * (12 * cfg.d_model + 3 * cfg.d_mlp) + 4 * cfg.d_vocab) * 4
    sizes = [(i + b, o) for i, o, b in shapes.values()]
    covariances = sum(i * i + o * o for i, o in sizes) * 4
    eigen = max(max(i, o) ** 2 for i, o in sizes) * 8 * 6
    per_sample = max(i * o for i, o in sizes) * settings.train_batch * 4 * 3
    lambdas = sum(i * o for i, o in sizes) * 4
    rank = settings.query_rank
    per_query = sum((rank * (i + o) if rank and rank < min(i, o) else i * o) for i, o in sizes)
    queries = per_query * n_queries * 4 * 2
    stages = {"covariance": weights + activations + covariances,
              "eigendecomposition": weights + 2 * covariances + eigen,
              "lambda": weights + activations + 2 * covariances + lambdas + per_sample,
              "scores": weights + activations + 2 * covariances + lambdas + queries + per_sample}
    out = {k: v / gb for k, v in stages.items()}
    out["peak"] = max(out.values())
    return out


def time_one_batch(hf, batch, modules: list[str], shapes: dict) -> dict:
    """Seconds of one forward+backward of a training batch, and a 256 x 256 fp64
    eigendecomposition, on this machine now."""
    wanted = {f"{m}.weight" for m in modules}
    for name, p in hf.named_parameters():
        p.requires_grad_(name in wanted)
    start = time.perf_counter()
    out = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
             use_cache=False).logits
    out.float().logsumexp(-1).sum().backward()
    step = time.perf_counter() - start
    hf.zero_grad(set_to_none=True)
    for p in hf.parameters():
        p.requires_grad_(False)
    x = torch.randn(256, 256, dtype=torch.float64)
    start = time.perf_counter()
    torch.linalg.eigh(x @ x.T)
    return {"step": step, "eigh256": time.perf_counter() - start}
