"""The three passes circuit methods are built from, on top of :func:`~.wiring.wired`.

- :func:`sender_outputs`: every sender's output in a plain run.
- :func:`patched_logits`: a run in which chosen edges carry the sender's corrupted (or mean)
  output instead of its current one; many edge sets at once as groups of one batch.
- :func:`receiver_gradients`: the metric's gradient at every receiver's input, summed over
  one or more runs (the integration steps of EAP-IG).

Shapes: B prompts, T positions, N senders, R receivers, d = d_model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..models import Model
from .post_norms import PostNormHeads
from .wiring import check_model, wired


class _Stop(Exception):
    """Ends a forward pass early, once the wanted activation has been seen."""


def embeddings(model: Model, tokens: torch.Tensor, mask: torch.Tensor | None = None
               ) -> torch.Tensor:
    """[B, T, d] what the first block reads (token plus position embeddings), without running
    the blocks."""
    seen: list[torch.Tensor] = []

    def grab(_module, args, kwargs):
        seen.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    handle = model.block(0).register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model.forward(tokens, attention_mask=mask)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0]


def sender_outputs(model: Model, tokens: torch.Tensor, mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A plain run of ``tokens`` [B, T].

    Returns:
        (logits [B, T, vocab], sender outputs [B, T, N, d]); heads behind a post-norm
        (OLMo-2) report their output before it (see :mod:`.post_norms`).
    """
    cfg = model.cfg
    store: list[torch.Tensor] = []

    def keep(senders: slice, values: torch.Tensor) -> None:
        if not store:
            n = 1 + cfg.n_layers * (cfg.n_heads + 1)
            store.append(values.new_zeros(*values.shape[:2], n, cfg.d_model))
        store[0][:, :, senders] = values.to(store[0].device)  # layers may sit elsewhere

    with wired(model, on_output=keep):
        logits = model.forward(tokens, attention_mask=mask)
    return logits, store[0]


