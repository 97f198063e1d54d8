"""Task metrics on circuit runs: the per-example value and the scalar methods optimise.

Circuit runs stack ``G`` copies of a batch (one per edge set), so values come back [G, B].
Every metric is "higher = more like the clean model": the task metrics as they are, and for
``kl`` the *negative* KL(clean model || run).
"""

from __future__ import annotations

import torch

from ..metrics.functional import kl_divergence
from ..metrics.scores import METRICS, metric_on_last
from ..names import GRADIENT_METRICS  # noqa: F401 - discovery's metrics, defined there
from ..tasks import TaskBatch, TaskError

NAMES = (*METRICS, "kl")


def check_metric(name: str) -> str:
    """``name`` if it is a metric circuits can use; a clear error otherwise."""
    if name not in NAMES or name == "accuracy":
        usable = [n for n in NAMES if n != "accuracy"]
        raise TaskError(f"metric {name!r} cannot score circuits (it has no gradient); use one "
                        f"of {', '.join(usable)}")
    return name


def last_logits(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[G*B, T, vocab] -> [G*B, vocab] at each prompt's last token (float32)."""
    groups = logits.shape[0] // len(batch)
    ends = batch.lengths.to(logits.device).repeat(groups) - 1
    return logits[torch.arange(logits.shape[0], device=logits.device), ends].float()


def per_example(name: str, logits: torch.Tensor, batch: TaskBatch,
                reference: torch.Tensor | None = None) -> torch.Tensor:
    """[G, B] metric values of a stacked run.

    Args:
        logits: [G*B, T, vocab].
        reference: [B, vocab] clean-model last-token logits (needed by ``kl``).
    """
    last = last_logits(logits, batch)
    if name != "kl":
        return metric_on_last(name, last, batch)
    if reference is None:
        raise ValueError("the kl metric needs the clean model's logits as reference")
    groups = last.shape[0] // len(batch)
    return -kl_divergence(reference.float(), last.view(groups, len(batch), -1))
