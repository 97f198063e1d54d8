"""Per-example metrics on a :class:`~modelweave.tasks.TaskBatch`.

Every function returns a [N] tensor (one value per example) read at each prompt's last token
(``batch.lengths - 1``); aggregate and normalise with :mod:`modelweave.metrics.stats`.

- ``logit_diff``: logit of the correct answer's first token minus the mean logit of the wrong
  answers' first tokens.
- ``prob_diff``: probability mass on the correct first tokens minus the mass on the wrong ones
  (each token counted once; greater-than's "years above minus years at or below").
- ``logprob``: log-probability of the correct answer's first token.
- ``accuracy``: 1 where the top-1 token is a correct first token.
- ``kl``: KL(reference || run) of the next-token distributions, e.g. the unpatched model as
  reference.
- ``normalized_logit``: logit of the correct answer's first token over the largest logit
  (Nikankin et al. 2024, Eq. 2's NL).

:func:`prob_change_effect` is the effect of an intervention of their Eq. 1.
"""

from __future__ import annotations

import torch

from ..tasks.batch import TaskBatch
from .functional import kl_divergence, top1_accuracy


def final_logits(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[N, pos, vocab] -> [N, vocab] at each example's last prompt token."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return at_least_float32(logits[rows, batch.lengths.to(logits.device) - 1])


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is in a lower precision (bf16, fp16); float64 stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _gather(values: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """values [N, vocab], ids [N, K] padded with -1 -> ([N, K] gathered, [N, K] mask)."""
    ids = ids.to(values.device)
    mask = ids >= 0
    return values.gather(1, ids.clamp(min=0)), mask


def _set_mask(ids: torch.Tensor, vocab: int, device) -> torch.Tensor:
    """[N, K] ids (-1 padded) -> [N, vocab] boolean membership (duplicates count once)."""
    ids = ids.to(device)
    member = torch.zeros(ids.shape[0], vocab + 1, dtype=torch.bool, device=device)
    member.scatter_(1, torch.where(ids >= 0, ids, vocab), True)
    return member[:, :vocab]


def logit_diff(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[N] correct-answer logit minus the mean wrong-answer logit."""
    last = final_logits(logits, batch)
    correct = last.gather(1, batch.answers.to(last.device)[:, None])[:, 0]
    wrong, mask = _gather(last, batch.wrong_ids)
    return correct - (wrong * mask).sum(1) / mask.sum(1).clamp(min=1)


def prob_diff(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[N] probability mass on correct first tokens minus mass on wrong ones."""
    probs = final_logits(logits, batch).softmax(-1)
    vocab = probs.shape[1]
    correct = (probs * _set_mask(batch.answer_ids, vocab, probs.device)).sum(1)
    wrong = (probs * _set_mask(batch.wrong_ids, vocab, probs.device)).sum(1)
    return correct - wrong


def logprob(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[N] log-probability of the main answer's first token."""
    logp = final_logits(logits, batch).log_softmax(-1)
    return logp.gather(1, batch.answers.to(logp.device)[:, None])[:, 0]


def accuracy(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[N] 1.0 where the top-1 next token is a correct first token, else 0.0
    (:func:`~modelweave.metrics.functional.top1_accuracy`)."""
    return top1_accuracy(final_logits(logits, batch), batch.answer_ids)


def normalized_logit(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[N] NL = logit[answer] / max_v logit[v] at each prompt's last token (1 when the answer
    is the top logit and logits are positive)."""
    last = final_logits(logits, batch)
    correct = last.gather(1, batch.answers.to(last.device)[:, None])[:, 0]
    return correct / last.max(-1).values


def prob_change_effect(base: torch.Tensor, patched: torch.Tensor, answer: torch.Tensor,
                       counterfactual: torch.Tensor) -> torch.Tensor:
    """Nikankin et al. 2024, Eq. 1: how far an intervention moves the next-token distribution
    from the answer ``r`` to the counterfactual answer ``r'``:

        E = 1/2 [ (P*(r') - P(r')) / P(r')  +  (P(r) - P*(r)) / P*(r) ]

    Args:
        base, patched: [..., N, vocab] logits before (P) and after (P*) the intervention
            (``base`` may omit the leading axes; it broadcasts).
        answer, counterfactual: [N] token ids of r and r'.

    Returns:
        [..., N] per-prompt effects (0 when nothing changes; large when P*(r) collapses).
    """
    p, q = at_least_float32(base).softmax(-1), at_least_float32(patched).softmax(-1)
    r, rc = answer.to(q.device)[:, None], counterfactual.to(q.device)[:, None]

    def at(probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return probs.gather(-1, ids.expand(*probs.shape[:-1], 1))[..., 0]

    p_r, p_rc = at(p, r), at(p, rc)
    q_r, q_rc = at(q, r), at(q, rc)
    return 0.5 * ((q_rc - p_rc) / p_rc + (p_r - q_r) / q_r)


def kl(logits: torch.Tensor, batch: TaskBatch, reference: torch.Tensor) -> torch.Tensor:
    """[N] KL(reference || run) between next-token distributions (reference: [N, pos, vocab]
    logits of e.g. the unpatched model; :func:`~modelweave.metrics.functional.kl_divergence`)."""
    return kl_divergence(final_logits(reference, batch), final_logits(logits, batch))


METRICS = {"logit_diff": logit_diff, "prob_diff": prob_diff, "logprob": logprob,
           "accuracy": accuracy, "normalized_logit": normalized_logit}


def metric_on_last(name: str, last: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """A metric on logits already taken at the prompts' last token.

    Args:
        name: a metric name, or a callable ``f(last [groups, N, vocab]) -> [groups, N]``
            (e.g. an effect measured against a base run).
        last: [groups * N, vocab]: ``groups`` stacked copies of the batch (as patching sweeps
            run them).

    Returns:
        [groups, N] per-example values.
    """
    n = len(batch)
    groups = last.shape[0] // n
    if callable(name):
        return name(last.view(groups, n, -1))
    view = TaskBatch(**{**batch.__dict__, "lengths": torch.ones(groups * n, dtype=torch.long),
                        "answer_ids": batch.answer_ids.repeat(groups, 1),
                        "wrong_ids": batch.wrong_ids.repeat(groups, 1)})
    return metric_fn(name)(last[:, None], view).view(groups, n)


def metric_fn(name: str):
    """A metric by name (``kl`` needs a reference and is called directly)."""
    from ..tasks import TaskError

    if name not in METRICS:
        raise TaskError(f"unknown metric {name!r}; metrics: {', '.join(METRICS)}, kl")
    return METRICS[name]
