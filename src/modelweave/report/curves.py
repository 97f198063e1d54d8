"""Faithfulness curves of circuits: a PNG (matplotlib) and an interactive HTML (plotly, with
``plotly.min.js`` written once beside it, so it works offline).

When the curve carries them (:func:`modelweave.circuits.discover` stores them), each series
is drawn with its 95% bootstrap band over prompts (``band_signed`` / ``band_abs``), and the
matched null (``null``: random circuits of the chosen circuit's size and strata) as a grey
range at the chosen circuit's size.
"""

from __future__ import annotations

from pathlib import Path


def _ci(curve: dict, key: str) -> str:
    agg = curve.get(f"{key}_ci")
    text = f"{curve[key]:.3f}"
    return text if not agg else f"{text} [{agg['ci_low']:.3f}, {agg['ci_high']:.3f}]"


def _series(curve: dict) -> list[tuple[str, list[float], list[int], dict | None]]:
    return [
        (f"signed top-k (CPR {_ci(curve, 'cpr')})", curve["faithfulness_signed"],
         curve["edges_signed"], curve.get("band_signed")),
        (f"absolute top-k (CMD {_ci(curve, 'cmd')})", curve["faithfulness_abs"],
         curve["edges_abs"], curve.get("band_abs")),
    ]


def _null_label(null: dict) -> str:
    return (f"matched null, {null['n_edges']} edges ({null['draws']} draws): "
            f"{null['null_mean']:.3f} [{null['null_low']:.3f}, {null['null_high']:.3f}]")


def curve_figure(curve: dict, title: str):
    """The interactive plotly figure of a faithfulness curve (log x axis, hover: edges kept
    and the 95% band), with its bands and null when present."""
    import plotly.graph_objects as go

    xs = [100 * p for p in curve["percentages"]]
    traces = []
    colours = ("31, 119, 180", "255, 127, 14")
    for (label, ys, edges, band), colour in zip(_series(curve), colours, strict=True):
        if band:
            traces.append(go.Scatter(x=xs + xs[::-1], y=band["high"] + band["low"][::-1],
                                     fill="toself", fillcolor=f"rgba({colour}, 0.18)",
                                     line=dict(width=0), hoverinfo="skip", showlegend=False))
            custom = [[e, lo, hi] for e, lo, hi in zip(edges, band["low"], band["high"],
                                                       strict=True)]
            hover = ("%{x}% of edges (%{customdata[0]} kept after pruning)<br>faithfulness "
                     "%{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}]<extra></extra>")
        else:
            custom = edges
            hover = ("%{x}% of edges (%{customdata} kept after pruning)"
                     "<br>faithfulness %{y:.3f}<extra></extra>")
        traces.append(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label,
                                 line=dict(color=f"rgb({colour})"), customdata=custom,
                                 hovertemplate=hover))
    null = curve.get("null")
    if null:
        x = 100 * null["percentage"]
        traces.append(go.Scatter(
            x=[x], y=[null["null_mean"]], mode="markers", name=_null_label(null),
            marker=dict(color="grey", symbol="diamond"),
            error_y=dict(type="data", symmetric=False,
                         array=[max(0.0, null["null_high"] - null["null_mean"])],
                         arrayminus=[max(0.0, null["null_mean"] - null["null_low"])])))
    return go.Figure(traces, layout=dict(title=title, xaxis_type="log",
                                         xaxis_title="edges kept (% of all edges)",
                                         yaxis_title=f"faithfulness ({curve['metric']})"))


def save_faithfulness_curve(curve: dict, title: str, path: str | Path) -> list[Path]:
    """Write ``path.png`` and ``path.html`` of a curve from
    :func:`~modelweave.circuits.faithfulness_curve`: faithfulness against the fraction of
    edges kept (log axis), signed and absolute top-k, with CPR and CMD in the legend (and
    the bands and null of the module docstring when the curve has them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    xs = [100 * p for p in curve["percentages"]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, ys, _, band in _series(curve):
        (line,) = ax.plot(xs, ys, marker="o", label=label)
        if band:
            ax.fill_between(xs, band["low"], band["high"], color=line.get_color(), alpha=0.18,
                            lw=0)
    null = curve.get("null")
    if null:
        mean = null["null_mean"]
        ax.errorbar([100 * null["percentage"]], [mean], fmt="D", color="grey",
                    # clamped: the mean of equal draws can round past their quantiles
                    yerr=[[max(0.0, mean - null["null_low"])],
                          [max(0.0, null["null_high"] - mean)]], capsize=3,
                    label=_null_label(null))
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("edges kept (% of all edges)")
    ax.set_ylabel(f"faithfulness ({curve['metric']})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = path.with_suffix(".png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    figure = curve_figure(curve, title)
    html = path.with_suffix(".html")
    figure.write_html(html, include_plotlyjs="directory", full_html=True)
    return [png, html]
