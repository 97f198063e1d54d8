"""In-context-learning tasks built from word pairs, as function-vector studies use them
(Todd et al. 2023).

Each dataset is a list of ``(x, y)`` word pairs shipped in ``icl_data/<name>.tsv``. A prompt of
``shots`` demonstrations and one query is::

    Q: x1\\nA: y1\\n\\nQ: x2\\nA: y2\\n\\n ... Q: xq\\nA:

and the answer is ``" yq"`` (scored on its first token). The corruption ``shuffled`` keeps the
demonstrations' inputs and the query but shuffles the demonstration *labels* among themselves
(every label moves when there are two or more), so the prompt no longer shows the task
while its tokens barely change. ``shots=0`` gives zero-shot prompts ``Q: xq\\nA:`` (the
corrupted prompt is then the clean one). The wrong answer is another pair's label.

Leak-free splits (:func:`split_pairs`, the task parameter ``split``): the pairs are divided by
query word, deterministically by ``split_seed``, into a *test* set (``test_fraction``, default
0.3, of the pairs) and a *train* set of the other pairs that contain none of the test query
words, as input or label (case-insensitive; in next-item this drops a test query's
predecessor, whose label it is). ``split="train"`` draws every query and demonstration from the
train pairs, ``split="test"`` from the test pairs, so a vector extracted on train prompts is
evaluated on query words it never saw; ``split="all"`` (the default) uses every pair. A split
too small for a ``shots``-shot prompt (``shots + 2`` pairs: the query, the wrong answer's
pair and the demonstrations) is a :class:`~modelweave.tasks.base.TaskError`.

Named positions: ``QUERY`` (the query word's last token) and ``END``. Registered as
``icl_<dataset>`` (``icl_antonym``, ``icl_country_capital`` ...); :func:`icl_task_name` maps
a dataset name with dashes to its task.
"""

from __future__ import annotations

import random
from functools import cache
from importlib import resources

from .base import Example, Task, TaskError, fill, register

#: dataset name -> one-line description
DATASETS = {
    "antonym": "a word -> its opposite ('hot' -> 'cold')",
    "capitalize": "a word -> the word capitalised ('apple' -> 'Apple')",
    "country-capital": "a country -> its capital ('France' -> 'Paris')",
    "english-french": "an English word -> its French translation ('cat' -> 'chat')",
    "next-item": "an item of a sequence -> the next ('Monday' -> 'Tuesday')",
    "present-past": "a verb -> its simple past ('go' -> 'went')",
    "singular-plural": "a noun -> its plural ('cat' -> 'cats')",
}


@cache
def load_pairs(dataset: str) -> tuple[tuple[str, str], ...]:
    """The ``(x, y)`` pairs of a shipped dataset (``#`` lines are comments)."""
    if dataset not in DATASETS:
        raise TaskError(f"unknown ICL dataset {dataset!r}; datasets: {', '.join(DATASETS)}")
    text = (resources.files(__package__) / "icl_data" / f"{dataset.replace('-', '_')}.tsv"
            ).read_text(encoding="utf-8")
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            x, y = line.split("\t")
            pairs.append((x.strip(), y.strip()))
    return tuple(pairs)


SPLITS = ("all", "train", "test")


Pairs = tuple[tuple[str, str], ...]


def split_word_pairs(pairs, test_fraction: float = 0.3, seed: int = 0, name: str = "pairs"
                     ) -> tuple[Pairs, Pairs]:
    """``(train, test)`` of any ``(x, y)`` pairs, disjoint by query word: ``test`` is
    ``round(len * test_fraction)`` pairs drawn with ``seed``; ``train`` the others that contain
    no test query word as input or label (case-insensitive). Both keep the pairs' order.

    Raises:
        TaskError: a fraction outside (0, 1), or a split with no train or no test pairs.
    """
    pairs = tuple((str(x), str(y)) for x, y in pairs)
    if not 0 < float(test_fraction) < 1:
        raise TaskError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    order = list(range(len(pairs)))
    random.Random(f"icl-split:{name}:{seed}").shuffle(order)
    n_test = round(len(pairs) * float(test_fraction))
    test = tuple(pairs[i] for i in sorted(order[:n_test]))
    held = {x.lower() for x, _ in test}
    train = tuple(pairs[i] for i in sorted(order[n_test:])
                  if pairs[i][0].lower() not in held and pairs[i][1].lower() not in held)
    if not test or not train:
        raise TaskError(f"ICL {name}: a test fraction of {test_fraction} of its {len(pairs)} "
                        f"pairs leaves {len(train)} train and {len(test)} test pairs; both "
                        "need at least one")
    return train, test


