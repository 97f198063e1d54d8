"""How an influence run is computed: :class:`InfluenceSettings` (read by the plan, the cost
estimates and the staged run)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InfluenceSettings:
    """How influence is computed. Batch sizes and threads are explicit: kronfluence would
    otherwise probe batch sizes by catching out-of-memory errors, which kills a CPU process.

    Attributes:
        modules: ``"mlp"`` (default, the papers'), ``"all"`` (every linear map in the blocks)
            or a list of module paths; ``layers`` restricts ``"mlp"``/``"all"`` to blocks.
        damping: absolute damping; ``None``: 0.1 x the mean EK-FAC eigenvalue (the papers').
        max_tokens: documents are cut to this many tokens.
        train_batch: documents per batch in every stage; query_batch: queries per batch.
        query_rank: rank of the low-rank query gradients (``None``: full rank).
        lambda_max_examples: documents used to fit the eigenvalue corrections (``None``: all).
        covariance_max_examples: documents used for the covariances (``None``: all).
        threads: torch threads (``None``: as set); eigen_threads: threads of the fp64
            eigendecomposition (1: it does not stall beside another busy process).
        baseline: also compute the plain-gradient (TracIn-style) dot product.
        max_memory_gb: refuse a run whose estimated peak exceeds this (``None``: the memory
            available now).
    """

    modules: str | list[str] = "mlp"
    layers: list[int] | None = None
    damping: float | None = None
    max_tokens: int = 256
    train_batch: int = 4
    query_batch: int = 8
    query_rank: int | None = 32
    lambda_max_examples: int | None = 512
    covariance_max_examples: int | None = None
    threads: int | None = None
    eigen_threads: int = 1
    baseline: bool = True
    seed: int = 0
    max_memory_gb: float | None = None

    def factor_part(self) -> dict:
        """The settings that change factors (part of the factor key)."""
        return {k: getattr(self, k) for k in ("max_tokens", "lambda_max_examples",
                                               "covariance_max_examples", "seed")}

    def score_part(self) -> dict:
        return {k: getattr(self, k) for k in ("damping", "query_rank")}
