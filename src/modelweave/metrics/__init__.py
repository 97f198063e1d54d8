"""Metrics on task batches: per-example scores, bootstrap aggregates, faithfulness, and
``evaluate``; plain tensor functions (KL, top-1 accuracy, normalisation) in
:mod:`.functional`."""

from .evaluate import EvalResult, evaluate
from .full import answer_logprobs
from .functional import kl_divergence, normalize, top1_accuracy
from .scores import METRICS, accuracy, final_logits, kl, logit_diff, logprob, metric_fn, prob_diff
from .stats import Aggregate, bootstrap, faithfulness, per_prompt_faithfulness

__all__ = ["METRICS", "Aggregate", "EvalResult", "accuracy", "answer_logprobs", "bootstrap",
           "evaluate", "faithfulness", "final_logits", "kl", "kl_divergence", "logit_diff",
           "logprob", "metric_fn", "normalize", "per_prompt_faithfulness", "prob_diff",
           "top1_accuracy"]
