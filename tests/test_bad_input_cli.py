"""Bad input on the command line: one ``error:`` line (exit 1) or a usage error (exit 2),
never a traceback. Commands run in this process as the console script runs them
(``modelweave.cli.main``), on a tiny random-config model saved to a folder."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from test_bad_input import assert_one_error_line

from tiny import save_tiny_model


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(*args)``: exit status and stderr of ``modelweave ARGS`` run by ``main()``."""
    import modelweave.runtime as runtime
    from modelweave.cli import main

    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: False)  # this process's malloc

    def run(*args):
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["modelweave", *map(str, args)])
        with pytest.raises(SystemExit) as info:
            main()
        return SimpleNamespace(returncode=info.value.code, stderr=capsys.readouterr().err)

    return run


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 3-layer GPT-2 (4 heads, d_model 32) with a byte-level tokenizer, as a folder."""
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "gpt2"))


def usage_error(result, *parts):
    """Typer's usage error: exit 2, the bad option named, no traceback."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    for part in parts:
        assert part in result.stderr


def test_cli_plan_rejects_n_and_seq_zero(cli):
    # The option parser refuses it first: a usage error (exit 2) naming the option and its bound.
    result = cli("plan", "--model", "llama-3-8b", "--method", "eval", "--n", "0", "--seq", "0")
    usage_error(result, "'--n'", "greater than or equal to 1")


def test_layer_specs(cli, model, tmp_path):
    docs, queries, pairs = tmp_path / "d.jsonl", tmp_path / "q.jsonl", tmp_path / "p.jsonl"
    pairs.write_text('{"positive": "a b", "negative": "c d"}\n')
    docs.write_text('{"text": "When Mary and John went to the store"}\n')
    queries.write_text('{"prompt": "The store", "completion": " sold"}\n')
    influence = ("influence", "--model", model, "--docs", docs, "-q", queries, "--out",
                 tmp_path / "inf", "--layers")
    usage_error(cli("patch", "--model", model, "--layers", "a,b"),
                "layers are comma-separated integers, e.g. 0,5,10")
    for args, parts in (
            (("patch", "--model", model, "--n", 4, "--layers", "1,7", "--out", tmp_path / "p"),
             ["layer 7 out of range: layers are 0..2"]),
            (("fv", "--model", model, "--task", "antonym", "--layers", "a,b"),
             ["layers 'a,b': give comma-separated layer numbers or 'all'"]),
            (("fv", "--model", model, "--task", "antonym", "--layers", "9"),
             ["layer 9 out of range: the model has 3 layers (0..2)"]),
            (("fv", "--model", model, "--task", "antonym", "--effect-layers", "0,9", "--out",
              tmp_path / "fv"), ["layer 9 out of range: the model has 3 layers (0..2)"]),
            (("steer", "--model", model, "--pairs", pairs, "--prompt", "hi", "--layer", 3,
              "--out", tmp_path / "s"), ["layer 3 out of range: the model has 3 layers "
                                         "(0..2)"]),
            ((*influence, "5-3"), ["--layers '5-3': the range '5-3' is reversed; write 3-5"]),
            ((*influence, "x"), ["--layers 'x': expected numbers and ranges"]),
            ((*influence, "7"), ["layer 7 is out of range; the model has 3 layers (0 to 2)"])):
        assert_one_error_line(cli(*args), *parts)


