"""Bag of heuristics (Nikankin et al. 2024): the MLP neurons that do arithmetic, and the simple
heuristics (operand ranges, residues, digit patterns...) each implements.

- :mod:`.prompts`: correctly answered ``"{x}{op}{y}="`` prompts with counterfactuals; grids.
- :mod:`.localize`: heads and MLPs by position (Eq. 1 effect), the faithfulness-vs-heads curve.
- :mod:`.neurons`: neuron attribution, exact confirmation, the decodable layer, top-k curves.
- :mod:`.maps`: key and key-value maps over an operand grid.
- :mod:`.classify`: matching maps against heuristic families (:func:`classify_map`).
- :mod:`.nulls`: the same classification of random neurons of the same layers, the base model
  and prompt-permuted maps; enrichment with p-values.
- :mod:`.knockout`: zero-ablation of one heuristic's neurons, per-prompt knockouts.
- :mod:`.pipeline`: all of it for one model (:func:`.pipeline.find_heuristics`).
"""

from .classify import (
    DEFAULT_MODS,
    PAPER_MODS,
    HeuristicCandidates,
    HeuristicMatch,
    HeuristicSet,
    build_candidates,
    classify_map,
    classify_maps,
    heuristic_sets,
)

__all__ = ["DEFAULT_MODS", "PAPER_MODS", "HeuristicCandidates", "HeuristicMatch", "HeuristicSet",
           "build_candidates", "classify_map", "classify_maps", "heuristic_sets"]
