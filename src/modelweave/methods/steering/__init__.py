"""Vectors that steer: function vectors (Todd et al. 2023), contrastive steering vectors
(Rimsky et al. 2023) and directional ablation (Arditi et al. 2024).

Modules: :mod:`.vectors` (contrastive directions), :mod:`.ablation` (directional ablation by
hooks and by weight edits), :mod:`.fv` (function vectors: head means, indirect effects, the
vector), :mod:`.fv_eval` (its evaluation on held-out words, beside random-head FVs) and
:mod:`.controls` (equal-norm random vectors and random ablated directions beside a vector's
effect, with bootstrap intervals over prompts). Adding a vector at absolute positions and
KV-cached generation are the model's own (``model.steer``, ``model.generate``:
:mod:`modelweave.models.steering`, :mod:`modelweave.models.generation`); ``steer``,
``generate`` and ``Generation`` are re-exported here.
"""

from ...models.generation import Generation, generate
from ...models.steering import steer
from .ablation import ablate_direction, ablate_weights, save_ablated
from .controls import NullResult, ablation_null, steering_null
from .fv_eval import FVRun, run_function_vectors
from .vectors import SteeringVectors, contrastive_vectors, load_pairs_file

__all__ = ["FVRun", "Generation", "NullResult", "SteeringVectors", "ablate_direction",
           "ablate_weights", "ablation_null", "contrastive_vectors", "generate",
           "load_pairs_file", "run_function_vectors", "save_ablated", "steer", "steering_null"]
