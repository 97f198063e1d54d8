"""``PatchingResult``: a labelled grid of patching effects that saves and loads without a
model (JSON for everything but the grids, safetensors for the grids).

Each cell's normalised effect ``(mean m_patched - mean m_corrupt) / (mean m_clean - mean
m_corrupt)`` gets a 95% bootstrap interval over prompts (``low``/``high``) from the per-prompt
metric arrays the sweep already computed (the three resampled together, mean-then-ratio):
no extra model pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io import load_bundle, save_bundle
from ..metrics.functional import normalize

#: bootstrap resamples of the cells' intervals; cells per resampling chunk (bounds memory)
RESAMPLES, CHUNK = 1000, 4096
#: the optional per-prompt tensors a result may carry (saved beside ``values`` and ``raw``)
_OPTIONAL = ("low", "high", "per_prompt", "clean_rows", "corrupt_rows")


def cell_intervals(per_prompt: torch.Tensor, clean: torch.Tensor, corrupt: torch.Tensor, *,
                   n_resamples: int = RESAMPLES, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """95% bootstrap interval over prompts of every cell's normalised effect.

    Args:
        per_prompt: [N, ...] each cell's per-prompt metric (raw units).
        clean, corrupt: [N] the unpatched runs' per-prompt metric.

    Returns:
        (low, high), each of ``per_prompt.shape[1:]``; every cell is resampled with the same
        prompt indices (one seed), paired with the clean and corrupted values.
    """
    from ..metrics.uncertainty import bootstrap_curve

    shape = per_prompt.shape[1:]
    flat = per_prompt.reshape(per_prompt.shape[0], -1).double().numpy()
    c, k = clean.double().numpy()[:, None], corrupt.double().numpy()[:, None]

    def effect(p, c, k):
        return normalize(p.mean(0), c.mean(), k.mean())

    lows, highs = [], []
    for start in range(0, flat.shape[1], CHUNK):
        band = bootstrap_curve([flat[:, start:start + CHUNK], c, k], reduce=effect,
                               n_resamples=n_resamples, seed=seed)
        lows += band.low
        highs += band.high
    return (torch.tensor(lows, dtype=torch.float32).view(shape),
            torch.tensor(highs, dtype=torch.float32).view(shape))


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
        low, high: 95% bootstrap interval over prompts of each value (None when the method
            gave no per-prompt values).
        per_prompt: [N, *grid] each cell's per-prompt metric (raw units); clean_rows,
            corrupt_rows: [N] the unpatched runs'.
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
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    per_prompt: torch.Tensor | None = None
    clean_rows: torch.Tensor | None = None
    corrupt_rows: torch.Tensor | None = None

    @classmethod
    def from_units(cls, model, batch, grid, direction, metric, axes, units, raw, clean_m,
                   corrupt_m, method: str = "exact", per_prompt: dict | None = None,
                   clean_rows: torch.Tensor | None = None,
                   corrupt_rows: torch.Tensor | None = None) -> PatchingResult:
        """Assemble a result from per-unit raw metric values (``units`` in row-major order);
        with ``per_prompt`` (unit -> [N] metric) and the unpatched runs' ``clean_rows`` /
        ``corrupt_rows`` ([N]) also the cells' intervals (:func:`cell_intervals`)."""
        labels = _labels(model, batch, axes, units)
        shape = tuple(len(labels[a]) for a in axes)
        grid_raw = torch.tensor([raw[u] for u in units], dtype=torch.float32).view(shape)
        result = cls(grid, direction, method, metric, tuple(axes), labels,
                     normalize(grid_raw, clean_m, corrupt_m), grid_raw, clean_m, corrupt_m,
                     model.name, batch.task,
                     {k: int(v[0]) for k, v in batch.positions.items()})
        if per_prompt is not None and clean_rows is not None and corrupt_rows is not None:
            rows = torch.stack([per_prompt[u].float().cpu() for u in units], 1)
            result.per_prompt = rows.view(rows.shape[0], *shape)
            result.clean_rows = clean_rows.detach().float().cpu()
            result.corrupt_rows = corrupt_rows.detach().float().cpu()
            result.low, result.high = cell_intervals(result.per_prompt, result.clean_rows,
                                                     result.corrupt_rows)
        return result

    def interval(self, index: tuple[int, ...]) -> list[float] | None:
        """[low, high] of one cell, or None without intervals."""
        if self.low is None or self.high is None:
            return None
        return [float(self.low[index]), float(self.high[index])]

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
        tensors = {"values": self.values, "raw": self.raw}
        tensors.update({k: getattr(self, k) for k in _OPTIONAL if getattr(self, k) is not None})
        meta = {k: v for k, v in self.__dict__.items() if k not in tensors and k not in _OPTIONAL}
        save_bundle(path, meta, tensors, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> PatchingResult:
        """Read a result written by :meth:`save` (one saved before intervals existed loads
        with ``low``/``high`` None)."""
        meta, tensors = load_bundle(path)
        meta["axes"] = tuple(meta["axes"])
        return cls(**meta, **tensors)


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
