"""The planner: shapes and parameter counts from configs, activation memory against autograd's
saved tensors, batch search, refusals with advice, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import transformers as tf

from modelweave.experiments.planning import plan_method as plan_unit
from modelweave.planner import (
    PlanError,
    SizeError,
    count_params,
    model_shape,
    parse_size,
)
from modelweave.planner.activations import eap_saved_per_token, saved_per_token
from modelweave.planner.shape import shape_from_config

from tiny import CONFIGS, FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_count_equals_the_real_model(family):
    config = CONFIGS[family]()
    model = tf.AutoModelForCausalLM.from_config(config)
    assert count_params(config) == sum(p.numel() for p in model.parameters())


def test_shape_reads_a_config_file_and_a_directory(tmp_path):
    config = CONFIGS["llama3"]()
    config.save_pretrained(tmp_path)
    for spec in (tmp_path, tmp_path / "config.json", config):
        shape = model_shape(spec)
        assert (shape.n_layers, shape.d_model, shape.n_heads, shape.n_kv_heads) == (3, 32, 4, 1)
        assert shape.d_head == 8 and shape.d_mlp == 48 and not shape.tied


def test_embedded_model_shape_without_weights():
    shape = model_shape("smollm2-135m")
    assert (shape.n_layers, shape.d_model, shape.n_heads, shape.n_kv_heads, shape.d_mlp,
            shape.d_vocab, shape.tied) == (30, 576, 9, 3, 1536, 49152, True)
    assert shape.n_params == 134_515_008


def _saved_bytes(model, tokens, grad_at=None) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one forward pass."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=tokens).logits.sum()
    return sum(seen.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_saved_activations_match_autograd(dtype):
    config = tf.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=dtype)
    b, t = 3, 11
    measured = _saved_bytes(model, torch.randint(0, 97, (b, t)))
    predicted = b * t * saved_per_token(shape_from_config(config), 2 if dtype != torch.float32
                                        else 4)
    assert predicted == pytest.approx(measured, rel=0.05)


def test_eap_gradient_pass_saves_at_least_the_plain_pass():
    shape = model_shape("smollm2-135m")
    for e in (2, 4):
        assert eap_saved_per_token(shape, e) > saved_per_token(shape, e)


def test_largest_batch_grows_with_memory():
    sizes = [plan_unit("smollm2-135m", "eap-ig", {}, n=256, seq=32, dtype="float32",
                       memory_bytes=m, device="cpu").batch_size or 0
             for m in (1e9, 2e9, 4e9, 8e9, 16e9, 64e9)]
    assert sizes == sorted(sizes) and sizes[0] == 0 and sizes[-1] > sizes[3] > 0


def test_plan_parts_sum_to_the_peak_and_time_is_positive():
    plan = plan_unit("llama-3-8b", "discover", {"method": "eap"}, n=16, seq=24,
                     memory_bytes=parse_size("80GB"), device="cuda")
    assert plan.dtype == "bfloat16" and plan.kind == "eap" and plan.fits
    assert sum(plan.breakdown.values()) == pytest.approx(plan.peak_bytes)
    assert plan.breakdown["weights"] == 2 * plan.shape["n_params"]
    assert plan.seconds > 0 and plan.flops > 0 and json.dumps(plan.to_dict())


def test_a_unit_that_cannot_fit_is_refused_with_what_would():
    plan = plan_unit("olmo-2-7b", "eap-ig", {}, n=64, seq=64, dtype="float32",
                     memory_bytes=parse_size("80GB"), device="cuda")
    assert not plan.fits and plan.batch_size is None
    assert "needs" in plan.message and "fits with" in plan.message
    assert "bfloat16" in plan.message or "--n" in plan.message


def test_bad_inputs_are_plan_errors(tmp_path):
    with pytest.raises(PlanError, match="unknown method"):
        plan_unit("smollm2-135m", "nonsense", {}, n=4, seq=8, dtype=None, memory_bytes=None)
    with pytest.raises(PlanError, match="unknown method"):
        plan_unit("smollm2-135m", "discover", {"method": "magic"}, 4, 8, None, None)
    with pytest.raises(PlanError, match="dtype"):
        plan_unit("smollm2-135m", "eval", {}, 4, 8, "int3", 10**10, device="cpu")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(PlanError, match="cannot read config"):
        plan_unit(tmp_path, "eval", {}, 4, 8, None, 10**10, device="cpu")
    with pytest.raises(PlanError, match="no such file"):
        plan_unit("./missing/config.json", "eval", {}, 4, 8, None, 10**10, device="cpu")
    for text in ("eighty", "80XB", "-3GB", "0"):
        with pytest.raises(SizeError):
            parse_size(text)


def test_sizes():
    assert parse_size("80GB") == 80 * 10**9
    assert parse_size("24GiB") == 24 * 2**30
    assert parse_size("512MB") == 512 * 10**6
    assert parse_size("1.5 TB") == 1_500_000_000_000


def run(*args):
    code = "from modelweave.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


def test_cli_json_and_refusal():
    ok = run("plan", "--model", "llama-3-8b", "--method", "eap-ig", "--n", "32", "--seq", "16",
             "--gpu-memory", "80GB", "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout.strip().splitlines()[-1])
    assert data["fits"] and data["batch_size"] >= 1 and data["dtype"] == "bfloat16"
    refused = run("plan", "--model", "olmo-2-7b", "--method", "eap-ig", "--dtype", "fp32",
                  "--n", "64", "--seq", "256", "--gpu-memory", "80GB")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "fits with" in refused.stderr
    bad = run("plan", "--method", "nonsense")
    assert bad.returncode == 1 and "unknown method" in bad.stderr and "Traceback" not in bad.stderr
