"""Comparing circuits: across tasks of one model, across models, base vs fine-tune.

- :func:`overlap`: Jaccard, precision and recall of one circuit's components in another's, by
  nodes (heads ``aL.hH`` and MLPs ``mL``) or by edges (same graph only).
- :func:`depth_profile` / :func:`depth_overlap`: models of different depths compared by
  *relative* depth (layer ``L`` of an ``n``-layer model sits at ``L / (n - 1)``: first layer 0,
  last layer 1), binned, per kind (attention, MLP).
- :func:`shared_components`: which components every subset of circuits shares exclusively
  (the data of an UpSet plot; :func:`modelweave.report.compare.upset_figure` draws it).
- :func:`by_role`: the shared heads split by their head role (from ``head_roles``).
- :func:`transfer_faithfulness`: a circuit found in one model, evaluated in another of the
  same architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from ..circuits import Circuit, CircuitError

_ENDS = ("input", "logits")


def components(circuit: Circuit, level: str = "nodes") -> set[str]:
    """The circuit's heads and MLPs (``level="nodes"``) or its edges (``"edges"``)."""
    if level == "nodes":
        return {n for n in circuit.nodes if n not in _ENDS}
    if level == "edges":
        return {name for name, _ in circuit.edges()}
    raise CircuitError(f"level must be 'nodes' or 'edges', got {level!r}")


@dataclass
class Overlap:
    """How circuit ``a`` and circuit ``b`` overlap.

    Attributes:
        jaccard: |A ∩ B| / |A ∪ B|.
        precision: |A ∩ B| / |A|: the share of ``a``'s components that ``b`` also has.
        recall: |A ∩ B| / |B|: the share of ``b``'s components that ``a`` recovers.
        shared, only_a, only_b: the components, sorted.
    """

    level: str
    jaccard: float
    precision: float
    recall: float
    shared: list[str]
    only_a: list[str]
    only_b: list[str]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def overlap(a: Circuit, b: Circuit, level: str = "nodes") -> Overlap:
    """Overlap of two circuits of the same graph (see :class:`Overlap`)."""
    if a.graph != b.graph:
        raise CircuitError(
            f"circuits of different graphs ({a.graph.to_dict()} vs {b.graph.to_dict()}) have no "
            "common components; compare them by relative depth (depth_overlap)")
    sa, sb = components(a, level), components(b, level)
    inter, union = sa & sb, sa | sb
    return Overlap(level, len(inter) / len(union) if union else 1.0,
                   len(inter) / len(sa) if sa else 0.0, len(inter) / len(sb) if sb else 0.0,
                   sorted(inter, key=_order), sorted(sa - sb, key=_order),
                   sorted(sb - sa, key=_order))


def _order(name: str) -> tuple:
    """Sort key: by layer, attention before MLP, then head."""
    node = name.split("->")[0]
    if node.startswith("a"):
        layer, head = node[1:].split(".h")
        return (int(layer), 0, int(head), name)
    if node.startswith("m"):
        return (int(node[1:]), 1, 0, name)
    return (-1, 0, 0, name)


def _layer(node: str) -> int:
    return int(node[1:].split(".")[0])


def depth_profile(circuit: Circuit, bins: int = 10) -> dict[str, list[int]]:
    """Number of circuit heads (``"attn"``) and MLPs (``"mlp"``) per relative-depth bin."""
    n_layers = circuit.graph.n_layers
    profile = {"attn": [0] * bins, "mlp": [0] * bins}
    for node in components(circuit):
        depth = _layer(node) / max(1, n_layers - 1)
        profile["attn" if node.startswith("a") else "mlp"][min(bins - 1, int(depth * bins))] += 1
    return profile


def depth_overlap(a: Circuit, b: Circuit, bins: int = 10) -> float:
    """Weighted Jaccard of two circuits' depth profiles: sum of minima / sum of maxima over
    (kind, relative-depth bin). 1 = the same number of heads and MLPs at the same relative
    depths; works across models of different depths and widths."""
    pa, pb = depth_profile(a, bins), depth_profile(b, bins)
    low = sum(min(x, y) for kind in pa for x, y in zip(pa[kind], pb[kind], strict=True))
    high = sum(max(x, y) for kind in pa for x, y in zip(pa[kind], pb[kind], strict=True))
    return low / high if high else 1.0


def shared_components(circuits: dict[str, Circuit], level: str = "nodes"
                      ) -> dict[tuple[str, ...], list[str]]:
    """For every non-empty subset of circuits (by name), the components in exactly those
    circuits (an UpSet plot's columns); empty subsets are left out."""
    sets = {name: components(c, level) for name, c in circuits.items()}
    names = list(sets)
    out = {}
    for size in range(len(names), 0, -1):
        for group in combinations(names, size):
            inside = set.intersection(*(sets[g] for g in group))
            outside = set().union(*(sets[n] for n in names if n not in group))
            only = sorted(inside - outside, key=_order)
            if only:
                out[group] = only
    return out


def by_role(heads: list[str], roles, threshold: float = 0.3) -> dict[str, list[str]]:
    """Heads (``aL.hH``) grouped by every head role whose score is at least ``threshold``.

    Args:
        roles: a :class:`~modelweave.methods.head_roles.HeadRoles`.
    """
    out: dict[str, list[str]] = {role: [] for role in roles.scores}
    for head in heads:
        if not head.startswith("a"):
            continue
        layer, index = (int(x) for x in head[1:].split(".h"))
        for role, grid in roles.scores.items():
            if float(grid[layer, index]) >= threshold:
                out[role].append(head)
    return out


def transfer_faithfulness(circuit: Circuit, evaluator) -> float:
    """Faithfulness of ``circuit``'s edges in the model of ``evaluator`` (a
    :class:`~modelweave.circuits.CircuitEvaluator`); the graphs must match."""
    circuit.check_model(evaluator.graph, evaluator.model.name)
    return evaluator.faithfulness(circuit.in_graph)
