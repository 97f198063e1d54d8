"""Rich display in Jupyter: result objects show themselves with the report's figures, offline.

``import modelweave`` inside an IPython kernel calls :func:`register`, which tells IPython's
HTML formatter how to display each result type *by name* (nothing here is imported until an
object is displayed): a task batch (its first examples and what was dropped), an evaluation
(accuracy and logit difference with CIs), a patching result (the report's heatmap), a logit
lens (answer probability per layer and position), a circuit or a discovery (the circuit graph
and its faithfulness curve), a circuit overlap. Plotly's JavaScript is inlined into the first
figure a kernel displays and reused by the later ones, so notebooks work without a network.
Every text from prompts and tokens is escaped. A ModelWeave error (bad input) shows as its
one-line message, without a traceback.
"""

from __future__ import annotations

from html import escape

from ..errors import ModelWeaveError
from .blocks import table

_PLOTLY_SENT = False
#: (module, class name) -> name of the function in this module that renders it.
DISPLAYS = {
    ("modelweave.tasks.batch", "TaskBatch"): "batch_html",
    ("modelweave.metrics.evaluate", "EvalResult"): "eval_html",
    ("modelweave.methods.result", "PatchingResult"): "patching_html",
    ("modelweave.methods.lens", "LensResult"): "lens_html",
    ("modelweave.circuits.circuit", "Circuit"): "circuit_html",
    ("modelweave.circuits.discovery", "Discovery"): "discovery_html",
    ("modelweave.analysis.compare", "Overlap"): "overlap_html",
}


def figure_html(fig) -> str:
    """A plotly figure as HTML; plotly's JavaScript rides along the first time only."""
    import plotly.io as pio

    global _PLOTLY_SENT
    html = pio.to_html(fig, full_html=False, include_plotlyjs=not _PLOTLY_SENT)
    _PLOTLY_SENT = True
    return html


def _box(title: str, body: str) -> str:
    return f"<div class='modelweave'><h4>{escape(title)}</h4>{body}</div>"


def batch_html(batch, n: int = 5) -> str:
    """The first ``n`` examples: clean and corrupted prompts, answers, wrong answers."""
    rows = [[ex.clean, ex.corrupt, " | ".join(ex.answers), " | ".join(ex.wrong_answers)]
            for ex in batch.examples[:n]]
    dropped = ", ".join(f"{k}: {v}" for k, v in batch.dropped.items()) or "none"
    return _box(f"{batch.task}: {len(batch)} examples, {batch.clean.shape[1]} positions",
                table(["clean", "corrupt", "answers", "wrong"], rows)
                + f"<p>dropped: {escape(dropped)}; named positions: "
                + escape(", ".join(batch.positions)) + "</p>")


def eval_html(result) -> str:
    """Accuracy and logit differences with their 95% intervals."""
    def ci(a):
        return f"{a.mean:.3f} [{a.ci_low:.3f}, {a.ci_high:.3f}]"

    rows = [["accuracy", ci(result.accuracy)], ["logit diff (clean)", ci(result.logit_diff)],
            ["logit diff (corrupt)", ci(result.logit_diff_corrupt)],
            [result.metric, ci(result.metric_value)], ["examples", str(result.n)]]
    return _box(f"{result.task} on {result.model} ({result.scoring} scoring)",
                table(["", "mean [95% CI]"], rows))


def patching_html(result) -> str:
    """The report's heatmap of a patching result (1 = clean behaviour)."""
    from .figures import flat_grid, heatmap_figure

    values, rows, cols, row_name, col_name = flat_grid(result)
    title = (f"{result.method} {result.direction} patching, {result.grid}: {result.task} on "
             f"{result.model} ({result.metric}, 1 = clean)")
    fig = heatmap_figure(values, [escape(r) for r in rows], [escape(c) for c in cols],
                         row_name, col_name, escape(title))
    return _box(title, figure_html(fig))


def lens_html(result) -> str:
    """Answer probability per layer and position."""
    from .figures import heatmap_figure

    title = f"logit lens: {result.task} on {result.model} (answer probability)"
    fig = heatmap_figure(result.answer_prob, list(result.layers),
                         [escape(p) for p in result.positions], "layer", "pos",
                         escape(title), center=False)
    return _box(title, figure_html(fig))


def circuit_html(circuit) -> str:
    """The circuit graph, and its faithfulness curve when it has one."""
    from .circuit_graph import circuit_svg
    from .curves import curve_figure

    body = circuit_svg(circuit)
    if circuit.curve:
        body += figure_html(curve_figure(circuit.curve, "faithfulness"))
    title = (f"{circuit.method} circuit: {circuit.n_edges} of {circuit.graph.n_edges} edges, "
             f"{len(circuit.nodes)} nodes")
    return _box(title, body)


def discovery_html(found) -> str:
    """A discovery: its summary numbers, then the circuit."""
    s = found.summary()
    rows = [[k, s[k]] for k in ("faithfulness", "target", "reached", "cpr", "cmd")]
    return table(["", "value"], rows) + circuit_html(found.circuit)


def overlap_html(overlap) -> str:
    """Jaccard, precision and recall, and the components on each side."""
    rows = [["jaccard", overlap.jaccard], ["precision", overlap.precision],
            ["recall", overlap.recall], ["shared", ", ".join(overlap.shared)],
            ["only in a", ", ".join(overlap.only_a)], ["only in b", ", ".join(overlap.only_b)]]
    return _box(f"circuit overlap ({overlap.level})", table(["", ""], rows))


def _lazy(name: str):
    def render(obj) -> str:
        return globals()[name](obj)
    return render


def register(shell=None) -> bool:
    """Teach an IPython shell (default: the running one) to display every result type.

    Returns:
        whether a shell was found and registered.
    """
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False
    formatter = shell.display_formatter.formatters["text/html"]
    for (module, cls), name in DISPLAYS.items():
        formatter.for_type_by_name(module, cls, _lazy(name))
    shell.set_custom_exc((ModelWeaveError,), _one_line)
    return True


def _one_line(shell, etype, value, tb, tb_offset=None):
    """A ModelWeave error (bad input: an unknown task, a wrong site name...) is shown as its
    one-line message, which says what to do, not as a traceback into library internals."""
    shell.showtraceback((etype, value, tb), exception_only=True)
