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
The scores equal EAP-IG's (hannamw/EAP-IG, with its usual loss ``-metric`` averaged over the
batch) times the batch size, with the same sign: theirs take ``(corrupted_s - clean_s)`` and
the gradient of ``-mean metric``. ``tests/test_reference.py`` checks both methods against a
plain per-edge computation on every family's tiny model.
"""

from __future__ import annotations

import torch

from ..models import Model
from ..names import EAP_METHODS
from ..progress import Progress, Steps
from ..tasks import TaskBatch
from .circuit import Circuit
from .gradients import receiver_gradients
from .graph import CircuitError
from .objective import check_metric, per_example
from .post_norms import sender_differences
from .runs import embeddings, sender_outputs
from .wiring import check_model

METHODS = EAP_METHODS
#: per-prompt edge scores kept by ``edge_attribution(per_prompt=True)`` take at most this many
#: bytes (256 MiB); beyond it prompts are grouped into units
UNIT_BYTES = 256 * 2 ** 20


def _differing_suffix(batch: TaskBatch) -> torch.Tensor:
    """[B, T] bool: real tokens at or after the first position where clean and corrupt differ
    (earlier activations are identical in both runs, so their differences are exactly 0)."""
    differ = batch.clean != batch.corrupt
    first = torch.where(differ.any(1), differ.float().argmax(1), batch.clean.shape[1])
    positions = torch.arange(batch.clean.shape[1], device=batch.clean.device)
    return (positions[None] >= first[:, None]) & batch.mask.bool()


def chunks(batch: TaskBatch, size: int) -> list[TaskBatch]:
    """The batch split into consecutive sub-batches of at most ``size`` prompts."""
    return [batch.select(slice(i, i + size)) for i in range(0, len(batch), size)]


def edge_attribution(model: Model, batch: TaskBatch, *, method: str = "eap-ig",
                     steps: int = 5, metric: str = "logit_diff", batch_size: int = 16,
                     per_prompt: bool = False, max_unit_bytes: int = UNIT_BYTES,
                     progress: Progress = None) -> Circuit:
    """Score every edge of the model's graph with EAP or EAP-IG.

    Args:
        method: ``"eap"`` or ``"eap-ig"``.
        steps: integration steps of EAP-IG (ignored by EAP).
        metric: a task metric or ``"kl"`` (see :mod:`.objective`).
        batch_size: prompts per pass (bounds memory: the sender outputs take
            ``2 * batch_size * pos * n_senders * d_model`` floats).
        per_prompt: also keep the scores summed over each resampling unit of prompts
            (``circuit.unit_scores`` [U, n_senders, n_receivers] float32 on the CPU; one
            prompt per unit, or ``circuit.params["unit_size"]`` consecutive prompts when one
            per prompt would take more than ``max_unit_bytes``), for
            :func:`~.uncertainty.edge_stability`. ``scores`` is then the units' sum over N
            (equal to the one contraction up to float rounding).
        progress: phase ``"score"``: prompts done (each after its ``steps`` passes, EAP 1).

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
    done = Steps(progress, "score", len(batch))
    unit_size, units = 1, None
    if per_prompt:
        per_unit = graph.n_senders * graph.n_receivers * 4
        unit_size = max(1, -(-len(batch) * per_unit // max(1, max_unit_bytes)))
        units = torch.zeros(-(-len(batch) // unit_size), graph.n_senders, graph.n_receivers)
    first_prompt = 0
    for part in chunks(batch.to(model.device), batch_size):
        # the pass the gradients are taken in first (EAP: clean; EAP-IG: k = 0, the corrupted
        # inputs) also reports its sender outputs, so only the other run is a separate pass
        recorded: list[torch.Tensor] = []

        def keep(senders: slice, values: torch.Tensor, store=recorded) -> None:
            if not store:
                store.append(values.new_zeros(*values.shape[:2], graph.n_senders, values.shape[-1]))
            store[0][:, :, senders] = values.to(store[0].device)

        if method == "eap":
            embeds, reference = [None], None
            other = sender_outputs(model, part.corrupt, part.mask)[1]  # logits not kept
        else:
            clean_logits, other = sender_outputs(model, part.clean, part.mask)
            reference = clean_logits[torch.arange(len(part)), part.lengths - 1]
            start, end = embeddings(model, part.corrupt, part.mask), other[:, :, 0]
            embeds = [start + (k / steps) * (end - start) for k in range(steps)]

        def objective(logits, part=part, reference=reference):
            ref = reference if reference is not None else logits.detach()[
                torch.arange(len(part)), part.lengths - 1]
            return per_example(metric, logits, part, ref).sum()

        # before the first token where the prompts differ, clean and corrupted runs are equal
        active = _differing_suffix(part)
        grads = receiver_gradients(model, part.clean, objective, embeds, part.mask, keep, active)
        clean, corrupted = (recorded[0], other) if method == "eap" else (other, recorded[0])
        # sender-major [N, K*d] over the K active tokens: each receiver group's senders are
        # a contiguous block of rows
        # heads behind a post-norm (OLMo-2) reach the residual through it
        # a difference of two bf16/fp16 values is exact to the dtype's relative precision; it
        # goes to float32 (active tokens only, to spare memory) before anything is summed
        diff = sender_differences(model, graph, clean, clean - corrupted)
        diff = diff[active].float().transpose(0, 1).reshape(graph.n_senders, -1)
        del clean, corrupted, other, recorded[:]
        # each prompt's active tokens are consecutive columns (row-major (batch, position))
        ends = (active.sum(1).cumsum(0) * model.cfg.d_model).tolist()
        for receivers, n_up, grad in grads:
            grad = grad.transpose(0, 1).reshape(grad.shape[1], -1)  # [R, K*d]
            if units is None:
                scores[:n_up, receivers] += diff[:n_up] @ grad.T
                continue
            for b, (lo, hi) in enumerate(zip([0, *ends[:-1]], ends, strict=True)):
                term = diff[:n_up, lo:hi] @ grad[:, lo:hi].T
                units[(first_prompt + b) // unit_size, :n_up, receivers] += term.cpu()
        first_prompt += len(part)
        done.advance(len(part))
    if units is not None:
        units /= n_steps
        scores = units.sum(0).to(scores.device) * n_steps
    scores /= len(batch) * n_steps
    params = {"steps": n_steps, "metric": metric, "n_prompts": len(batch)}
    if units is not None:
        params["unit_size"] = unit_size
    circuit = Circuit(graph, scores.cpu(), torch.zeros_like(scores, dtype=torch.bool,
                                                            device="cpu"),
                      model=model.name, task=batch.task, method=method, params=params)
    circuit.unit_scores = units
    return circuit
