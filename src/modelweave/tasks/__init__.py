"""Tasks: prompt families with clean/corrupt pairs, answers and named positions.

    from modelweave.tasks import make_batch
    batch = make_batch(model, "ioi", n=32, seed=0)
    batch.clean, batch.corrupt          # [32, pos]
    batch.position("S2")                # [32]
"""

from __future__ import annotations

from pathlib import Path

from . import arith, entities, icl, ioi, numeric, sequences, toy  # noqa: F401 - register them
from .base import TASKS, Example, Task, TaskError, fill, get_task, register
from .batch import TaskBatch, materialize
from .custom import load_task_file


def resolve_task(task: str | Task, corruption: str | None = None, **params) -> Task:
    """A :class:`Task` from a built-in name, a task file path, or a ``Task`` instance."""
    if isinstance(task, Task):
        return task
    if task not in TASKS and (Path(task).suffix or "/" in task):
        return load_task_file(task)
    return get_task(task, corruption, **params)


def parse_params(pairs: list[str]) -> dict:
    """Task parameters from ``KEY=VALUE`` strings. Values are read as YAML scalars (``100`` is
    an int, ``true`` a bool, ``+,-`` a string); a value with a backslash is a string with its
    escapes decoded (``end=\\n`` gives a newline), and blank values stay as they are."""
    import yaml

    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TaskError(f"task parameter {item!r}: expected KEY=VALUE")
        if "\\" in value:
            out[key.strip()] = value.encode().decode("unicode_escape")
        else:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else value
    return out


def list_tasks() -> list[Task]:
    """One default instance of every built-in task, sorted by name."""
    return [TASKS[name]() for name in sorted(TASKS)]


def make_batch(model, task: str | Task, n: int = 32, seed: int = 0, *,
               scoring: str = "first", same_length: bool = False,
               corruption: str | None = None, **params) -> TaskBatch:
    """Generate ``n`` examples of ``task`` and materialise them for ``model``'s tokenizer
    under its BOS rule (see :func:`modelweave.tasks.batch.materialize`)."""
    resolved = resolve_task(task, corruption, **params)
    if model.tokenizer is None:
        raise TaskError("the model has no tokenizer; tasks need one (load_model(..., "
                        "tokenizer=...))")
    policy = model.tokenization
    examples = resolved.generate(n, seed, model.tokenizer)
    return materialize(resolved.name, examples, model.tokenizer,
                       policy.bos_token_id if policy.prepend_bos else None,
                       policy.pad_token_id, scoring=scoring, same_length=same_length)


__all__ = ["Example", "Task", "TaskBatch", "TaskError", "fill", "get_task",
           "list_tasks", "load_task_file", "make_batch", "materialize", "parse_params", "register",
           "resolve_task"]
