"""Faithfulness of node circuits (heads, MLPs, neuron subsets) under mean ablation.

Nikankin et al. 2024, Eq. 2, with a metric m per prompt (default the normalised logit
``NL = logit[answer] / max logit``):

    F(C) = mean_i [ (m_i(C) - m_i(∅)) / (m_i(M) - m_i(∅)) ]        (order="per_prompt")

where M is the model and ∅ the empty circuit (every head and MLP mean-ablated). The paper
averages per prompt, after the ratio; ``order="mean_then_ratio"`` divides the means instead (as
MIB does), which is steadier when a prompt's m(M) - m(∅) is small. In the per-prompt order a
prompt whose m(M) equals m(∅) (NL is 1 for both when the empty circuit still ranks the answer
first) has no defined ratio and is left out of the mean; ``n_undefined`` counts them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..metrics import faithfulness
from ..metrics.functional import normalizable, top1_accuracy
from ..metrics.scores import final_logits, metric_fn
from ..models import Model
from ..tasks import TaskBatch
from .nodes import NodeCircuit, PositionMeans, ablated


class NodeEvaluator:
    """Evaluates node circuits on one batch: the model's and the empty circuit's metric are
    computed once.

    Args:
        batch: prompts (``batch.clean``), answers; prompts may differ in length.
        means: reference means (:func:`~modelweave.circuits.nodes.position_means`).
        metric: a metric name of :mod:`modelweave.metrics.scores` (default
            ``normalized_logit``).
        order: ``"per_prompt"`` (the paper) or ``"mean_then_ratio"``.
        batch_size: prompts per forward pass.
    """

    def __init__(self, model: Model, batch: TaskBatch, means: PositionMeans, *,
                 metric: str = "normalized_logit", order: str = "per_prompt",
                 batch_size: int = 64):
        self.model, self.batch, self.means = model, batch, means
        self.metric, self.order, self.batch_size = metric_fn(metric), order, batch_size
        self.full = self.values(NodeCircuit.full(model))
        self.empty = self.values(NodeCircuit())

    def last_logits(self, circuit: NodeCircuit,
                    extra: list[tuple[str, Callable]] | None = None) -> torch.Tensor:
        """[N, vocab] logits at each prompt's last token with ``circuit`` (plus any ``extra``
        hooks, e.g. a knockout)."""
        b, out = self.batch, []
        for _, part in b.chunks(self.batch_size):
            tokens, mask = part.clean, part.mask
            with ablated(self.model, circuit, self.means, part.lengths, tokens.shape[1]), \
                    self.model.hooks(extra or []):
                logits = self.model(tokens, attention_mask=mask)
            out.append(final_logits(logits, part))
        return torch.cat(out)

    def values(self, circuit: NodeCircuit,
               extra: list[tuple[str, Callable]] | None = None) -> torch.Tensor:
        """[N] the metric per prompt with ``circuit``."""
        last = self.last_logits(circuit, extra)
        return self.metric(last[:, None], _last_view(self.batch)).cpu()

    @property
    def n_undefined(self) -> int:
        """Prompts whose m(M) equals m(∅) (left out of per-prompt means)."""
        return int((~self._defined).sum())

    @property
    def _defined(self) -> torch.Tensor:
        return normalizable(self.full, self.empty)

    def faithfulness(self, circuit: NodeCircuit) -> float:
        """F(circuit) in this evaluator's averaging order."""
        values = self.values(circuit)
        if self.order == "per_prompt":
            keep = self._defined
            if not keep.any():
                return float("nan")
            return faithfulness(values[keep], self.full[keep], self.empty[keep], self.order)
        return faithfulness(values, self.full, self.empty, self.order)

    def accuracy(self, circuit: NodeCircuit,
                 extra: list[tuple[str, Callable]] | None = None) -> torch.Tensor:
        """[N] 1.0 where the circuit's top-1 next token is the answer's first token."""
        return top1_accuracy(self.last_logits(circuit, extra), self.batch.answers).cpu()


def _last_view(batch: TaskBatch) -> TaskBatch:
    """The batch seen by metrics that read position 0 of [N, 1, vocab] logits."""
    return TaskBatch(**{**batch.__dict__, "lengths": torch.ones(len(batch), dtype=torch.long)})
