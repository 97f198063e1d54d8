"""Interventions as small declarative, serialisable objects.

    noise_s2 = Intervention("blocks.5.attn.hook_z", "patch", index=(3,), positions="S2",
                            source="corrupt")
    with intervene(model, [noise_s2], sources={"corrupt": corrupt_cache},
                   positions=batch.positions):
        logits = model(batch.clean)

Kinds: ``patch`` (values from a cached reference run), ``zero``, ``mean`` (the reference run's
mean over its prompts, per position), ``resample`` (the reference run's values from a shuffled
prompt order), the last three computed by :mod:`modelweave.engine.ablation`; ``add`` (a vector
on the last axis), ``scale`` (multiply by ``factor``). ``index`` selects heads (per-head sites)
or neurons (``mlp.hook_post``): axis 2 of the site. ``positions`` is a tuple of token indices
or a task's named position (resolved per prompt).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from ..models import Model
from ..tasks import TaskError
from .ablation import replacement

KINDS = ("patch", "zero", "mean", "resample", "add", "scale")


@dataclass(frozen=True)
class Intervention:
    """One change to one site. See the module docstring for the kinds.

    Attributes:
        site: full site name (``blocks.5.attn.hook_z``).
        kind: one of ``KINDS``.
        index: heads or neurons (axis 2 of the site), or ``None`` for the whole site.
        positions: token indices, a named position, or ``None`` for every position.
        source: name of the reference run (``patch``, ``mean``, ``resample``).
        vector: added along the last axis (``add``).
        factor: multiplier (``scale``).
        seed: shuffles prompts for ``resample``.
    """

    site: str
    kind: str = "patch"
    index: tuple[int, ...] | None = None
    positions: tuple[int, ...] | str | None = None
    source: str | None = None
    vector: tuple[float, ...] | None = None
    factor: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise TaskError(f"intervention kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        if self.kind in ("patch", "mean", "resample") and not self.source:
            raise TaskError(f"a {self.kind!r} intervention needs a source run name")
        if self.kind == "add" and self.vector is None:
            raise TaskError("an 'add' intervention needs a vector")
        if self.kind == "scale" and self.factor is None:
            raise TaskError("a 'scale' intervention needs a factor")

    def to_dict(self) -> dict:
        """JSON-ready form (``Intervention(**d)`` rebuilds it)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping) -> Intervention:
        data = dict(data)
        for key in ("index", "vector"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        if isinstance(data.get("positions"), list):
            data["positions"] = tuple(data["positions"])
        return cls(**data)


def _region(tensor: torch.Tensor, positions, index) -> tuple:
    """Index tuple selecting positions (axis 1) and heads/neurons (axis 2)."""
    rows = torch.arange(tensor.shape[0], device=tensor.device)
    if positions is None:
        key: tuple = (slice(None), slice(None))
    elif isinstance(positions, torch.Tensor):  # one position per prompt
        key = (rows, positions.to(tensor.device))
    else:
        key = (slice(None), list(positions))
    if index is not None:
        if tensor.dim() < 3:
            raise TaskError("index= needs a per-head or per-neuron site")
        width = tensor.shape[2]
        bad = [i for i in index if not 0 <= i < width]
        if bad:
            raise TaskError(f"index {bad[0]} out of range for a site of width {width}")
        key = (*key, list(index)) if not isinstance(key[1], torch.Tensor) else (
            key[0][:, None], key[1][:, None], torch.tensor(index, device=tensor.device)[None])
    return key


def _hook(iv: Intervention, sources: Mapping, positions: Mapping | None):
    pos = iv.positions
    if isinstance(pos, str):
        if positions is None or pos not in positions:
            raise TaskError(f"named position {pos!r} is not defined"
                            + (f"; defined: {', '.join(positions)}" if positions else ""))
        pos = positions[pos]
    if iv.source is not None and iv.source not in sources:
        raise TaskError(f"no source run named {iv.source!r}; have {', '.join(sources) or 'none'}")
    reference = sources[iv.source][iv.site] if iv.source else None

    def hook(tensor: torch.Tensor, _hook) -> torch.Tensor:
        out = tensor.clone()
        key = _region(out, pos, iv.index)
        if iv.kind == "scale":
            out[key] = out[key] * iv.factor
        elif iv.kind == "add":
            out[key] = out[key] + torch.tensor(iv.vector, dtype=out.dtype, device=out.device)
        elif iv.kind == "patch":
            out[key] = reference.to(out.device, out.dtype)[key]
        else:  # zero, mean, resample: the ablation helper's value
            out[key] = replacement(iv.kind, out, reference=reference, seed=iv.seed)[key]
        return out

    return hook


@contextmanager
def intervene(model: Model, interventions: list[Intervention],
              sources: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
              positions: Mapping[str, torch.Tensor] | None = None) -> Iterator[Model]:
    """Context in which every forward pass of ``model`` applies ``interventions`` in order.

    Args:
        sources: reference runs by name, each a site -> tensor mapping (an ActivationCache).
        positions: named positions, each [batch] (``TaskBatch.positions``).
    """
    sources = sources or {}
    hooks = [(iv.site, _hook(iv, sources, positions)) for iv in interventions]
    with model.hooks(hooks):
        yield model
