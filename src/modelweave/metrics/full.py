"""Teacher-forced scoring of whole (multi-token) answers."""

from __future__ import annotations

import torch

from ..tasks.batch import TaskBatch


def answer_logprobs(model, batch: TaskBatch, which: str = "answers", corrupt: bool = False,
                    batch_size: int = 32) -> list[list[float]]:
    """Total log-probability of each whole answer given its prompt.

    For each example and each answer, runs prompt + answer and sums the log-probabilities of
    the answer's tokens. Returns, per example, one value per answer (``which``: ``"answers"``
    or ``"wrong"``)."""
    prompts = batch.corrupt if corrupt else batch.clean
    answers = batch.answer_tokens if which == "answers" else batch.wrong_tokens
    seqs, owners = [], []
    for i, options in enumerate(answers):
        prompt = prompts[i, : batch.lengths[i]].tolist()
        for j, answer in enumerate(options):
            seqs.append((prompt, answer))
            owners.append((i, j))
    scores = [[0.0] * len(options) for options in answers]
    pad = model.tokenization.pad_token_id if model.tokenization else 0
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        width = max(len(p) + len(a) for p, a in chunk)
        tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(tokens)
        for row, (p, a) in enumerate(chunk):
            tokens[row, : len(p) + len(a)] = torch.tensor(p + a)
            mask[row, : len(p) + len(a)] = 1
        logp = model(tokens, attention_mask=mask).float().log_softmax(-1)
        for row, (p, a) in enumerate(chunk):
            steps = torch.arange(len(p) - 1, len(p) + len(a) - 1)
            total = logp[row, steps, torch.tensor(a)].sum().item()
            i, j = owners[start + row]
            scores[i][j] = total
    return scores
