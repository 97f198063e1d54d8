"""LoRA fine-tuning on a task, with peft: an adapter and a merged model ``load_model`` reads.

The training signal is the task itself: for each generated example, cross-entropy of the
correct answer's first token at the prompt's last position (the quantity the task metrics
read). LoRA adapters go on every linear layer of the decoder blocks (``"all-linear"``: the
attention and MLP projections, not the embeddings or the unembedding); the base weights stay
frozen, so only the adapter changes them.

Writes ``OUT/adapter/`` (peft's adapter files), ``OUT/merged/`` (the merged model as
safetensors with its tokenizer, loadable with ``load_model(OUT/merged)``) and
``OUT/finetune.json`` (settings, loss curve, timings).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .model import Model


@dataclass
class FinetuneResult:
    """What :func:`finetune` did: the merged model, the loss per step, paths and timing."""

    model: Model
    losses: list[float]
    adapter: Path
    merged: Path
    seconds: float


def finetune(model: Model, task: str, out: str | Path, *, steps: int = 200, lora_r: int = 8,
             lr: float = 1e-3, batch_size: int = 16, n: int = 256, seed: int = 0,
             progress: Callable[[int, float], None] | None = None) -> FinetuneResult:
    """Fine-tune ``model`` with LoRA on ``task`` (a built-in task or a task file).

    Args:
        steps: optimiser steps (AdamW); batch_size: prompts per step, cycling over ``n``
            generated examples.
        lora_r: adapter rank (alpha = 2 r).
        progress: called as ``progress(step, loss)``.

    Returns:
        a :class:`FinetuneResult`; ``model`` is itself left unchanged.
    """
    import copy

    from peft import LoraConfig, get_peft_model

    from ..tasks import make_batch

    if steps < 1 or lora_r < 1:
        raise ValueError("steps and lora_r must be positive")
    out = Path(out)
    batch = make_batch(model, task, n=n, seed=seed)
    torch.manual_seed(seed)
    base = copy.deepcopy(model.hf_model).float()
    config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, config)
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    losses = []
    start = time.perf_counter()
    order = torch.randperm(len(batch), generator=torch.Generator().manual_seed(seed))
    for step in range(steps):
        rows = order[(torch.arange(batch_size) + step * batch_size) % len(batch)]
        part = batch.select(rows).to(model.device)
        logits = peft_model(input_ids=part.clean, attention_mask=part.mask,
                            use_cache=False).logits
        last = logits[torch.arange(len(part)), part.lengths - 1]
        loss = torch.nn.functional.cross_entropy(last.float(), part.answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(step + 1, losses[-1])
    seconds = time.perf_counter() - start
    peft_model.eval()
    peft_model.save_pretrained(out / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out / "merged")
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(out / "merged")
    (out / "finetune.json").write_text(json.dumps({
        "model": model.name, "task": batch.task, "steps": steps, "lora_r": lora_r, "lr": lr,
        "batch_size": batch_size, "n": len(batch), "seed": seed, "seconds": seconds,
        "losses": losses}, indent=1))
    tuned = Model(merged, model.tokenizer, name=f"{model.name}+lora-{batch.task}")
    return FinetuneResult(tuned, losses, out / "adapter", out / "merged", seconds)
