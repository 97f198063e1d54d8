"""The Ray executor: same results as the sequential run, failures recorded per unit, a killed
sweep resumed with every unit written exactly once, workers recycled, bad addresses refused.

One local Ray session (2 CPUs) serves the module; the killed-driver test joins it by address
from a subprocess, as a sweep on a cluster would.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from modelweave.errors import ModelWeaveError
from modelweave.experiments import (
    MethodKind,
    RunStore,
    parse_experiment,
    register,
    run_experiment,
    unregister,
)
from modelweave.experiments.store import HOST

from tiny import save_tiny_model

ray = pytest.importorskip("ray", reason="the ray extra is installed by `make test`")
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2")))


def quickstart(model_dir, **extra):
    """The quickstart's method mix on a tiny model: 8 units."""
    return {"name": "q", "model": model_dir, "tasks": ["ioi", "seq_digits"], "n": 6,
            "methods": [{"eval": {"n": 8}}, {"patch": {"grid": "heads"}},
                        {"discover": {"method": "eap-ig", "target": 0.5}}, "lens"], **extra}


def tensors(folder):
    return {f"{f.name}:{k}": v for f in sorted(folder.glob("*.safetensors"))
            for k, v in load_file(str(f)).items()}


def same_summary(a, b, where):
    """Equal summaries: floats to 1e-4 (workers run 1 thread, the driver 2), timings aside."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if key != "seconds":
                same_summary(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_summary(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        # interval ends are percentiles of resampled ratios: the last ulp of an input moves
        # them more than the point values
        tol = 1e-2 if "_ci" in where or "null" in where else 1e-4
        assert b == pytest.approx(a, rel=tol, abs=1e-5), where
    else:
        assert a == b, where


def test_ray_results_equal_the_sequential_run(session, model_dir, tmp_path):
    spec = parse_experiment(quickstart(model_dir))
    seq = run_experiment(spec, tmp_path / "seq", report=False)
    par = run_experiment(spec, tmp_path / "ray", executor="ray", report=False,
                         options={"workers": 2})
    assert sorted(par.computed) == sorted(seq.computed) and len(seq.computed) == 8
    assert not par.failed
    a, b = RunStore(tmp_path / "seq"), RunStore(tmp_path / "ray")
    ra, rb = a.records(), b.records()
    pids = {r["worker"]["pid"] for r in rb.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    for unit_id, record in ra.items():
        same_summary(record["summary"], rb[unit_id]["summary"], unit_id)
        ta, tb = tensors(a.folder(unit_id)), tensors(b.folder(unit_id))
        assert ta.keys() == tb.keys()
        for key in ta:
            torch.testing.assert_close(tb[key], ta[key], rtol=1e-4, atol=1e-5)
        assert rb[unit_id]["run"]["attn_implementation"]
    assert set(b.manifest()["units"]) == set(rb)


def test_a_failing_unit_is_recorded_and_the_others_finish(session, model_dir, tmp_path):
    class Fragile(MethodKind):  # a plug-in kind, defined here: sent to the workers by value
        name = "fragile"

        def run(self, model, unit, experiment, folder, progress=None):
            if unit.task == "ioi":
                raise ValueError("planted failure on ioi")
            (folder / "n.json").write_text(json.dumps({"vocab": model.cfg.d_vocab}))
            return {"vocab": model.cfg.d_vocab}

        def load(self, folder, record):
            return json.loads((folder / "n.json").read_text())

    register(Fragile)
    try:
        spec = parse_experiment({**quickstart(model_dir), "methods": ["fragile", "lens"]})
        failed = [u.id for u in spec.units() if u.method == "fragile" and u.task == "ioi"]
        outcome = run_experiment(spec, tmp_path, executor="ray", report=True)
    finally:
        unregister("fragile")
    store = RunStore(tmp_path)
    assert outcome.failed == failed and len(outcome.computed) == 3
    record = store.failures()[failed[0]]
    assert record["error"] == "ValueError: planted failure on ioi"
    assert "raise ValueError" in record["traceback"] and record["worker"]["host"] == HOST
    assert not store.folder(failed[0]).exists() and not list(tmp_path.glob("staging/*"))
    html = outcome.report.read_text()
    assert "Failed units (1)" in html and "planted failure on ioi" in html


def test_workers_are_recycled_after_n_units(session, model_dir, tmp_path):
    spec = parse_experiment({**quickstart(model_dir), "tasks": ["ioi"],
                             "methods": ["lens", {"eval": {"n": 4}}]})

    def pids(out, **options):
        run_experiment(spec, tmp_path / out, executor="ray", report=False, options=options)
        return [r["worker"]["pid"] for r in RunStore(tmp_path / out).records().values()]

    assert len(set(pids("a", recycle_after=1))) == 2  # a fresh worker for each unit
    assert len(set(pids("b", max_worker_memory=1))) == 2  # every worker passes a 1-byte mark
    assert len(set(pids("c"))) == 1


def test_a_killed_sweep_resumes_with_every_unit_once(session, model_dir, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(quickstart(model_dir)))
    out = tmp_path / "run"
    args = [sys.executable, "-c", "from modelweave.cli import main; main()", "run", str(path),
            "--out", str(out), "--executor", "ray", "--address", session, "--no-live-report"]
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(out.glob("units/*/done.json"))) < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("units/*/done.json")}
    assert 2 <= len(before) < 8
    done = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["skipped"]) >= set(before) and not summary["failed"]
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("units/*/done.json")}
    assert len(after) == 8 and all(after[u] == t for u, t in before.items())
    assert len(summary["computed"]) + len(summary["skipped"]) == 8
    for folder in out.glob("units/*"):  # whole units only, no strays
        record = json.loads((folder / "done.json").read_text())
        assert record["summary"] and folder.name in summary["computed"] + summary["skipped"]
    time.sleep(1)  # the killed driver's workers are gone; their staging folders go next start
    RunStore(out).start(parse_experiment(quickstart(model_dir)))
    assert not list(out.glob("staging/*")) and not list(out.glob("failed/*"))


def test_an_unreachable_address_fails_before_anything_is_written(model_dir, tmp_path):
    spec = parse_experiment(quickstart(model_dir))
    with pytest.raises(ModelWeaveError, match="cannot reach a Ray cluster at 127.0.0.1:9"):
        run_experiment(spec, tmp_path / "run", executor="ray",
                       options={"address": "127.0.0.1:9"})
    assert not (tmp_path / "run").exists()
    with pytest.raises(ModelWeaveError, match="expected HOST:PORT"):
        run_experiment(spec, tmp_path / "run", executor="ray", options={"address": "nowhere"})
    with pytest.raises(ModelWeaveError, match="unknown executor 'dask'"):
        run_experiment(spec, tmp_path / "run", executor="dask")
    assert not (tmp_path / "run").exists()


def test_a_worker_that_dies_has_its_unit_retried_then_recorded(session, model_dir, tmp_path):
    """A worker killed under a unit (out of memory, a lost node): the unit is retried once on
    a fresh worker; a unit that kills every worker is recorded as failed, the others finish."""
    class Mortal(MethodKind):
        name = "mortal"

        def run(self, model, unit, experiment, folder, progress=None):
            marker = tmp_path / f"died-{unit.task}"  # each unit's first attempt dies
            if unit.task == "ioi" or not marker.exists():
                marker.touch()
                os._exit(1)  # the process dies as an out-of-memory kill would end it
            (folder / "pid.json").write_text(json.dumps(os.getpid()))
            return {"pid": os.getpid()}

        def load(self, folder, record):
            return json.loads((folder / "pid.json").read_text())

    register(Mortal)
    try:
        spec = parse_experiment({**quickstart(model_dir), "methods": ["mortal"]})
        ioi, seq = (u.id for u in spec.units())
        outcome = run_experiment(spec, tmp_path / "run", executor="ray", report=False)
    finally:
        unregister("mortal")
    assert outcome.failed == [ioi] and outcome.computed == [seq]
    failure = RunStore(tmp_path / "run").failures()[ioi]
    assert failure["error"].startswith("RuntimeError: the Ray worker died while computing")
    assert not list((tmp_path / "run").glob("staging/*"))
