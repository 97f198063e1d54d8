"""Comparing circuits: across tasks of one model, across models, base vs fine-tune.

- :func:`overlap`: Jaccard, precision and recall of one circuit's components in another's, by
  nodes (heads ``aL.hH`` and MLPs ``mL``) or by edges (same graph only); with ``null_draws``
  each beside its chance baseline (:func:`overlap_null`).
- :func:`overlap_null`: what a random circuit with ``b``'s count of components per (type,
  layer) gives: the *exact* expectation (a hypergeometric draw per stratum, convolved) and,
  from matched draws (:func:`~modelweave.metrics.nulls.matched_draws`), the null range and a
  p-value (:func:`~modelweave.metrics.nulls.compare`).
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

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from ..circuits import Circuit, CircuitError, Graph
from ..metrics.nulls import NullComparison, NullError, compare, matched_draws, stratum

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
    null: OverlapNull | None = None

    def to_dict(self) -> dict:
        """The fields; with a null also ``<measure>_chance`` (the exact expectation) and
        ``<measure>_null`` (a :class:`NullComparison` dict) for jaccard, precision, recall."""
        out = {k: v for k, v in self.__dict__.items() if k != "null"}
        if self.null is not None:
            out.update(self.null.to_dict())
        return out


@dataclass
class OverlapNull:
    """Chance overlap of ``a`` with a random circuit shaped like ``b``.

    Attributes:
        expected_shared: exact expected |A ∩ R| for R with ``b``'s count per (type, layer).
        chance: measure -> its exact expectation (precision and recall are E|A ∩ R| / |A|,
            / |B|; Jaccard is E[I / (|A| + |B| - I)] over the exact distribution of I).
        nulls: measure -> the observed value beside ``draws`` matched draws.
    """

    expected_shared: float
    chance: dict[str, float]
    nulls: dict[str, NullComparison] = field(default_factory=dict)
    draws: int = 0

    def to_dict(self) -> dict:
        out: dict = {"expected_shared": self.expected_shared}
        for measure, value in self.chance.items():
            out[f"{measure}_chance"] = value
            if measure in self.nulls:
                out[f"{measure}_null"] = self.nulls[measure].to_dict()
        return out


def node_universe(graph: Graph) -> list[str]:
    """Every head ``aL.hH`` and MLP ``mL`` of a graph (what a node-level null draws from)."""
    return [name for layer in range(graph.n_layers)
            for name in [f"a{layer}.h{h}" for h in range(graph.n_heads)] + [f"m{layer}"]]


def _measures(shared, size_a: int, size_b: int):
    shared = np.asarray(shared, dtype=np.float64)
    union = size_a + size_b - shared
    return {"jaccard": np.where(union > 0, shared / np.maximum(union, 1), 1.0),
            "precision": shared / size_a if size_a else np.zeros_like(shared),
            "recall": shared / size_b if size_b else np.zeros_like(shared)}


def _shared_pmf(sa: set[str], sb: set[str], universe: list[str]) -> np.ndarray:
    """Exact distribution of |A ∩ R|, R with ``sb``'s count per stratum, uniform within each
    stratum of ``universe``: the convolution of one hypergeometric per stratum."""
    from scipy.stats import hypergeom

    pool: dict = {}
    for name in universe:
        pool.setdefault(stratum(name), []).append(name)
    pmf = np.ones(1)
    for key in sorted({stratum(c) for c in sb}):
        members = pool.get(key, [])
        k = sum(1 for c in sb if stratum(c) == key)
        hits = sum(1 for c in members if c in sa)
        if k > len(members):
            raise NullError(f"cannot draw {k} random {key[0]}(s) of layer {key[1]}: the layer "
                            f"has {len(members)}")
        pmf = np.convolve(pmf, hypergeom(len(members), hits, k).pmf(np.arange(k + 1)))
    return pmf


def overlap_null(a: Circuit, b: Circuit, draws: int = 1000, seed: int = 0) -> OverlapNull:
    """Node-level chance overlap of ``a`` with random circuits shaped like ``b`` (the same
    count of heads and MLPs per layer, drawn uniformly from the graph's heads of that layer
    and its MLP; ``b``'s own components are not excluded). The chance values are exact; the
    p-values and ranges come from ``draws`` matched draws (``draws=0``: chance only)."""
    universe = node_universe(a.graph)
    sa, sb = components(a), components(b)
    pmf = _shared_pmf(sa, sb, universe)
    support = np.arange(len(pmf))
    chance = {m: float((v * pmf).sum())
              for m, v in _measures(support, len(sa), len(sb)).items()}
    result = OverlapNull(float((support * pmf).sum()), chance, draws=draws)
    if draws > 0 and sb:
        shared = [len(sa & set(r)) for r in matched_draws(sb, universe, draws, seed=seed,
                                                           exclude=False)]
        observed = _measures([len(sa & sb)], len(sa), len(sb))
        text = (f"{draws} random circuits with the count of heads and MLPs per layer of the "
                f"second circuit")
        result.nulls = {m: compare(float(observed[m][0]), v, null=text)
                        for m, v in _measures(shared, len(sa), len(sb)).items()}
    return result


def overlap(a: Circuit, b: Circuit, level: str = "nodes", *, null_draws: int = 0,
            seed: int = 0) -> Overlap:
    """Overlap of two circuits of the same graph (see :class:`Overlap`); with ``null_draws``
    (nodes only) each measure beside its chance baseline (:func:`overlap_null`)."""
    if a.graph != b.graph:
        raise CircuitError(
            f"circuits of different graphs ({a.graph.to_dict()} vs {b.graph.to_dict()}) have no "
            "common components; compare them by relative depth (depth_overlap)")
    sa, sb = components(a, level), components(b, level)
    inter, union = sa & sb, sa | sb
    null = None
    if null_draws:
        if level != "nodes":
            raise NullError("the chance baseline of an overlap is drawn for nodes (heads and "
                            "MLPs matched by layer); use level='nodes'")
        null = overlap_null(a, b, null_draws, seed)
    return Overlap(level, len(inter) / len(union) if union else 1.0,
                   len(inter) / len(sa) if sa else 0.0, len(inter) / len(sb) if sb else 0.0,
                   sorted(inter, key=_order), sorted(sa - sb, key=_order),
                   sorted(sb - sa, key=_order), null)


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
