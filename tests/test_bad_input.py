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


@pytest.fixture(scope="module")
def tiny():
    """A 3-layer llama (4 heads, 2 key/value heads, d_model 32, d_mlp 48) with a tokenizer."""
    from modelweave.models import Model
    from tokenizers_zoo import make_tokenizer

    from tiny import tiny_hf_model

    tok = make_tokenizer("bytelevel")
    return Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)


@pytest.mark.parametrize(("setting", "message"), [
    ({"first_layer": 3}, r"first_layer 3 out of range \(model has 3 layers: 0\.\.2\)"),
    ({"grid_fraction": 0.0}, r"grid_fraction must be in \(0, 1\], got 0\.0"),
    ({"step": -1}, "step must be >= 0, got -1"),
    ({"classify_k": 0}, "classify_k must be >= 1, got 0"),
    ({"n_discovery": 0}, "n_discovery must be >= 1, got 0"),
    ({"n_eval": 0}, "n_eval must be >= 1, got 0"),
    ({"n_prompts": 1}, "n_prompts must be >= 2, got 1"),
    ({"decodable": "mlp"}, "decodability method must be 'probe' or 'lens', got 'mlp'"),
    ({"decodable_margin": 1.0}, r"decodability margin must be in \[0, 1\), got 1\.0"),
    ({"threshold": 0.0}, r"threshold must be in \(0, 1\], got 0\.0"),
    ({"null_draws": 0}, "null_draws and permutation_draws must be >= 1, got 0 and 20"),
    ({"nulls": ("random", "bogus")}, "unknown null 'bogus'; nulls are random"),
])
def test_heuristics_settings_name_the_bad_value(tiny, setting, message):
    """Checked up front by ``find_heuristics`` (before any prompt is drawn)."""
    from modelweave.analysis.heuristics.pipeline import find_heuristics
    from modelweave.tasks import TaskError

    with pytest.raises(TaskError, match=message) as info:
        find_heuristics(tiny, "+", **setting)
    one_line(info)


def test_heuristics_operators_decodability_emergence_and_results(tiny):
    import torch

    from modelweave.analysis.heuristics.emergence import emergence
    from modelweave.analysis.heuristics.neurons import decode_layers, decoding
    from modelweave.analysis.heuristics.pipeline import find_heuristics
    from modelweave.analysis.heuristics.results import HeuristicsRun, UnknownOperatorError
    from modelweave.experiments.methods import ConfigError, get_method
    from modelweave.tasks import TaskError

    for call, message in (
            (lambda: find_heuristics(tiny, "+,%"), r"unknown arithmetic operator '%'; "
             r"operators are \+, -, \*, /"),
            (lambda: decoding(tiny, None, method="mlp"), "decodability method must be 'probe' "
             "or 'lens', got 'mlp'"),
            (lambda: decode_layers(torch.zeros(3, 8, 4), torch.zeros(8), method="x"),
             "got 'x'"),
            (lambda: decode_layers(torch.zeros(3, 8, 4), torch.zeros(8), margin=-0.1),
             r"decodability margin must be in \[0, 1\), got -0\.1"),
            (lambda: decode_layers(torch.zeros(3, 3, 4), torch.zeros(3)),
             "decodability needs at least 4 prompts, got 3"),
            (lambda: emergence([(1, "unused")], "+", first_layer=-1),
             "first_layer must be >= 0, got -1")):
        with pytest.raises(TaskError, match=message) as info:
            call()
        one_line(info)
    with pytest.raises(ConfigError, match=r"^methods\[0\]\.heuristics: grid_fraction must be in "
                       r"\(0, 1\], got 2$") as info:  # an experiment's entry, before any model
        get_method("heuristics").check_params({"grid_fraction": 2}, "methods[0].heuristics")
    one_line(info)
    with pytest.raises(UnknownOperatorError, match=r"no result for operator '\*'; operators "
                       "analysed: none") as info:
        HeuristicsRun({}, []).by_operator("*")
    one_line(info, KeyError)


class _ArithBatch:
    """The part of an arithmetic ``TaskBatch`` a knockout reads before running the model."""

    def __init__(self, *rows):
        from types import SimpleNamespace

        self.examples = [SimpleNamespace(meta={"op": op, "op1": a, "op2": b})
                         for op, a, b in rows]

    def __len__(self):
        return len(self.examples)


def test_knockout_operators_heuristic_names_and_layers(tiny):
    import torch

    from modelweave.analysis.heuristics.knockout import heuristic_knockout, holds
    from modelweave.analysis.heuristics.neurons import neuron_attribution
    from modelweave.tasks import TaskError

    mixed = _ArithBatch(("+", 2, 3), ("-", 5, 1))
    even = _ArithBatch(("+", 2, 3), ("+", 4, 1))
    for call, message in (
            (lambda: heuristic_knockout(tiny, mixed, "op1_0mod2", [(0, 1)], [(0, 2)]),
             r"knockouts need prompts of one operator, got \['\+', '-'\]"),
            (lambda: heuristic_knockout(tiny, even, "op1_0mod2", [(0, 1)], [(0, 2)]),
             "heuristic 'op1_0mod2' holds for 2 of 2 prompts: a knockout needs prompts on "
             "both sides"),
            (lambda: holds("op1_is_big", torch.tensor([1]), torch.tensor([2]), "+"),
             "unknown heuristic name 'op1_is_big'"),
            (lambda: neuron_attribution(tiny, None, layers=[0, 3]),
             r"layer 3 out of range \(model has 3\)")):
        with pytest.raises(TaskError, match=message) as info:
            call()
        one_line(info)


