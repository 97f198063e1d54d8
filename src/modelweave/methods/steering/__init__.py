"""Vectors that steer: function vectors (Todd et al. 2023), contrastive steering vectors
(Rimsky et al. 2023) and directional ablation (Arditi et al. 2024).

Modules: :mod:`.apply` (adding vectors at absolute positions), :mod:`.generation` (KV-cached
generation under hooks), :mod:`.vectors` (contrastive directions), :mod:`.ablation`
(directional ablation by hooks and by weight edits), :mod:`.fv` (function vectors: head means,
indirect effects, the vector) and :mod:`.fv_eval` (its evaluation).
"""

from .apply import steer
from .generation import Generation, generate

__all__ = ["Generation", "generate", "steer"]
