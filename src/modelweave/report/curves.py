"""Faithfulness curves of circuits: a PNG (matplotlib) and an interactive HTML (plotly, with
``plotly.min.js`` written once beside it, so it works offline)."""

from __future__ import annotations

from pathlib import Path


def _series(curve: dict) -> list[tuple[str, list[float], list[int]]]:
    return [
        (f"signed top-k (CPR {curve['cpr']:.3f})", curve["faithfulness_signed"],
         curve["edges_signed"]),
        (f"absolute top-k (CMD {curve['cmd']:.3f})", curve["faithfulness_abs"],
         curve["edges_abs"]),
    ]


def curve_figure(curve: dict, title: str):
    """The interactive plotly figure of a faithfulness curve (log x axis, hover: edges kept)."""
    import plotly.graph_objects as go

    xs = [100 * p for p in curve["percentages"]]
    traces = [go.Scatter(x=xs, y=ys, mode="lines+markers", name=label, customdata=edges,
                         hovertemplate="%{x}% of edges (%{customdata} kept after pruning)"
                                       "<br>faithfulness %{y:.3f}<extra></extra>")
              for label, ys, edges in _series(curve)]
    return go.Figure(traces, layout=dict(title=title, xaxis_type="log",
                                         xaxis_title="edges kept (% of all edges)",
                                         yaxis_title=f"faithfulness ({curve['metric']})"))


def save_faithfulness_curve(curve: dict, title: str, path: str | Path) -> list[Path]:
    """Write ``path.png`` and ``path.html`` of a curve from
    :func:`~modelweave.circuits.faithfulness_curve`: faithfulness against the fraction of
    edges kept (log axis), signed and absolute top-k, with CPR and CMD in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    xs = [100 * p for p in curve["percentages"]]
    series = _series(curve)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, ys, _ in series:
        ax.plot(xs, ys, marker="o", label=label)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("edges kept (% of all edges)")
    ax.set_ylabel(f"faithfulness ({curve['metric']})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = path.with_suffix(".png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    figure = curve_figure(curve, title)
    html = path.with_suffix(".html")
    figure.write_html(html, include_plotlyjs="directory", full_html=True)
    return [png, html]
