"""``evaluate``: how well a model does a task, with confidence intervals."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..tasks import Task, TaskBatch, make_batch, resolve_task
from . import scores
from .full import answer_logprobs
from .stats import Aggregate, bootstrap


@dataclass
class EvalResult:
    """A model on a task.

    Attributes:
        accuracy: top-1 accuracy (``scoring="full"``: the correct answer's whole-answer
            log-probability beats every wrong one's).
        logit_diff: mean correct-minus-wrong logit difference on clean prompts (``"full"``:
            whole-answer log-probability difference).
        logit_diff_corrupt: the same difference on the corrupted prompts; the gap between the
            two is what patching can recover.
        metric, metric_value: the task's default metric and its aggregate on clean prompts
            (with ``scoring="full"`` a ``logit_diff`` metric is the whole-answer difference;
            other metrics are read from first tokens).
        per_example: every per-example value, by name.
        dropped: examples that could not be represented for this tokenizer, by reason.
    """

    model: str
    task: str
    n: int
    scoring: str
    accuracy: Aggregate
    logit_diff: Aggregate
    logit_diff_corrupt: Aggregate
    metric: str
    metric_value: Aggregate
    dropped: dict[str, int] = field(default_factory=dict)
    per_example: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self, per_example: bool = False) -> dict:
        out = {
            "model": self.model, "task": self.task, "n": self.n, "scoring": self.scoring,
            "dropped": sum(self.dropped.values()), "dropped_reasons": self.dropped,
            "accuracy": self.accuracy.mean, "accuracy_ci": [self.accuracy.ci_low,
                                                            self.accuracy.ci_high],
            "logit_diff": self.logit_diff.mean, "logit_diff_ci": [self.logit_diff.ci_low,
                                                                  self.logit_diff.ci_high],
            "logit_diff_corrupt": self.logit_diff_corrupt.mean,
            "metric": self.metric, "metric_value": self.metric_value.mean,
        }
        if per_example:
            out["per_example"] = self.per_example
        return out


def run_batched(model, tokens: torch.Tensor, mask: torch.Tensor, batch_size: int
                ) -> torch.Tensor:
    """Logits [N, pos, vocab] of ``tokens`` [N, pos], ``batch_size`` rows at a time."""
    return torch.cat([model(tokens[i:i + batch_size], attention_mask=mask[i:i + batch_size])
                      for i in range(0, tokens.shape[0], batch_size)])


def _full_scores(model, batch: TaskBatch, corrupt: bool) -> tuple[torch.Tensor, torch.Tensor]:
    good = answer_logprobs(model, batch, "answers", corrupt)
    bad = answer_logprobs(model, batch, "wrong", corrupt)
    diff = torch.tensor([g[0] - sum(b) / len(b) for g, b in zip(good, bad, strict=True)])
    acc = torch.tensor([float(max(g) > max(b)) for g, b in zip(good, bad, strict=True)])
    return diff, acc


def evaluate(model, task: str | Task, n: int = 64, seed: int = 0, *, scoring: str = "first",
             batch_size: int = 32, corruption: str | None = None,
             exclude_training: bool = True, **params) -> EvalResult:
    """Evaluate ``model`` on ``n`` examples of ``task`` (a name, file, or Task).

    ``scoring="first"`` scores answers by their first token (one forward pass per batch);
    ``"full"`` by teacher-forced whole-answer log-probabilities (one pass per answer).

    With ``exclude_training`` (default) the prompts a fine-tune of this toolkit trained on
    (its recorded ``training_data.jsonl``) are left out; ``dropped`` counts them."""
    resolved = resolve_task(task, corruption, **params)
    batch = make_batch(model, resolved, n, seed, scoring=scoring)
    if exclude_training:
        from ..models.finetune import without_training

        batch = without_training(model, batch)
    clean = run_batched(model, batch.clean, batch.mask, batch_size)
    corrupt = run_batched(model, batch.corrupt, batch.mask, batch_size)
    if scoring == "full":
        diff, acc = _full_scores(model, batch, corrupt=False)
        diff_corrupt, _ = _full_scores(model, batch, corrupt=True)
    else:
        diff, acc = scores.logit_diff(clean, batch), scores.accuracy(clean, batch)
        diff_corrupt = scores.logit_diff(corrupt, batch)
    value = scores.metric_fn(resolved.metric)(clean, batch)
    if scoring == "full" and resolved.metric == "logit_diff":
        value = diff  # whole-answer difference; other metrics stay first-token
    per_example = {"logit_diff": diff.tolist(), "accuracy": acc.tolist(),
                   "logit_diff_corrupt": diff_corrupt.tolist(), resolved.metric: value.tolist()}
    return EvalResult(
        model=model.name, task=resolved.name, n=len(batch), scoring=scoring,
        accuracy=bootstrap(acc, seed=seed), logit_diff=bootstrap(diff, seed=seed),
        logit_diff_corrupt=bootstrap(diff_corrupt, seed=seed), metric=resolved.metric,
        metric_value=bootstrap(value, seed=seed), dropped=batch.dropped,
        per_example=per_example,
    )
