"""Training-data attribution with EK-FAC influence functions (Grosse et al. 2023; Ruis et al.
2024), over kronfluence: which training documents a model's completion depends on.

- :mod:`.data`: documents (JSONL, text, parquet) and queries (tasks, task files, JSONL);
- :mod:`.modules`: the tracked linear modules, named through the model's adapter;
- :mod:`.kron`: the causal-LM task (summed losses; the completion's log-probability);
- :mod:`.settings`: how a run is computed; :mod:`.costs`: its memory and time estimates;
- :mod:`.engine`: the plan (keys, estimates) and the staged run;
- :mod:`.scores`: the [queries x documents] result, ``top``, aggregates, save/load;
- :mod:`.analysis`: the study's analyses (correlations with permutation tests,
  concentration, answers and categories in top documents, source retrieval);
- :mod:`.train`: fine-tuning on a document corpus (the study's model);
- :mod:`.baselines`: BM25, IDF word overlap, the cosine-normalised gradient baseline;
- :mod:`.evaluate`: source retrieval of every method with bootstrap intervals, and the
  correlation of predicted with retrained loss changes;
- :mod:`.groundtruth`: leave-k-out retraining (and a small model cheap enough for it).

kronfluence is an optional dependency (``pip install 'modelweave[influence]'``); importing this
package does not need it, running the engine does.
"""

from .analysis import (
    answer_in_top,
    category_counts,
    concentration_curve,
    pair_contrast_test,
    power_law_slope,
    query_correlations,
    source_hit_rate,
    task_correlation_test,
)
from .data import (
    Document,
    InfluenceError,
    Query,
    load_documents,
    resolve_queries,
)
from .engine import (
    Plan,
    compute_influence,
    plan_influence,
    run_influence,
)
from .modules import resolve_modules
from .scores import InfluenceScores, TopDocument, top_share
from .settings import InfluenceSettings

__all__ = ["Document", "InfluenceError", "InfluenceScores", "InfluenceSettings", "Plan", "Query",
           "TopDocument", "answer_in_top", "category_counts", "compute_influence",
           "concentration_curve", "load_documents", "pair_contrast_test",
           "plan_influence", "power_law_slope", "query_correlations", "resolve_modules",
           "resolve_queries", "run_influence", "source_hit_rate", "task_correlation_test",
           "top_share"]
