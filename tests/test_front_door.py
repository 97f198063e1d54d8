"""The method kind as the front door: workers write data only, the run page draws each unit once,
the planner knows memory kinds only, one patching call with its alias."""

from __future__ import annotations

import pytest
import torch

from modelweave.experiments import parse_experiment, plan_method, run_experiment
from modelweave.experiments.page import FIGURES, build_report
from modelweave.planner import PlanError, PlanSpec, plan_unit

from tiny import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2")))


def test_workers_write_data_and_the_page_draws_once(model_dir, tmp_path):
    spec = parse_experiment({"name": "d", "model": model_dir, "tasks": ["seq_digits"], "n": 4,
                             "methods": [{"patch": {"grid": "heads"}}, "lens"]})
    run_experiment(spec, tmp_path, report=False)
    units = sorted((tmp_path / "units").iterdir())
    assert len(units) == 2 and not list(tmp_path.glob("units/*/*.png"))  # data only
    build_report(tmp_path)
    patch = next(u for u in units if "patch" in u.name)
    assert (patch / "heatmap.png").exists() and (patch / FIGURES).exists()
    stamp = (patch / "heatmap.png").stat().st_mtime_ns
    build_report(tmp_path)  # drawn already: not again
    assert (patch / "heatmap.png").stat().st_mtime_ns == stamp
    (patch / "heatmap.png").unlink()
    build_report(tmp_path)  # a missing figure is drawn again
    assert (patch / "heatmap.png").exists()


def test_the_planner_knows_memory_kinds_and_the_kinds_know_methods():
    with pytest.raises(PlanError, match="unknown memory kind"):
        plan_unit("smollm2-135m", "discover", {}, 4, 8, None, 10**10, device="cpu")
    direct = plan_unit("smollm2-135m", PlanSpec.of("eap-ig"), {}, 8, 8, None, 10**11,
                       device="cpu")
    via = plan_method("smollm2-135m", "eap-ig", {}, 8, 8, None, 10**11, device="cpu")
    assert via.method == "discover/eap-ig" and via.kind == "eap-ig"
    assert via.peak_bytes == direct.peak_bytes
    alias = plan_method("smollm2-135m", "patch", {"method": "atp"}, 8, 8, None, 10**11,
                        device="cpu")
    assert alias.method == "patch/attribution" and alias.kind == "attribution"


def test_one_patching_call_and_its_alias(model_dir):
    from modelweave.methods import attribution_sweep, patch
    from modelweave.models import load_model
    from modelweave.tasks import make_batch

    model = load_model(model_dir)
    batch = make_batch(model, "seq_digits", n=4, seed=0, same_length=True)
    found = patch(model, batch, "heads", method="atp")
    assert found.method == "attribution" and not found.exact.any()
    assert torch.equal(found.result.values, attribution_sweep(model, batch, "heads").values)
    assert not any(row["exact"] for row in found.top(3))
