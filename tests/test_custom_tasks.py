"""Tasks from JSONL, CSV and YAML files, and their errors."""

import json

import pytest

from modelweave import Model
from modelweave.tasks import TaskError, load_task_file, make_batch

from tiny import tiny_hf_model, tiny_tokenizer


@pytest.fixture(scope="module")
def model():
    tok = tiny_tokenizer(adds_bos=True)
    return Model(tiny_hf_model("gpt2", vocab_size=len(tok)), tok)


RECORDS = [
    {"clean": "When Mary and John went to the store, John gave a drink to",
     "corrupt": "When Mary and John went to the store, Mary gave a drink to",
     "answers": " Mary", "wrong_answers": [" John"]},
    {"clean": "1 2 3 4", "corrupt": "1 2 3 4", "answers": [" 5"], "wrong_answers": " 4"},
]


def test_jsonl_and_csv(tmp_path, model):
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    csv = tmp_path / "t.csv"
    csv.write_text("clean,corrupt,answers,wrong_answers\n"
                   '"1 2 3 4","1 2 3 4"," 5","["" 4"", "" 3""]"\n')
    batch = make_batch(model, str(jsonl), n=10)
    assert len(batch) == 2 and batch.examples[0].answers == [" Mary"]
    batch = make_batch(model, str(csv))
    assert batch.examples[0].wrong_answers == [" 4", " 3"]
    assert batch.wrong_ids.shape == (1, 2)


def test_yaml_template(tmp_path, model):
    path = tmp_path / "greet.yaml"
    path.write_text(
        "name: greet\n"
        "template: 'When {A} and {B} went to the store, {B} gave a drink to'\n"
        "slots: {A: [Mary, John, Alice], B: [John, Mary, Bob]}\n"
        "answer: ' {A}'\nwrong: ' {B}'\ncorrupt: [A]\n")
    task = load_task_file(path)
    examples = task.generate(6, seed=0)
    for ex in examples:
        a = ex.clean[slice(*ex.spans["A"])]
        b = ex.clean[slice(*ex.spans["B"])]
        assert ex.answers == [" " + a] and ex.wrong_answers == [" " + b] and a != b
        assert ex.clean[slice(*ex.spans["B#2"])] == b
        assert ex.corrupt[slice(*ex.corrupt_spans["A"])] not in (a, b)
    batch = make_batch(model, task, n=6)
    assert set(batch.positions) >= {"A", "B", "B#2", "END"}


@pytest.mark.parametrize("content, match", [
    ('{"clean": "a", "corrupt": "b", "answers": " c", "wrong_answers": " d"}\n{oops\n',
     r"t\.jsonl:2: invalid JSON"),
    ('{"clean": "a", "corrupt": "b", "answers": " c"}\n',
     r"t\.jsonl:1: missing field 'wrong_answers'"),
    ('["a", "b"]\n', r"t\.jsonl:1: expected an object"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, content, match):
    path = tmp_path / "t.jsonl"
    path.write_text(content)
    with pytest.raises(TaskError, match=match):
        load_task_file(path)


def test_malformed_yaml_and_csv(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("template: 'x {A}'\nslots: {A: [a, b]\nanswer: ' {A}'\n")
    with pytest.raises(TaskError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_task_file(bad)
    missing = tmp_path / "missing.yaml"
    missing.write_text("template: 'x {A} {C}'\nslots: {A: [a, b]}\nanswer: ' {A}'\n")
    with pytest.raises(TaskError, match="slot 'C' has no values"):
        load_task_file(missing)
    csv = tmp_path / "t.csv"
    csv.write_text("clean,corrupt,answers\nx,y,z\n")
    with pytest.raises(TaskError, match=r"t\.csv:2: missing field 'wrong_answers'"):
        load_task_file(csv)


def test_a_task_that_loses_every_example_says_why(tmp_path, model):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"clean": "Mary went", "corrupt": "When Mary and John went",
                                "answers": " home", "wrong_answers": " away"}) + "\n")
    with pytest.raises(TaskError, match="lost all 1 examples.*differ in token length|clean has"):
        make_batch(model, str(path))
