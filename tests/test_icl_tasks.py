"""In-context-learning tasks: shipped word pairs, the Q:/A: format, shuffled labels, zero-shot
prompts; on the real SmolLM2 tokenizer every dataset materialises."""

from __future__ import annotations

import random

import pytest

from modelweave.tasks import TaskError, get_task, make_batch
from modelweave.tasks.icl import (
    DATASETS,
    dataset_of,
    icl_prompt,
    icl_task_name,
    load_pairs,
    shuffled_labels,
)


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_dataset_ships_with_unique_inputs(dataset):
    pairs = load_pairs(dataset)
    assert len(pairs) >= 50
    xs = [x for x, _ in pairs]
    assert len(set(xs)) == len(xs)
    assert all(x and y and "\t" not in x + y for x, y in pairs)
    assert dataset_of(icl_task_name(dataset)) == dataset


def test_prompt_format_and_shuffled_corruption():
    assert icl_prompt([("hot", "cold"), ("up", "down")], "big") == (
        "Q: hot\nA: cold\n\nQ: up\nA: down\n\nQ: big\nA:")
    demos = [(str(i), f"y{i}") for i in range(10)]
    shuffled = shuffled_labels(demos, random.Random(0))
    assert [x for x, _ in shuffled] == [x for x, _ in demos]
    assert sorted(y for _, y in shuffled) == sorted(y for _, y in demos)
    assert all(y != f"y{x}" for x, y in shuffled)  # every label moved
    ex = get_task("icl_antonym").generate(3, seed=0)[0]
    assert ex.clean.count("Q: ") == 11 and ex.clean.endswith(f"Q: {ex.meta['x']}\nA:")
    assert ex.corrupt.endswith(f"Q: {ex.meta['x']}\nA:") and ex.corrupt != ex.clean
    assert ex.answers == [" " + ex.meta["y"]] and ex.wrong_answers != ex.answers
    pairs = dict(load_pairs("antonym"))
    demo_lines = ex.clean.split("\n\n")[:-1]
    assert all(pairs[line.split("\n")[0][3:]] == line.split("\n")[1][3:] for line in demo_lines)
    zero = get_task("icl_antonym", shots=0).generate(1, seed=0)[0]
    assert zero.clean == zero.corrupt == f"Q: {zero.meta['x']}\nA:"


def test_bad_dataset_and_shots():
    with pytest.raises(TaskError, match="not an ICL task"):
        dataset_of("icl_nonsense")
    with pytest.raises(TaskError, match="shots"):
        get_task("icl_antonym", shots=500).generate(1)


@pytest.mark.slow
@pytest.mark.xdist_group("smollm")
def test_every_dataset_materialises_on_smollm(smollm):
    for dataset in DATASETS:
        batch = make_batch(smollm, icl_task_name(dataset), n=6, seed=0)
        assert len(batch) >= 5, (dataset, batch.dropped)
        assert (batch.clean != batch.corrupt).any()
        # the query and END sit at the same tokens in clean and shuffled prompts
        assert (batch.lengths - 1 == batch.position("END")).all()
