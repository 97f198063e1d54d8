"""The HTML page around a report's sections: style, navigation, the inlined plotly script and
a small script that records any JavaScript error into ``#mw-errors`` (checked by the browser
test). It knows nothing of runs or methods: :mod:`modelweave.experiments.page` renders a run
store's sections and hands them here.
"""

from __future__ import annotations

from html import escape

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
nav{position:sticky;top:0;background:#f4f4f6;padding:.6em 1.5em;border-bottom:1px solid #ddd}
nav a{margin-right:1.2em;color:#0b5cad;text-decoration:none}
main{padding:0 1.5em 3em;max-width:1200px}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f6} td:first-child,th:first-child{text-align:left}
.note{color:#666} .prompt{font-family:monospace;background:#f7f7f7;padding:.3em .5em}
svg{max-width:100%;height:auto}
"""
_ERRORS = """<div id="mw-errors" hidden></div><script>
(function(){var box=document.getElementById('mw-errors');
function add(m){var d=document.createElement('div');d.textContent=String(m);box.appendChild(d);}
window.addEventListener('error',function(e){add(e.message);});
var error=console.error;console.error=function(){add([].join.call(arguments,' '));
error.apply(console,arguments);};})();</script>"""


def html_page(name: str, sections: list[tuple[str, str, str]]) -> str:
    """One self-contained page titled ``name`` (escaped here) from ``(id, title, body HTML)``
    sections, in order, each linked from the navigation bar. Plotly's JavaScript is inlined
    once, so the page works offline."""
    from plotly.offline import get_plotlyjs

    nav = "".join(f'<a href="#{k}">{escape(title)}</a>' for k, title, _ in sections)
    body = "".join(f'<section id="{k}"><h2>{escape(title)}</h2>{content}</section>'
                   for k, title, content in sections)
    name = escape(name)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ModelWeave: {name}"
            f"</title><style>{_STYLE}</style>{_ERRORS}<script>{get_plotlyjs()}</script></head>"
            f"<body><nav><b>ModelWeave · {name}</b> {nav}</nav><main>{body}</main>"
            "</body></html>")
