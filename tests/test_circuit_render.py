"""The circuit figure (SVG and HTML); no model needed."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import torch

from modelweave.circuits import Circuit, Graph
from modelweave.report.circuit_graph import (
    circuit_svg,
    node_label,
    parse_edge,
    save_circuit_graph,
)

SVG = "{http://www.w3.org/2000/svg}"
ABSENT = "a1.h2"  # scored zero, so never in the circuit


def make_circuit(task: str = "t", n: int = 10) -> Circuit:
    graph = Graph(n_layers=2, n_heads=3)
    torch.manual_seed(0)
    scores = torch.randn(graph.n_senders, graph.n_receivers) * graph.real_edges
    scores[graph.head(1, 2)] = 0.0
    scores[:, [i for i, node in enumerate(graph.receiver_nodes) if node == ABSENT]] = 0.0
    in_graph = torch.zeros_like(scores, dtype=torch.bool)
    circuit = Circuit(graph, scores, in_graph, model="m", task=task, method="eap")
    return circuit.top(n)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def node_groups(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-name"): g for g in root.iter(f"{SVG}g") if g.get("class") == "node"}


def edge_paths(root: ET.Element) -> list[ET.Element]:
    return [p for p in root.iter(f"{SVG}path") if p.get("class") == "edge"]


def test_helpers():
    assert parse_edge("a0.h1->a2.h3<k>") == ("a0.h1", "a2.h3", "k")
    assert parse_edge("input->m0") == ("input", "m0", "")
    assert parse_edge("m4->logits") == ("m4", "logits", "")
    assert [node_label(n) for n in ("a3.h7", "m4", "input", "logits")] == [
        "3.7", "MLP 4", "input", "logits"]


def test_svg_nodes_and_labels():
    circuit = make_circuit()
    assert circuit.n_edges > 0 and ABSENT not in circuit.nodes
    root = parse(circuit_svg(circuit))
    groups = node_groups(root)
    assert set(groups) == set(circuit.nodes)
    labels = {t.text for t in root.iter(f"{SVG}text") if t.get("class") == "node-label"}
    assert labels == {node_label(n) for n in circuit.nodes}
    all_text = {t.text for t in root.iter(f"{SVG}text")}
    assert node_label(ABSENT) not in all_text
    for name, group in groups.items():  # every node has a tooltip naming it
        assert group.find(f"{SVG}title").text.startswith(f"{name}: ")


@pytest.mark.parametrize("max_edges", [300, 3, 0])
def test_svg_edge_count(max_edges):
    circuit = make_circuit()
    paths = edge_paths(parse(circuit_svg(circuit, max_edges=max_edges)))
    assert len(paths) == min(circuit.n_edges, max_edges)
    names = {p.find(f"{SVG}title").text.rsplit(":", 1)[0] for p in paths}
    best = {name for name, _ in circuit.edges()[:max_edges]}
    assert names == best


def test_svg_edge_styles():
    circuit = make_circuit(n=40)
    for path in edge_paths(parse(circuit_svg(circuit))):
        name, score = path.find(f"{SVG}title").text.rsplit(": ", 1)
        assert path.get("stroke") == ("#2166ac" if float(score) >= 0 else "#b2182b")
        kind = parse_edge(name)[2]
        assert (path.get("stroke-dasharray") is not None) == bool(kind)


def test_node_radius_grows_with_score():
    circuit = make_circuit()
    scores = circuit.node_scores()
    groups = node_groups(parse(circuit_svg(circuit)))
    ranked = sorted(circuit.nodes, key=scores.__getitem__)
    radius = {n: float(groups[n].find(f"{SVG}circle").get("r")) for n in ranked}
    assert radius[ranked[-1]] > radius[ranked[0]]


def test_html_escapes_and_files(tmp_path):
    circuit = make_circuit(task="<script>alert(1)</script>")
    circuit.curve = {"cpr": 0.8123, "cmd": 0.1}
    page = save_circuit_graph(circuit, tmp_path / "sub" / "fig.html")
    assert page == tmp_path / "sub" / "fig.html"
    text = page.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "CPR 0.812" in text and "CMD 0.100" in text
    assert f"{circuit.n_edges}/{circuit.graph.n_edges}" in text
    svg = save_circuit_graph(circuit, tmp_path / "fig.svg", max_edges=5)
    root = parse(svg.read_text())
    assert root.tag == f"{SVG}svg" and len(edge_paths(root)) == min(5, circuit.n_edges)
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ValueError):
        save_circuit_graph(circuit, tmp_path / "fig.png")
