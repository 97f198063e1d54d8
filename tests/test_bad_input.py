"""Bad input is one clear ``ModelWeaveError`` line: the bad value and what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelweave.errors import ModelWeaveError


def run(*args):
    code = "from modelweave.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300)


def assert_one_error_line(result, *parts):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for part in parts:
        assert part in lines[0]


def test_store_load_unknown_unit_names_the_known_ones(tmp_path):
    from modelweave.experiments import RunStore
    from modelweave.experiments.store import DONE, UnknownUnitError

    store = RunStore(tmp_path)
    with pytest.raises(UnknownUnitError, match="known units: none"):
        store.load("nope")
    for name in ("a_unit", "b_unit"):
        (tmp_path / "units" / name).mkdir(parents=True)
        (tmp_path / "units" / name / DONE).write_text('{"method": "eval"}')
    with pytest.raises(ModelWeaveError, match=r"'nope'.*known units: a_unit, b_unit") as info:
        store.load("nope")
    assert isinstance(info.value, KeyError) and "\n" not in str(info.value)


def test_plan_unit_rejects_n_or_seq_below_one():
    from modelweave.planner import PlanError, plan_unit

    with pytest.raises(PlanError, match="n=0"):
        plan_unit("smollm2-135m", "eval", n=0, seq=8)
    with pytest.raises(PlanError, match="seq=0"):
        plan_unit("smollm2-135m", "eval", n=4, seq=0)


def _ray_job(gpus_per_worker, device="cpu"):
    from types import SimpleNamespace

    return SimpleNamespace(options={"gpus_per_worker": gpus_per_worker},
                           experiment=SimpleNamespace(device=device))


def test_gpus_per_worker_above_the_cluster_gpus(monkeypatch):
    from types import SimpleNamespace

    from modelweave.experiments.executors import on_ray

    fake = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0})
    monkeypatch.setattr(on_ray, "_import_ray", lambda: fake)
    for device in ("cpu", "cuda"):
        with pytest.raises(on_ray.RayUnavailableError, match="--gpus-per-worker 2: the cluster "
                           "has 0 GPUs; use at most 0"):
            on_ray.execute([], _ray_job(2, device))
    fake = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0, "GPU": 1.0})
    monkeypatch.setattr(on_ray, "_import_ray", lambda: fake)
    with pytest.raises(ModelWeaveError, match="has 1 GPUs"):
        on_ray.execute([], _ray_job(3, "cuda"))


def test_ray_executor_without_ray_says_how_to_install(monkeypatch):
    from modelweave.experiments.executors import on_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(on_ray.RayUnavailableError, match=r"needs Ray: pip install"):
        on_ray.connect(None, 1)


def test_empty_device_map_names_an_example():
    from modelweave.errors import ModelLoadError
    from modelweave.models.device_map import check_device_map

    with pytest.raises(ModelLoadError, match=r"device map is empty; pass device_map='auto'"):
        check_device_map({}, ["model.embed_tokens.weight", "lm_head.weight"])


# -- library calls: tiny random-config models, never the embedded one -------------------------
def one_line(info, *types):
    """The raised error is a one-line ``ModelWeaveError`` (and each of ``types``)."""
    for kind in (ModelWeaveError, *types):
        assert isinstance(info.value, kind), type(info.value)
    assert "\n" not in str(info.value) and str(info.value)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("p.jsonl", '{"positive": "a b", "negative": "c d"}\n{"positive": "e f"}\n',
     r"p\.jsonl: record 2 needs 'positive' and 'negative'"),
    ("p.jsonl", '{"positive": "a b", "negative": "c d"}\n{"positive": \n',
     r"p\.jsonl:2: invalid JSON"),
    ("p.jsonl", "", "contrastive pairs: no pairs given"),
    ("p.jsonl", '{"positive": "a b", "negative": 7}\n', "negative text 1 is 7: pairs are "
     "non-empty texts"),
    ("p.jsonl", '{"positive": "", "negative": "c"}\n', "positive text 1 is '': pairs are "
     "non-empty texts"),
    ("p.json", '{"positive": "abc", "negative": "def"}', r"p\.json: 'positive' and 'negative' "
     "must be lists of texts"),
    ("p.json", '{"positive": ["a", "b"], "negative": ["c"]}', "contrastive pairs: 2 positive "
     "texts but 1 negative ones"),
    ("p.json", "3", r"p\.json: expected a list of records with 'positive' and 'negative', got "
     "int"),
    ("p.json", '["a b"]', r"p\.json: record 1 needs 'positive' and 'negative'"),
    ("p.json", '[{"positive": "a"', r"p\.json: invalid JSON"),
    ("p.csv", "positive,other\na,b\n", r"p\.csv: record 1 needs 'positive' and 'negative'"),
    ("p.tsv", "positive\tnegative\na\tb\nc\n", "negative text 2 is None"),
    ("p.yaml", "positive: [a]\n", r"unknown suffix '\.yaml'; use \.jsonl, \.json, \.csv or "
     r"\.tsv"),
    ("missing.jsonl", None, r"pairs file .*missing\.jsonl does not exist"),
])
def test_pairs_file_content(tmp_path, name, content, message):
    from modelweave.errors import SteeringError
    from modelweave.methods.steering.vectors import load_pairs_file

    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(SteeringError, match=message) as info:
        load_pairs_file(tmp_path / name)
    one_line(info)


def test_file_suffixes(tmp_path):
    from modelweave.errors import ModelLoadError
    from modelweave.methods.influence import InfluenceError, load_documents
    from modelweave.models import load_model
    from modelweave.report.circuit_graph import CircuitGraphError, save_circuit_graph
    from modelweave.tasks import TaskError, resolve_task

    for name in ("docs.csv", "task.txt", "model.bin", "graph.png", "graph"):
        (tmp_path / name).write_text("x\n")
    for call, kind, message in (
            (lambda: load_documents(tmp_path / "docs.csv"), InfluenceError,
             r"docs\.csv: document files are \.jsonl, \.txt or \.parquet"),
            (lambda: resolve_task(str(tmp_path / "task.txt")), TaskError,
             r"task\.txt: task files are \.jsonl, \.json, \.csv, \.yaml or \.yml"),
            (lambda: load_model(tmp_path / "model.bin"), ModelLoadError,
             r"model\.bin is a file but not a \.gguf; pass a directory or a \.gguf"),
            (lambda: save_circuit_graph(None, tmp_path / "graph.png"), CircuitGraphError,
             r"graph\.png: the circuit graph is written as \.svg or \.html, not '\.png'"),
            (lambda: save_circuit_graph(None, tmp_path / "graph"), ValueError,
             "not 'a file without suffix'")):
        with pytest.raises(kind, match=message) as info:
            call()
        one_line(info)


def test_converted_errors_keep_their_builtin_base(tiny, tmp_path):
    """Errors that were bare ValueError/KeyError are ModelWeaveErrors now, and still the
    builtin a caller may catch."""
    from types import SimpleNamespace

    import torch

    from modelweave.engine.suffix import SuffixRangeError, run_suffix
    from modelweave.errors import HookError, SiteError, TokenizationError
    from modelweave.experiments.methods import get_method
    from modelweave.experiments.methods.base import (
        RegistrationError,
        UnknownMethodError,
        register,
    )
    from modelweave.metrics.stats import StatsError, bootstrap, faithfulness, stable_prompts
    from modelweave.models import Model
    from modelweave.models.finetune import FinetuneError, finetune
    from modelweave.models.tokenization import pad_batch

    from tiny import tiny_hf_model

    def wrong_shape(x, hook):
        return x[:, :1]

    cases = (
        (lambda: bootstrap([]), StatsError, ValueError, "no values to aggregate: give at least "
         "one"),
        (lambda: faithfulness([1.0], [2.0], [0.0], order="median"), StatsError, ValueError,
         "order must be 'mean_then_ratio' or 'per_prompt', got 'median'"),
        (lambda: stable_prompts([1.0], [0.0], min_fraction=-1), StatsError, ValueError,
         "min_fraction must be >= 0, got -1"),
        (lambda: run_suffix(tiny, SimpleNamespace(length=4), layer=3, pos=0),
         SuffixRangeError, ValueError, r"suffix start \(layer 3, pos 0\) out of range: layers "
         r"are 0\.\.2, positions 0\.\.3"),
        (lambda: tiny.run_with_hooks("hello there", fwd_hooks=[("blocks.0.hook_resid_post",
                                                                wrong_shape)]),
         HookError, ValueError, r"hook on blocks\.0\.hook_resid_post returned shape"),
        (lambda: tiny.run_with_cache("hello there", ["blocks.0.hook_resid_post"])[1][
            "blocks.1.hook_resid_post"], SiteError, KeyError,
         r"'blocks\.1\.hook_resid_post' was not cached; cached sites: "
         r"blocks\.0\.hook_resid_post"),
        (lambda: tiny.run_with_cache("hi", ["blocks.0.hook_resid_post"])[1].stack("mlp_out"),
         SiteError, KeyError, "no cached site of kind 'mlp_out'"),
        (lambda: Model(tiny_hf_model("gpt2")).to_tokens("hello"), TokenizationError,
         ValueError, r"this model has no tokenizer: pass token ids, or load_model\(\.\.\., "
         r"tokenizer=\.\.\.\)"),
        (lambda: pad_batch([[1, 2]], 0, padding_side="middle"), TokenizationError, ValueError,
         "padding_side must be 'right' or 'left', got 'middle'"),
        (lambda: tiny.to_tokens(""), TokenizationError, ValueError,
         "cannot tokenise an empty text"),
        (lambda: get_method("evaluate"), UnknownMethodError, KeyError,
         "unknown method 'evaluate'; allowed: .*eval"),
        (lambda: register(SimpleNamespace(name="eval")), RegistrationError, ValueError,
         "method kind 'eval' is registered already; pick another name"),
        (lambda: register(SimpleNamespace(name="My Method")), RegistrationError, ValueError,
         "name must be lower-case letters, digits and _, got 'My Method'"),
        (lambda: finetune(tiny, "ioi", tmp_path / "ft", steps=0), FinetuneError, ValueError,
         "steps and lora_r must be at least 1, got steps=0, lora_r=8"),
        (lambda: finetune(tiny, "ioi", tmp_path / "ft", save_every=0), FinetuneError,
         ValueError, r"save_every must be at least 1 \(or None\), got 0"),
        (lambda: finetune(tiny, "ioi", tmp_path / "ft", schedule="cosine"), FinetuneError,
         ValueError, "schedule must be 'constant' or 'linear', got 'cosine'"),
    )
    for call, kind, builtin, message in cases:
        with pytest.raises(kind, match=message) as info:
            call()
        one_line(info, builtin)
    assert not (tmp_path / "ft").exists()
    assert torch.is_tensor(tiny.to_tokens("fine"))


def test_toy_analyses_of_a_model_they_cannot_read():
    from transformers import GPT2Config, GPT2LMHeadModel

    from modelweave.models import Model
    from modelweave.toy import ToyError, ToyModelError
    from modelweave.toy.fourier import analyse_grokking
    from modelweave.toy.induction import induction_circuit
    from modelweave.toy.vocab import build_tokenizer

    from tiny import tiny_hf_model

    model = Model(tiny_hf_model("gpt2"))  # a plain model, no toy run's metadata
    for call, message in (
            (lambda: analyse_grokking(model, []), r"is not a modular-addition toy model \(its "
             "toy task: None\\); train one with train-toy --task modular_addition"),
            (lambda: build_tokenizer(["a", "b", "a"]), "toy vocabulary word 'a': words must be "
             "unique, non-empty and without spaces"),
            (lambda: build_tokenizer(["a", "b c"]), "toy vocabulary word 'b c'")):
        with pytest.raises(ToyModelError, match=message) as info:
            call()
        one_line(info, ToyError, ValueError)
    one = Model(GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=1, n_head=4,
                                           n_positions=64)).eval())
    with pytest.raises(ToyModelError, match="an induction circuit needs at least two layers; "
                       ".* has 1") as info:
        induction_circuit(one)
    one_line(info, ValueError)
