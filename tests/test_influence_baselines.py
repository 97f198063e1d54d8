"""Influence against an independent EK-FAC reference and its baselines: BM25 and IDF overlap
against hand-computed values and on planted corpora, the cosine gradient baseline, intervals on
retrieval and leave-k-out correlations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import influence_reference as ref
from modelweave.methods.influence import (
    Document,
    InfluenceScores,
    InfluenceSettings,
    Query,
    compute_influence,
    resolve_modules,
)
from modelweave.methods.influence.baselines import (
    bm25_scores,
    cosine_scores,
    idf_overlap_scores,
    words,
)
from modelweave.methods.influence.data import encode_documents, encode_queries
from modelweave.methods.influence.evaluate import (
    leave_out_correlation,
    predicted_effects,
    retrieval,
    retrieval_line,
    spearman_per_query,
)
from modelweave.methods.influence.groundtruth import random_subsets
from modelweave.methods.influence.train import train_on_documents
from modelweave.models import Model
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model

DOCS = ["Mary went to the store and bought milk.", "John gave a drink to Mary.",
        "1 2 3 4 5 6 7 8", "The capital of Zorbania is Quill.", "January, February, March",
        "The war lasted from the year 1732 to 1740.", "When Anna and Paul met, Paul smiled."]
QUERIES = [Query("capital", "fact", "The capital of Zorbania is", " Quill", sources=["d3"]),
           Query("count", "seq", "1 2 3 4", " 5", sources=["d2"]),
           Query("months", "seq", "January,", " February", sources=["d4"])]


def _docs(texts=DOCS) -> list[Document]:
    return [Document(f"d{i}", t) for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def trained():
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", seed=0, vocab_size=len(tok)), tok, name="llama")
    return train_on_documents(model, _docs(), epochs=25, lr=3e-3, batch_size=4).model


# -- lexical baselines ---------------------------------------------------------------------
def test_bm25_and_idf_overlap_match_hand_computed_values():
    """Three documents, query "red fox": df(red) = 2, df(fox) = 1, N = 3, avgdl = 8/3."""
    docs = ["red fox", "red red dog barks", "blue cat"]
    got = bm25_scores(["red fox"], docs, k1=1.5, b=0.75)[0].double()
    idf_red, idf_fox = math.log(1 + 1.5 / 2.5), math.log(1 + 2.5 / 1.5)
    avgdl = 8 / 3

    def term(idf, tf, length):
        return idf * tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * length / avgdl))

    want = torch.tensor([term(idf_red, 1, 2) + term(idf_fox, 1, 2), term(idf_red, 2, 4), 0.0],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    overlap = idf_overlap_scores(["red fox fox"], docs)[0].double()
    torch.testing.assert_close(overlap, torch.tensor(
        [math.log(3 / 2) + math.log(3), math.log(3 / 2), 0.0], dtype=torch.float64),
        rtol=1e-6, atol=1e-7)
    assert words("rev(3 8 1) = The") == ["rev", "3", "8", "1", "the"]


def test_lexical_baselines_find_the_document_that_shares_rare_words():
    """The planted source is the only document with the query's rare words; the others share
    only common ones."""
    docs = [f"the city of the north has a market number {i}" for i in range(8)]
    docs.insert(5, "the city of Zorbania is Quillton")
    for scores in (bm25_scores, idf_overlap_scores):
        s = scores(["the capital of Zorbania is Quillton"], docs)
        assert int(s[0].argmax()) == 5


def test_lexical_fails_where_gradients_succeed(tmp_path):
    """Every document holds the query's words equally often (so lexical scores tie and the
    first-listed distractor ranks first), but only one holds the trained transition the
    completion needs; the gradient-based methods rank it first."""
    tok = make_tokenizer("bytelevel")
    texts = ["cat dog dog cat", "dog cat dog cat", "cat cat dog dog", "cat dog cat dog",
             "sun moon sun", "moon sun moon"]
    documents = _docs(texts)
    query = [Query("q", "t", "cat cat dog", " dog", sources=["d2"])]
    model = Model(tiny_hf_model("llama", seed=1, vocab_size=len(tok)), tok, name="llama")
    model = train_on_documents(model, documents, epochs=40, lr=3e-3, batch_size=3).model
    result = compute_influence(model, documents, query,
                               InfluenceSettings(train_batch=3, query_rank=None),
                               cache=tmp_path)
    assert result.source_rank(0, "bm25") > 1 and result.source_rank(0, "idf") > 1
    assert result.source_rank(0, "ekfac") == 1
    assert result.source_rank(0, "cosine") == 1


# -- the engine against the reference ------------------------------------------------------
@pytest.mark.numeric
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_engine_matches_reference_ekfac_where_the_preconditioner_matters(trained, tmp_path):
    """EK-FAC from the engine equals the slow reference at a small damping (1% of the
    smallest module's mean eigenvalue correction), where the eigenvalue corrections decide
    the scores: the reference at the papers' damping (0.1 x mean Lambda) is far from it, and
    so is the best rescaling of the gradient baseline. Documents are batched 3 at a time, so
    right padding must stay out of the factors (the reference sees each document alone).
    Measured: 3e-7 of the largest score; padded tokens in the covariances move it by 1.7e-2,
    a Fisher fitted on the true labels by 0.59."""
    names = resolve_modules(trained)
    docs_ids = encode_documents(trained, _docs(), 256)
    q_ids = encode_queries(trained, QUERIES)
    lambdas: dict[str, float] = {}
    papers = ref.ekfac_scores(trained.hf_model, names, docs_ids, q_ids, lambdas=lambdas)
    assert set(lambdas) == set(names)
    damping = 0.01 * min(lambdas.values())
    assert len({len(ids) for ids in docs_ids}) > 3  # batches of 3 are padded
    result = compute_influence(trained, _docs(), QUERIES,
                               InfluenceSettings(train_batch=3, query_batch=3, query_rank=None,
                                                 lambda_max_examples=None, damping=damping),
                               cache=tmp_path)
    want = ref.ekfac_scores(trained.hf_model, names, docs_ids, q_ids, damping=damping)
    got = result.matrix("ekfac").double()
    scale = want.abs().max()
    torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=1e-3)
    # the damping matters: the best rescaling of the scores at the papers' damping, or of
    # the gradient baseline, misses these by far more than the tolerance above
    raw, qn, dn = ref.gradient_scores(trained.hf_model, names, docs_ids, q_ids)
    for i in range(len(QUERIES)):
        w = want[i]
        for other in (papers[i], raw[i]):
            fit = (w @ other) / (other @ other) * other
            assert float((w - fit).norm() / w.norm()) > 0.05
    order = [torch.argsort(want[i], descending=True).tolist() for i in range(len(QUERIES))]
    assert order != [torch.argsort(raw[i], descending=True).tolist() for i in range(3)]
    # and the gradient baselines match their references
    torch.testing.assert_close(result.matrix("gradient").double(), raw, rtol=2e-3,
                               atol=2e-3 * float(raw.abs().max()))
    cos = raw / qn[:, None] / dn[None, :]
    torch.testing.assert_close(result.matrix("cosine").double(), cos, rtol=2e-3, atol=2e-4)


def test_cosine_is_invariant_to_scaling_a_document_gradient():
    gen = torch.Generator().manual_seed(0)
    gq, gd = torch.randn(3, 20, generator=gen), torch.randn(5, 20, generator=gen)
    raw = gq @ gd.T
    base = cosine_scores(raw, gq.norm(dim=1), gd.norm(dim=1))
    gd2 = gd.clone()
    gd2[2] *= 50.0
    raw2 = gq @ gd2.T
    scaled = cosine_scores(raw2, gq.norm(dim=1), gd2.norm(dim=1))
    torch.testing.assert_close(scaled, base, rtol=1e-5, atol=1e-6)
    assert int(raw2[0].abs().argmax()) == 2 or float(raw2[:, 2].abs().min()) > float(
        raw[:, 2].abs().min())  # the raw dot product grows with the norm
    assert float(base.abs().max()) <= 1 + 1e-6


# -- evaluation and intervals --------------------------------------------------------------
def _fake_result(n_queries: int = 12, seed: int = 0) -> InfluenceScores:
    """Queries whose source is document ``i``: 'good' ranks it first for most queries,
    'bad' at random."""
    gen = torch.Generator().manual_seed(seed)
    d = 20
    docs = [Document(f"d{j}", f"text {j}") for j in range(d)]
    queries = [Query(f"q{i}", "fact", "p", " c", sources=[f"d{i}"]) for i in range(n_queries)]
    good = torch.randn(n_queries, d, generator=gen)
    for i in range(n_queries):
        good[i, i] = 10.0 if i % 4 else -10.0  # 3 of 4 queries found
    bad = torch.randn(n_queries, d, generator=gen)
    return InfluenceScores({"good": good, "bad": bad, "bm25": good.clone()}, queries, docs)


def test_retrieval_counts_hits_with_intervals_that_contain_them():
    result = _fake_result()
    table = retrieval(result, ks=(1, 3))
    assert table["good"]["top1"]["hits"] == 9 and table["good"]["n"] == 12
    for block in table.values():
        for key in ("top1", "top3"):
            lo, hi = block[key]["share_ci"]
            assert lo <= block[key]["share"] <= hi
        assert block["mrr_ci"][0] <= block["mrr"] <= block["mrr_ci"][1]
    diff = table["good"]["top1_minus_bm25"]
    assert diff["value"] == 0.0 and diff["ci"] == [0.0, 0.0]  # identical rankings
    assert retrieval_line(table).startswith("good 9/12 [")


def test_leave_out_correlation_recovers_planted_influence():
    """Measured effects built from the 'good' scores plus noise: its Spearman is high, a
    random score table's is near zero, and each interval contains its point."""
    result = _fake_result(seed=1)
    subsets = random_subsets(20, 5, 30, seed=0)
    rng = np.random.default_rng(0)
    measured = predicted_effects(result.matrix("good"), subsets)
    measured = measured + 0.1 * measured.std() * rng.standard_normal(measured.shape)
    corr = leave_out_correlation(result, measured, subsets)
    assert corr["good"]["mean"] > 0.9 and abs(corr["bad"]["mean"]) < 0.4
    for c in corr.values():
        assert c["ci"][0] <= c["mean"] <= c["ci"][1]
    from scipy.stats import spearmanr

    p = predicted_effects(result.matrix("bad"), subsets)
    rho = spearman_per_query(p, measured)
    assert rho[0] == pytest.approx(spearmanr(p[:, 0], measured[:, 0]).statistic, abs=1e-12)


def test_leave_out_rejects_bad_subsets():
    from modelweave.methods.influence import InfluenceError

    with pytest.raises(InfluenceError, match="0 < k"):
        random_subsets(5, 5, 3)
    with pytest.raises(InfluenceError, match="at least 2"):
        random_subsets(5, 2, 1)


def test_summary_and_report_show_every_method_side_by_side():
    from modelweave.experiments.methods.influence import retrieval_summary
    from modelweave.report.influence import retrieval_html

    result = _fake_result()
    result.scores["ekfac"] = result.scores.pop("good")
    s = retrieval_summary(result)
    assert s["source_top1"] == pytest.approx(0.75)
    assert s["source_top1_ci"][0] <= 0.75 <= s["source_top1_ci"][1]
    assert set(s["source_top1_baselines"]) == {"bad", "bm25"}
    html = retrieval_html(s["retrieval"])
    assert "9/12 [" in html and html.count("<tr>") == 4
