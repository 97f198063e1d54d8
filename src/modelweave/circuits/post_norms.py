"""Heads behind a post-norm (OLMo-2): exact mixtures and first-order differences.

An OLMo-2 layer's heads reach the residual stream only through a norm of their sum,
``attn_out = N(Y)`` with ``Y = sum_h y_h + b_O``. A head's sender value is therefore ``y_h``,
its output *before* the norm (an MLP's output ``N(m)`` is one sender, so its value is taken
after its norm, as usual). A receiver cut off from some heads of layer ``l`` reads

    N(Y_l + sum over cut heads h of (y'_h - y_h))   instead of   N(Y_l),

the model's own computation on the mixture of clean and corrupted heads: the full circuit is
the clean run, the empty one the corrupted run, and everything in between exact. Attribution
(EAP, EAP-IG) scores a head's edge with the change its swap alone makes to what the receiver
reads, ``N_l(Y_l) - N_l(Y_l - y_h + y'_h)`` at the clean run, times the receiver's gradient:
exact on the sender's side, first order only on the receiver's, as for every other sender.

Shapes: G edge-set groups, B prompts, T positions, N senders, R receivers, d = d_model.
"""

from __future__ import annotations

import torch

from ..models import Model
from ..models.parts import out_norm
from ..models.weights import has_bias
from .graph import Graph


class PostNormHeads:
    """The post-norm of every layer and the sender indices of its heads.

    Build with :meth:`of`, which returns ``None`` for families without post-norms."""

    def __init__(self, model: Model, graph: Graph):
        self.graph = graph
        self.layers: list[tuple[slice, torch.nn.Module, torch.Tensor | None]] = []
        for layer in range(model.cfg.n_layers):
            first = graph.head(layer, 0)
            bias = model.b_O[layer] if has_bias(model, "b_O", layer) else None
            self.layers.append((slice(first, first + graph.n_heads),
                                out_norm(model, layer, "attn"), bias))
        additive = torch.ones(graph.n_senders, dtype=torch.bool)
        for heads, _, _ in self.layers:
            additive[heads] = False
        self.additive = additive  # [N]: senders whose differences add in the residual

    @classmethod
    def of(cls, model: Model, graph: Graph) -> PostNormHeads | None:
        return cls(model, graph) if model.cfg.post_norm else None

    def layer_of(self, senders: slice) -> int | None:
        """The layer whose heads are exactly ``senders``, else ``None``."""
        for layer, (heads, _, _) in enumerate(self.layers):
            if heads == senders:
                return layer
        return None

    def summed(self, layer: int, values: torch.Tensor) -> torch.Tensor:
        """``Y`` [..., d] of one layer from its heads' values [..., n_heads, d]."""
        _, _, bias = self.layers[layer]
        total = values.sum(-2)
        return total if bias is None else total + bias.to(total.device)

    def change(self, cut: torch.Tensor, diff: torch.Tensor, sums: dict[int, torch.Tensor],
               shape: tuple[int, int, int]) -> torch.Tensor | None:
        """What cut head edges change in their receivers' inputs.

        Args:
            cut: [G, n_up, R] bool, the removed edges into these receivers.
            diff: [G, N, B*T*d] corrupted minus current sender values (pre-norm for heads).
            sums: layer -> [G, B*T*d] the current ``Y`` of every layer seen so far.
            shape: (B, T, d).

        Returns:
            [G, R, B*T*d], or ``None`` when no head edge is cut.
        """
        total = None
        n_up = cut.shape[1]
        for layer, (heads, norm, _) in enumerate(self.layers):
            if heads.start >= n_up:
                break
            c = cut[:, heads]  # [G, H, R]
            if not bool(c.any()):
                continue
            y = sums[layer]
            mixed = y[:, None] + torch.bmm(c.transpose(1, 2).to(diff.dtype), diff[:, heads])
            g, r = mixed.shape[:2]
            # .forward: the norm's own hooks (the wiring's, a user's) see only the real run
            new = norm.forward(mixed.view(g, r, *shape))
            old = norm.forward(y.view(g, 1, *shape))
            step = (new - old).reshape(g, r, -1).to(diff.device)
            total = step if total is None else total + step
        return total

    def swapped(self, clean: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
        """Sender differences as they reach the residual.

        Args:
            clean: [B, T, N, d] sender values of the run the differences are taken from.
            diff: [B, T, N, d] ``clean`` minus the other run's values (pre-norm for heads).

        Returns:
            [B, T, N, d]: ``diff`` with each head's row replaced by
            ``N(Y) - N(Y - diff_h)``, the change in its layer's output when that head alone
            takes the other run's value.
        """
        out = diff.clone()
        for layer, (heads, norm, _) in enumerate(self.layers):
            y = self.summed(layer, clean[:, :, heads])[:, :, None]  # [B, T, 1, d]
            out[:, :, heads] = (norm.forward(y) - norm.forward(y - diff[:, :, heads])).to(
                out.device)
        return out


def sender_differences(model: Model, graph: Graph, clean: torch.Tensor,
                       diff: torch.Tensor) -> torch.Tensor:
    """[B, T, N, d] sender differences ``clean - other`` as they reach the residual: ``diff``
    itself except for heads behind a post-norm (see :meth:`PostNormHeads.swapped`)."""
    post = PostNormHeads.of(model, graph)
    return diff if post is None else post.swapped(clean, diff)
