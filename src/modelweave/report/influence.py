"""The influence report section: top documents per query (escaped text, the answer
highlighted), concentration curves and the query-query correlation heatmap.

Every function reads an :class:`~modelweave.methods.influence.InfluenceScores` (no model).
"""

from __future__ import annotations

import re
from html import escape

from ..methods.influence.scores import InfluenceScores


def highlight(text: str, answer: str) -> str:
    """``text`` escaped, each (case-insensitive) occurrence of ``answer`` in ``<mark>``."""
    if not answer:
        return escape(text)
    parts, last = [], 0
    for match in re.finditer(re.escape(answer), text, flags=re.IGNORECASE):
        parts.append(escape(text[last:match.start()]))
        parts.append(f"<mark>{escape(match.group(0))}</mark>")
        last = match.end()
    parts.append(escape(text[last:]))
    return "".join(parts)


def top_documents_html(result: InfluenceScores, k: int = 3, method: str = "ekfac",
                       max_queries: int = 40, max_chars: int = 300) -> str:
    """A table: each query (prompt, completion) with its top-``k`` documents."""
    rows = []
    for i, q in enumerate(result.queries[:max_queries]):
        docs = "".join(
            f"<div><b>{t.rank}.</b> <code>{escape(t.id)}</code> "
            f"<span class='note'>[{escape(t.category or '-')}] {t.score:.3g}</span><br>"
            f"<span class='prompt'>{highlight(t.text[:max_chars], q.answer)}</span></div>"
            for t in result.top(i, k, method))
        rows.append(f"<tr><td><code>{escape(q.id)}</code><br><span class='prompt'>"
                    f"{escape(q.prompt)}<b>{escape(q.completion)}</b></span></td>"
                    f"<td style='text-align:left'>{docs}</td></tr>")
    more = (f"<p class='note'>{len(result.queries) - max_queries} more queries in "
            "influence.json.</p>" if len(result.queries) > max_queries else "")
    return ("<table><tr><th>query (completion in bold)</th><th>top documents "
            f"({escape(method)}; positive = raises the completion's probability)</th></tr>"
            + "".join(rows) + "</table>" + more)


def concentration_figure(result: InfluenceScores, method: str = "ekfac", k_max: int = 30):
    """Mean share of total positive influence in the top-k documents, one line per task."""
    import plotly.graph_objects as go

    from ..methods.influence.analysis import concentration_curve

    m = result.matrix(method)
    ks = list(range(1, min(k_max, m.shape[1]) + 1))
    traces = []
    for task in result.tasks():
        rows = [concentration_curve(m[i], ks) for i, q in enumerate(result.queries)
                if q.task == task]
        mean = [sum(c) / len(rows) for c in zip(*rows, strict=True)]
        traces.append(go.Scatter(x=ks, y=mean, mode="lines+markers", name=escape(task)))
    return go.Figure(traces, layout=dict(
        title="Concentration: share of positive influence in the top-k documents",
        xaxis_title="k", yaxis_title="share", yaxis_range=[0, 1.02], height=380))


def correlation_figure(result: InfluenceScores, method: str = "ekfac"):
    """Pearson correlation of the queries' influence vectors, ordered by task."""
    import plotly.graph_objects as go

    from ..methods.influence.analysis import query_correlations

    order = sorted(range(len(result.queries)), key=lambda i: (result.queries[i].task, i))
    corr = query_correlations(result.matrix(method))[order][:, order]
    labels = [escape(f"{result.queries[i].task}:{result.queries[i].id}") for i in order]
    return go.Figure(go.Heatmap(z=corr.tolist(), x=labels, y=labels, zmin=-1, zmax=1,
                                colorscale="RdBu_r"),
                     layout=dict(title="Query-query correlation of influence vectors",
                                 height=520, yaxis_autorange="reversed"))


def retrieval_html(table: dict) -> str:
    """A table of source retrieval per method (EK-FAC and each baseline side by side): top-k
    hits with their bootstrap intervals over queries (in counts) and the mean reciprocal rank
    with its interval. ``table`` is :func:`~modelweave.methods.influence.evaluate.retrieval`'s
    result (or a summary's ``retrieval``)."""
    ks = sorted(int(k[3:]) for k in next(iter(table.values())) if k.startswith("top")
                and k[3:].isdigit())
    head = "".join(f"<th>top-{k} hits [95% CI]</th>" for k in ks)
    rows = []
    for method, block in table.items():
        cells = []
        for k in ks:
            t = block[f"top{k}"]
            lo, hi = (round(x * t["n"]) for x in t["share_ci"])
            cells.append(f"<td>{t['hits']}/{t['n']} [{lo}, {hi}]</td>")
        mrr = f"{block['mrr']:.2f} [{block['mrr_ci'][0]:.2f}, {block['mrr_ci'][1]:.2f}]"
        rows.append(f"<tr><td>{escape(method)}</td>{''.join(cells)}<td>{mrr}</td></tr>")
    return (f"<table><tr><th>method</th>{head}<th>mean reciprocal rank</th></tr>"
            + "".join(rows) + "</table>")
