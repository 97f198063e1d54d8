"""HTML building blocks shared by the report's sections (tables, inline plotly figures).

Every cell text is escaped; figure titles and labels are escaped by the caller (they may hold
markup plotly renders), with :func:`escape` re-exported here for that.
"""

from __future__ import annotations

from html import escape

__all__ = ["escape", "figure", "fmt", "note", "table"]


def figure(fig, div_id: str) -> str:
    """A plotly figure as a ``<div>`` (the page inlines plotly's JavaScript once)."""
    import plotly.io as pio

    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id)


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; floats with three decimals, every cell escaped."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(value) -> str:
    """A cell's text: floats with three decimals, anything else as ``str``."""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def note(text: str) -> str:
    """A grey note paragraph (escaped)."""
    return f'<p class="note">{escape(text)}</p>'
