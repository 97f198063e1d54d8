"""Metrics on task batches: per-example scores, bootstrap aggregates, faithfulness, and
``evaluate``; plain tensor functions (KL, top-1 accuracy, normalisation) in
:mod:`.functional`; resampling over prompts and seeds and the stability of found sets in
:mod:`.uncertainty`; matched nulls and observed-versus-null comparisons in :mod:`.nulls`."""

from .evaluate import EvalResult, evaluate
from .full import answer_logprobs
from .functional import kl_divergence, normalize, top1_accuracy
from .nulls import NullComparison, NullError, compare, matched_components, matched_draws
from .scores import METRICS, accuracy, final_logits, kl, logit_diff, logprob, metric_fn, prob_diff
from .stats import Aggregate, bootstrap, faithfulness, per_prompt_faithfulness
from .uncertainty import (
                          Band,
                          ResamplingError,
                          Stability,
                          across_seeds,
                          bootstrap_curve,
                          bootstrap_stat,
                          stability,
)

__all__ = ["Aggregate", "Band", "EvalResult", "METRICS", "NullComparison", "NullError",
           "ResamplingError", "Stability", "accuracy", "across_seeds", "answer_logprobs",
           "bootstrap", "bootstrap_curve", "bootstrap_stat", "compare", "evaluate",
           "faithfulness", "final_logits", "kl", "kl_divergence", "logit_diff", "logprob",
           "matched_components", "matched_draws", "metric_fn", "normalize",
           "per_prompt_faithfulness", "prob_diff", "stability", "top1_accuracy"]
