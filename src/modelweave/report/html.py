"""``report.html``: one self-contained page for a run directory, rendered from stored results.

Sections (each present even when the run has nothing for it): the overview, then one per
registered experiment method kind, in its order, rendered by the kind's ``report_section``
(built in: tasks (accuracy table), patching (heatmaps), circuits (graph, faithfulness curve
with CPR/CMD, the circuit's top heads with their role scores and attention patterns over an
example prompt), logit lens, head roles). This module never names a method. Plotly's
JavaScript is inlined once, so the page works offline. Every text that comes from prompts,
tokens or files is escaped. A small script records any JavaScript error into ``#mw-errors``
(checked by the browser test).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from ..experiments.methods import ReportContext, methods
from ..experiments.store import RunStore, atomic_write
from .blocks import note, table

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


def sections() -> list[tuple[str, str]]:
    """``(id, title)`` of every section, in page order: the overview, then the method kinds'."""
    return [("overview", "Overview"), *((k.section_id, k.section_title) for k in methods())]


def __getattr__(name: str):
    if name == "SECTIONS":  # the section ids, current with the registry
        return tuple(section for section, _ in sections())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _overview(manifest: dict, records: dict) -> str:
    config = manifest.get("config", {})
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())
    total = sum(r["seconds"] for r in records.values())
    rows = [["experiment", config.get("name", "")], ["models", ", ".join(config.get("models", []))],
            ["tasks", ", ".join(config.get("tasks", []))], ["prompts per task", config.get("n")],
            ["seed", manifest.get("seed")], ["units finished", len(records)],
            ["compute time", f"{total:.0f} s"], ["versions", versions],
            ["git revision", manifest.get("git_revision") or "none"]]
    return table(["", ""], rows)


def _failures(failures: dict[str, dict]) -> str:
    """The units whose last attempt failed: error line, worker, traceback (folded)."""
    if not failures:
        return ""
    rows = "".join(
        f"<tr><td>{escape(uid)}</td><td>{escape(r['error'])}<details><summary>traceback"
        f"</summary><pre>{escape(r['traceback'])}</pre></details></td></tr>"
        for uid, r in failures.items())
    return (f"<h3>Failed units ({len(failures)})</h3><p class='note'>Recorded in failed/; "
            f"running the experiment again retries them.</p><table><tr><th>unit</th>"
            f"<th>error</th></tr>{rows}</table>")


def build_report(run_dir: str | Path) -> Path:
    """Render ``RUN/report.html`` from the stored results of ``run_dir``; returns its path."""
    from plotly.offline import get_plotlyjs

    store = RunStore(run_dir)
    manifest, records = store.manifest(), store.records()
    ctx = ReportContext(store, manifest, records)
    bodies = {"overview": _overview(manifest, records) + _failures(store.failures())}
    for kind in methods():
        units = ctx.units(kind.name)
        bodies[kind.section_id] = (kind.report_section(units, ctx) if units
                                   else note(kind.empty_note))
    order = sections()
    nav = "".join(f'<a href="#{k}">{escape(title)}</a>' for k, title in order)
    body = "".join(f'<section id="{k}"><h2>{escape(title)}</h2>{bodies[k]}</section>'
                   for k, title in order)
    name = escape(str(manifest.get("config", {}).get("name", store.root.name)))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ModelWeave: {name}"
            f"</title><style>{_STYLE}</style>{_ERRORS}<script>{get_plotlyjs()}</script></head>"
            f"<body><nav><b>ModelWeave · {name}</b> {nav}</nav><main>{body}</main>"
            "</body></html>")
    return atomic_write(store.root / "report.html", page)
