"""Influence inputs (documents, queries, modules, memory) and the study's analyses: one clear
error for each kind of bad input; the analyses on matrices with known answers."""

from __future__ import annotations

import json

import pytest
import torch

from modelweave.errors import ModelWeaveError
from modelweave.methods.influence import (
    Document,
    InfluenceError,
    InfluenceScores,
    InfluenceSettings,
    Query,
    concentration_curve,
    load_documents,
    pair_contrast_test,
    plan_influence,
    power_law_slope,
    resolve_modules,
    resolve_queries,
    task_correlation_test,
    top_share,
)
from test_influence import DOCS, QUERIES, docs, tiny_model


def test_document_files(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"id": "a", "text": "one", "category": "x", "src": 3}\n\n"two"\n')
    got = load_documents(jsonl)
    assert [(d.id, d.text, d.category) for d in got] == [("a", "one", "x"), ("1", "two", "")]
    assert got[0].meta == {"src": 3}
    txt = tmp_path / "d.txt"
    txt.write_text("first doc\nstill first\n\n\nsecond doc\n")
    assert [d.text for d in load_documents(txt)] == ["first doc\nstill first", "second doc"]
    import pandas as pd

    pd.DataFrame({"text": ["p", "q"], "category": ["c", "d"]}).to_parquet(tmp_path / "d.parquet")
    assert [d.category for d in load_documents(tmp_path / "d.parquet")] == ["c", "d"]


