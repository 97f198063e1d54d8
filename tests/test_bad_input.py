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


def test_cli_plan_rejects_n_and_seq_zero():
    # The option parser refuses it first: a usage error (exit 2) naming the option and its bound.
    result = run("plan", "--model", "llama-3-8b", "--method", "eval", "--n", "0", "--seq", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'--n'" in result.stderr and "greater than or equal to 1" in result.stderr


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
