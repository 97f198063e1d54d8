"""Fine-tuning on a document corpus (next-token loss on every token), for influence studies.

Only the chosen linear modules are trained (by default those influence tracks), in full, with
AdamW; everything else stays frozen, so the backward pass stops at the first trained layer. The
result is a new :class:`~modelweave.models.Model` (the input model is left unchanged) that can
be saved as an HF directory ``load_model`` reads.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import Document, encode_documents
from .modules import resolve_modules


@dataclass
class TrainResult:
    model: object
    losses: list[float]
    seconds: float


def train_on_documents(model, documents: list[Document], *, modules: str | list[str] = "mlp",
                       layers: list[int] | None = None, epochs: int = 5, lr: float = 1e-4,
                       batch_size: int = 8, max_tokens: int = 256, weight_decay: float = 0.0,
                       seed: int = 0, out: str | Path | None = None,
                       progress: Callable[[int, int, float], None] | None = None
                       ) -> TrainResult:
    """Train the ``modules`` (see :func:`~.modules.resolve_modules`) of a copy of ``model``
    on ``documents`` for ``epochs`` shuffled passes; ``progress(step, steps, loss)``. With
    ``out`` the trained model and tokenizer are saved there."""
    from ...models import Model

    names = resolve_modules(model, modules, layers)
    ids = encode_documents(model, documents, max_tokens)
    hf = copy.deepcopy(model.hf_model).float().train()
    for p in hf.parameters():
        p.requires_grad_(False)
    trained = []
    for name in names:
        for p in hf.get_submodule(name).parameters():
            p.requires_grad_(True)
            trained.append(p)
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=weight_decay)
    pad = model.tokenization.pad_token_id
    rng = random.Random(seed)
    torch.manual_seed(seed)
    steps = epochs * -(-len(ids) // batch_size)
    losses, step, start = [], 0, time.perf_counter()
    for _ in range(epochs):
        order = list(range(len(ids)))
        rng.shuffle(order)
        for b in range(0, len(order), batch_size):
            rows = [ids[j] for j in order[b:b + batch_size]]
            width = max(map(len, rows))
            x = torch.full((len(rows), width), pad, dtype=torch.long)
            y = torch.full((len(rows), width), -100, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, row in enumerate(rows):
                x[r, :len(row)] = torch.tensor(row)
                y[r, :len(row) - 1] = torch.tensor(row[1:])
                mask[r, :len(row)] = 1
            logits = hf(input_ids=x.to(model.device), attention_mask=mask.to(model.device),
                        use_cache=False).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten().to(model.device),
                                   ignore_index=-100)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            if progress:
                progress(step, steps, losses[-1])
    hf.eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    if out is not None:
        hf.save_pretrained(out)
        model.tokenizer.save_pretrained(out)
    tuned = Model(hf, model.tokenizer, name=f"{model.name}+docs")
    return TrainResult(tuned, losses, time.perf_counter() - start)