def test_file_inputs(cli, model, tmp_path):
    import torch

    files = {"pairs.jsonl": '{"positive": "a b", "negative": "c d"}\n{"negative": "e"}\n',
             "pairs.txt": "a\tb\n", "same.jsonl": '{"positive": "one two", "negative": '
             '"one two"}\n', "v.txt": "1 2\n", "words.json": '["a", "b"]', "docs.csv": "t\n",
             "short.jsonl": '{"text": "a", "id": "tiny"}\n', "q.jsonl": '{"prompt": "The '
             'cat", "completion": " sat"}\n', "task.txt": "x\n", "bad.yaml": "models: [\n",
             "bad.pt": "not a pickle"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    torch.save({"vector": [1.0]}, tmp_path / "dict.pt")
    steer = ("steer", "--model", model, "--prompt", "hello there", "--out", tmp_path / "s",
             "--pairs")
    ablate = ("ablate-direction", "--model", model, "--out", tmp_path / "ab", "--vector")
    influence = ("influence", "--model", model, "-q", tmp_path / "q.jsonl", "--out",
                 tmp_path / "inf", "--docs")
    for args, parts in (
            ((*steer, tmp_path / "pairs.jsonl"), ["pairs.jsonl: record 2 needs 'positive' and "
                                                  "'negative'"]),
            ((*steer, tmp_path / "pairs.txt"), ["unknown suffix '.txt'; use .jsonl, .json, "
                                                ".csv or .tsv"]),
            ((*steer, tmp_path / "same.jsonl", "--layer", 1),
             ["give a zero direction at hook_resid_post of layer 1", "use another layer"]),
            ((*ablate, tmp_path / "v.txt"), ["v.txt: use .safetensors, .pt, .npy or .json"]),
            ((*ablate, tmp_path / "words.json"), ["words.json: expected one vector of "
                                                  "numbers, got list"]),
            ((*ablate, tmp_path / "dict.pt"), ["dict.pt: expected one vector of numbers, "
                                               "got dict"]),
            ((*ablate, tmp_path / "bad.pt"), ["bad.pt: cannot read it (", "torch.save"]),
            ((*ablate, tmp_path / "none.pt"), ["none.pt does not exist"]),
            ((*ablate, tmp_path / "v.txt", "--pairs", tmp_path / "same.jsonl"),
             ["give the direction with exactly one of --pairs or --vector"]),
            ((*influence, tmp_path / "docs.csv"), ["docs.csv: document files are .jsonl, "
                                                   ".txt or .parquet"]),
            ((*influence, tmp_path / "short.jsonl"), ["document 'tiny' has fewer than 2 "
                                                      "tokens; nothing to learn"]),
            (("patch", "--model", model, "--task", tmp_path / "task.txt"),
             ["task.txt: task files are .jsonl, .json, .csv, .yaml or .yml"]),
            (("run", tmp_path / "bad.yaml"), ["bad.yaml:2: not valid YAML: "]),
            (("predict", "--model", tmp_path / "task.txt", "hi"),
             ["is a file but not a .gguf"])):
        assert_one_error_line(cli(*args), *parts)
    assert not (tmp_path / "ab").exists()


def test_settings(cli, model, tmp_path):
    heuristics = ("heuristics", "--model", model, "--out", tmp_path / "h")
    for args, parts in (
            ((*heuristics, "--grid-fraction", 2), ["grid_fraction must be in (0, 1], got 2.0"]),
            (("heuristics", "--model", model, "--out", tmp_path / "h5", "--first-layer", 5),
             ["first_layer 5 out of range (model has 3 layers: 0..2)"]),
            ((*heuristics, "--threshold", 0), ["threshold must be in (0, 1], got 0.0"]),
            ((*heuristics, "--decodable-margin", 1), ["decodability margin must be in [0, 1), "
                                                      "got 1.0"]),
            ((*heuristics, "--operators", "+,%"), ["unknown arithmetic operator '%'"]),
            (("heuristics-emergence", tmp_path, "--operator", "^"),
             ["unknown arithmetic operator '^'"]),
            (("steer", "--model", model, "--pairs", tmp_path / "p.jsonl", "--prompt", "hi",
              "--positions", "1:5:2"), ["positions '1:5:2': use all, last, N, N: or N:M (no "
                                        "step)"]),
            (("patch", "--model", model, "--method", "exact*"), ["unknown method 'exact*'"]),
            (("patch", "--model", model, "--n", 4, "--method", "locate", "--k", 0, "--out",
              tmp_path / "l"), ["k must be at least 1, got 0"]),
            (("train-toy", "--act", "swishy", "--steps", 1, "--out", tmp_path / "t"),
             ["unknown activation 'swishy'; use one of", "gelu_new", "relu"]),
            (("train-toy", "--lr", 0, "--out", tmp_path / "t"),
             ["lr must be positive and weight_decay non-negative, got lr=0.0"]),
            (("toy-analyse", "grokking", model), ["holds no toy run (no train.json)"]),
            (("toy-analyse", "fourier", model), ["unknown analysis 'fourier'; use composition, "
                                                 "induction, grokking"])):
        assert_one_error_line(cli(*args), *parts)
    (tmp_path / "p.jsonl").write_text('{"positive": "a b", "negative": "c d"}\n')
    usage_error(cli("influence", "--model", model, "--docs", tmp_path / "p.jsonl", "-q", "ioi",
                    "--train-batch", 0), "--train-batch", "greater than or equal to")
    assert not (tmp_path / "t").exists() and not (tmp_path / "h").exists()
