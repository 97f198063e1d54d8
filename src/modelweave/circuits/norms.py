"""Vector-Jacobian products of the residual-stream norms, for many cotangents at once.

A receiver's gradient in residual space is ``J_norm(x)ᵀ u``: the norm's Jacobian at the
residual ``x`` applied to the gradient ``u`` at the norm's output. Every receiver of a layer
shares ``x``, so one call serves them all. RMSNorm and LayerNorm (with or without weight and
bias) have closed forms, ~3x faster than autograd's; any other norm module falls back to
``torch.func.vjp`` vectorised over the receivers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models.device_map import module_tensor


def _kind(norm: nn.Module) -> tuple[str, torch.Tensor | None, float] | None:
    """("rms" | "layer", weight or None, eps) for the norms with a closed form, else None."""
    name = type(norm).__name__
    if "RMSNorm" in name:
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
        return None if eps is None else ("rms", module_tensor(norm), float(eps))
    if isinstance(norm, nn.LayerNorm) and norm.normalized_shape and len(
            norm.normalized_shape) == 1:
        return "layer", module_tensor(norm), float(norm.eps)
    if name == "CohereLayerNorm" and norm.weight.dim() == 1:
        return "layer", module_tensor(norm), float(norm.variance_epsilon)
    if name == "OlmoLayerNorm":
        return "layer", None, 1e-5
    return None


def norm_vjp(norm: Callable[[torch.Tensor], torch.Tensor] | None, x: torch.Tensor,
             cotangents: torch.Tensor) -> torch.Tensor:
    """``J_norm(x)ᵀ u`` for every ``u``.

    Args:
        norm: the norm module, or ``None`` for the identity.
        x: [B, T, d] the norm's input.
        cotangents: [B, T, R, d] gradients at the norm's output, one per receiver.

    Returns:
        [B, T, R, d] gradients at the norm's input (float32).
    """
    u = cotangents.float()
    if norm is None:
        return u
    kind = _kind(norm) if isinstance(norm, nn.Module) else None
    if kind is None:
        _, pullback = torch.func.vjp(norm, x)
        return torch.vmap(pullback, in_dims=2, out_dims=2)(cotangents)[0].float()
    name, weight, eps = kind
    x = x.float()
    if weight is not None:
        u = u * weight.float()
    if name == "layer":
        x = x - x.mean(-1, keepdim=True)
        u = u - u.mean(-1, keepdim=True)
    inv = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # [B, T, 1]
    x_hat = x * inv
    dot = torch.einsum("btd,btrd->btr", x_hat, u) / x.shape[-1]
    # d/dx of x * inv:  inv * (u - x_hat <x_hat, u> / d); for LayerNorm the centring of u
    # above (and x_hat having zero mean) makes this the centred projection.
    return (u - dot[..., None] * x_hat[:, :, None]) * inv[:, :, None]


class ProjectedPullback:
    """Sum over runs of ``J_norm(x)ᵀ W_rᵀ g_r`` for every head slot ``r`` of one layer.

    The fused form of :func:`norm_vjp` for receivers behind a projection. With ``x̂`` the
    normalised residual and ``inv`` its inverse scale, a closed-form norm's pullback is
    ``inv · ũ - (inv · <x̂, ũ> / d) · x̂`` with ``ũ = W̃_rᵀ g_r``, ``W̃`` the projection
    times the norm's scale (centred over ``d`` for LayerNorm). Both terms are kept small until
    :meth:`total`: the first as ``sum(inv · g)`` in head space (``W̃ᵀ`` is linear, so one batched
    matmul at the end serves every run), the second as one coefficient per token, receiver and
    run, read in head space from the projection's own output (``<x̂, ũ> = <W̃_r x̂, g_r>``).
    Norms without a closed form fall back to autograd through :func:`norm_vjp` per run.

    Args:
        norm: the norm in front of the projection (``None``: identity).
        weight: [d, R, d_head] the projection weight per head slot; bias: [R, d_head] or None.
    """

    def __init__(self, norm: nn.Module | None, weight: torch.Tensor,
                 bias: torch.Tensor | None = None):
        self.norm, self.kind = norm, _kind(norm) if isinstance(norm, nn.Module) else None
        w = weight.float()
        self.generic = norm is not None and self.kind is None
        self.offset = bias.float() if bias is not None else torch.zeros(w.shape[1:],
                                                                        device=w.device)
        if self.kind is not None:
            name, scale, self.eps = self.kind
            norm_bias = module_tensor(norm, "bias")
            if norm_bias is not None:  # the projection of the norm's bias is constant too
                self.offset = self.offset + torch.einsum("d,dre->re", norm_bias.float(), w)
            if scale is not None:
                w = w * scale.float()[:, None, None]
            if name == "layer":
                w = w - w.mean(0, keepdim=True)
        self.w = w
        self.g_sum: torch.Tensor | None = None  # [BT, R, e]
        self.coef: list[torch.Tensor] = []  # per run [BT, R]
        self.x_hat: list[torch.Tensor] = []  # per run [BT, d]
        self.extra: torch.Tensor | None = None  # generic fallback, [R, BT, d]

    def add(self, x: torch.Tensor, grads: torch.Tensor, outputs: torch.Tensor) -> None:
        """Add one run: residual ``x`` [B, T, d], gradients ``grads`` [B, T, R, e] at the
        projection outputs, and those outputs ``outputs`` [B, T, R, e]."""
        g = grads.float().flatten(0, 1)  # [BT, R, e]
        if self.generic:
            u = torch.einsum("nre,dre->nrd", g, self.w).view(*x.shape[:2], *g.shape[1:2], -1)
            back = norm_vjp(self.norm, x, u).flatten(0, 1).transpose(0, 1)
            self.extra = back if self.extra is None else self.extra + back
            return
        if self.kind is not None:
            x = x.float().flatten(0, 1)  # [BT, d]
            if self.kind[0] == "layer":
                x = x - x.mean(-1, keepdim=True)
            inv = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # [BT, 1]
            g = g * inv[:, :, None]
            projected = outputs.float().flatten(0, 1) - self.offset  # = W̃_r x̂ (uncentred)
            self.coef.append((projected * g).sum(-1) / x.shape[-1])
            self.x_hat.append(x * inv)
        self.g_sum = g if self.g_sum is None else self.g_sum + g

    def total(self, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """[R, K, d] the summed gradients at the residual, for the K tokens selected by the
        flat indices ``tokens`` (default: all B*T)."""
        if self.extra is not None:
            return self.extra if tokens is None else self.extra[:, tokens]
        g = self.g_sum if tokens is None else self.g_sum[tokens]
        total = torch.bmm(g.transpose(0, 1), self.w.permute(1, 2, 0))
        if self.coef:  # minus sum over runs of coef * x̂, one batched matmul over tokens
            coef = torch.stack(self.coef, dim=-1)  # [BT, R, S]
            x_hat = torch.stack(self.x_hat, dim=1)  # [BT, S, d]
            if tokens is not None:
                coef, x_hat = coef[tokens], x_hat[tokens]
            total -= torch.bmm(coef, x_hat).transpose(0, 1)
        return total


def joint_norm_pullback(norm: nn.Module, weight: torch.Tensor, pre: torch.Tensor,
                        grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head gradients through an RMS norm over a whole projection (OLMo-2's q/k norms).

    Query head ``h`` reads its (key head's) slice of ``N(P)``, ``P = W x + b``; with
    ``s = rsqrt(mean(P**2) + eps)`` and ``u_h = w_h * g_h`` the gradient at ``x`` is

        W_hᵀ (s u_h)  -  (s³ <P_h, u_h> / D) Wᵀ P,

    returned as its two parts: the first is an ordinary per-head projection pullback of
    ``s u_h``, the second a correction in residual space.

    Args:
        norm: the RMS norm over the projection's ``D`` outputs.
        weight: [D, d_model] the projection's weight.
        pre: [B, T, D] the projection's output (the norm's input).
        grads: [B, T, H, d_head] gradients at each query head's slice of the norm's output.

    Returns:
        (``s u`` [B, T, H, d_head], correction [B, T, H, d_model]), float32.
    """
    _, scale_w, eps = _kind(norm)
    p = pre.float()
    n_out, d_head = p.shape[-1] // grads.shape[-1], grads.shape[-1]
    own = torch.arange(grads.shape[2], device=p.device) // (grads.shape[2] // n_out)
    s = torch.rsqrt(p.pow(2).mean(-1, keepdim=True) + eps)  # [B, T, 1]
    u = grads.float() * scale_w.float().view(n_out, d_head)[own]  # [B, T, H, d_head]
    coef = (p.view(*p.shape[:2], n_out, d_head)[:, :, own] * u).sum(-1)  # [B, T, H]
    coef = coef * s.pow(3) / p.shape[-1]
    back = p @ weight.float()  # [B, T, d_model]
    return u * s[..., None], -coef[..., None] * back[:, :, None]
