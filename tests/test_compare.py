"""Comparing circuits: overlaps, depth alignment, shared components, transfer, CLI."""

import json

import pytest
import torch
from typer.testing import CliRunner

from modelweave import Model
from modelweave.analysis import (
    by_role,
    components,
    depth_overlap,
    depth_profile,
    overlap,
    shared_components,
    transfer_faithfulness,
)
from modelweave.circuits import Circuit, CircuitError, CircuitEvaluator, Graph, edge_attribution
from modelweave.cli import app
from modelweave.methods.head_roles import HeadRoles
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model


def circuit(graph: Graph, senders: list[str], task: str = "t", seed: int = 0) -> Circuit:
    """A circuit whose edges are every edge from ``senders`` (and input) into ``logits``."""
    scores = torch.rand(graph.n_senders, graph.n_receivers,
                        generator=torch.Generator().manual_seed(seed))
    in_graph = torch.zeros_like(graph.real_edges)
    for name in ["input", *senders]:
        in_graph[graph.sender_names.index(name), graph.logits_receiver] = True
    return Circuit(graph, scores, in_graph, model="m", task=task, method="eap-ig")


G = Graph(n_layers=4, n_heads=2)


def test_a_circuit_overlaps_itself_fully():
    c = circuit(G, ["a0.h1", "m2", "a3.h0"])
    for level in ("nodes", "edges"):
        same = overlap(c, c, level)
        assert same.jaccard == same.precision == same.recall == 1.0 and not same.only_a
    assert depth_overlap(c, c) == 1.0


def test_precision_recall_and_shared_components():
    a = circuit(G, ["a0.h1", "m2", "a3.h0"])
    b = circuit(G, ["a0.h1", "m2", "a1.h1", "a2.h0"])
    ab = overlap(a, b)
    assert ab.shared == ["a0.h1", "m2"] and ab.only_a == ["a3.h0"]
    assert ab.jaccard == pytest.approx(2 / 5) and ab.precision == pytest.approx(2 / 3)
    assert ab.recall == pytest.approx(2 / 4)
    c = circuit(G, ["a0.h1", "a2.h0"])
    shared = shared_components({"a": a, "b": b, "c": c})
    assert shared[("a", "b", "c")] == ["a0.h1"] and shared[("a", "b")] == ["m2"]
    assert shared[("b", "c")] == ["a2.h0"] and shared[("a",)] == ["a3.h0"]
    assert components(a, "edges") == {"input->logits", "a0.h1->logits", "m2->logits",
                                      "a3.h0->logits"}
    with pytest.raises(CircuitError, match="level"):
        components(a, "heads")


def test_models_of_different_depths_align_by_relative_depth():
    shallow = circuit(G, ["a3.h0", "m3"])  # the last of 4 layers
    deep = circuit(Graph(n_layers=8, n_heads=3), ["a7.h2", "m7"])  # the last of 8
    early = circuit(Graph(n_layers=8, n_heads=3), ["a0.h2", "m0"])
    assert depth_overlap(shallow, deep) == 1.0 and depth_overlap(shallow, early) == 0.0
    assert depth_profile(deep)["attn"][9] == 1
    with pytest.raises(CircuitError, match="different graphs"):
        overlap(shallow, deep)


def test_by_role_groups_shared_heads():
    scores = torch.zeros(4, 2)
    scores[0, 1] = 0.9
    roles = HeadRoles(model="m", scores={"induction": scores, "copying": scores.flip(0)})
    assert by_role(["a0.h1", "a3.h1", "m2"], roles) == {"induction": ["a0.h1"],
                                                       "copying": ["a3.h1"]}


def test_transfer_faithfulness_of_a_circuit_in_another_model():
    tok = make_tokenizer("bytelevel")
    base = Model(tiny_hf_model("gpt2", seed=0, vocab_size=len(tok)), tok)
    other = Model(tiny_hf_model("gpt2", seed=1, vocab_size=len(tok)), tok)
    batch = make_batch(base, "ioi", n=6, seed=0)
    found = edge_attribution(base, batch, method="eap").top(40)
    own = CircuitEvaluator(base, batch)
    assert transfer_faithfulness(found, own) == pytest.approx(own.faithfulness(found.in_graph))
    elsewhere = transfer_faithfulness(found, CircuitEvaluator(other, batch))
    assert elsewhere != pytest.approx(own.faithfulness(found.in_graph))
    deeper = CircuitEvaluator(Model(tiny_hf_model("gpt2", vocab_size=len(tok)), tok), batch)
    deeper.graph = Graph(deeper.graph.n_layers + 1, deeper.graph.n_heads)  # as if deeper
    with pytest.raises(CircuitError, match="graph"):
        transfer_faithfulness(found, deeper)


def test_cli_compare_writes_json_and_upset(tmp_path):
    files = []
    for i, senders in enumerate((["a0.h1", "m2"], ["a0.h1", "a2.h0"], ["a0.h1", "m2", "m3"])):
        files.append(circuit(G, senders, task=f"t{i}").save(tmp_path / f"c{i}.json"))
    result = CliRunner().invoke(app, ["compare", *map(str, files), "--out", str(tmp_path / "o"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert len(data["pairs"]) == 3 and data["pairs"][0]["jaccard"] == pytest.approx(1 / 3)
    everyone = [s for s in data["shared"] if len(s["circuits"]) == 3]
    assert everyone[0]["components"] == ["a0.h1"]
    assert (tmp_path / "o" / "upset.png").exists()
    one = CliRunner().invoke(app, ["compare", str(files[0])])
    assert isinstance(one.exception, CircuitError)
    (tmp_path / "bad.json").write_text("{}")
    bad = CliRunner().invoke(app, ["compare", str(files[0]), str(tmp_path / "bad.json")])
    assert isinstance(bad.exception, CircuitError) and "not a ModelWeave circuit" in str(
        bad.exception)
