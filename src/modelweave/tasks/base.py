"""Examples, tasks and the task registry.

A task generates :class:`Example` s from a seed: a clean prompt, a corrupted prompt of the same
shape, the correct continuation(s) and wrong one(s), and *named spans* (character ranges of the
clean and corrupted prompts, e.g. IOI's ``S2``). Text only: turning examples into token batches
for one tokenizer is :func:`modelweave.tasks.batch.materialize`.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..errors import ModelWeaveError

Span = tuple[int, int]


class TaskError(ModelWeaveError):
    """Unknown task, bad parameter, malformed task file, or no example survived tokenisation."""


@dataclass
class Example:
    """One clean/corrupt pair.

    Attributes:
        clean, corrupt: prompts; the model continues them.
        answers: correct continuations, each as it would follow the prompt (``" Mary"``).
        wrong_answers: continuations the metric contrasts with (``" John"``).
        spans, corrupt_spans: named character spans of each prompt (``{"S2": (32, 37)}``).
        meta: anything else a task wants to keep (template id, operands ...).
    """

    clean: str
    corrupt: str
    answers: list[str]
    wrong_answers: list[str]
    spans: dict[str, Span] = field(default_factory=dict)
    corrupt_spans: dict[str, Span] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


_SLOT = re.compile(r"\{(\w+)\}")


def fill(template: str, values: dict[str, str]) -> tuple[str, dict[str, Span]]:
    """Fill ``{SLOT}`` s and return the text with each slot's character span. A slot used
    again is named ``SLOT#2``, ``SLOT#3``... at its later occurrences.

    >>> fill("{A} met {B}, {A}", {"A": "Mary", "B": "John"})
    ('Mary met John, Mary', {'A': (0, 4), 'B': (9, 13), 'A#2': (15, 19)})
    """
    out, spans, last = [], {}, 0
    length = 0
    for match in _SLOT.finditer(template):
        literal = template[last:match.start()]
        out.append(literal)
        length += len(literal)
        slot = match.group(1)
        value = str(values[slot])
        name, count = slot, 1
        while name in spans:
            count += 1
            name = f"{slot}#{count}"
        spans[name] = (length, length + len(value))
        out.append(value)
        length += len(value)
        last = match.end()
    out.append(template[last:])
    return "".join(out), spans


def pair(template: str, clean: dict[str, str], corrupt: dict[str, str], answers: list[str],
         wrong: list[str], **meta) -> Example:
    """An :class:`Example` from one template filled twice."""
    clean_text, spans = fill(template, clean)
    corrupt_text, corrupt_spans = fill(template, corrupt)
    return Example(clean_text, corrupt_text, answers, wrong, spans, corrupt_spans, meta)


class Task(ABC):
    """A prompt family. Subclasses set the class attributes and implement :meth:`example`.

    Attributes:
        name: registry key (``"ioi"``).
        description: one line.
        metric: default metric name (see :mod:`modelweave.metrics`).
        corruptions: corruption schemes, the first is the default.
        params: the task's parameters with their values for this instance.
    """

    name: str = ""
    description: str = ""
    metric: str = "logit_diff"
    corruptions: tuple[str, ...] = ("default",)
    defaults: dict = {}

    def __init__(self, corruption: str | None = None, **params):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TaskError(f"task {self.name!r} has no parameter {sorted(unknown)[0]!r}; "
                            f"parameters: {', '.join(sorted(self.defaults)) or 'none'}")
        self.params = {**self.defaults, **params}
        self.corruption = corruption or self.corruptions[0]
        if self.corruption not in self.corruptions:
            raise TaskError(f"task {self.name!r} has no corruption {self.corruption!r}; "
                            f"choose from {', '.join(self.corruptions)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(corruption={self.corruption!r}, {self.params})"

    def generate(self, n: int, seed: int = 0, tokenizer=None) -> list[Example]:
        """``n`` examples, the same for the same seed. ``tokenizer`` lets a task adapt its
        format (e.g. to tokenizers that split numbers into digits)."""
        rng = random.Random(f"{self.name}:{seed}")
        return [self.example(rng, i, tokenizer) for i in range(n)]

    @abstractmethod
    def example(self, rng: random.Random, index: int, tokenizer) -> Example:
        """One example drawn with ``rng``."""


TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator adding a task to the registry under ``cls.name``."""
    TASKS[cls.name] = cls
    return cls


def get_task(name: str, corruption: str | None = None, **params) -> Task:
    """A built-in task by name; raises :class:`TaskError` listing the known ones."""
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](corruption, **params)


def splits_digits(tokenizer) -> bool:
    """Whether the tokenizer writes numbers one digit per token (Llama, SmolLM2, OLMo-2...)."""
    if tokenizer is None:
        return False
    ids = tokenizer("1732", add_special_tokens=False)["input_ids"]
    return len(ids) >= 4


def n_tokens(tokenizer, text: str) -> int:
    """Number of tokens of ``text`` (no special tokens)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def choose_like(rng: random.Random, tokenizer, pool: list[str], like: str,
                exclude: tuple | list | set = (), prefix: str = " ") -> str:
    """A random element of ``pool`` (not in ``exclude``) that tokenizes, after ``prefix``, to
    as many tokens as ``like`` does, so corrupted prompts keep the clean prompt's length. Falls
    back to any element when none matches (the example is then dropped at materialisation)."""
    candidates = [p for p in pool if p not in exclude and p != like]
    if tokenizer is not None:
        target = n_tokens(tokenizer, prefix + like)
        same = [p for p in candidates if n_tokens(tokenizer, prefix + p) == target]
        candidates = same or candidates
    return rng.choice(candidates)
