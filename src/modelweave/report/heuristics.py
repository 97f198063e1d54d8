"""Figures of a heuristic-neuron analysis (plotly; each can be written as offline HTML).

- :func:`maps_figure`: key and key-value maps of the top neurons as op1 × op2 heatmaps, each
  titled with its neuron and best heuristic labels;
- :func:`families_figure`: neurons per layer with a match of each heuristic family (stacked);
- :func:`curves_figure`: faithfulness vs heads and vs neurons per layer;
- :func:`knockout_figure`: accuracy after ablating each heuristic's neurons (related /
  unrelated prompts) against random neurons;
- :func:`emergence_figure`: the share of the final heuristic neurons present at each checkpoint.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from ..analysis.heuristics.pipeline import OperatorResult


def share_text(summary: dict) -> str:
    """``"0.93 [0.91, 0.95]"``: an operator summary's share matched with its interval."""
    ci = summary.get("share_matched_ci") or [float("nan")] * 2
    return f"{summary['share_matched']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def null_text(summary: dict, which: str = "") -> str:
    """One null of an operator summary (``""`` random neurons, ``"_base"``, ``"_permuted"``):
    ``"null 0.81 [0.77, 0.85]; x1.15, p = 0.01"``, or why it was not computed."""
    null = summary.get(f"share_matched_null{which}")
    if not null:
        return "-"
    if "p_value" not in null:
        return f"not computed: {null.get('reason', '')}"
    ratio = "x inf" if null["ratio"] is None else f"x{null['ratio']:.2f}"
    return (f"null {null['null_mean']:.2f} [{null['null_low']:.2f}, {null['null_high']:.2f}]; "
            f"{ratio}, p = {null['p_value']:.2g}")


def _label(matches, n: int = 2) -> str:
    return ", ".join(f"{m.name} ({m.score:.2f})" for m in matches[:n]) or "no heuristic"


def maps_figure(result: OperatorResult, n: int = 6):
    """Key (top row) and key-value (bottom row) maps of the ``n`` neurons with the highest
    match scores (then the highest ranked), as op1 × op2 heatmaps."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    maps = result.maps
    rank = {x: float(result.ranking[x[0], x[1]]) for x in maps.neurons}
    best = sorted(range(len(maps.neurons)), key=lambda i: (
        -max((m.score for m in result.matches.get(maps.neurons[i], [])), default=0),
        -rank[maps.neurons[i]]))[:n]
    titles = []
    for which in ("key", "key-value"):
        for i in best:
            L, j = maps.neurons[i]
            titles.append(escape(f"m{L}.n{j} {which}: {_label(result.matches.get((L, j), []), 1)}"))
    fig = make_subplots(rows=2, cols=max(len(best), 1), subplot_titles=titles,
                        horizontal_spacing=0.03, vertical_spacing=0.12)
    lo1, lo2 = int(maps.op1.min()), int(maps.op2.min())
    for r, which in enumerate(("key", "kv")):
        for c, i in enumerate(best):
            grid = maps.grid(i, which).numpy()
            fig.add_trace(go.Heatmap(z=grid, x0=lo2, y0=lo1, colorscale="RdBu_r", zmid=0,
                                     showscale=False,
                                     hovertemplate="op1 %{y}<br>op2 %{x}<br>%{z:.3f}"
                                                   "<extra></extra>"), r + 1, c + 1)
    fig.update_yaxes(autorange="reversed", title_text="op1", col=1)
    fig.update_xaxes(title_text="op2", row=2)
    fig.update_annotations(font_size=9)
    fig.update_layout(height=560, title=f"{result.operator}: key and key-value maps of top "
                                        "neurons (rows op1, columns op2)")
    return fig


def families_figure(result: OperatorResult):
    """Stacked bars: neurons per layer with at least one match of each family."""
    import plotly.graph_objects as go

    counts = result.family_counts()
    layers = sorted({L for L, _ in result.maps.neurons})
    families = sorted({f for d in counts.values() for f in d})
    bars = [go.Bar(name=f, x=layers, y=[counts.get(L, {}).get(f, 0) for L in layers])
            for f in families]
    return go.Figure(bars, layout=dict(
        barmode="stack", title=f"{result.operator}: top neurons per layer matching each "
                               f"heuristic family ({result.share_matched:.0%} match one)",
        xaxis_title="layer", yaxis_title="neurons", height=380))


def curves_figure(result: OperatorResult):
    """Faithfulness vs number of heads (all MLPs kept) and vs neurons per layer."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "heads (every MLP kept)",
        f"neurons per layer from layer {result.neurons.first_layer}"))
    fig.add_trace(go.Scatter(x=result.heads.counts, y=result.heads.faithfulness,
                             mode="lines+markers", name="heads"), 1, 1)
    fig.add_trace(go.Scatter(x=result.neurons.counts, y=result.neurons.faithfulness,
                             mode="lines+markers", name="neurons"), 1, 2)
    fig.update_yaxes(title_text="faithfulness (NL)", col=1)
    fig.update_layout(height=360, showlegend=False,
                      title=f"{result.operator}: faithfulness (chosen: {result.heads.chosen} "
                            f"heads, {result.neurons.chosen} neurons per layer)")
    return fig


def knockout_figure(result: OperatorResult, n: int = 20):
    """Grouped bars for up to ``n`` heuristic knockouts."""
    import plotly.graph_objects as go

    ks = sorted(result.knockouts, key=lambda k: k.related - k.unrelated)[:n]
    names = [escape(f"{k.heuristic} ({k.n_neurons})") for k in ks]
    bars = [go.Bar(name=label, x=names, y=[getattr(k, attr) for k in ks])
            for label, attr in (("related prompts", "related"),
                                ("unrelated prompts", "unrelated"),
                                ("random neurons, related", "random_related"))]
    return go.Figure(bars, layout=dict(
        barmode="group", title=f"{result.operator}: accuracy after zero-ablating each "
                               "heuristic's neurons", yaxis_title="accuracy", height=400,
        yaxis_range=[0, 1.05]))


def emergence_figure(emergence: dict):
    """Share of the final checkpoint's (heuristic, neuron) matches present at each step, and
    the faithfulness ratio of the shared neurons."""
    import plotly.graph_objects as go

    steps = emergence["steps"]
    traces = [go.Scatter(x=steps, y=emergence["share_present"], mode="lines+markers",
                         name="final matches present")]
    if emergence.get("shared_faithfulness_ratio"):
        traces.append(go.Scatter(x=steps, y=emergence["shared_faithfulness_ratio"],
                                 mode="lines+markers",
                                 name="faithfulness of shared / all heuristic neurons"))
    if emergence.get("accuracy"):
        traces.append(go.Scatter(x=steps, y=emergence["accuracy"], mode="lines+markers",
                                 name="accuracy"))
    return go.Figure(traces, layout=dict(title=f"{emergence['operator']}: heuristic neurons "
                                               "over fine-tuning", xaxis_title="step",
                                         yaxis_range=[0, 1.05], height=380))


def save_figures(result: OperatorResult, folder: str | Path, prefix: str) -> list[Path]:
    """Write every figure of one operator as offline HTML (``plotly.min.js`` once beside)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, make in (("maps", maps_figure), ("families", families_figure),
                       ("curves", curves_figure), ("knockouts", knockout_figure)):
        path = folder / f"{prefix}_{name}.html"
        make(result).write_html(path, include_plotlyjs="directory")
        out.append(path)
    return out
