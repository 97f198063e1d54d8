"""Turning examples into token batches for one model: the tokenisation-aware step.

:func:`materialize` applies the model's BOS rule, moves a leading space from the answers into
the prompt when the tokenizer writes that space as a token of its own (SmolLM2 writes
``"6 7"`` as ``6|␣|7``), finds answer tokens *in context* (the prompt's tokens must be a prefix
of the prompt+answer tokens), maps named character spans to token positions (the last token
of the span), and drops, with a counted reason, every example it cannot represent faithfully.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from .base import Example, TaskError

_REASONS = {
    "length": "clean and corrupt prompts differ in token length",
    "position": "a named position differs between clean and corrupt prompts",
    "merge": "an answer merges with the end of the prompt",
    "first": "a correct and a wrong answer share their first token",
    "empty": "an answer is empty",
    "unknown": "the tokenizer has no token for a character of the prompt",
}
_ADVICE = {
    "length": "pick values (names, items) that tokenize to the same number of tokens, or "
              "another corruption",
    "position": "the named slot lands on different tokens in clean and corrupt prompts",
    "merge": "answers should begin with a separator the tokenizer splits on (usually a space)",
    "first": "score whole answers (scoring='full') or choose answers whose first tokens differ",
    "empty": "an answer is empty",
    "unknown": "use a tokenizer with byte fallback, or a task whose text it can represent",
}


@dataclass
class TaskBatch:
    """Token-level view of a task for one tokenizer. N = kept examples.

    Attributes:
        clean, corrupt: [N, pos] token ids, right-padded; ``mask`` [N, pos] marks real tokens
            (clean and corrupt prompts of one example always have the same length).
        lengths: [N] prompt lengths; the next-token prediction is read at ``lengths - 1``.
        answer_ids, wrong_ids: [N, A] / [N, W] first tokens of every correct / wrong answer,
            padded with -1 (``answer_ids[:, 0]`` is the main answer).
        answer_tokens, wrong_tokens: per example, the full token ids of each answer.
        positions: named positions, each [N] (``END`` always; task-specific names like
            ``S2``, ``OP1``, ``ITEM3``).
        examples: the kept examples (with any leading space already moved into the prompt).
        dropped: reason -> number of examples dropped for it.
    """

    task: str
    clean: torch.Tensor
    corrupt: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    answer_ids: torch.Tensor
    wrong_ids: torch.Tensor
    answer_tokens: list[list[list[int]]]
    wrong_tokens: list[list[list[int]]]
    positions: dict[str, torch.Tensor]
    examples: list[Example]
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.clean.shape[0]

    @property
    def answers(self) -> torch.Tensor:
        """[N] the main answer's first token."""
        return self.answer_ids[:, 0]

    @property
    def same_length(self) -> bool:
        """Whether every example has the same number of tokens (position grids need this)."""
        return bool((self.lengths == self.lengths[0]).all())

    def position(self, name: str) -> torch.Tensor:
        """[N] token index of a named position; a clear error names the defined ones."""
        if name not in self.positions:
            raise TaskError(f"task {self.task!r} defines no position {name!r}; it has "
                            f"{', '.join(self.positions)}")
        return self.positions[name]

    def select(self, rows) -> TaskBatch:
        """The sub-batch of the given rows (a slice, or a list/tensor of indices)."""
        index = torch.arange(len(self))[rows]
        keep = index.tolist()
        tensors = {k: getattr(self, k)[index] for k in
                   ("clean", "corrupt", "mask", "lengths", "answer_ids", "wrong_ids")}
        return TaskBatch(**{**self.__dict__, **tensors,
                            "positions": {k: v[index] for k, v in self.positions.items()},
                            "answer_tokens": [self.answer_tokens[i] for i in keep],
                            "wrong_tokens": [self.wrong_tokens[i] for i in keep],
                            "examples": [self.examples[i] for i in keep]})

    def trimmed(self) -> TaskBatch:
        """The same batch without the padding columns past its longest prompt."""
        width = int(self.lengths.max())
        cut = {k: getattr(self, k)[:, :width] for k in ("clean", "corrupt", "mask")}
        return TaskBatch(**{**self.__dict__, **cut})

    def chunks(self, size: int) -> list[tuple[int, TaskBatch]]:
        """``(start, sub-batch)`` of consecutive runs of at most ``size`` prompts, each
        trimmed to its own longest prompt."""
        return [(i, self.select(slice(i, i + size)).trimmed()) for i in range(0, len(self), size)]

    def to(self, device) -> TaskBatch:
        """The same batch with its tensors on ``device``."""
        move = {k: getattr(self, k).to(device) for k in
                ("clean", "corrupt", "mask", "lengths", "answer_ids", "wrong_ids")}
        positions = {k: v.to(device) for k, v in self.positions.items()}
        return TaskBatch(**{**self.__dict__, **move, "positions": positions})


