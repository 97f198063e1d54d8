"""The causal-LM task and datasets kronfluence runs on.

- Training loss of a document: next-token cross-entropy summed over its tokens; for the Fisher
  (``sample=True``) the targets are drawn from the model's own predictions, with a generator
  seeded by the document's tokens, so that factors do not depend on document order.
- Measurement of a query: the completion's negative log-probability summed over its tokens.
  kronfluence's score is ``grad f^T (G + lambda I)^-1 grad L(doc)``; with ``f`` the completion's
  loss this equals ``d log p(completion | prompt) / d epsilon`` when the document is up-weighted
  by ``epsilon``: positive = the document raises the completion's probability.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from kronfluence.task import Task
from torch.utils.data import Dataset


def token_seed(ids: list[int]) -> int:
    """A 63-bit seed from a token sequence (its content, not its place in the corpus)."""
    digest = hashlib.blake2b(torch.tensor(ids, dtype=torch.int64).numpy().tobytes(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Rows(Dataset):
    """Token rows with per-token targets (``-100``: no loss) and a sampling seed each."""

    def __init__(self, rows: list[list[int]], targets: list[list[int]], pad: int):
        self.rows, self.targets, self.pad = rows, targets, pad
        self.seeds = [token_seed(r) for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {"ids": self.rows[i], "targets": self.targets[i], "seed": self.seeds[i]}

    def collate(self, items: list[dict]) -> dict:
        """Right-pad a batch: ``input_ids``, ``attention_mask``, ``labels`` (the target of the
        token at each position, i.e. already shifted), ``seeds``."""
        width = max(len(it["ids"]) for it in items)
        ids = torch.full((len(items), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        for r, it in enumerate(items):
            n = len(it["ids"])
            ids[r, :n] = torch.tensor(it["ids"])
            mask[r, :n] = 1
            labels[r, :n] = torch.tensor(it["targets"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "seeds": torch.tensor([it["seed"] for it in items], dtype=torch.long)}


def document_rows(ids: list[list[int]], pad: int) -> Rows:
    """Documents: every next token is a target."""
    return Rows(ids, [row[1:] + [-100] for row in ids], pad)


def query_rows(encoded: list[tuple[list[int], int]], pad: int) -> Rows:
    """Queries: only the completion's tokens are targets."""
    rows, targets = [], []
    for ids, n_prompt in encoded:
        rows.append(ids)
        targets.append([-100] * (n_prompt - 1) + ids[n_prompt:] + [-100])
    return Rows(rows, targets, pad)


def _logits(model, batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 use_cache=False).logits.float()


class LanguageModelTask(Task):
    """kronfluence task: summed document loss, summed completion loss, named modules."""

    def __init__(self, modules: list[str]):
        super().__init__()
        self.modules = list(modules)

    def compute_train_loss(self, batch, model, sample: bool = False) -> torch.Tensor:
        logits = _logits(model, batch)
        labels = batch["labels"]
        if sample:
            with torch.no_grad():
                probs = torch.softmax(logits.detach(), dim=-1)
                drawn = torch.empty_like(labels)
                for r in range(labels.shape[0]):
                    gen = torch.Generator().manual_seed(int(batch["seeds"][r]))
                    drawn[r] = torch.multinomial(probs[r].cpu(), 1, generator=gen).squeeze(-1)
                labels = torch.where(labels == -100, labels, drawn.to(labels.device))
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                               reduction="sum")

    def compute_measurement(self, batch, model) -> torch.Tensor:
        logits = _logits(model, batch)
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                               ignore_index=-100, reduction="sum")

    def get_influence_tracked_modules(self) -> list[str]:
        return self.modules

    def get_attention_mask(self, batch) -> torch.Tensor:
        return batch["attention_mask"]
