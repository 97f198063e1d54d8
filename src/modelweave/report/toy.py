"""Figures of toy-model analyses (plotly; each can be written as offline HTML):

- :func:`curves_figure`: train and test loss (log scale) and accuracy over steps;
- :func:`spectrum_figure`: the number embeddings' share of squared norm per Fourier frequency,
  key frequencies highlighted;
- :func:`progress_figure`: restricted, excluded, train and test loss over checkpoints (Nanda et
  al. 2023's progress measures) and the accuracies (test, swap-free, swap-trained), each with
  its 95% band over unordered pairs where the points carry ``<measure>_ci``;
- :func:`composition_figure`: Q-, K- and V-composition heatmaps (earlier head x later head);
- :func:`series_figure`: every metric of a checkpoint series
  (:func:`modelweave.toy.series.run_series`) against step.

``save_grokking`` / ``save_composition`` write them as HTML files into a folder.
"""

from __future__ import annotations

from pathlib import Path


def curves_figure(history: list[dict], title: str = "training curves"):
    """[2 panels] losses (log y) and accuracies against step."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    steps = [h["step"] for h in history]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for split, dash in (("train", None), ("test", "dash")):
        fig.add_trace(go.Scatter(x=steps, y=[h[f"{split}_loss"] for h in history],
                                 name=f"{split} loss", line={"dash": dash}), 1, 1)
        fig.add_trace(go.Scatter(x=steps, y=[h[f"{split}_acc"] for h in history],
                                 name=f"{split} accuracy", line={"dash": dash}), 1, 2)
    for key in ("test_swap_free_acc", "test_swap_trained_acc"):
        if history and all(key in h for h in history):
            fig.add_trace(go.Scatter(x=steps, y=[h[key] for h in history],
                                     name=key[5:].replace("_", " "), line={"dash": "dot"}), 1, 2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, template="plotly_white", height=380)
    return fig


def spectrum_figure(spectrum: list[float], key_frequencies: list[int],
                    title: str = "embedding: share of squared norm per frequency"):
    import plotly.graph_objects as go

    colors = ["crimson" if k in key_frequencies else "steelblue" for k in range(len(spectrum))]
    fig = go.Figure(go.Bar(x=list(range(len(spectrum))), y=spectrum, marker_color=colors,
                           hovertemplate="frequency %{x}<br>share %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title + f" (key: {', '.join(map(str, key_frequencies))})",
                      xaxis_title="frequency k (0 = constant)", yaxis_title="share",
                      template="plotly_white", height=340)
    return fig


def _band(fig, steps, points, key, row, col, color):
    import plotly.graph_objects as go

    ci = [p.get(f"{key}_ci") for p in points]
    if not all(ci):
        return
    fig.add_trace(go.Scatter(x=steps + steps[::-1], y=[c[1] for c in ci] + [c[0] for c in ci][::-1],
                             fill="toself", line={"width": 0}, fillcolor=color, opacity=0.2,
                             hoverinfo="skip", showlegend=False), row, col)


def progress_figure(progress: list[dict], title: str = "progress measures"):
    """[2 panels] losses (log y) and accuracies over checkpoints, with bands."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    steps = [p["step"] for p in progress]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    panels = ((1, ("train_loss", "test_loss", "restricted_loss", "excluded_loss")),
              (2, ("train_acc", "test_acc", "swap_free_acc", "swap_trained_acc")))
    for col, keys in panels:
        for i, key in enumerate(keys):
            if not progress or any(p.get(key) is None for p in progress):
                continue
            color = qualitative.Plotly[i]
            _band(fig, steps, progress, key, 1, col, color)
            fig.add_trace(go.Scatter(x=steps, y=[p[key] for p in progress], name=key,
                                     mode="lines+markers", line={"color": color}), 1, col)
    fig.update_yaxes(type="log", title_text="cross-entropy", row=1, col=1)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, template="plotly_white", height=380)
    return fig


def composition_figure(scores: dict[str, list], title: str = "composition scores"):
    """Heatmaps of ``scores[mode]`` [L, H, L, H] (negative = not an earlier->later pair)."""
    import plotly.graph_objects as go
    import torch
    from plotly.subplots import make_subplots

    modes = [m for m in ("q", "k", "v") if m in scores]
    fig = make_subplots(rows=1, cols=len(modes), subplot_titles=[f"{m.upper()}-composition"
                                                                 for m in modes])
    for c, mode in enumerate(modes):
        grid = torch.tensor(scores[mode])
        L, H = grid.shape[0], grid.shape[1]
        labels = [f"a{la}.h{h}" for la in range(L) for h in range(H)]
        z = grid.reshape(L * H, L * H)
        z = torch.where(z < 0, torch.full_like(z, float("nan")), z)
        fig.add_trace(go.Heatmap(z=z.tolist(), x=labels, y=labels, zmin=0,
                                 zmax=float(torch.nan_to_num(z, nan=0).max()) or 1.0,
                                 colorscale="Viridis", showscale=c == len(modes) - 1,
                                 hovertemplate="writer %{y}<br>reader %{x}<br>%{z:.3f}"
                                               "<extra></extra>"), 1, c + 1)
    fig.update_yaxes(autorange="reversed", title_text="earlier head (writes)", col=1)
    fig.update_xaxes(title_text="later head (reads)")
    fig.update_layout(title=title, template="plotly_white", height=420)
    return fig


def series_figure(rows: list[dict], title: str = "", log_y: bool = False):
    """A plotly figure: every numeric column of ``rows`` against ``step``."""
    import plotly.graph_objects as go

    fig = go.Figure()
    steps = [r["step"] for r in rows]
    keys = [k for k in rows[0] if k != "step" and isinstance(rows[0][k], int | float)]
    for key in keys:
        fig.add_trace(go.Scatter(x=steps, y=[r[key] for r in rows], mode="lines+markers",
                                 name=key))
    fig.update_layout(title=title, xaxis_title="step", template="plotly_white")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _write(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs="directory")
    return path


def save_grokking(data: dict, out: str | Path) -> list[Path]:
    """Training curves, embedding spectrum and progress measures as HTML files in ``out``."""
    out = Path(out)
    files = []
    if data.get("history"):
        files.append(_write(curves_figure(data["history"]), out / "training_curves.html"))
    files.append(_write(spectrum_figure(data["embedding_spectrum"], data["key_frequencies"]),
                        out / "fourier_spectrum.html"))
    if data.get("progress"):
        files.append(_write(progress_figure(data["progress"]), out / "progress_measures.html"))
    return files


def save_composition(data: dict, out: str | Path) -> list[Path]:
    """The composition heatmaps as ``out/composition.html``."""
    return [_write(composition_figure(data["scores"], f"composition scores of {data['model']}"),
                   Path(out) / "composition.html")]
