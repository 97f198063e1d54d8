"""``modelweave fv``, ``steer`` and ``ablate-direction`` on saved tiny models (in process),
with --json; bad input is one line without a traceback."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from modelweave.cli import app
from modelweave.errors import PairCountError, WeightEditError

from tiny import save_tiny_model


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer_cli")
    return {f: str(save_tiny_model(root / f, f)) for f in ("gpt2", "olmo2")}


@pytest.fixture()
def pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"positive": "Mary went to the store", "negative": "Mary went to the park"},
            {"positive": "John gave a drink", "negative": "John gave a ring"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def invoke(*args):
    result = CliRunner().invoke(app, list(args))
    return result


def test_steer_prints_steered_and_unsteered_json(tiny_dirs, pairs, tmp_path):
    result = invoke("steer", "--model", tiny_dirs["gpt2"], "--pairs", str(pairs), "--prompt",
                    "When Mary and John", "--prompt", "1 2 3", "--layer", "1", "--scale", "8",
                    "--max-new-tokens", "5", "--save", str(tmp_path / "vec"), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["layer"] == 1 and info["n_pairs"] == 2 and len(info["generations"]) == 2
    assert {"prompt", "unsteered", "steered"} <= set(info["generations"][0])
    assert (tmp_path / "vec.safetensors").exists() and (tmp_path / "vec.json").exists()


def test_steer_scale_is_the_multiplier_of_the_vector(tiny_dirs, pairs):
    """``--scale 0`` leaves every continuation as it was; ``--scale 8`` gives the
    continuations of the library's own steering with ``8 x`` the pairs' mean difference."""
    from modelweave import load_model
    from modelweave.methods.steering import contrastive_vectors, load_pairs_file

    prompts = ["When Mary and John", "1 2 3"]

    def run(scale: str) -> dict:
        args = ["steer", "--model", tiny_dirs["gpt2"], "--pairs", str(pairs), "--layer", "1",
                "--scale", scale, "--max-new-tokens", "5", "--json"]
        for p in prompts:
            args += ["--prompt", p]
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    zero = run("0")
    assert all(g["steered"] == g["unsteered"] for g in zero["generations"])
    eight = run("8")
    assert eight["scale"] == 8
    model = load_model(tiny_dirs["gpt2"])
    vector = contrastive_vectors(model, *load_pairs_file(pairs), layers=1).at(1)
    with model.steer(vector, layer=1, scale=8.0):
        want = model.generate(prompts, 5).texts
    assert [g["steered"] for g in eight["generations"]] == want
    assert want != [g["unsteered"] for g in eight["generations"]]  # the scale is felt


def test_ablate_direction_writes_an_equivalent_checkpoint(tiny_dirs, pairs, tmp_path):
    out = tmp_path / "ablated"
    result = invoke("ablate-direction", "--model", tiny_dirs["gpt2"], "--pairs", str(pairs),
                    "--layer", "1", "--out", str(out), "--check", "1 2 3 4", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["max_logit_diff_vs_hooks"] <= 1e-4
    assert info["max_embedding_component"] <= 1e-5
    direction = torch.load(out / "direction.pt")
    assert direction.shape == (32,)
    # OLMo-2: refused with the project's error
    bad = invoke("ablate-direction", "--model", tiny_dirs["olmo2"], "--vector",
                 str(out / "direction.pt"), "--out", str(tmp_path / "no"))
    assert isinstance(bad.exception, WeightEditError)
    assert not (tmp_path / "no").exists()


def test_fv_json(tiny_dirs, tmp_path):
    result = invoke("fv", "--model", tiny_dirs["gpt2"], "--task", "antonym", "--n-clean", "3",
                    "--n-corrupt", "2", "--n-eval", "2", "--shots", "2", "--top-k", "2",
                    "--layers", "0,2", "--out", str(tmp_path / "fv"), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["layers"] == [0, 1, 2] and info["fv_layer"] == 1
    assert info["headline"][0]["task"] == "antonym"  # a random model answers none: no FV
    assert (tmp_path / "fv" / "fv.json").exists()


def test_mismatched_pairs_are_one_line(tiny_dirs, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"positive": ["a", "b", "c"], "negative": ["d"]}')
    result = invoke("steer", "--model", tiny_dirs["gpt2"], "--pairs", str(bad), "--prompt", "x")
    assert isinstance(result.exception, PairCountError)
    assert str(result.exception).startswith("contrastive pairs: 3 positive texts but 1")


def test_fv_and_steer_experiment_methods_run_and_report(tiny_dirs, pairs, tmp_path):
    from modelweave.experiments import ConfigError, RunStore, parse_experiment, run_experiment

    spec = parse_experiment({
        "name": "steer", "model": tiny_dirs["gpt2"], "tasks": ["ioi"], "n": 4,
        "methods": [
            {"fv": {"datasets": ["antonym"], "n_clean": 3, "n_corrupt": 2, "n_eval": 2,
                    "shots": 2, "top_k": 2, "layers": [0, 2]}},
            {"steer": {"pairs": str(pairs), "prompts": ["When Mary", "1 2"], "layer": 1,
                       "scale": 8.0, "max_new_tokens": 4, "words": ["Mary", "John"]}}]})
    outcome = run_experiment(spec, tmp_path)
    assert len(outcome.computed) == 2
    store = RunStore(tmp_path)
    steer_unit = next(u for u in spec.units() if u.method == "steer")
    result = store.load(steer_unit.id)
    assert len(result["generations"]) == 2 and 0 <= result["share_steered"] <= 1
    fv_unit = next(u for u in spec.units() if u.method == "fv")
    assert store.load(fv_unit.id).tasks[0].task == "antonym"
    html = outcome.report.read_text()
    assert '<section id="fv"><h2>Function vectors</h2>' in html
    assert '<section id="steer"><h2>Steering</h2>' in html and "When Mary" in html
    with pytest.raises(ConfigError, match="not an ICL task"):
        parse_experiment({**spec_dict(tiny_dirs), "methods": [{"fv": {"datasets": ["ioi"]}}]})
    with pytest.raises(ConfigError, match="pairs"):
        parse_experiment({**spec_dict(tiny_dirs), "methods": [{"steer": {"prompts": ["a"]}}]})


def spec_dict(tiny_dirs):
    return {"name": "s", "model": tiny_dirs["gpt2"], "tasks": ["ioi"], "n": 4}


def test_kinds_accept_the_command_spellings(pairs):
    """One definition of the parameters: the kinds take the command line's spellings."""
    from modelweave.experiments import ConfigError
    from modelweave.experiments.methods import get_method
    from modelweave.tasks.icl import DATASETS

    fv = get_method("fv").check_params({"datasets": ["all"], "layers": "0, 2",
                                        "effect_layers": "all"}, "m")
    assert fv["datasets"] == list(DATASETS) and fv["layers"] == [0, 2]
    assert fv["effect_layers"] is None
    with pytest.raises(ConfigError, match=r"^m\.layers 'a': give comma-separated"):
        get_method("fv").check_params({"layers": "a"}, "m")
    steer = get_method("steer")
    with pytest.raises(ConfigError, match=r"^m\.positions: positions 'x:y'"):
        steer.check_params({"pairs": str(pairs), "prompts": ["a"], "positions": "x:y"}, "m")
    with pytest.raises(PairCountError):  # a command's flags: the library's own error
        bad = pairs.with_name("bad.json")
        bad.write_text('{"positive": ["a", "b"], "negative": ["c"]}')
        steer.check_params({"pairs": str(bad), "prompts": ["a"]}, "")