class _Drop(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def _encode(tokenizer, text: str, bos: int | None) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if bos is not None and ids[:1] != [bos]:
        ids, offsets = [bos, *ids], [(0, 0), *offsets]
    return ids, offsets


def _token_at(offsets: list[tuple[int, int]], span: tuple[int, int], name: str) -> int:
    """Index of the last token overlapping the span."""
    start, end = span
    hits = [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
    if not hits:
        raise _Drop("position", f"no token covers named span {name!r}")
    return hits[-1]


def _continuation(tokenizer, prompt: str, prompt_ids: list[int], answer: str,
                  bos: int | None) -> list[int]:
    if not answer:
        raise _Drop("empty", "empty answer")
    joint, _ = _encode(tokenizer, prompt + answer, bos)
    n = len(prompt_ids)
    if joint[:n] != prompt_ids:
        raise _Drop("merge", f"answer {answer!r} merges with the end of the prompt")
    return joint[n:]


def _move_space(tokenizer, ex: Example) -> Example:
    """If every answer starts with a space that the tokenizer writes as its own token after
    this prompt, put the space at the end of both prompts instead."""
    answers = ex.answers + ex.wrong_answers
    if not all(a.startswith(" ") and len(a) > 1 for a in answers):
        return ex
    ids = tokenizer(ex.clean + answers[0], add_special_tokens=False)["input_ids"]
    n = len(tokenizer(ex.clean, add_special_tokens=False)["input_ids"])
    if len(ids) <= n or tokenizer.decode(ids[n:n + 1]).strip():  # "▁" may decode to ""
        return ex
    return Example(ex.clean + " ", ex.corrupt + " ", [a[1:] for a in ex.answers],
                   [a[1:] for a in ex.wrong_answers], ex.spans, ex.corrupt_spans,
                   {**ex.meta, "space_moved_to_prompt": True})


def _row(tokenizer, bos, ex: Example, scoring: str) -> dict:
    ex = _move_space(tokenizer, ex)
    clean, clean_off = _encode(tokenizer, ex.clean, bos)
    corrupt, corrupt_off = _encode(tokenizer, ex.corrupt, bos)
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in clean + corrupt:
        raise _Drop("unknown", "the prompt holds a character the tokenizer cannot represent")
    if len(clean) != len(corrupt):
        raise _Drop("length", f"clean has {len(clean)} tokens, corrupt {len(corrupt)}")
    positions = {}
    for name, span in ex.spans.items():
        index = _token_at(clean_off, span, name)
        if name in ex.corrupt_spans and _token_at(corrupt_off, ex.corrupt_spans[name],
                                                   name) != index:
            raise _Drop("position", f"position {name!r} differs between clean and corrupt")
        positions[name] = index
    positions["END"] = len(clean) - 1
    answers = [_continuation(tokenizer, ex.clean, clean, a, bos) for a in ex.answers]
    wrong = [_continuation(tokenizer, ex.clean, clean, a, bos) for a in ex.wrong_answers]
    if scoring == "first" and {a[0] for a in answers} & {w[0] for w in wrong}:
        raise _Drop("first", "a correct and a wrong answer start with the same token")
    return dict(example=ex, clean=clean, corrupt=corrupt, positions=positions,
                answers=answers, wrong=wrong)


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def materialize(task_name: str, examples: list[Example], tokenizer, bos_token_id: int | None,
                pad_token_id: int, *, scoring: str = "first",
                same_length: bool = False) -> TaskBatch:
    """Token batch of ``examples`` for ``tokenizer``.

    Args:
        bos_token_id: prepended to every prompt (never doubled), or ``None`` for no BOS.
        scoring: ``"first"`` (answers scored by their first token; correct and wrong first
            tokens must differ) or ``"full"`` (whole answers, teacher-forced).
        same_length: keep only examples of the most common token length.

    Raises:
        TaskError: when no example survives, saying why and what to change.
    """
    if scoring not in ("first", "full"):
        raise TaskError(f"scoring must be 'first' or 'full', got {scoring!r}")
    rows, dropped, sample = [], Counter(), {}
    for ex in examples:
        try:
            rows.append(_row(tokenizer, bos_token_id, ex, scoring))
        except _Drop as drop:
            dropped[_REASONS[drop.kind]] += 1
            sample.setdefault(drop.kind, (drop.detail, ex))
    if rows and same_length:
        common = Counter(len(r["clean"]) for r in rows).most_common(1)[0][0]
        other = sum(len(r["clean"]) != common for r in rows)
        if other:
            dropped["length differs from the batch's most common length"] += other
        rows = [r for r in rows if len(r["clean"]) == common]
    if not rows:
        kind, (detail, ex) = next(iter(sample.items())) if sample else ("empty", ("", None))
        raise TaskError(
            f"task {task_name!r} lost all {len(examples)} examples for this tokenizer: {detail}"
            + (f" (e.g. {ex.clean!r})" if ex else "") + f"; {_ADVICE.get(kind, '')}"
        )
    lengths = torch.tensor([len(r["clean"]) for r in rows])
    clean, corrupt = _pad([r["clean"] for r in rows], pad_token_id), _pad(
        [r["corrupt"] for r in rows], pad_token_id)
    mask = (torch.arange(clean.shape[1])[None] < lengths[:, None]).long()
    names = [n for n in rows[0]["positions"] if all(n in r["positions"] for r in rows)]
    positions = {n: torch.tensor([r["positions"][n] for r in rows]) for n in names}
    return TaskBatch(
        task=task_name, clean=clean, corrupt=corrupt, mask=mask, lengths=lengths,
        answer_ids=_pad([[a[0] for a in r["answers"]] for r in rows], -1),
        wrong_ids=_pad([[w[0] for w in r["wrong"]] for r in rows], -1),
        answer_tokens=[r["answers"] for r in rows], wrong_tokens=[r["wrong"] for r in rows],
        positions=positions, examples=[r["example"] for r in rows], dropped=dict(dropped),
    )
