"""The induction circuit (previous-token head -> induction head, by K-composition), found three
independent ways and checked against each other:

1. **Head roles** (:func:`modelweave.methods.head_roles.pattern_scores`, on repeated random
   tokens): the previous-token head is the head of the highest ``previous_token`` score in a
   layer before the induction head, the induction head the one of the highest ``induction``
   score in a layer after the first.
2. **K-composition** (:mod:`.composition`, weights only): the pair (earlier head, later head)
   of the highest K-composition score.
3. **EAP-IG** (:func:`modelweave.circuits.edge_attribution` on ``toy_induction``): the induction
   head is the head whose edge into the logits has the largest score, the previous-token head
   the earlier head whose edge into the induction head's *key* input has the largest score.

``agree`` is true when all three name the same two heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models import Model
from ..tasks.toy import toy_meta
from ..tasks.toy_data import ToyModelError
from .composition import CompositionScores, composition_scores

METHODS = ("head_roles", "k_composition", "eap_ig")


@dataclass
class InductionCircuit:
    """Per method, ``(layer, head)`` of the previous-token head and of the induction head.

    Attributes:
        previous_token, induction: method -> (layer, head).
        evidence: method -> the deciding numbers (scores of the chosen heads and the runner-up).
        accuracy: the model's accuracy on ``toy_induction`` (the batch EAP-IG used).
    """

    model: str
    previous_token: dict[str, tuple[int, int]]
    induction: dict[str, tuple[int, int]]
    evidence: dict[str, dict] = field(default_factory=dict)
    accuracy: float | None = None

    @property
    def agree(self) -> bool:
        return (len(set(self.previous_token.values())) == 1
                and len(set(self.induction.values())) == 1)

    def to_dict(self) -> dict:
        return {"model": self.model, "agree": self.agree, "accuracy": self.accuracy,
                "previous_token": {k: list(v) for k, v in self.previous_token.items()},
                "induction": {k: list(v) for k, v in self.induction.items()},
                "evidence": self.evidence}


def _argmax(grid: torch.Tensor, layers: range) -> tuple[int, int, float, float]:
    """(layer, head, best, runner-up) of ``grid`` [layer, head] restricted to ``layers``."""
    sub = grid[list(layers)]
    flat = sub.flatten()
    order = flat.argsort(descending=True)
    i = int(order[0])
    second = float(flat[order[1]]) if len(flat) > 1 else float("nan")
    return layers[i // grid.shape[1]], i % grid.shape[1], float(flat[i]), second


def by_head_roles(model: Model, length: int, seed: int = 0) -> tuple[tuple, tuple, dict]:
    from ..methods.head_roles import pattern_scores

    roles = pattern_scores(model, batch=16, length=length, seed=seed)
    n = model.cfg.n_layers
    il, ih, ind, ind2 = _argmax(roles["induction"], range(1, n))
    pl, ph, prev, prev2 = _argmax(roles["previous_token"], range(0, il))
    return (pl, ph), (il, ih), {"previous_token": prev, "previous_token_runner_up": prev2,
                                "induction": ind, "induction_runner_up": ind2,
                                "scores": {k: v.tolist() for k, v in roles.items()}}


def by_composition(comp: CompositionScores) -> tuple[tuple, tuple, dict]:
    (la, ha, lb, hb, best), (*_, second) = comp.top("k", 2)
    return (la, ha), (lb, hb), {"k_composition": best, "runner_up": second,
                                "baseline": comp.baseline["k"]}


def by_eap_ig(model: Model, batch, steps: int = 5) -> tuple[tuple, tuple, dict]:
    from ..circuits import edge_attribution

    circuit = edge_attribution(model, batch, method="eap-ig", steps=steps)
    g, scores = circuit.graph, circuit.scores
    H, L = g.n_heads, g.n_layers
    to_logits = torch.tensor([[float(scores[g.head(la, h), g.logits_receiver])
                               for h in range(H)] for la in range(L)])
    il, ih, ind, ind2 = _argmax(to_logits.abs(), range(1, L))
    key = g.qkv_receivers(il).start + H + ih
    into_key = torch.zeros(L, H)
    for la in range(il):
        for h in range(H):
            into_key[la, h] = float(scores[g.head(la, h), key])
    pl, ph, prev, prev2 = _argmax(into_key.abs(), range(0, il))
    return (pl, ph), (il, ih), {"edge_to_logits": ind, "runner_up_to_logits": ind2,
                                "edge_into_key": prev, "runner_up_into_key": prev2,
                                "to_logits": to_logits.tolist(), "into_key": into_key.tolist()}


def induction_circuit(model: Model, *, n: int = 32, seed: int = 0, steps: int = 5,
                      task_params: dict | None = None) -> InductionCircuit:
    """Find the previous-token and induction heads by head roles, K-composition and EAP-IG.

    Args:
        n: ``toy_induction`` prompts for EAP-IG and the accuracy.
        task_params: the task's parameters (default: the checkpoint's, when it is a toy model;
            else ``toy_induction``'s defaults).
    """
    from ..metrics import evaluate
    from ..tasks import get_task, make_batch

    if model.cfg.n_layers < 2:
        raise ToyModelError(f"an induction circuit needs at least two layers; {model.name} has "
                            f"{model.cfg.n_layers}")
    meta = toy_meta(model) or {}
    params = task_params or (meta.get("task_params") if meta.get("task") == "induction" else {})
    task = get_task("toy_induction", **(params or {}))
    length = task.params["length"]
    prev, ind, evidence = {}, {}, {}
    prev["head_roles"], ind["head_roles"], evidence["head_roles"] = by_head_roles(
        model, length, seed)
    comp = composition_scores(model)
    prev["k_composition"], ind["k_composition"], evidence["k_composition"] = by_composition(comp)
    batch = make_batch(model, task, n=n, seed=seed)
    prev["eap_ig"], ind["eap_ig"], evidence["eap_ig"] = by_eap_ig(model, batch, steps)
    accuracy = evaluate(model, task, n=n, seed=seed).accuracy.mean
    return InductionCircuit(model.name, prev, ind, evidence, float(accuracy))