def test_atp_star_and_locate_ranges_methods_and_budgets(tiny):
    from types import SimpleNamespace

    import torch

    from modelweave.methods.atp_star import atp_star, units_of
    from modelweave.methods.locate import locate
    from modelweave.tasks import TaskError

    few = SimpleNamespace(units=list(range(6)), score=torch.arange(6.0))
    for call, message in (
            (lambda: units_of(tiny, "queries", 5, indices=[4]),
             r"head index 4 out of range \(0\.\.3\)"),
            (lambda: units_of(tiny, "keys", 5, indices=[2]),  # 2 key/value heads
             r"head index 2 out of range \(0\.\.1\)"),
            (lambda: units_of(tiny, "queries", 5, layers=[-1]),
             r"layer -1 out of range: layers are 0\.\.2"),
            (lambda: units_of(tiny, "neurons", 5, indices=[48]),
             r"neuron index 48 out of range \(0\.\.47\)"),
            (lambda: units_of(tiny, "heads", 5, indices=[0, 7]),
             r"head index 7 out of range \(0\.\.3\)"),
            (lambda: units_of(tiny, "resid", 5, positions=[5]),
             r"position 5 out of range \(prompts have 5 tokens\)"),
            (lambda: units_of(tiny, "values", 5), "unknown grid 'values'; grids: "),
            (lambda: atp_star(tiny, None, "heads", direction="sideways"),
             "direction must be 'denoising' or 'noising', got 'sideways'"),
            (lambda: locate(tiny, None, "heads", method="exact"),
             r"locate method must be one of atp\*, atp, got 'exact'"),
            (lambda: locate(tiny, None, "heads", calibrate="some"),
             "calibrate must be 'tail' or 'all', got 'some'"),
            (lambda: locate(tiny, None, "heads", k=3, budget=2, estimate=few),
             "a budget of 2 exact patches cannot verify k=3 components")):
        with pytest.raises(TaskError, match=message) as info:
            call()
        one_line(info)


def test_influence_batches_max_tokens_short_documents_and_layer_specs(tiny):
    import torch

    from modelweave.methods.influence import (
        Document,
        InfluenceError,
        InfluenceScores,
        InfluenceSettings,
        Query,
        plan_influence,
    )
    from modelweave.methods.influence.modules import parse_layers

    docs = [Document("long", "When Mary and John went to the store"), Document("d1", "a")]
    queries = [Query("q", "t", "The store", " sold")]
    for settings, message in (
            (InfluenceSettings(train_batch=0), "train_batch and query_batch must be at least 1, "
             "got 0 and "),
            (InfluenceSettings(query_batch=-2), r"got \d+ and -2"),
            (InfluenceSettings(max_tokens=1), r"max_tokens must be at least 2 \(a next-token "
             r"loss needs two tokens\), got 1")):
        with pytest.raises(InfluenceError, match=message) as info:
            plan_influence(tiny, docs[:1], queries, settings, calibrate=False)
        one_line(info)
    for call, message in (
            (lambda: plan_influence(tiny, docs, queries, calibrate=False),
             "document 'd1' has fewer than 2 tokens; nothing to learn"),
            (lambda: plan_influence(tiny, [], queries, calibrate=False), "no documents given"),
            (lambda: plan_influence(tiny, docs[:1], [], calibrate=False), "no queries given"),
            (lambda: parse_layers("1,x"), r"--layers '1,x': expected numbers and ranges like "
             "'20-29' or '3,5,7'"),
            (lambda: parse_layers("5-3"), "--layers '5-3': the range '5-3' is reversed; write "
             "3-5")):
        with pytest.raises(InfluenceError, match=message) as info:
            call()
        one_line(info)
    assert parse_layers("0-2, 5") == [0, 1, 2, 5]
    with pytest.raises(InfluenceError, match=r"scores 'ekfac' have shape \(1, 2\), expected "
                       r"\(1, 1\)") as info:
        InfluenceScores({"ekfac": torch.zeros(1, 2)}, queries, docs[:1])
    one_line(info)


def test_steering_positions_slice_steps_and_vectors(tiny):
    import torch

    from modelweave.errors import SteeringError
    from modelweave.methods.steering.controls import steering_null
    from modelweave.metrics.nulls import NullError
    from modelweave.models.steering import parse_positions

    for spec, message in ((slice(0, 6, 2), r"positions slice\(0, 6, 2\): slices take no step; "
                           r"use slice\(N, M\) or 'N:M'"),
                          ("0:6:2", r"positions '0:6:2': use all, last, N, N: or N:M \(no "
                           r"step\)"),
                          ("first", "positions 'first': use all, last"),
                          ([1, "2"], r"positions \[1, '2'\]: a list of token indices must hold "
                           "ints")):
        with pytest.raises(SteeringError, match=message) as info:
            parse_positions(spec)
        one_line(info)
    assert parse_positions(slice(2, None, 1)) == slice(2, None, 1)
    with pytest.raises(SteeringError, match="slices take no step"), tiny.steer(
            torch.ones(32), layer=0, positions=slice(None, None, -1)):
        pass  # refused when the context opens, before any forward pass
    for bad in (torch.full((32,), float("nan")), torch.full((32,), float("inf"))):
        with pytest.raises(SteeringError, match="steering vector has NaN or infinite entries; "
                           "it needs finite values") as info, tiny.steer(bad, layer=1):
            pass
        one_line(info)
    with pytest.raises(SteeringError, match=r"steering vector of type list: expected a tensor "
                       r"of numbers of shape \[32\]") as info, tiny.steer(["a"] * 32, layer=1):
        pass
    one_line(info)
    with pytest.raises(NullError, match="an equal-norm null needs a finite, non-zero "
                       "vector") as info:  # a zero direction has no equal-norm null
        steering_null(tiny, torch.zeros(32), lambda: torch.zeros(2), layer=1)
    one_line(info)


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
