"""Heatmaps of patching grids, lenses and head scores: a PNG (matplotlib) for papers and an
interactive HTML file (plotly) with hover values, which works offline: ``plotly.min.js`` is
written once into the same folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from ..methods.result import PatchingResult


def _flatten(result: PatchingResult) -> tuple[torch.Tensor, list[str], list[str], str, str]:
    """A 2-D view of a grid: (values [rows, cols], row labels, col labels, row and col axis
    names). Layer x head x pos becomes (L.H) x pos."""
    values, axes, labels = result.values, result.axes, result.labels
    if len(axes) == 3:
        rows = [f"{layer}.{head}" for layer in labels["layer"] for head in labels["head"]]
        return values.reshape(len(rows), -1), rows, labels["pos"], "layer.head", "pos"
    return values, labels[axes[0]], labels[axes[1]], axes[0], axes[1]


def save_heatmap(values: torch.Tensor, rows: list[str], cols: list[str], row_name: str,
                 col_name: str, title: str, path: str | Path, center: bool = True
                 ) -> list[Path]:
    """Write ``path.png`` and ``path.html`` of a [rows, cols] grid; returns the two paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = values.float().numpy()
    bound = float(abs(data).max()) or 1.0
    limits = dict(vmin=-bound, vmax=bound) if center else {}
    height = min(24, 1.5 + 0.18 * len(rows))
    width = min(24, 3 + 0.35 * len(cols))
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(data, aspect="auto", cmap="RdBu_r" if center else "viridis", **limits)
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    step = max(1, len(rows) // 60)
    ax.set_yticks(range(0, len(rows), step), rows[::step], fontsize=7)
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    ax.set_title(textwrap.fill(title, width=int(12 * width)), fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    png = path.with_suffix(".png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    figure = heatmap_figure(values, rows, cols, row_name, col_name, title, center)
    html = path.with_suffix(".html")
    # plotly.min.js is written once beside the figures: offline, and not 4.8 MB per figure
    figure.write_html(html, include_plotlyjs="directory", full_html=True)
    return [png, html]


def heatmap_figure(values: torch.Tensor, rows: list[str], cols: list[str], row_name: str,
                   col_name: str, title: str, center: bool = True):
    """An interactive plotly heatmap of a [rows, cols] grid with hover values."""
    import plotly.graph_objects as go

    data = values.float().numpy()
    heat = go.Heatmap(z=data, x=cols, y=rows, colorscale="RdBu_r" if center else "Viridis",
                      zmid=0 if center else None,
                      hovertemplate=f"{row_name} %{{y}}<br>{col_name} %{{x}}<br>"
                                    "value %{z:.3f}<extra></extra>")
    return go.Figure(heat, layout=dict(title=title, xaxis_title=col_name,
                                       yaxis_title=row_name, yaxis_autorange="reversed",
                                       height=max(400, 14 * len(rows) + 150)))


def flat_grid(result: PatchingResult) -> tuple[torch.Tensor, list[str], list[str], str, str]:
    """A patching result as a 2-D grid: (values, row labels, col labels, row and col names)."""
    return _flatten(result)


def patching_figure(result: PatchingResult, path: str | Path) -> list[Path]:
    """Heatmap of a patching result (1 = clean behaviour restored)."""
    values, rows, cols, row_name, col_name = _flatten(result)
    title = (f"{result.method} {result.direction} patching, {result.grid}: {result.task} on "
             f"{result.model} ({result.metric}, 1 = clean)")
    return save_heatmap(values, rows, cols, row_name, col_name, title, path)
