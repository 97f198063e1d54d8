"""Metrics as plain functions on tensors: the one definition of each, shared by
:mod:`.scores` (task batches), the circuit objectives, node circuits and heuristics.

- :func:`kl_divergence`: KL(reference || run) of next-token distributions.
- :func:`top1_accuracy`: whether the top-1 token is a correct one.
- :func:`normalize`: the faithfulness normalisation (m - m_corrupt) / (m_clean - m_corrupt),
  1 = clean behaviour, 0 = corrupted; :func:`normalizable` its guard (where the denominator is
  not zero).
"""

from __future__ import annotations

from typing import TypeVar

import torch

Value = TypeVar("Value")

GUARD = 1e-9
"""``|m_clean - m_corrupt|`` at or below this has no defined normalisation."""


def kl_divergence(reference: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(reference || run) = sum_v p_ref(v) (log p_ref(v) - log p_run(v)).

    Args:
        reference, logits: [..., vocab] logits of the reference (e.g. the unpatched model) and
            of the run; the leading axes broadcast (e.g. [N, vocab] against [G, N, vocab]).

    Returns:
        [...] one divergence per row (0 when the distributions agree).
    """
    ref = reference.log_softmax(-1)
    return (ref.exp() * (ref - logits.log_softmax(-1))).sum(-1)


def top1_accuracy(logits: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """1.0 where the top-1 token is correct, else 0.0.

    Args:
        logits: [..., vocab].
        correct: [...] one correct token id per row, or [..., K] several (padded with -1).

    Returns:
        [...] float, on ``logits``' device.
    """
    top = logits.argmax(-1)
    correct = correct.to(top.device)
    if correct.dim() == top.dim():
        return (top == correct).float()
    return (correct == top[..., None]).any(-1).float()


def normalize(value: Value, clean: Value, corrupt: Value) -> Value:
    """(value - corrupt) / (clean - corrupt): 1 = the clean run's metric, 0 = the corrupted's.

    Works on floats, tensors and arrays alike (elementwise, broadcasting): ``value`` e.g. a
    patched grid [...] or a circuit's metric, ``clean``/``corrupt`` scalars or per-prompt [N].
    Where ``clean == corrupt`` the result is inf or nan; see :func:`normalizable`.
    """
    return (value - corrupt) / (clean - corrupt)


def normalizable(clean: torch.Tensor, corrupt: torch.Tensor, eps: float = GUARD
                 ) -> torch.Tensor:
    """[N] bool: where ``|clean - corrupt| > eps`` ([N] each), i.e. :func:`normalize` is
    defined."""
    return (clean - corrupt).abs() > eps
