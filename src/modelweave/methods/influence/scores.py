"""The result of an influence run: a [queries x documents] score table that loads without a
model.

Files (in the run's folder): ``scores.safetensors`` (``ekfac`` [Q, D]; ``gradient`` and
``cosine`` [Q, D] when the gradient baselines ran; ``bm25`` and ``idf`` [Q, D], the lexical
baselines) and ``influence.json`` (queries, documents, settings,
cache keys, stage timings, peak memory).

Sign: a positive score means that up-weighting the document raises the log-probability of
the query's completion (see :mod:`.kron`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...io import load_tensors, read_json, save_tensors, write_json
from .data import Document, InfluenceError, Query

SCORES_FILE, META_FILE = "scores.safetensors", "influence.json"


@dataclass
class TopDocument:
    """One row of :meth:`InfluenceScores.top`."""

    rank: int
    index: int
    id: str
    score: float
    category: str
    text: str
    has_answer: bool


@dataclass
class InfluenceScores:
    """Influence of every document on every query.

    Attributes:
        scores: method -> [Q, D] float tensor (``"ekfac"``; ``"gradient"`` = the plain
            gradient dot product, TracIn-style, over the same modules; ``"cosine"`` = that
            divided by both gradients' norms; ``"bm25"``, ``"idf"`` = lexical baselines,
            see :mod:`.baselines`).
        queries, documents: what the rows and columns are.
        settings: the run's settings; keys: the content hashes of factors and scores;
        seconds: wall time per stage; peak_memory_gb: the process's peak resident memory.
    """

    scores: dict[str, torch.Tensor]
    queries: list[Query]
    documents: list[Document]
    settings: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    peak_memory_gb: float | None = None
    model: str = ""

    def __post_init__(self) -> None:
        for name, s in self.scores.items():
            if tuple(s.shape) != (len(self.queries), len(self.documents)):
                raise InfluenceError(f"scores {name!r} have shape {tuple(s.shape)}, expected "
                                     f"({len(self.queries)}, {len(self.documents)})")

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def matrix(self, method: str = "ekfac") -> torch.Tensor:
        if method not in self.scores:
            raise InfluenceError(f"no {method!r} scores in this result; have: "
                                 f"{', '.join(self.scores)}")
        return self.scores[method]

    def query_index(self, query: int | str) -> int:
        if isinstance(query, int):
            if not -len(self.queries) <= query < len(self.queries):
                raise InfluenceError(f"query {query} is out of range ({len(self.queries)})")
            return query % len(self.queries)
        for i, q in enumerate(self.queries):
            if q.id == query:
                return i
        raise InfluenceError(f"no query {query!r}; ids: "
                             f"{', '.join(q.id for q in self.queries[:10])}...")

    def ranking(self, query: int | str, method: str = "ekfac") -> list[int]:
        """Document indices from the most to the least positively influential."""
        row = self.matrix(method)[self.query_index(query)]
        return torch.argsort(row, descending=True, stable=True).tolist()

    def top(self, query: int | str, k: int = 10, method: str = "ekfac") -> list[TopDocument]:
        """The ``k`` most positively influential documents of a query."""
        i = self.query_index(query)
        row = self.matrix(method)[i]
        answer = self.queries[i].answer.lower()
        out = []
        for rank, j in enumerate(self.ranking(i, method)[:k], 1):
            d = self.documents[j]
            out.append(TopDocument(rank, j, d.id, float(row[j]), d.category, d.text,
                                   bool(answer) and answer in d.text.lower()))
        return out

    def source_rank(self, query: int | str, method: str = "ekfac") -> int | None:
        """The best rank (1 = top) of any of the query's ``sources`` documents."""
        i = self.query_index(query)
        sources = set(self.queries[i].sources)
        if not sources:
            return None
        for rank, j in enumerate(self.ranking(i, method), 1):
            if self.documents[j].id in sources:
                return rank
        return None

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(q.task for q in self.queries))

    def by_task(self, method: str = "ekfac", normalise: bool = True) -> dict[str, torch.Tensor]:
        """Per task, the mean influence vector [D] of its queries; with ``normalise`` each
        query's vector is first divided by its largest absolute value (scores of different
        queries have different scales)."""
        m = self.matrix(method).double()
        if normalise:
            m = m / m.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
        return {t: m[[i for i, q in enumerate(self.queries) if q.task == t]].mean(0).float()
                for t in self.tasks()}

    def per_query(self, method: str = "ekfac", k: int = 10) -> list[dict]:
        """One summary row per query: top document, share of positive influence in the top
        ``k``, whether the answer occurs in the top ``k``, the source's rank."""
        m = self.matrix(method)
        out = []
        for i, q in enumerate(self.queries):
            top = self.top(i, k, method)
            out.append({"query": q.id, "task": q.task, "top_document": top[0].id,
                        "top_score": top[0].score, f"top{k}_share": top_share(m[i], k),
                        f"answer_in_top{k}": sum(t.has_answer for t in top),
                        "source_rank": self.source_rank(i, method)})
        return out

    # -- files ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``scores.safetensors`` and ``influence.json`` into ``folder``."""
        folder = Path(folder)
        save_tensors(folder / SCORES_FILE, {k: v.float() for k, v in self.scores.items()})
        meta = {"model": self.model, "queries": [q.to_dict() for q in self.queries],
                "documents": [d.to_dict() for d in self.documents], "settings": self.settings,
                "keys": self.keys, "seconds": self.seconds,
                "peak_memory_gb": self.peak_memory_gb}
        write_json(folder / META_FILE, meta, indent=1)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> InfluenceScores:
        """Read a saved result (no model needed)."""
        folder = Path(folder)
        if not (folder / META_FILE).is_file() or not (folder / SCORES_FILE).is_file():
            raise InfluenceError(f"{folder}: no influence result ({META_FILE} and "
                                 f"{SCORES_FILE})")
        meta = read_json(folder / META_FILE, error=InfluenceError)
        return cls(load_tensors(folder / SCORES_FILE, error=InfluenceError),
                   [Query(**q) for q in meta["queries"]],
                   [Document(**d) for d in meta["documents"]], meta.get("settings", {}),
                   meta.get("keys", {}), meta.get("seconds", {}), meta.get("peak_memory_gb"),
                   meta.get("model", ""))


def top_share(row: torch.Tensor, k: int) -> float:
    """Share of the total positive influence carried by the ``k`` most positive documents."""
    positive = row.double().clamp_min(0)
    total = float(positive.sum())
    if total <= 0:
        return float("nan")
    return float(positive.sort(descending=True).values[:k].sum()) / total
