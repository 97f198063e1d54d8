"""Figures and report blocks of function vectors and steering (plotly; offline HTML files).

- :func:`effects_figure`: the heads' average indirect effect (layer x head heatmap);
- :func:`sweep_figure`: top-1 accuracy by the layer the FV is added at, zero-shot and on
  shuffled-label prompts, against no vector and the layer-mean baseline, one panel per task;
- :func:`headline_table`: held-out accuracies with intervals, beside the random-head FV and
  the equal-norm random vector;
- :func:`samples_table`: steered and unsteered generations side by side (escaped HTML).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .blocks import escape, table

if TYPE_CHECKING:
    from ..methods.steering.fv_eval import FVRun


def effects_figure(run: FVRun, task: str | None = None):
    """Heatmap [layer, head] of the average indirect effect (mean over tasks, or one task);
    the FV's heads are marked."""
    import plotly.graph_objects as go

    effects = run.mean_effects if task is None else next(
        t.effects for t in run.tasks if t.task == task)
    data = effects.float().numpy()
    heat = go.Heatmap(z=data, colorscale="RdBu_r", zmid=0, x=list(range(data.shape[1])),
                      y=list(range(data.shape[0])),
                      hovertemplate="layer %{y} head %{x}<br>AIE %{z:.4f}<extra></extra>")
    marks = go.Scatter(x=[h for _, h in run.heads], y=[L for L, _ in run.heads], mode="markers",
                       marker=dict(symbol="square-open", size=12, color="black"),
                       name="FV heads", hoverinfo="skip")
    label = "mean over tasks" if task is None else task
    return go.Figure([heat, marks], layout=dict(
        title=escape(f"{run.model}: average indirect effect of each head ({label}; change in "
                     "P(answer) on shuffled-label prompts)"),
        xaxis_title="head", yaxis_title="layer", yaxis_autorange="reversed",
        height=max(420, 16 * data.shape[0] + 150), showlegend=False))


def sweep_figure(run: FVRun):
    """Accuracy vs the layer the FV is added at: one panel per task, zero-shot (solid) and
    shuffled-label (dashed), FV / layer mean / none, and the 10-shot ceiling (dotted)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tasks = [t for t in run.tasks if t.accuracy]
    cols = min(4, max(1, len(tasks)))
    rows = max(1, -(-len(tasks) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[escape(t.task) for t in tasks],
                        shared_yaxes=True)
    colors = {"fv": "#d62728", "layer_mean": "#1f77b4", "none": "#7f7f7f"}
    for i, t in enumerate(tasks):
        r, c = i // cols + 1, i % cols + 1
        for setting, dash in (("zero_shot", "solid"), ("shuffled", "dash")):
            for name, values in t.accuracy[setting].items():
                fig.add_trace(go.Scatter(x=run.layers, y=values, mode="lines+markers",
                                         line=dict(color=colors[name], dash=dash),
                                         name=f"{setting} {name}", legendgroup=setting + name,
                                         showlegend=i == 0), r, c)
        fig.add_trace(go.Scatter(x=[run.layers[0], run.layers[-1]], y=[t.ceiling] * 2,
                                 mode="lines", line=dict(color="black", dash="dot"),
                                 name="10-shot (ceiling)", showlegend=i == 0), r, c)
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_xaxes(title_text="layer")
    fig.update_layout(height=300 * rows + 120, title=escape(
        f"{run.model}: top-1 accuracy with the FV added at each layer (last token)"))
    return fig


def with_ci(row: dict, key: str) -> str:
    """``0.42 [0.25, 0.58]`` from ``row[key]`` and ``row[key + "_ci"]`` ("" when absent)."""
    if key not in row:
        return ""
    ci = row.get(f"{key}_ci")
    return f"{row[key]:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def null_cell(row: dict, key: str) -> str:
    """``0.05 [0.00, 0.12], p 0.005``: a null's mean, 2.5-97.5% range and p ("" when
    absent)."""
    n = row.get(key)
    if not n:
        return ""
    return f"{n['null_mean']:.2f} [{n['null_low']:.2f}, {n['null_high']:.2f}], p {n['p_value']:.2g}"


def headline_table(run: FVRun) -> str:
    """HTML table of the held-out accuracies at the FV layer with their bootstrap intervals,
    beside the random-head FV and the equal-norm random vector."""
    head = ["task", "n_correct", "n_corrupt", "n_eval", "ceiling_10shot"]
    rows = []
    for r in run.headline():
        cells = [r["task"], r.get("n_correct", ""), r.get("n_corrupt", ""), r.get("n_eval", ""),
                 with_ci(r, "ceiling_10shot")]
        for setting in ("zero_shot", "shuffled"):
            cells += [with_ci(r, f"{setting}_none"), with_ci(r, f"{setting}_fv"),
                      null_cell(r, f"{setting}_fv_null"),
                      null_cell(r, f"{setting}_fv_null_vector"),
                      with_ci(r, f"{setting}_layer_mean")]
        rows.append(cells)
    for setting in ("zero_shot", "shuffled"):
        head += [f"{setting} none", f"{setting} +FV", f"{setting} random-head FV",
                 f"{setting} equal-norm vector", f"{setting} +layer mean"]
    return table(head, rows)


def samples_table(rows: list[dict]) -> str:
    """``[{"prompt", "unsteered", "steered"}]`` as an HTML table."""
    return table(["prompt", "unsteered", "steered"],
                 [[r["prompt"], r["unsteered"], r["steered"]] for r in rows])


def save_fv_figures(run: FVRun, folder: str | Path) -> list[Path]:
    """Write the effects heatmap and the layer sweep as offline HTML (and the heatmap as a
    PNG); returns the paths."""
    from .figures import save_heatmap

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    effects = run.mean_effects
    paths = save_heatmap(effects.float(), [str(x) for x in range(effects.shape[0])],
                         [str(x) for x in range(effects.shape[1])], "layer", "head",
                         f"{run.model}: average indirect effect per head (mean over "
                         f"{len(run.tasks)} ICL tasks)", folder / "fv_effects")
    sweep = folder / "fv_layer_sweep.html"
    sweep_figure(run).write_html(sweep, include_plotlyjs="directory")
    paths.append(sweep)
    try:
        png = folder / "fv_layer_sweep.png"
        _sweep_png(run, png)
        paths.append(png)
    except ImportError:  # matplotlib is a dependency; keep the HTML if it is missing
        pass
    return paths


def _sweep_png(run: FVRun, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in run.tasks if t.accuracy]
    cols = min(4, max(1, len(tasks)))
    rows = max(1, -(-len(tasks) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False,
                             sharey=True)
    colors = {"fv": "tab:red", "layer_mean": "tab:blue", "none": "tab:gray"}
    for i, t in enumerate(tasks):
        ax = axes[i // cols][i % cols]
        for setting, style in (("zero_shot", "-"), ("shuffled", "--")):
            for name, values in t.accuracy[setting].items():
                ax.plot(run.layers, values, style, color=colors[name], marker=".",
                        label=f"{setting} {name}")
        ax.axhline(t.ceiling, color="black", linestyle=":", label="10-shot")
        ax.set_title(t.task, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("layer", fontsize=8)
    for j in range(len(tasks), rows * cols):
        axes[j // cols][j % cols].axis("off")
    if tasks:
        axes[0][0].legend(fontsize=6)
    fig.suptitle(f"{run.model}: top-1 accuracy with the FV added at each layer", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
