"""Fine-tuning on a document corpus (next-token loss on every token), for influence studies.

Only the chosen linear modules are trained (by default those influence tracks), in full, with
AdamW (the steps of :mod:`modelweave.models.training`); everything else stays frozen, so the
backward pass stops at the first trained layer. The result is a new
:class:`~modelweave.models.Model` (the input model is left unchanged) that can be saved as an
HF directory ``load_model`` reads.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ...models.training import Batch, adamw, train_steps
from ...progress import Progress
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
                       progress: Progress = None,
                       on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train the ``modules`` (see :func:`~.modules.resolve_modules`) of a copy of ``model``
    on ``documents`` for ``epochs`` shuffled passes. ``progress`` phase ``"train"``: steps
    done of ``epochs * ceil(len(documents) / batch_size)``; ``on_step(step, loss)`` after
    every step. With ``out`` the trained model and tokenizer are saved there."""
    from ...models import Model

    names = resolve_modules(model, modules, layers)
    ids = encode_documents(model, documents, max_tokens)
    hf = copy.deepcopy(model.hf_model).float()
    for p in hf.parameters():
        p.requires_grad_(False)
    trained = []
    for name in names:
        for p in hf.get_submodule(name).parameters():
            p.requires_grad_(True)
            trained.append(p)
    per_epoch = -(-len(ids) // batch_size)
    steps = epochs * per_epoch
    optimizer, schedule = adamw(trained, lr=lr, steps=steps, weight_decay=weight_decay)
    pad = model.tokenization.pad_token_id
    rng = random.Random(seed)
    orders = []  # one shuffle per epoch
    for _ in range(epochs):
        orders.append(list(range(len(ids))))
        rng.shuffle(orders[-1])
    torch.manual_seed(seed)
    start = time.perf_counter()

    def rows_of(step: int) -> Batch:
        b = step % per_epoch * batch_size
        return _padded([ids[j] for j in orders[step // per_epoch][b:b + batch_size]], pad)

    def report(done: int, loss: float, _record: None) -> None:
        on_step(done, loss)

    losses = train_steps(hf, rows_of, optimizer, schedule, steps=steps, device=model.device,
                         on_step=report if on_step else None, progress=progress)
    for p in hf.parameters():
        p.requires_grad_(False)
    if out is not None:
        hf.save_pretrained(out)
        model.tokenizer.save_pretrained(out)
    tuned = Model(hf, model.tokenizer, name=f"{model.name}+docs")
    return TrainResult(tuned, losses, time.perf_counter() - start)


def _padded(rows: list[list[int]], pad: int) -> Batch:
    """Inputs [B, T] (``pad`` after each row), next-token targets [B, T] (``-100`` past each
    row's last token) and attention mask [B, T] of token-id rows, T the longest row."""
    width = max(map(len, rows))
    x = torch.full((len(rows), width), pad, dtype=torch.long)
    y = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        x[r, :len(row)] = torch.tensor(row)
        y[r, :len(row) - 1] = torch.tensor(row[1:])
        mask[r, :len(row)] = 1
    return x, y, mask
