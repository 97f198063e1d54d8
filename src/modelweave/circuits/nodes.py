"""Node circuits: attention heads, whole MLPs and *neuron subsets* of MLPs, with everything
outside the circuit mean-ablated (Nikankin et al. 2024, and any task).

A :class:`NodeCircuit` keeps some heads (``hook_z`` of head h), some whole MLPs and, for other
MLPs, some of their neurons (``mlp.hook_post`` of neuron n). Evaluating it runs the model with
every component *outside* it replaced by its mean over a reference distribution, at every
position, per position:

- ``hook_z`` of every head not in the circuit (heads are the query heads; with grouped-query
  attention each query head is its own unit);
- ``mlp.hook_post`` of every MLP not in the circuit, and of every neuron outside the kept subset
  of a partial MLP.

The means (:func:`position_means`) are taken per position over reference prompts *of the same
token length* (digit-splitting tokenizers give ``"5+3="`` and ``"12+34="`` different lengths, and
position 3 means different things in them). A length absent from the reference falls back to
the per-position mean over every reference prompt long enough to have that position. This is
:mod:`modelweave.engine.ablation`'s ``kind="mean", per="length"``, summed in float64.

Names follow MIB/EAP-IG: heads ``aL.hH``, MLPs ``mL``, neurons ``mL.nI``. The full circuit is the
model itself (no hook is installed where nothing is ablated, so it is bit-exact); the empty
circuit is the fully mean-ablated model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..engine.ablation import AblationError, MeanAccumulator, Means, ablation_hook, units_mask
from ..io import load_tensor_metadata, load_tensors, save_tensors
from ..models import Model
from ..progress import Progress, Steps
from .graph import CircuitError

Z, POST = "attn.hook_z", "mlp.hook_post"
_NAME = re.compile(r"^(?:a(\d+)\.h(\d+)|m(\d+)(?:\.n(\d+))?)$")


@dataclass(frozen=True)
class NodeCircuit:
    """Heads, whole MLPs and neuron subsets of MLPs.

    Attributes:
        heads: ``(layer, head)`` pairs kept.
        mlps: layers whose whole MLP is kept.
        neurons: layer -> neuron indices kept, for MLPs kept only in part (a layer in ``mlps``
            must not appear here).
    """

    heads: frozenset[tuple[int, int]] = frozenset()
    mlps: frozenset[int] = frozenset()
    neurons: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "heads", frozenset((int(a), int(b)) for a, b in self.heads))
        object.__setattr__(self, "mlps", frozenset(int(x) for x in self.mlps))
        object.__setattr__(self, "neurons", {int(k): tuple(sorted({int(i) for i in v}))
                                             for k, v in self.neurons.items()})
        both = self.mlps & set(self.neurons)
        if both:
            raise CircuitError(f"layer {min(both)}: an MLP is either whole (mlps) or a neuron "
                               "subset (neurons), not both")

    @classmethod
    def full(cls, model: Model) -> NodeCircuit:
        """Every head and every MLP: the model itself."""
        c = model.cfg
        return cls(frozenset((L, h) for L in range(c.n_layers) for h in range(c.n_heads)),
                   frozenset(range(c.n_layers)))

    @classmethod
    def from_names(cls, names: Iterable[str]) -> NodeCircuit:
        """From MIB-style names: ``a3.h1``, ``m2`` (whole MLP), ``m20.n17`` (one neuron)."""
        heads, mlps, neurons = set(), set(), {}
        for name in names:
            match = _NAME.match(name)
            if not match:
                raise CircuitError(f"not a node name: {name!r} (expected aL.hH, mL or mL.nI)")
            a, h, m, n = match.groups()
            if a is not None:
                heads.add((int(a), int(h)))
            elif n is None:
                mlps.add(int(m))
            else:
                neurons.setdefault(int(m), set()).add(int(n))
        return cls(frozenset(heads), frozenset(mlps),
                   {k: tuple(v) for k, v in neurons.items() if k not in mlps})

    def names(self) -> list[str]:
        """MIB-style names, heads first, then MLPs and neurons by layer."""
        out = [f"a{L}.h{h}" for L, h in sorted(self.heads)]
        for layer in sorted(self.mlps | set(self.neurons)):
            out += ([f"m{layer}"] if layer in self.mlps
                    else [f"m{layer}.n{i}" for i in self.neurons[layer]])
        return out

    def n_neurons(self, d_mlp: int) -> int:
        """Neurons kept, whole MLPs counting ``d_mlp`` each."""
        return len(self.mlps) * d_mlp + sum(len(v) for v in self.neurons.values())

    def with_heads(self, heads: Iterable[tuple[int, int]]) -> NodeCircuit:
        return NodeCircuit(frozenset(heads), self.mlps, self.neurons)

    def check(self, model: Model) -> NodeCircuit:
        """Raise a clear :class:`CircuitError` for a layer, head or neuron out of range."""
        c = model.cfg
        for layer in {L for L, _ in self.heads} | self.mlps | set(self.neurons):
            if not 0 <= layer < c.n_layers:
                raise CircuitError(f"layer {layer} out of range (model has {c.n_layers})")
        for L, h in self.heads:
            if not 0 <= h < c.n_heads:
                raise CircuitError(f"head a{L}.h{h} out of range (0..{c.n_heads - 1})")
        for L, idx in self.neurons.items():
            bad = [i for i in idx if not 0 <= i < c.d_mlp]
            if bad:
                raise CircuitError(f"neuron m{L}.n{bad[0]} out of range (0..{c.d_mlp - 1})")
        return self

    def to_dict(self) -> dict:
        return {"nodes": self.names()}

    @classmethod
    def from_dict(cls, data: Mapping) -> NodeCircuit:
        return cls.from_names(data["nodes"])


@dataclass
class PositionMeans:
    """Per-position means of every layer's ``hook_z`` and ``mlp.hook_post``.

    Attributes:
        by_length: prompt length T -> site -> [T, ...] mean over the reference prompts of that
            length (``hook_z``: [T, n_heads, d_head]; ``hook_post``: [T, d_mlp]).
        overall: site -> [T_max, ...] mean over every reference prompt that reaches each
            position (the fallback for lengths the reference lacks).
        counts: T -> number of reference prompts of that length.
    """

    by_length: dict[int, dict[str, torch.Tensor]]
    overall: dict[str, torch.Tensor]
    counts: dict[int, int]

    def site_means(self, site: str) -> Means:
        """The per-length :class:`~modelweave.engine.ablation.Means` of one site."""
        return Means("length", self.overall[site],
                     {T: d[site] for T, d in self.by_length.items()}, dict(self.counts))

    def for_batch(self, site: str, lengths: torch.Tensor, width: int) -> torch.Tensor:
        """[B, width, ...] the mean of ``site`` for each prompt of a batch with ``lengths``
        (positions past a prompt's length are padding and get zeros)."""
        try:
            return self.site_means(site).for_batch(lengths, width)
        except AblationError as e:
            raise CircuitError(str(e)) from None

    def save(self, path: str | Path) -> None:
        tensors = {f"{T}/{s}": v for T, d in self.by_length.items()
                   for s, v in d.items()}
        tensors.update({f"all/{s}": v for s, v in self.overall.items()})
        save_tensors(path, tensors, metadata={"counts": repr(self.counts)})

    @classmethod
    def load(cls, path: str | Path) -> PositionMeans:
        import ast

        by_length: dict[int, dict] = {}
        overall = {}
        metadata = load_tensor_metadata(path, error=CircuitError)
        if "counts" not in metadata:
            raise CircuitError(f"{path}: not a file of reference means (no counts)")
        counts = ast.literal_eval(metadata["counts"])
        tensors = load_tensors(path, error=CircuitError)
        for key in sorted(tensors):  # the order safe_open's keys() listed them in
            head, site = key.split("/", 1)
            if head == "all":
                overall[site] = tensors[key]
            else:
                by_length.setdefault(int(head), {})[site] = tensors[key]
        return cls(by_length, overall, counts)


def _sites(model: Model) -> list[str]:
    return [f"blocks.{L}.{kind}" for L in range(model.cfg.n_layers) for kind in (Z, POST)]


def position_means(model: Model, tokens: torch.Tensor, mask: torch.Tensor | None = None, *,
                   batch_size: int = 64,
                   progress: Progress = None) -> PositionMeans:
    """Means of every head's ``hook_z`` and every neuron's ``hook_post`` per position over
    reference prompts (``tokens`` [N, T], right-padded, ``mask`` [N, T] marking real tokens),
    kept per prompt length. Runs in batches of ``batch_size``; ``progress`` phase ``"means"``:
    prompts done of ``N``."""
    if mask is None:
        mask = torch.ones_like(tokens)
    lengths = mask.sum(1)
    sites = _sites(model)
    accs = {site: MeanAccumulator("length", torch.float64, "cpu") for site in sites}
    steps = Steps(progress, "means", len(tokens))
    for start in range(0, len(tokens), batch_size):
        rows = slice(start, start + batch_size)
        part_len = lengths[rows]
        width = int(part_len.max())
        _, cache = model.run_with_cache(tokens[rows, :width], sites,
                                        attention_mask=mask[rows, :width])
        for site in sites:
            accs[site].add(cache[site], mask[rows, :width])
        steps.advance(len(part_len))
    means = {site: acc.means() for site, acc in accs.items()}
    counts = means[sites[0]].counts
    by_length = {T: {s: m.by_length[T].float() for s, m in means.items()} for T in counts}
    return PositionMeans(by_length, {s: m.overall.float() for s, m in means.items()}, counts)


@contextmanager
def ablated(model: Model, circuit: NodeCircuit, means: PositionMeans,
            lengths: torch.Tensor, width: int) -> Iterator[Model]:
    """Context in which forward passes of a batch (prompt ``lengths`` [B], padded to ``width``)
    run with everything outside ``circuit`` mean-ablated. Layers where nothing is ablated get no
    hook."""
    circuit.check(model)
    c = model.cfg
    lengths = lengths.cpu()
    hooks = []
    for layer in range(c.n_layers):
        kept = [h for at, h in circuit.heads if at == layer]
        if len(kept) < c.n_heads:
            site = f"blocks.{layer}.{Z}"
            hooks.append((site, ablation_hook(means.for_batch(site, lengths, width),
                                              units_mask(c.n_heads, kept) if kept else None)))
        if layer in circuit.mlps:
            continue
        site = f"blocks.{layer}.{POST}"
        neurons = circuit.neurons.get(layer, ())
        keep = units_mask(c.d_mlp, neurons) if neurons else None
        hooks.append((site, ablation_hook(means.for_batch(site, lengths, width), keep)))
    with model.hooks(hooks):
        yield model


def circuit_logits(model: Model, tokens: torch.Tensor, mask: torch.Tensor,
                   circuit: NodeCircuit, means: PositionMeans) -> torch.Tensor:
    """Logits [B, T, vocab] of ``tokens`` [B, T] with everything outside ``circuit``
    mean-ablated."""
    with ablated(model, circuit, means, mask.sum(1), tokens.shape[1]):
        return model(tokens, attention_mask=mask)