def patched_logits(model: Model, tokens: torch.Tensor, corrupted: torch.Tensor,
                   removed: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Run ``tokens`` with every removed edge carrying the sender's ``corrupted`` output.

    Args:
        tokens: [B, T]; mask: [B, T] or None.
        corrupted: [B, T, N, d] sender outputs to substitute (a corrupted run's), or
            [1, T, N, d] (e.g. means over a reference set).
        removed: [N, R] or [G, N, R] bool; with G groups the batch runs G times, group g with
            edge set ``removed[g]`` (rows ``g*B .. (g+1)*B`` of the result).

    Returns:
        logits [G * B, T, vocab].
    """
    groups = removed.shape[0] if removed.dim() == 3 else 1
    removed = removed.reshape(groups, *removed.shape[-2:])
    b, t = tokens.shape
    d = model.cfg.d_model
    n = removed.shape[1]
    post = PostNormHeads.of(model, check_model(model))
    additive = None if post is None else post.additive[:n].to(removed.device)
    # corrupted - current, sender-major so that any set of senders is a block of rows
    diff = corrupted.new_zeros(groups, n, b * t * d)
    source = corrupted.expand(b, *corrupted.shape[1:]).permute(2, 0, 1, 3)  # [N, B, T, d]
    running = corrupted.new_zeros(groups, b * t * d)  # sum of diff over senders seen so far
    seen = [0]
    sums: dict[int, torch.Tensor] = {}  # post-norm layers: current sum of the heads

    def on_output(senders: slice, values: torch.Tensor) -> None:
        values = values.to(diff.device).view(groups, b, t, -1, d)  # from the sender's device
        layer = None if post is None else post.layer_of(senders)
        if layer is not None:
            sums[layer] = post.summed(layer, values).reshape(groups, -1)
        values = values.permute(0, 3, 1, 2, 4)
        block = (source[None, senders] - values).reshape(groups, values.shape[1], -1)
        diff[:, senders] = block
        if layer is None:
            running.add_(block.sum(1))
        seen[0] = senders.stop

    def delta(receivers: slice, n_up: int) -> torch.Tensor | None:
        cut = removed[:, :n_up, receivers]  # [G, n_up, r]
        if not bool(cut.any()):
            return None
        r = cut.shape[2]
        if post is not None:  # heads through their layer's norm, the rest added
            change = post.change(cut, diff, sums, (b, t, d))
            cut = cut & additive[:n_up, None]
            rows = torch.nonzero(cut.any(0).any(1))[:, 0]
            if len(rows):
                added = torch.bmm(cut[:, rows].transpose(1, 2).to(diff.dtype), diff[:, rows])
                change = added if change is None else change + added
        else:
            change = _additive_change(cut, diff, running, n_up, seen[0])
        return change.view(groups, r, b, t, d).permute(0, 2, 3, 1, 4).reshape(groups * b, t, r, d)

    if groups > 1:
        tokens = tokens.repeat(groups, 1)
        mask = mask.repeat(groups, 1) if mask is not None else None
    with wired(model, delta=delta, on_output=on_output):
        return model.forward(tokens, attention_mask=mask)


def _additive_change(cut: torch.Tensor, diff: torch.Tensor, running: torch.Tensor, n_up: int,
                     seen: int) -> torch.Tensor:
    """[G, r, B*T*d] the summed differences of the cut senders (``cut`` [G, n_up, r]), summing
    whichever is fewer: the cut senders, or all minus the kept ones."""
    kept = ~cut
    cut_rows = torch.nonzero(cut.any(0).any(1))[:, 0]
    kept_rows = torch.nonzero(kept.any(0).any(1))[:, 0]
    if len(cut_rows) <= len(kept_rows):  # sum the few cut senders
        return torch.bmm(cut[:, cut_rows].transpose(1, 2).to(diff.dtype), diff[:, cut_rows])
    total = running - diff[:, n_up:seen].sum(1)  # all senders before n_up, minus the kept
    return total[:, None] - torch.bmm(kept[:, kept_rows].transpose(1, 2).to(diff.dtype),
                                      diff[:, kept_rows])


def receiver_gradients(model: Model, tokens: torch.Tensor,
                       objective: Callable[[torch.Tensor], torch.Tensor],
                       embeds: Sequence[torch.Tensor | None] = (None,),
                       mask: torch.Tensor | None = None
                       ) -> list[tuple[slice, int, torch.Tensor]]:
    """Gradient of ``objective(logits)`` (a scalar) at every receiver input, summed over runs.

    Args:
        objective: logits [B, T, vocab] -> scalar tensor.
        embeds: one run per entry, each with that [B, T, d] embedding (``None``: the tokens' own).

    Returns:
        ``[(receivers, n_upstream, grad [B, T, len(receivers), d]), ...]`` in forward order,
        one entry per group of receivers that read the same senders ``0 .. n_upstream-1``.
    """
    b, t = tokens.shape
    leaves: dict[int, tuple[slice, int, torch.Tensor]] = {}

    def delta(receivers: slice, n_up: int) -> torch.Tensor:
        if receivers.start not in leaves:
            zeros = torch.zeros(b, t, receivers.stop - receivers.start, model.cfg.d_model,
                                dtype=model.dtype, device=model.device, requires_grad=True)
            leaves[receivers.start] = (receivers, n_up, zeros)
        return leaves[receivers.start][2]

    totals: dict[int, torch.Tensor] = {}
    for embed in embeds:
        with torch.enable_grad(), wired(model, delta=delta, embed=embed):
            value = objective(model.forward(tokens, attention_mask=mask, grad=True))
            keys = sorted(leaves)
            grads = torch.autograd.grad(value, [leaves[k][2] for k in keys])
        for k, g in zip(keys, grads, strict=True):
            totals[k] = g if k not in totals else totals[k] + g
    return [(leaves[k][0], leaves[k][1], totals[k]) for k in sorted(totals)]
