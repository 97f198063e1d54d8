"""``PatchingResult``: a labelled grid of patching effects that saves and loads without a
model (JSON for everything but the grid, safetensors for the grid)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io import load_bundle, save_bundle
from ..metrics.functional import normalize


@dataclass
class PatchingResult:
    """Effects of patching every unit of a grid.

    Attributes:
        grid: which grid (``heads``, ``heads-by-pos``, ``resid``, ...).
        direction: ``denoising`` or ``noising``.
        method: ``exact`` or ``attribution``.
        metric: the task metric patched runs were scored with.
        axes: names of the grid's axes, e.g. ``("layer", "head", "pos")``.
        labels: per axis, a label per index (positions: ``"3: Mary"`` from the first prompt).
        values: the grid, normalised: (m - m_corrupt) / (m_clean - m_corrupt), so 1 = clean.
        raw: the grid in metric units (mean over prompts).
        clean_metric, corrupt_metric: the unpatched runs' metric means.
        model, task: names; positions: named positions of the first prompt.
    """

    grid: str
    direction: str
    method: str
    metric: str
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    values: torch.Tensor
    raw: torch.Tensor
    clean_metric: float
    corrupt_metric: float
    model: str = ""
    task: str = ""
    positions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_units(cls, model, batch, grid, direction, metric, axes, units, raw, clean_m,
                   corrupt_m, method: str = "exact") -> PatchingResult:
        """Assemble a result from per-unit raw metric values (``units`` in row-major order)."""
        labels = _labels(model, batch, axes, units)
        shape = tuple(len(labels[a]) for a in axes)
        grid_raw = torch.tensor([raw[u] for u in units], dtype=torch.float32).view(shape)
        return cls(grid, direction, method, metric, tuple(axes), labels,
                   normalize(grid_raw, clean_m, corrupt_m), grid_raw, clean_m, corrupt_m,
                   model.name, batch.task, {k: int(v[0]) for k, v in batch.positions.items()})

    def to_dataframe(self):
        """One row per unit: a column per axis (index and label), ``value`` and ``raw``."""
        import pandas as pd

        index = torch.cartesian_prod(*[torch.arange(len(self.labels[a])) for a in self.axes])
        index = index.view(-1, len(self.axes))
        data = {}
        for k, axis in enumerate(self.axes):
            data[axis] = index[:, k].tolist()
            data[f"{axis}_label"] = [self.labels[axis][i] for i in index[:, k].tolist()]
        data["value"] = self.values.flatten().tolist()
        data["raw"] = self.raw.flatten().tolist()
        return pd.DataFrame(data)

    def top(self, k: int = 10) -> list[tuple[tuple[int, ...], float]]:
        """The ``k`` units that move the metric most from the unpatched base run (0 when
        denoising, 1 when noising): (index tuple, normalised value)."""
        flat = self.values.flatten()
        base = 0.0 if self.direction == "denoising" else 1.0
        order = (flat - base).abs().argsort(descending=True)[:k]
        return [(tuple(int(i) for i in torch.unravel_index(j, self.values.shape)),
                 float(flat[j])) for j in order]

    def save(self, path: str | Path) -> None:
        """Write ``path.json`` and ``path.safetensors`` (``path`` without a suffix)."""
        meta = {k: v for k, v in self.__dict__.items() if k not in ("values", "raw")}
        save_bundle(path, meta, {"values": self.values, "raw": self.raw}, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> PatchingResult:
        """Read a result written by :meth:`save`."""
        meta, tensors = load_bundle(path)
        meta["axes"] = tuple(meta["axes"])
        return cls(values=tensors["values"], raw=tensors["raw"], **meta)


def _labels(model, batch, axes, units) -> dict[str, list[str]]:
    tokens = model.to_str_tokens(batch.clean[0]) if model.tokenizer is not None else None
    labels = {}
    for axis in axes:
        attr = {"layer": "layer", "pos": "pos", "head": "index", "neuron": "index"}[axis]
        values = list(dict.fromkeys(getattr(u, attr) for u in units))  # the units' own order
        if axis == "pos":
            labels[axis] = [f"{p}: {tokens[p]}" if tokens else str(p) for p in values]
        else:
            labels[axis] = [str(v) for v in values]
    return labels