@cache
def split_pairs(dataset: str, test_fraction: float = 0.3, seed: int = 0
                ) -> tuple[Pairs, Pairs]:
    """:func:`split_word_pairs` of a shipped dataset (module docstring)."""
    return split_word_pairs(load_pairs(dataset), test_fraction, seed, repr(dataset))


def task_pairs(dataset: str, split: str = "all", test_fraction: float = 0.3,
               seed: int = 0) -> tuple[tuple[str, str], ...]:
    """The pairs a task with these parameters draws from (``split``: all, train, test)."""
    if split not in SPLITS:
        raise TaskError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "all":
        return load_pairs(dataset)
    train, test = split_pairs(dataset, float(test_fraction), int(seed))
    return train if split == "train" else test


def icl_task_name(dataset: str) -> str:
    """``"country-capital"`` -> ``"icl_country_capital"`` (task names pass through)."""
    if dataset.startswith("icl_"):
        return dataset
    return "icl_" + dataset.replace("-", "_")


def dataset_of(task_name: str) -> str:
    """Inverse of :func:`icl_task_name`; raises :class:`TaskError` for other names."""
    name = task_name.removeprefix("icl_").replace("_", "-")
    if name not in DATASETS:
        raise TaskError(f"{task_name!r} is not an ICL task; ICL datasets: "
                        f"{', '.join(DATASETS)}")
    return name


def icl_prompt(demos: list[tuple[str, str]], query: str) -> str:
    """``Q: x\\nA: y\\n\\n`` per demonstration, then ``Q: query\\nA:``."""
    return "".join(f"Q: {x}\nA: {y}\n\n" for x, y in demos) + f"Q: {query}\nA:"


def shuffled_labels(demos: list[tuple[str, str]], rng: random.Random
                    ) -> list[tuple[str, str]]:
    """The demonstrations with their labels permuted so that (with two or more) no label
    stays at its own input (a derangement, drawn by rejection)."""
    labels = [y for _, y in demos]
    if len(demos) < 2:
        return list(demos)
    for _ in range(1000):
        order = rng.sample(range(len(demos)), len(demos))
        if all(i != j for i, j in enumerate(order)):
            break
    return [(x, labels[j]) for (x, _), j in zip(demos, order, strict=True)]


class IclTask(Task):
    """Base of the ICL tasks: subclasses set ``dataset``. Parameters: ``shots`` (10),
    ``split`` (``all``, ``train``, ``test``), ``test_fraction`` (0.3), ``split_seed`` (0)."""

    dataset: str = ""
    metric = "logit_diff"
    corruptions = ("shuffled",)
    defaults = {"shots": 10, "split": "all", "test_fraction": 0.3, "split_seed": 0}

    def example(self, rng: random.Random, index: int, tokenizer) -> Example:
        split = self.params["split"]
        pairs = task_pairs(self.dataset, split, self.params["test_fraction"],
                           self.params["split_seed"])
        shots = int(self.params["shots"])
        if not 0 <= shots < len(pairs) - 1:
            where = "" if split == "all" else f" (its {split} split has {len(pairs)} pairs)"
            raise TaskError(f"shots must lie in [0, {len(pairs) - 2}] for "
                            f"{self.dataset!r}{where}: a prompt needs shots + 2 distinct "
                            "pairs")
        chosen = rng.sample(range(len(pairs)), shots + 2)
        query, other, demos = pairs[chosen[0]], pairs[chosen[1]], [pairs[i] for i in
                                                                    chosen[2:]]
        clean = icl_prompt(demos, "{QUERY}")
        corrupt = icl_prompt(shuffled_labels(demos, rng), "{QUERY}")
        clean_text, spans = fill(clean, {"QUERY": query[0]})
        corrupt_text, corrupt_spans = fill(corrupt, {"QUERY": query[0]})
        return Example(clean_text, corrupt_text, [" " + query[1]], [" " + other[1]], spans,
                       corrupt_spans, {"x": query[0], "y": query[1], "shots": shots,
                                       "dataset": self.dataset, "split": split,
                                       "demos": [list(d) for d in demos]})


def _make(dataset: str) -> type[IclTask]:
    cls = type(f"Icl_{dataset.replace('-', '_')}", (IclTask,), {
        "name": icl_task_name(dataset), "dataset": dataset,
        "description": f"ICL {dataset}: {DATASETS[dataset]}; Q:/A: few-shot",
        "__doc__": f"In-context {dataset} ({DATASETS[dataset]}); see :mod:`{__name__}`."})
    return register(cls)


ICL_TASKS = {name: _make(name) for name in DATASETS}
