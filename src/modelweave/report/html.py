"""``report.html``: one self-contained page for a run directory, rendered from stored results.

Sections (each present even when the run has nothing for it): overview, tasks (accuracy
table), patching (heatmaps), circuits (graph, faithfulness curve with CPR/CMD, the circuit's
top heads with their role scores and attention patterns over an example prompt), logit lens,
head roles. Plotly's JavaScript is inlined once, so the page works offline. Every text that
comes from prompts, tokens or files is escaped. A small script records any JavaScript error
into ``#mw-errors`` (checked by the browser test).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from ..experiments.store import RunStore, atomic_write

SECTIONS = ("overview", "tasks", "patching", "circuits", "lens", "heads")
_TITLES = {"overview": "Overview", "tasks": "Tasks", "patching": "Activation patching",
           "circuits": "Circuits", "lens": "Logit lens", "heads": "Head roles"}

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


def _figure(fig, div_id: str) -> str:
    import plotly.io as pio

    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _by_method(records: dict, method: str) -> list[tuple[str, dict]]:
    return [(uid, r) for uid, r in records.items() if r["method"] == method]


def _overview(manifest: dict, records: dict) -> str:
    config = manifest.get("config", {})
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())
    total = sum(r["seconds"] for r in records.values())
    rows = [["experiment", config.get("name", "")], ["models", ", ".join(config.get("models", []))],
            ["tasks", ", ".join(config.get("tasks", []))], ["prompts per task", config.get("n")],
            ["seed", manifest.get("seed")], ["units finished", len(records)],
            ["compute time", f"{total:.0f} s"], ["versions", versions],
            ["git revision", manifest.get("git_revision") or "none"]]
    return _table(["", ""], rows)


def _tasks(records: dict) -> str:
    rows = [[r["task"], s["n"], s["accuracy"], f"[{s['accuracy_ci'][0]:.2f}, "
             f"{s['accuracy_ci'][1]:.2f}]", s["logit_diff"], s["logit_diff_corrupt"],
             s["metric"], s["metric_value"], s["dropped"]]
            for _, r in _by_method(records, "eval") for s in [r["summary"]]]
    if not rows:
        return '<p class="note">No eval units in this run.</p>'
    return _table(["task", "n", "accuracy", "95% CI", "logit diff", "corrupted", "metric",
                   "value", "dropped"], sorted(rows))


def _patching(store: RunStore, records: dict) -> str:
    from ..methods.result import PatchingResult
    from .figures import flat_grid, heatmap_figure

    parts = []
    for i, (uid, r) in enumerate(_by_method(records, "patch")):
        result = PatchingResult.load(store.root / "units" / uid / "result")
        values, rows, cols, row_name, col_name = flat_grid(result)
        title = (f"{r['task']}: {result.method} {result.direction} patching of {result.grid} "
                 f"({result.metric}, 1 = clean)")
        parts.append(_figure(heatmap_figure(values, [escape(x) for x in rows],
                                            [escape(x) for x in cols], row_name, col_name,
                                            escape(title)), f"patch-{i}"))
    return "".join(parts) or '<p class="note">No patching units in this run.</p>'


def _roles(store: RunStore, records: dict):
    units = _by_method(records, "heads")
    if not units:
        return None
    import pandas as pd

    frame = pd.read_csv(store.root / "units" / units[0][0] / "head_roles.csv")
    return {f"{int(r.layer)}.{int(r.head)}": r for r in frame.itertuples()}


def _circuits(store: RunStore, records: dict) -> str:
    from safetensors.torch import load_file

    from ..circuits import Circuit
    from .circuit_graph import circuit_svg
    from .curves import curve_figure
    from .figures import heatmap_figure

    roles = _roles(store, records)
    parts = []
    for i, (uid, r) in enumerate(_by_method(records, "discover")):
        folder = store.root / "units" / uid
        s = r["summary"]
        circuit = Circuit.load(folder / "circuit.json")
        parts.append(f"<h3>{escape(r['task'])}: {escape(s['method'])}</h3><p>"
                     f"{s['n_edges']} of {s['n_edges_total']} edges, {s['n_nodes']} nodes, "
                     f"faithfulness {s['faithfulness']:.3f} (target {s['target']}); "
                     f"CPR {s['cpr']:.3f}, CMD {s['cmd']:.3f}</p>")
        parts.append(circuit_svg(circuit, max_edges=150))
        parts.append(_figure(curve_figure(circuit.curve, escape(f"{r['task']}: faithfulness")),
                             f"curve-{i}"))
        heads = s.get("top_heads", [])
        if heads and roles is not None:
            names = [c for c in next(iter(roles.values()))._fields if c not in
                     ("Index", "layer", "head")]
            rows = [[h, *[getattr(roles[h[1:].replace(".h", ".")], c) for c in names]]
                    for h in heads if h[1:].replace(".h", ".") in roles]
            parts.append("<p>Role scores of the circuit's top heads:</p>"
                         + _table(["head", *names], rows))
        if (folder / "patterns.json").exists():
            meta = json.loads((folder / "patterns.json").read_text())
            patterns = load_file(str(folder / "patterns.safetensors"))
            parts.append(f'<p>Example prompt: <span class="prompt">{escape(meta["prompt"])}'
                         "</span></p>")
            tokens = [f"{j}:{escape(t)}" for j, t in enumerate(meta["tokens"])]
            for j, head in enumerate(meta["heads"]):
                parts.append(_figure(heatmap_figure(patterns[head], tokens, tokens, "query",
                                                    "key", f"attention pattern of {head}",
                                                    center=False), f"pattern-{i}-{j}"))
    return "".join(parts) or '<p class="note">No circuit units in this run.</p>'


def _lens(store: RunStore, records: dict) -> str:
    from ..methods.lens import LensResult
    from .figures import heatmap_figure

    parts = []
    for i, (uid, r) in enumerate(_by_method(records, "lens")):
        result = LensResult.load(store.root / "units" / uid / "lens")
        positions = [f"{j}:{escape(p)}" for j, p in enumerate(result.positions)]
        parts.append(_figure(heatmap_figure(result.answer_prob, result.layers, positions,
                                            "layer", "position",
                                            escape(f"{r['task']}: P(answer) after each layer"),
                                            center=False), f"lens-{i}"))
    return "".join(parts) or '<p class="note">No logit-lens units in this run.</p>'


def _heads(records: dict) -> str:
    units = _by_method(records, "heads")
    if not units:
        return '<p class="note">No head-role units in this run.</p>'
    summary = units[0][1]["summary"]
    rows = [[role, ", ".join(f"{h['head']} ({h['score']:.2f})" for h in top)]
            for role, top in summary.items()]
    return _table(["role", "top heads (score)"], rows)


def build_report(run_dir: str | Path) -> Path:
    """Render ``RUN/report.html`` from the stored results of ``run_dir``; returns its path."""
    from plotly.offline import get_plotlyjs

    store = RunStore(run_dir)
    manifest, records = store.manifest(), store.records()
    bodies = {"overview": _overview(manifest, records), "tasks": _tasks(records),
              "patching": _patching(store, records), "circuits": _circuits(store, records),
              "lens": _lens(store, records), "heads": _heads(records)}
    nav = "".join(f'<a href="#{k}">{_TITLES[k]}</a>' for k in SECTIONS)
    sections = "".join(f'<section id="{k}"><h2>{_TITLES[k]}</h2>{bodies[k]}</section>'
                       for k in SECTIONS)
    name = escape(str(manifest.get("config", {}).get("name", store.root.name)))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ModelWeave: {name}"
            f"</title><style>{_STYLE}</style>{_ERRORS}<script>{get_plotlyjs()}</script></head>"
            f"<body><nav><b>ModelWeave · {name}</b> {nav}</nav><main>{sections}</main>"
            "</body></html>")
    return atomic_write(store.root / "report.html", page)
