"""Tasks from files.

- **JSONL** (one object per line) or **CSV** (a header row) of records
  ``{clean, corrupt, answers, wrong_answers}``, the format auto-circuit and MIB use. ``answers``
  and ``wrong_answers`` may be a string or a list (in CSV: a JSON list, or values joined by
  ``|``).
- **YAML** template::

      name: greeting                  # optional
      description: one line           # optional
      metric: logit_diff              # optional
      template: "When {A} and {B} went to the store, {B} gave a drink to"
      slots: {A: [Mary, Anna, Lisa], B: [John, Paul, Mark]}
      answer: " {A}"
      wrong: [" {B}"]                 # one or a list
      corrupt: [A]                    # slots re-drawn (other values) for the corrupted prompt

  Each slot is a named position (repeats are ``B#2``...); values of different slots differ.

Errors name the file and the line.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from ..io import read_jsonl
from .base import _SLOT, Example, Task, TaskError, fill

REQUIRED = ("clean", "corrupt", "answers", "wrong_answers")


def _as_list(value, where: str) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as err:
                raise TaskError(f"{where}: invalid JSON list: {err}") from None
        else:
            return value.split("|") if "|" in value else [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise TaskError(f"{where}: expected a non-empty string or list of strings")
    return value


def _record(data, where: str) -> Example:
    if not isinstance(data, dict):
        raise TaskError(f"{where}: expected an object with keys {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED if k not in data or data[k] in (None, "")]
    if missing:
        raise TaskError(f"{where}: missing field {missing[0]!r} (records need "
                        f"{', '.join(REQUIRED)})")
    for key in ("clean", "corrupt"):
        if not isinstance(data[key], str):
            raise TaskError(f"{where}: field {key!r} must be a string")
    return Example(data["clean"], data["corrupt"], _as_list(data["answers"], f"{where}: answers"),
                   _as_list(data["wrong_answers"], f"{where}: wrong_answers"))


def _read_records(path: Path) -> list[Example]:
    examples = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                examples.append(_record(row, f"{path}:{reader.line_num}"))
    else:
        for where, data in read_jsonl(path, TaskError):
            examples.append(_record(data, where))
    if not examples:
        raise TaskError(f"{path}: no records")
    return examples


class RecordTask(Task):
    """A fixed list of examples read from a file; ``generate`` samples ``n`` of them."""

    corruptions = ("file",)

    def __init__(self, name: str, examples: list[Example], description: str = "",
                 metric: str = "logit_diff"):
        self.name, self.description, self.metric = name, description, metric
        self.records = examples
        super().__init__()

    def generate(self, n: int, seed: int = 0, tokenizer=None) -> list[Example]:
        if n >= len(self.records):
            return list(self.records)
        keep = sorted(random.Random(f"{self.name}:{seed}").sample(range(len(self.records)), n))
        return [self.records[i] for i in keep]

    def example(self, rng, index, tokenizer) -> Example:
        return self.records[index % len(self.records)]


class TemplateTask(Task):
    """A task defined by a YAML template (see the module docstring)."""

    corruptions = ("template",)

    def __init__(self, spec: dict, where: str):
        self.name = str(spec.get("name") or Path(where).stem)
        self.description = str(spec.get("description", ""))
        self.metric = str(spec.get("metric", "logit_diff"))
        for key in ("template", "slots", "answer"):
            if key not in spec:
                raise TaskError(f"{where}: missing field {key!r}")
        self.template, self.slots = spec["template"], spec["slots"]
        if not isinstance(self.slots, dict) or not all(
                isinstance(v, list) and v for v in self.slots.values()):
            raise TaskError(f"{where}: 'slots' must map each slot to a non-empty list of values")
        self.answer = spec["answer"]
        wrong = spec.get("wrong", [])
        self.wrong = [wrong] if isinstance(wrong, str) else list(wrong)
        self.redraw = list(spec.get("corrupt", []))
        used = set(fill_names(self.template)) | set(fill_names(self.answer))
        used |= {name for w in self.wrong for name in fill_names(w)}
        for slot in used | set(self.redraw):
            if slot not in self.slots:
                raise TaskError(f"{where}: slot {slot!r} has no values in 'slots'")
        super().__init__()

    def example(self, rng, index, tokenizer) -> Example:
        clean: dict[str, str] = {}
        for slot, choices in self.slots.items():  # different slots take different values
            free = [c for c in map(str, choices) if c not in clean.values()]
            clean[slot] = rng.choice(free or list(map(str, choices)))
        corrupt = {k: v for k, v in clean.items() if k not in self.redraw}
        for slot in self.redraw:
            taken = set(corrupt.values()) | {clean[slot]}
            free = [c for c in map(str, self.slots[slot]) if c not in taken]
            if not free:
                raise TaskError(f"task {self.name!r}: slot {slot!r} has no other value to "
                                "re-draw for the corrupted prompt")
            corrupt[slot] = rng.choice(free)
        clean_text, spans = fill(self.template, clean)
        corrupt_text, corrupt_spans = fill(self.template, corrupt)
        return Example(clean_text, corrupt_text, [self.answer.format(**clean)],
                       [w.format(**clean) for w in self.wrong], spans, corrupt_spans)


def fill_names(template: str) -> list[str]:
    """Slot names used in a template."""
    return _SLOT.findall(template)


def load_task_file(path: str | Path) -> Task:
    """A task from a ``.jsonl``/``.json``/``.csv`` record file or a ``.yaml``/``.yml``
    template file. Raises :class:`TaskError` naming the file and line of any problem."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise TaskError(f"{path}{line}: invalid YAML: "
                            f"{getattr(err, 'problem', None) or err}") from None
        if not isinstance(spec, dict):
            raise TaskError(f"{path}:1: expected a mapping with template, slots, answer")
        return TemplateTask(spec, str(path))
    if suffix in (".jsonl", ".json", ".csv"):
        return RecordTask(path.stem, _read_records(path), f"records from {path.name}")
    raise TaskError(f"{path}: task files are .jsonl, .json, .csv, .yaml or .yml")
