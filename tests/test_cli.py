"""The command line: listing, predictions, and one-line errors."""

import json
import subprocess
import sys

import pytest

from modelweave.models import embedded


def run(*args):
    code = "from modelweave.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300)


def test_models_lists_architectures_and_the_embedded_model():
    result = run("models")
    assert result.returncode == 0
    for arch in ("llama", "gpt2", "gpt_neox", "olmo", "olmo2", "cohere"):
        assert arch in result.stdout
    assert "smollm2-135m" in result.stdout
    installed = "yes" if embedded.gguf_path() else "no"
    assert f"installed: {installed}" in result.stdout


def test_bad_model_is_one_line_without_traceback(tmp_path):
    result = run("predict", "--model", str(tmp_path / "missing.gguf"), "hello")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: no such file")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.xdist_group("smollm")
def test_predict_on_the_embedded_model():
    result = run("predict", "When Mary and John went to the store, John gave a drink to")
    assert result.returncode == 0, result.stderr
    assert "' Mary'" in result.stdout
    as_json = run("predict", "--json", "--top", "3", "1 2 3 4 5 6 ")
    data = json.loads(as_json.stdout.strip().splitlines()[-1])
    (row,) = data["predictions"]
    assert row["tokens"] and len(row["predictions"]) == 3
    assert row["predictions"][0]["token"].strip() == "7"


def test_listings_are_plain_lines_in_a_pipe_and_json_on_request():
    """Piped (not a terminal), names are never wrapped or cut: one line per task, tab-separated,
    so ``modelweave tasks | grep`` works; ``--json`` gives the same names."""
    from modelweave.tasks import list_tasks

    names = [t.name for t in list_tasks()]
    plain = run("tasks")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].split("\t")[0] == "task" and len(lines) == len(names) + 1
    assert [line.split("\t")[0] for line in lines[1:]] == names
    data = json.loads(run("tasks", "--json").stdout.strip().splitlines()[-1])
    assert [t["name"] for t in data["tasks"]] == names
    assert all({"description", "metric", "corruptions", "params"} <= set(t) for t in data["tasks"])
    models = json.loads(run("models", "--json").stdout.strip().splitlines()[-1])
    assert {"olmo2", "cohere2", "gpt2"} <= set(models["architectures"])
    assert models["embedded"]["name"] == "smollm2-135m"


@pytest.mark.slow
@pytest.mark.xdist_group("smollm")
def test_test_prompt_names_mary_first(smollm, capsys):
    """As TransformerLens's test_prompt: ' Mary' is rank 0 after the IOI prompt; a two-token
    answer is broken down token by token (teacher-forced)."""
    prompt = "When Mary and John went to the store, John gave a drink to"
    result = smollm.test_prompt(prompt, "Mary", top_k=5)
    printed = capsys.readouterr().out
    assert result.rank == 0 and result.answer_tokens[0].token == " Mary"
    assert "rank 0" in printed and "' Mary'" in printed
    top = result.answer_tokens[0].top
    assert len(top) == 5 and top[0][0] == " Mary" and abs(top[0][1] - result.answer_tokens[0]
                                                          .prob) < 1e-6
    two = smollm.test_prompt("1 2 3 4 5 6 7 8", "9 10", print_details=False)
    assert [a.token for a in two.answer_tokens][:2] == [" ", "9"]
    assert all(a.rank >= 0 for a in two.answer_tokens)
    assert "<table>" in two._repr_html_()


def test_test_prompt_rejects_an_answer_that_merges_with_the_prompt():
    from modelweave import Model
    from modelweave.errors import ModelWeaveError
    from tokenizers_zoo import make_tokenizer

    from tiny import tiny_hf_model

    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    with pytest.raises(ModelWeaveError, match="empty"):
        model.test_prompt("a b", "", print_details=False)
    with pytest.raises(ModelWeaveError, match="merges with the end of the prompt"):
        model.test_prompt("When Mary and J", "ohn", prepend_space=False, print_details=False)
    result = model.test_prompt("When Mary and John went", "to", print_details=False)
    assert result.answer_tokens[0].token == " to" and 0 <= result.rank < model.cfg.d_vocab
