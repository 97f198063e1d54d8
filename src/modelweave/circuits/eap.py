"""Edge attribution patching: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024).

The effect of corrupting edge ``s -> r`` is estimated to first order as

    score(s -> r) = mean over prompts of  sum over positions of  (clean_s - corrupted_s) · g_r

where ``clean_s``/``corrupted_s`` are sender ``s``'s outputs in the clean and corrupted runs and
``g_r`` is the gradient of the metric at receiver ``r``'s input. EAP takes ``g_r`` in the clean
run. EAP-IG averages it over ``steps`` runs whose input embeddings move from the corrupted to
the clean ones, ``emb = corrupted + (k / steps) (clean - corrupted)`` for ``k = 0 .. steps-1``
(integrated gradients on the inputs, as EAP-IG's "EAP-IG-inputs" and the MIB baseline).

Per batch this is 2 forward passes for the sender outputs, ``steps`` forward+backward passes
for the gradients (accumulated over steps before the one contraction with the differences).
The scores match EAP-IG's up to sign convention: theirs attribute the loss ``-metric`` and
divide once more by the batch size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models import Model
from ..tasks import TaskBatch
from .circuit import Circuit
from .graph import CircuitError
from .objective import check_metric, per_example
from .runs import receiver_gradients, sender_outputs
from .wiring import check_model

METHODS = ("eap", "eap-ig")


def chunks(batch: TaskBatch, size: int) -> list[TaskBatch]:
    """The batch split into consecutive sub-batches of at most ``size`` prompts."""
    return [batch.select(slice(i, i + size)) for i in range(0, len(batch), size)]


def edge_attribution(model: Model, batch: TaskBatch, *, method: str = "eap-ig",
                     steps: int = 5, metric: str = "logit_diff", batch_size: int = 16,
                     progress: Callable[[int], None] | None = None) -> Circuit:
    """Score every edge of the model's graph with EAP or EAP-IG.

    Args:
        method: ``"eap"`` or ``"eap-ig"``.
        steps: integration steps of EAP-IG (ignored by EAP).
        metric: a task metric or ``"kl"`` (see :mod:`.objective`).
        batch_size: prompts per pass (bounds memory: the sender outputs take
            ``2 * batch_size * pos * n_senders * d_model`` floats).
        progress: called with 1 after every forward+backward pass.

    Returns:
        a :class:`Circuit` with ``scores`` set and no edges chosen yet (use ``.top(n)``).
    """
    if method not in METHODS:
        raise CircuitError(f"unknown attribution method {method!r}; use one of {METHODS}")
    if steps < 1:
        raise CircuitError("steps must be at least 1")
    check_metric(metric)
    graph = check_model(model)
    n_steps = 1 if method == "eap" else steps
    scores = torch.zeros(graph.n_senders, graph.n_receivers, dtype=torch.float32,
                         device=model.device)
    for part in chunks(batch.to(model.device), batch_size):
        clean_logits, clean = sender_outputs(model, part.clean, part.mask)
        _, corrupted = sender_outputs(model, part.corrupt, part.mask)
        reference = clean_logits[torch.arange(len(part)), part.lengths - 1]

        def objective(logits, part=part, reference=reference):
            return per_example(metric, logits, part, reference).sum()

        if method == "eap":
            embeds = [None]
        else:
            start, end = corrupted[:, :, 0], clean[:, :, 0]
            embeds = [start + (k / steps) * (end - start) for k in range(steps)]
        diff = clean - corrupted
        del clean, corrupted
        for receivers, n_up, grad in receiver_gradients(model, part.clean, objective, embeds,
                                                        part.mask):
            scores[:n_up, receivers] += torch.einsum(
                "btnd,btrd->nr", diff[:, :, :n_up].float(), grad.float())
        if progress:
            progress(len(embeds))
    scores /= len(batch) * n_steps
    return Circuit(graph, scores.cpu(), torch.zeros_like(scores, dtype=torch.bool, device="cpu"),
                   model=model.name, task=batch.task, method=method,
                   params={"steps": n_steps, "metric": metric, "n_prompts": len(batch)})
