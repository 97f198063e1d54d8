"""Baselines an influence ranking must beat: lexical retrieval and normalised gradients.

- :func:`idf_overlap_scores`: the summed inverse document frequency of the words a query and
  a document share (each shared word counted once);
- :func:`bm25_scores`: Okapi BM25 (Robertson et al.; ``k1``, ``b``; the non-negative idf
  ``log(1 + (N - df + 0.5) / (df + 0.5))`` of Lucene);
- :func:`cosine_scores`: the gradient dot product divided by the norms of the query's and the
  document's gradients (the cosine / "RelatIF"-style normalisation of the influence literature:
  a document no longer ranks high because its gradient is large);
- :func:`gradient_norms`: the per-example gradient norms over the tracked modules (autograd,
  one example at a time), with the losses the engine differentiates.

A query's text for the lexical baselines is its prompt followed by its completion (the
gradient methods see both too). Words are lower-cased runs of letters and digits.
All score tables are [Q, D] float tensors, larger = more related.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import torch

WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: ``"rev(3 8)"`` -> ``["rev", "3", "8"]``."""
    return WORD.findall(text.lower())


def _document_frequency(docs: list[list[str]]) -> Counter:
    df: Counter = Counter()
    for d in docs:
        df.update(set(d))
    return df


def idf_overlap_scores(queries: list[str], documents: list[str]) -> torch.Tensor:
    """[Q, D]: sum of ``log(N / df(w))`` over the distinct words ``w`` a query and a document
    share (N documents; df = documents containing ``w``)."""
    docs = [words(t) for t in documents]
    df, n = _document_frequency(docs), len(docs)
    idf = {w: math.log(n / c) for w, c in df.items()}
    sets = [set(d) for d in docs]
    out = torch.zeros(len(queries), len(documents), dtype=torch.float64)
    for i, q in enumerate(queries):
        for w in set(words(q)):
            if w not in idf:
                continue
            for j, s in enumerate(sets):
                if w in s:
                    out[i, j] += idf[w]
    return out.float()


def bm25_scores(queries: list[str], documents: list[str], k1: float = 1.5,
                b: float = 0.75) -> torch.Tensor:
    """[Q, D] Okapi BM25: ``sum_w idf(w) * tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))``
    over the query's words (repeated query words count each time), ``tf`` the word's count in
    the document, ``|d|`` its length in words."""
    docs = [words(t) for t in documents]
    df, n = _document_frequency(docs), len(docs)
    avgdl = sum(map(len, docs)) / max(n, 1)
    idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
    counts = [Counter(d) for d in docs]
    out = torch.zeros(len(queries), len(documents), dtype=torch.float64)
    for i, q in enumerate(queries):
        for w in words(q):
            if w not in idf:
                continue
            for j, (c, d) in enumerate(zip(counts, docs, strict=True)):
                tf = c.get(w, 0)
                if tf:
                    norm = k1 * (1 - b + b * len(d) / avgdl)
                    out[i, j] += idf[w] * tf * (k1 + 1) / (tf + norm)
    return out.float()


def cosine_scores(raw: torch.Tensor, query_norms: torch.Tensor,
                  doc_norms: torch.Tensor) -> torch.Tensor:
    """[Q, D] ``raw[q, d] / (|g_q| |g_d|)`` from the dot products ``raw`` [Q, D] and the
    gradient norms [Q] and [D] (a zero norm gives a zero score)."""
    q = query_norms.double().clamp_min(1e-30)[:, None]
    d = doc_norms.double().clamp_min(1e-30)[None, :]
    return (raw.double() / q / d).float()


def gradient_norms(hf, names: list[str], rows: list[list[int]],
                   targets: list[list[int]]) -> torch.Tensor:
    """[N] norms of the gradient of each example's summed next-token loss over the weights of
    the modules ``names`` (paths in ``hf``). ``rows[i]`` are token ids, ``targets[i]`` the
    target of each position (``-100``: no loss), as the engine's datasets hold them."""
    params = [p for n in names for p in hf.get_submodule(n).parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    out = []
    try:
        for ids, tgt in zip(rows, targets, strict=True):
            logits = hf(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor(tgt),
                                                     ignore_index=-100, reduction="sum")
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            out.append(math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads
                                     if g is not None)))
    finally:
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)
    return torch.tensor(out, dtype=torch.float64)


def lexical_tables(query_texts: list[str], doc_texts: list[str]) -> dict[str, torch.Tensor]:
    """``{"bm25": [Q, D], "idf": [Q, D]}``."""
    return {"bm25": bm25_scores(query_texts, doc_texts),
            "idf": idf_overlap_scores(query_texts, doc_texts)}