@pytest.mark.parametrize("content, message", [
    ("", "no documents"),
    ('{"text": "ok"}\n{"text": "broken"\n', r"d\.jsonl:2: invalid JSON"),
    ('{"text": "ok"}\n\n{"text": "  "}\n', r"d\.jsonl:3: missing or empty 'text'"),
    ('{"text": "ok", "id": 1}\n{"text": "no", "id": 1}\n', "id '1' occurs twice"),
    ("[1, 2]\n", r"d\.jsonl:1: expected an object"),
])
def test_bad_document_files(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(InfluenceError, match=message):
        load_documents(path)
    with pytest.raises(InfluenceError, match="not found"):
        load_documents(tmp_path / "missing.jsonl")
    assert issubclass(InfluenceError, ModelWeaveError)


def test_queries_from_tasks_and_files(tmp_path):
    model = tiny_model()
    from_task = resolve_queries("ioi", n=3, tokenizer=model.tokenizer)
    assert len(from_task) == 3 and from_task[0].task == "ioi" and from_task[0].completion
    path = tmp_path / "q.jsonl"
    path.write_text('{"prompt": "1 2 3", "completion": " 4", "sources": ["d2"]}\n')
    (query,) = resolve_queries(str(path))
    assert (query.task, query.answer, query.sources) == ("q", "4", ["d2"])
    path.write_text('{"prompt": "1 2 3", "completion": " 4"}\n{"prompt": "x", "completion": ""}\n')
    with pytest.raises(InfluenceError, match=r"q\.jsonl:2: the query's completion is empty"):
        resolve_queries(str(path))
    with pytest.raises(InfluenceError, match="completion is empty"):
        plan_influence(model, docs(), [Query("e", "t", "The capital", "")], calibrate=False)
    with pytest.raises(InfluenceError, match="unknown task"):
        resolve_queries("no_such_task")


def test_bad_modules_and_memory():
    model = tiny_model()
    with pytest.raises(InfluenceError, match="'model.layers.0.mlp.nope' does not exist"):
        resolve_modules(model, ["model.layers.0.mlp.nope"])
    with pytest.raises(InfluenceError, match="is the unembedding"):
        resolve_modules(model, ["lm_head"])
    with pytest.raises(InfluenceError, match="not a linear layer"):
        resolve_modules(model, ["model.layers.0.mlp"])
    with pytest.raises(InfluenceError, match="module list is empty"):
        resolve_modules(model, [])
    n = model.cfg.n_layers
    for bad in (7, n, -1):  # the first layer past the end, and a negative one
        with pytest.raises(InfluenceError, match=f"layer {bad} is out of range"):
            resolve_modules(model, "mlp", layers=[bad])
    assert resolve_modules(model, "mlp", layers=[1]) == [
        f"model.layers.1.mlp.{p}_proj" for p in ("gate", "up", "down")]
    with pytest.raises(InfluenceError, match=r"estimated peak memory .* exceeds the 0\.0 GB "
                                             r"available at train batch 64"):
        plan_influence(model, docs(), QUERIES, InfluenceSettings(train_batch=64,
                                                                 max_memory_gb=0.001),
                       calibrate=False)
    for batches in ({"train_batch": 0}, {"query_batch": 0}):
        with pytest.raises(InfluenceError, match="train_batch and query_batch must be at least 1"):
            plan_influence(model, docs(), QUERIES, InfluenceSettings(**batches),
                           calibrate=False)
    plan = plan_influence(model, docs(), QUERIES, InfluenceSettings(train_batch=2))
    assert set(plan.estimate_s) >= {"covariance", "eigendecomposition", "lambda",
                                    "query gradients", "scores", "baseline"}
    assert plan.memory_gb["peak"] > 0 and "estimated" in plan.describe()


def test_layer_ranges_include_both_ends():
    from modelweave.methods.influence.modules import parse_layers

    assert parse_layers("20-23") == [20, 21, 22, 23]
    assert parse_layers("0-2, 5,7") == [0, 1, 2, 5, 7]
    assert parse_layers("3") == [3] and parse_layers(None) is None
    for bad in ("a-3", "1-", "2;4"):
        with pytest.raises(InfluenceError, match=f"--layers {bad!r}: expected numbers"):
            parse_layers(bad)


def test_correlation_tests_and_concentration():
    gen = torch.Generator().manual_seed(0)
    n_docs = 60
    patterns = {t: torch.randn(n_docs, generator=gen) for t in ("p1", "p2")}
    rows, tasks = [], []
    for t in ("p1", "p2"):
        for _ in range(6):
            rows.append(patterns[t] + 0.3 * torch.randn(n_docs, generator=gen))
            tasks.append(t)
    for _ in range(6):
        rows.append(torch.randn(n_docs, generator=gen))
        tasks.append("fact")
    m = torch.stack(rows)
    same = task_correlation_test(m, tasks, n_perm=500)
    assert same["per_task"]["p1"] > 0.8 and abs(same["per_task"]["fact"]) < 0.3
    assert same["same_task"] > same["different_task"] and same["p_value"] < 0.01
    contrast = pair_contrast_test(m, tasks, {"p1", "p2"}, {"fact"}, n_perm=500)
    assert contrast["a"] > 0.8 > 0.3 > abs(contrast["b"]) and contrast["p_value"] < 0.01
    null = pair_contrast_test(torch.randn(12, n_docs, generator=gen), ["a"] * 6 + ["b"] * 6,
                              {"a"}, {"b"}, n_perm=500)
    assert null["p_value"] > 0.01

    spiky = torch.tensor([10.0, 1, 1, 1, 1, -5, 0, 0])
    assert top_share(spiky, 1) == pytest.approx(10 / 14)
    assert concentration_curve(spiky, [1, 2, 8]) == pytest.approx([10 / 14, 11 / 14, 1.0])
    power = torch.tensor([float(r) ** -2 for r in range(1, 21)])
    assert power_law_slope(power) == pytest.approx(-2.0)


def test_table_without_a_model(tmp_path):
    """top(), answer marks, sources, by_task and save/load on a hand-made table."""
    documents = [Document(str(i), t, "c") for i, t in enumerate(DOCS)]
    queries = [Query("q", "t", "The capital of Zorbania is", " Quill", sources=["3"]),
               Query("r", "u", "x", " y")]
    scores = torch.tensor([[0.0, 1, 2, 9, 3, 0, 0], [5.0, 4, 3, 2, 1, 0, -1]])
    table = InfluenceScores({"ekfac": scores}, queries, documents, {"k": 1})
    assert [t.id for t in table.top("q", 2)] == ["3", "4"] and table.top("q", 1)[0].has_answer
    assert table.source_rank("q") == 1 and table.source_rank("r") is None
    table.save(tmp_path)
    back = InfluenceScores.load(tmp_path)
    assert back.top(1, 1)[0].id == "0" and back.settings == {"k": 1}
    assert json.loads((tmp_path / "influence.json").read_text())["queries"][0]["id"] == "q"
    with pytest.raises(InfluenceError, match="no query 'z'"):
        back.top("z")
    with pytest.raises(InfluenceError, match="no influence result"):
        InfluenceScores.load(tmp_path / "nothing")
