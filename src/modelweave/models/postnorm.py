"""Post-norms (OLMo-2): a norm between a block's attention or MLP and the residual stream.

``attn_out = w * Y * s(Y)`` with ``Y`` the summed output of the heads (the output projection's
result) and ``s(Y) = 1 / sqrt(mean(Y**2) + eps)`` one scale per position. Holding ``s`` fixed
(the *frozen-scale reading*) makes the norm linear, so each head's share ``w * Y_h * s`` adds
up to ``attn_out`` exactly; that is what ``hook_result`` reports in such families, and ``s`` is
the site ``attn.hook_scale`` (``mlp.hook_scale`` for the MLP's norm).
"""

from __future__ import annotations

import torch
from torch import nn

from .device_map import module_tensor


def _rms(norm: nn.Module) -> tuple[torch.Tensor, float]:
    name = type(norm).__name__
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if "RMSNorm" not in name or eps is None:
        raise TypeError(f"post-norms must be RMS norms; got {name}")
    return module_tensor(norm, "weight"), float(eps)


def inverse_scale(norm: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``s(y)`` [..., 1] (float32) of an RMS post-norm for its input ``y`` [..., d_model]."""
    _, eps = _rms(norm)
    return torch.rsqrt(y.float().pow(2).mean(-1, keepdim=True) + eps)


def at_scale(norm: nn.Module, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``w * y * scale`` in ``y``'s dtype: the norm's output with its scale given.

    Args:
        y: [..., d_model]; scale: broadcastable to ``y`` without its last axis, plus 1.
    """
    weight, _ = _rms(norm)
    return (weight.float().to(y.device) * (y.float() * scale.float().to(y.device))).to(y.dtype)
