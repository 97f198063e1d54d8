"""A circuit as a standalone SVG figure (and an HTML page around it); pure string building.

Layout: one row per layer, ``input`` at the bottom and ``logits`` at the top; in a layer's row
the heads (``L.H``) run left to right and the MLP (``MLP L``) sits at the right. Only the
circuit's nodes are drawn, sized by their score (square-root scale). Edges are curves from
sender to receiver, wide by |score|, blue when positive and red when negative; edges into a
head's query, key or value input have their own dash pattern (see the legend). Every node and
edge carries a ``<title>`` tooltip with its name and score.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

from ..circuits import Circuit, CircuitError
from ..io import atomic_write

POSITIVE, NEGATIVE = "#2166ac", "#b2182b"
DASHES = {"": "", "q": "7 3", "k": "2 3", "v": "9 3 2 3"}
KIND_NAMES = {"": "residual (MLP, logits)", "q": "query", "k": "key", "v": "value"}
FILLS = {"head": "#fdd9a6", "mlp": "#c7e9c0", "end": "#e0e0e0"}
_NODE = re.compile(r"a(\d+)\.h(\d+)|m(\d+)")


class CircuitGraphError(CircuitError, ValueError):
    """A circuit figure asked of an unknown node or written to an unknown file type."""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def parse_edge(name: str) -> tuple[str, str, str]:
    """``"a0.h1->a2.h3<k>"`` -> (sender node, receiver node, ``"q"``/``"k"``/``"v"`` or ``""``)."""
    sender, _, receiver = name.partition("->")
    node, _, kind = receiver.partition("<")
    return sender, node, kind.rstrip(">")


def node_label(name: str) -> str:
    """``a3.h7`` -> ``3.7``, ``m4`` -> ``MLP 4``; ``input`` and ``logits`` stay as they are."""
    match = _NODE.fullmatch(name)
    if match is None:
        return name
    if match.group(3) is not None:
        return f"MLP {match.group(3)}"
    return f"{match.group(1)}.{match.group(2)}"


class _Layout:
    """Pixel positions of every node of a graph."""

    def __init__(self, n_layers: int, n_heads: int) -> None:
        self.n_layers, self.n_heads = n_layers, n_heads
        self.col = min(64.0, max(26.0, 900 / (n_heads + 1)))
        self.row = min(80.0, max(34.0, 640 / (n_layers + 2)))
        self.left, self.top = 60.0, 44.0
        self.grid_width = self.col * (n_heads + 1.5)
        self.width = max(580.0, self.left + self.grid_width + 20)
        self.left = max(self.left, (self.width - self.grid_width) / 2)  # centre a narrow grid
        self.bottom = self.top + self.row * (n_layers + 2)
        self.height = self.bottom + 64

    def row_y(self, row: int) -> float:
        """``row`` 0 is ``logits`` (top), ``n_layers + 1`` is ``input`` (bottom)."""
        return self.top + self.row * (row + 0.5)

    def layer_y(self, layer: int) -> float:
        return self.row_y(self.n_layers - layer)

    def xy(self, name: str) -> tuple[float, float]:
        centre = self.left + self.grid_width / 2
        if name == "logits":
            return centre, self.row_y(0)
        if name == "input":
            return centre, self.row_y(self.n_layers + 1)
        match = _NODE.fullmatch(name)
        if match is None:
            raise CircuitGraphError(f"unknown node {name!r}; nodes are input, logits, aL.hH and mL")
        if match.group(3) is not None:
            return self.left + self.col * (self.n_heads + 1), self.layer_y(int(match.group(3)))
        head = int(match.group(2))
        return self.left + self.col * (head + 0.5), self.layer_y(int(match.group(1)))


def _radii(circuit: Circuit, nodes: list[str], r_min: float, r_max: float) -> dict[str, float]:
    """Node radius: ``r_min`` plus a square-root share of ``r_max - r_min`` by node score."""
    scores = circuit.node_scores()
    top = max((scores.get(n, 0.0) for n in nodes), default=0.0)
    if top <= 0:
        return {n: r_min for n in nodes}
    return {n: r_min + (r_max - r_min) * math.sqrt(max(scores.get(n, 0.0), 0.0) / top)
            for n in nodes}


def _edge_path(x1: float, y1: float, x2: float, y2: float, bend: float) -> str:
    """A cubic curve leaving the sender upwards and entering the receiver from below."""
    dy = max(0.4 * abs(y1 - y2), bend)
    return f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 - dy:.1f} {x2:.1f},{y2 + dy:.1f} {x2:.1f},{y2:.1f}"


def _legend(x: float, y: float) -> list[str]:
    parts = [f'<g class="legend" font-size="11" transform="translate({x:.1f},{y:.1f})">']
    for i, (kind, label) in enumerate(KIND_NAMES.items()):
        lx = (i % 2) * 190
        ly = (i // 2) * 16
        dash = f' stroke-dasharray="{DASHES[kind]}"' if DASHES[kind] else ""
        parts.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 30}" y2="{ly}" stroke="#444" '
                     f'stroke-width="2"{dash}/><text x="{lx + 36}" y="{ly + 4}">{label}</text>')
    for i, (colour, label) in enumerate(((POSITIVE, "positive score"),
                                         (NEGATIVE, "negative score"))):
        parts.append(f'<line x1="300" y1="{16 * i}" x2="330" y2="{16 * i}" stroke="{colour}" '
                     f'stroke-width="3"/><text x="336" y="{16 * i + 4}">{label}</text>')
    return parts + ["</g>"]


def circuit_svg(circuit: Circuit, *, max_edges: int = 300, title: str | None = None) -> str:
    """Render ``circuit`` as a standalone SVG document (a string).

    Args:
        circuit: the circuit; only ``circuit.nodes`` and edges in ``circuit.in_graph`` are drawn.
        max_edges: draw at most this many edges, the best by |score|.
        title: the heading; by default model, task, method and the edge count.
    """
    graph = circuit.graph
    lay = _Layout(graph.n_layers, graph.n_heads)
    nodes = circuit.nodes
    radius = _radii(circuit, nodes, 5.0, 0.45 * min(lay.col, lay.row))
    edges = circuit.edges()[: max(0, max_edges)]
    if title is None:
        what = " · ".join(p for p in (circuit.model, circuit.task, circuit.method) if p)
        title = f"{what or 'circuit'}: {circuit.n_edges}/{graph.n_edges} edges"
        if len(edges) < circuit.n_edges:
            title += f" (best {len(edges)} drawn)"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width:.0f}" '
           f'height="{lay.height:.0f}" viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" '
           'font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text class="title" x="{lay.width / 2:.1f}" y="24" text-anchor="middle" '
           f'font-size="14" font-weight="bold">{_esc(title)}</text>',
           '<g class="guides" stroke="#eee" fill="#aaa" font-size="10">']
    x_end = lay.left + lay.grid_width
    rows = [("logits", 0)] + [(f"layer {layer}", graph.n_layers - layer)
                              for layer in range(graph.n_layers)]
    for label, row in rows + [("input", graph.n_layers + 1)]:
        y = lay.row_y(row)
        out.append(f'<line x1="{lay.left:.1f}" y1="{y:.1f}" x2="{x_end:.1f}" y2="{y:.1f}"/>'
                   f'<text class="row-label" x="8" y="{y + 3:.1f}" stroke="none">{label}</text>')
    out.append("</g>")

    top = max((abs(score) for _, score in edges), default=0.0) or 1.0
    out.append('<g class="edges" fill="none" stroke-linecap="round">')
    for name, score in reversed(edges):  # weakest first, so the strongest lie on top
        sender, receiver, kind = parse_edge(name)
        (x1, y1), (x2, y2) = lay.xy(sender), lay.xy(receiver)
        x2 += {"q": -0.5, "k": 0.0, "v": 0.5}.get(kind, 0.0) * radius[receiver]
        width = 0.6 + 4.4 * abs(score) / top
        dash = f' stroke-dasharray="{DASHES[kind]}"' if DASHES.get(kind) else ""
        out.append(f'<path class="edge" d="{_edge_path(x1, y1, x2, y2, 0.6 * lay.row)}" '
                   f'stroke="{POSITIVE if score >= 0 else NEGATIVE}" '
                   f'stroke-width="{width:.2f}" stroke-opacity="0.65"{dash}>'
                   f"<title>{_esc(name)}: {score:.4g}</title></path>")
    out.append("</g>")

    scores = circuit.node_scores()
    out.append('<g class="nodes" font-size="10" text-anchor="middle">')
    for name in nodes:
        x, y = lay.xy(name)
        kind = "mlp" if name.startswith("m") else "head" if name.startswith("a") else "end"
        out.append(f'<g class="node" data-name="{_esc(name)}">'
                   f"<title>{_esc(name)}: {scores.get(name, 0.0):.4g}</title>"
                   f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius[name]:.2f}" '
                   f'fill="{FILLS[kind]}" stroke="#555"/>'
                   f'<text class="node-label" x="{x:.1f}" y="{y + 3.5:.1f}" fill="#222">'
                   f"{_esc(node_label(name))}</text></g>")
    out.append("</g>")
    out += _legend(lay.left, lay.bottom + 20)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _caption(circuit: Circuit) -> str:
    parts = [f"model <b>{_esc(circuit.model or '?')}</b>",
             f"task <b>{_esc(circuit.task or '?')}</b>",
             f"method <b>{_esc(circuit.method or '?')}</b>",
             f"edges {circuit.n_edges}/{circuit.graph.n_edges}"]
    if isinstance(circuit.curve, dict):
        for key in ("cpr", "cmd"):
            value = circuit.curve.get(key)
            if isinstance(value, (int, float)):
                parts.append(f"{key.upper()} {value:.3f}")
            elif value is not None:
                parts.append(f"{key.upper()} {_esc(value)}")
    return " · ".join(parts)


def save_circuit_graph(circuit: Circuit, path: str | Path, **kwargs) -> Path:
    """Write the circuit figure to ``path`` (``.svg``: the SVG; ``.html``: a page around it).

    ``kwargs`` go to :func:`circuit_svg`. The write is atomic and parent folders are created.
    Returns ``path``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".svg", ".html"):
        raise CircuitGraphError(f"{path}: the circuit graph is written as .svg or .html, not "
                                f"{path.suffix or 'a file without suffix'!r}")
    svg = circuit_svg(circuit, **kwargs)
    if suffix == ".html":
        heading = _esc(f"Circuit: {circuit.task or 'task'} on {circuit.model or 'model'}")
        text = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                f"<title>{heading}</title>\n<style>body{{font-family:sans-serif;margin:24px}}"
                "figure{margin:0}figcaption{color:#444;margin:8px 0}</style></head>\n<body>"
                f"<h1>{heading}</h1>\n<figure>\n<figcaption>{_caption(circuit)}</figcaption>\n"
                f"{svg}</figure>\n</body></html>\n")
    else:
        text = svg
    return atomic_write(path, text)
