"""Training documents and queries: reading them from files and tasks, tokenising them.

Documents (the corpus whose influence is measured):

- ``.jsonl``: one object per line with ``text`` (required, non-empty) and optionally ``id``,
  ``category`` and any other fields (kept as ``meta``); a line that is a JSON string is a
  document too. Blank lines are skipped.
- ``.txt`` / ``.md``: documents separated by blank lines.
- ``.parquet``: a ``text`` column, optionally ``id`` and ``category`` (needs ``pyarrow``).

Queries (what the model completes): a built-in task name or task file (the first answer of each
example is the completion, its clean prompt the prompt), or a ``.jsonl`` file of
``{prompt, completion}`` objects (optionally ``id``, ``task``, ``answer``, ``sources``).

Every error names the file and the line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...errors import ModelWeaveError
from ...io import read_jsonl


class InfluenceError(ModelWeaveError):
    """Bad influence input: a malformed document or query file, an empty completion, an unknown
    module, a corpus that does not fit in memory at the chosen batch size."""


@dataclass
class Document:
    """One training document. ``category`` is free text the analyses group by."""

    id: str
    text: str
    category: str = ""
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Query:
    """A prompt and the completion whose log-probability is attributed.

    Attributes:
        task: the task (group) the query belongs to; correlations are compared within and
            between tasks.
        answer: the text searched for in top documents (default: the stripped completion).
        sources: ids of documents known to hold the answer (a study's ground truth), if any.
    """

    id: str
    task: str
    prompt: str
    completion: str
    answer: str = ""
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.answer:
            self.answer = self.completion.strip()

    def to_dict(self) -> dict:
        return asdict(self)


def _document(data, where: str, index: int) -> Document:
    if isinstance(data, str):
        data = {"text": data}
    if not isinstance(data, dict):
        raise InfluenceError(f"{where}: expected an object with a 'text' field or a string")
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InfluenceError(f"{where}: missing or empty 'text' field")
    rest = {k: v for k, v in data.items() if k not in ("text", "id", "category")}
    return Document(str(data.get("id", index)), text, str(data.get("category") or ""), rest)


def load_documents(path: str | Path) -> list[Document]:
    """Documents from a ``.jsonl``, ``.txt``/``.md`` or ``.parquet`` file (see the module
    docstring); raises :class:`InfluenceError` naming the file and line of any problem."""
    path = Path(path)
    if not path.is_file():
        raise InfluenceError(f"document file not found: {path}")
    suffix = path.suffix.lower()
    docs: list[Document] = []
    if suffix in (".jsonl", ".json"):
        for where, data in read_jsonl(path, InfluenceError):
            docs.append(_document(data, where, len(docs)))
    elif suffix in (".txt", ".md", ".text"):
        block: list[str] = []
        for line in [*path.read_text().splitlines(), ""]:
            if line.strip():
                block.append(line)
            elif block:
                docs.append(Document(str(len(docs)), "\n".join(block)))
                block = []
    elif suffix == ".parquet":
        try:
            import pandas as pd

            frame = pd.read_parquet(path)
        except ImportError as err:
            raise InfluenceError(f"{path}: reading parquet needs pyarrow ({err}); "
                                 "pip install 'modelweave[influence]'") from None
        except Exception as err:  # noqa: BLE001 - pyarrow raises many kinds
            raise InfluenceError(f"{path}: not a readable parquet file: {err}") from None
        if "text" not in frame.columns:
            raise InfluenceError(f"{path}: no 'text' column (columns: "
                                 f"{', '.join(map(str, frame.columns))})")
        for row, record in enumerate(frame.to_dict("records")):
            docs.append(_document(record, f"{path}: row {row}", row))
    else:
        raise InfluenceError(f"{path}: document files are .jsonl, .txt or .parquet")
    if not docs:
        raise InfluenceError(f"{path}: no documents in the file")
    seen: set[str] = set()
    for d in docs:
        if d.id in seen:
            raise InfluenceError(f"{path}: document id {d.id!r} occurs twice")
        seen.add(d.id)
    return docs


def load_query_file(path: str | Path) -> list[Query]:
    """Queries from a ``.jsonl`` file of ``{prompt, completion}`` objects."""
    path = Path(path)
    if not path.is_file():
        raise InfluenceError(f"query file not found: {path}")
    queries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except ValueError as err:
            raise InfluenceError(f"{where}: invalid JSON: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
            raise InfluenceError(f"{where}: expected an object with 'prompt' and 'completion'")
        completion = data.get("completion")
        if not isinstance(completion, str) or not completion:
            raise InfluenceError(f"{where}: the query's completion is empty; influence "
                                 "attributes a completion's probability, so one is needed")
        sources = data.get("sources") or []
        queries.append(Query(str(data.get("id", f"{path.stem}-{len(queries)}")),
                             str(data.get("task") or path.stem), data["prompt"], completion,
                             str(data.get("answer") or ""), [str(s) for s in sources]))
    if not queries:
        raise InfluenceError(f"{path}: no queries in the file")
    return queries


def _is_query_file(path: Path) -> bool:
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                first = json.loads(line)
            except ValueError:
                return False
            return isinstance(first, dict) and "prompt" in first
    return False


def resolve_queries(spec: str, *, n: int = 8, seed: int = 0, tokenizer=None) -> list[Query]:
    """Queries from a built-in task name, a task file (``n`` examples with ``seed``) or a
    ``{prompt, completion}`` JSONL file (all its queries)."""
    from ...tasks import TaskError, resolve_task

    if _is_query_file(Path(spec)):
        return load_query_file(spec)
    try:
        task = resolve_task(spec)
    except TaskError as err:
        raise InfluenceError(f"queries {spec!r}: {err}") from None
    out = []
    for i, ex in enumerate(task.generate(n, seed, tokenizer)):
        if not ex.answers or not ex.answers[0]:
            raise InfluenceError(f"queries {spec!r}: example {i} has an empty completion")
        out.append(Query(f"{task.name}-{i}", task.name, ex.clean, ex.answers[0]))
    return out


def check_queries(queries: list[Query]) -> None:
    """Ids unique, every completion non-empty."""
    if not queries:
        raise InfluenceError("no queries given")
    seen: set[str] = set()
    for q in queries:
        if not q.completion:
            raise InfluenceError(f"query {q.id!r}: the completion is empty")
        if q.id in seen:
            raise InfluenceError(f"query id {q.id!r} occurs twice")
        seen.add(q.id)


# -- tokenisation ------------------------------------------------------------------------------
def encode_documents(model, docs: list[Document], max_tokens: int) -> list[list[int]]:
    """Token ids of each document under the model's BOS rule, cut to ``max_tokens``; a
    document of fewer than 2 tokens has no next-token loss and is an error."""
    from ...models.tokenization import encode

    ids = encode(model.tokenizer, model.tokenization, [d.text for d in docs])
    out = []
    for d, row in zip(docs, ids, strict=True):
        if len(row) < 2:
            raise InfluenceError(f"document {d.id!r} has fewer than 2 tokens; nothing to learn")
        out.append(row[:max_tokens])
    return out


def encode_queries(model, queries: list[Query]) -> list[tuple[list[int], int]]:
    """Per query: the token ids of prompt + completion and the number of prompt tokens. The
    completion's tokens are read in context (the prompt's tokens must be a prefix of the whole
    text's); otherwise prompt and completion are tokenised apart and joined."""
    from ...models.tokenization import encode

    tok, policy = model.tokenizer, model.tokenization
    out = []
    for q in queries:
        if not q.completion:
            raise InfluenceError(f"query {q.id!r}: the completion is empty")
        prompt, whole = encode(tok, policy, [q.prompt, q.prompt + q.completion])
        if whole[:len(prompt)] == prompt and len(whole) > len(prompt):
            out.append((whole, len(prompt)))
        else:
            extra = tok(q.completion, add_special_tokens=False)["input_ids"]
            if not extra:
                raise InfluenceError(f"query {q.id!r}: the completion has no tokens")
            out.append((prompt + extra, len(prompt)))
        if out[-1][1] == 0:
            raise InfluenceError(f"query {q.id!r}: the prompt is empty and the model adds no "
                                 "BOS, so the first completion token has no context")
    return out
