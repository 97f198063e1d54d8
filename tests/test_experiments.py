"""Experiments as files: config validation, the resumable store, a run killed with SIGKILL."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelweave.errors import ModelWeaveError
from modelweave.experiments import (
    METHOD_PARAMS,
    ConfigError,
    MethodKind,
    RunStore,
    load_experiment,
    parse_experiment,
    register,
    run_experiment,
    unregister,
)
from modelweave.experiments.methods import unit_batch
from modelweave.tasks import list_tasks

from tiny import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2")))


def config(model_dir, **extra):
    return {"name": "t", "model": model_dir, "tasks": ["ioi", "seq_digits"], "n": 6,
            "methods": [{"eval": {"n": 8}}, {"patch": {"grid": "heads"}},
                        {"discover": {"method": "eap-ig", "target": 0.5}}, "lens"], **extra}


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "colour: unknown field; allowed: name, model, models"),
    ({"methods": [{"magic": {}}]}, "methods[0]: unknown method 'magic'; allowed: eval, patch"),
    ({"methods": [{"patch": {"grid": "edges"}}]},
     "methods[0].patch.grid: 'edges' is not one of heads, heads-by-pos"),
    ({"methods": [{"discover": {"speed": 1}}]}, "methods[0].discover.speed: unknown parameter"),
    ({"tasks": ["no_such_task"]}, "no_such_task"),
    ({"n": 0}, "n: expected a positive integer"),
    ({"methods": [{"patch": {}}, {"patch": {}}]}, "two entries give the same unit"),
    ({"models": ["a"]}, "exactly one of 'model' or 'models'"),
    ({"methods": [{"eval": {"tasks": 3}}]}, "methods[0].eval.tasks: expected a task name"),
])
def test_config_errors_name_the_field(change, message):
    with pytest.raises(ModelWeaveError) as err:
        parse_experiment({**config("m"), **change})
    assert message in str(err.value)
    assert isinstance(err.value, ConfigError) or "task" in str(err.value)


def test_units_expand_models_tasks_methods(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({**config("m"), "methods": [
        "eval", {"discover": {"method": "eap"}}, {"discover": {"method": "prune"}}, "heads",
        {"lens": {"tasks": "induction"}}]}))
    units = load_experiment(path).units()
    assert [u.id for u in units] == [
        "m__ioi__eval", "m__seq_digits__eval", "m__ioi__discover-eap",
        "m__seq_digits__discover-eap", "m__ioi__discover-prune", "m__seq_digits__discover-prune",
        "m__all__heads", "m__induction__lens"]
    assert units[-1].params == {}
    every = parse_experiment({**config("m"), "methods": [{"eval": {"tasks": "all"}}]}).units()
    assert len(every) == len(list_tasks()) and every[0].method == "eval"


def test_run_skips_finished_units_and_force_recomputes(model_dir, tmp_path):
    spec = parse_experiment(config(model_dir))
    first = run_experiment(spec, tmp_path)
    assert len(first.computed) == 8 and not first.skipped
    store = RunStore(tmp_path)
    manifest = store.manifest()
    assert manifest["config"]["n"] == 6 and manifest["versions"]["modelweave"]
    assert set(manifest["units"]) == set(first.computed)
    frame = store.to_dataframe()
    assert len(frame) == 8 and {"model", "task", "method", "seconds"} <= set(frame.columns)
    discover = store.records()[f"{spec.units()[4].id}"]["summary"]
    assert discover["n_edges"] > 0 and discover["faithfulness"] >= 0.5
    for unit in spec.units():  # every unit's files are whole
        for f in store.unit_dir(unit).glob("*.json"):
            json.loads(f.read_text())
    from modelweave.circuits import Circuit
    from modelweave.methods import PatchingResult

    loaded = {u.method: store.load(u.id) for u in spec.units()}
    assert isinstance(loaded["discover"], Circuit) and loaded["discover"].n_edges > 0
    assert isinstance(loaded["patch"], PatchingResult) and loaded["eval"]["per_example"]
    with pytest.raises(KeyError):
        store.load("no_such_unit")
    again = run_experiment(spec, tmp_path)
    assert again.skipped == first.computed and not again.computed
    forced = run_experiment(spec, tmp_path, force=True)
    assert forced.computed == first.computed


#: Run the CLI, killing the process with SIGKILL at the worst moments on purpose: after the
#: third unit's files are written but before its ``done.json`` marker ("marker"), or halfway
#: through writing the manifest after the second unit, a temporary file left behind ("manifest").
DYING = """
import os, signal, sys
from modelweave.experiments import store
real, moment, done = store.atomic_write, sys.argv.pop(1), [0]
def dying(path, text):
    if path.name == "done.json":
        done[0] += 1
        if moment == "marker" and done[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    if path.name == "manifest.json" and moment == "manifest" and done[0] == 2:
        path.with_name(f".{path.name}.{os.getpid()}.tmp").write_text(text[: len(text) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, text)
store.atomic_write = dying
from modelweave.cli import main
main()
"""


@pytest.mark.parametrize("moment", ["marker", "manifest"])
def test_a_killed_run_resumes_without_recomputing(model_dir, tmp_path, moment):
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump({"name": "slow", "model": model_dir, "n": 6,
                                    "tasks": ["ioi", "seq_digits"],
                                    "methods": [{"patch": {"grid": "heads"}}, "lens"]}))
    out = tmp_path / "run"
    args = ["run", str(path), "--out", str(out)]
    killed = subprocess.run([sys.executable, "-c", DYING, moment, *args], capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("units/*/done.json")}
    assert len(finished) == 2
    assert sorted(u.name for u in out.glob("units/*")) == sorted(finished)  # finished only
    if moment == "marker":  # the third unit's files are staged, its marker is not
        half_done = list(out.glob("staging/*"))
        assert len(half_done) == 1 and any(half_done[0].iterdir())
        assert not (half_done[0] / "done.json").exists()
    else:
        assert list(out.glob(".manifest.json.*.tmp"))
    done = subprocess.run([sys.executable, "-c", "from modelweave.cli import main; main()",
                           *args, "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(summary["skipped"]) == sorted(finished) and len(summary["computed"]) == 2
    assert Path(summary["report"]).exists()
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("units/*/done.json")}
    assert len(after) == 4
    assert all(after[u] == t for u, t in finished.items())  # nothing finished was redone
    for f in out.rglob("*.json"):
        json.loads(f.read_text())
    assert not list(out.rglob(".*.tmp")) and not list(out.glob("staging/*"))


def test_a_new_method_is_one_registered_kind(model_dir, tmp_path):
    """Everything a method needs (schema, run, load, summary row, report section) is one
    registered class: config, units, runner, store and report pick it up unchanged."""

    @register
    class Count(MethodKind):
        name = "toy_count"
        params = {"scale": None, "mode": ("prompts", "tokens")}
        id_params = ("mode",)
        title, order = "Toy counts", 5  # before the built-in sections

        def run(self, model, unit, experiment, folder, progress=None):
            batch = unit_batch(model, unit, experiment)
            count = (len(batch) if unit.params["mode"] == "prompts"
                     else int(batch.lengths.sum())) * unit.params.get("scale", 1)
            (folder / "count.json").write_text(json.dumps({"count": count, "task": unit.task}))
            return {"count": count, "mode": unit.params["mode"], "listed": [count]}

        def load(self, folder, record):
            return json.loads((folder / "count.json").read_text())

        def report_section(self, units, ctx):
            return "".join(f'<p class="toy">{r["task"]}: {ctx.load(uid)["count"]}</p>'
                           for uid, r in units)

    try:
        assert METHOD_PARAMS["toy_count"]["mode"] == ("prompts", "tokens")
        with pytest.raises(ConfigError, match=r"methods\[0\]\.toy_count\.mode: 'lines' is not one"):
            parse_experiment({**config(model_dir), "methods": [{"toy_count": {"mode": "lines"}}]})
        spec = parse_experiment({**config(model_dir), "methods": [
            {"toy_count": {"mode": "prompts", "scale": 2}}, {"toy_count": {"mode": "tokens"}}]})
        assert [u.id.split("__", 1)[1] for u in spec.units()] == [
            "ioi__toy_count-prompts", "seq_digits__toy_count-prompts", "ioi__toy_count-tokens",
            "seq_digits__toy_count-tokens"]
        outcome = run_experiment(spec, tmp_path)
        assert len(outcome.computed) == 4
        store = RunStore(tmp_path)
        first = spec.units()[0].id
        assert store.load(first) == {"count": 12, "task": "ioi"}
        frame = store.to_dataframe()
        counts = dict(zip(frame["unit"], frame["count"], strict=True))
        assert counts[first] == 12 and "listed" not in frame.columns
        html = outcome.report.read_text()
        assert '<a href="#toy_count">Toy counts</a>' in html
        assert '<section id="toy_count"><h2>Toy counts</h2><p class="toy">ioi: 12</p>' in html
        assert html.count('<p class="toy">') == 4 and '<p class="toy">seq_digits: 12</p>' in html
        assert html.index('id="toy_count"') < html.index('id="tasks"')
        assert "No eval units in this run." in html  # built-in sections still render
    finally:
        unregister("toy_count")
    assert "toy_count" not in METHOD_PARAMS
    with pytest.raises(ConfigError, match="unknown method 'toy_count'"):
        parse_experiment({**config(model_dir), "methods": ["toy_count"]})


def test_a_unit_that_cannot_fit_stops_the_run_before_anything_is_written(model_dir, tmp_path):
    """Units are planned from the model's config: too little memory is one error naming the
    unit and what would fit; a batch size that would not fit is lowered to one that does."""
    from modelweave.experiments.planning import UnitTooLargeError
    from modelweave.experiments.planning import plan_method as plan_unit
    from modelweave.planner import HEADROOM

    spec = parse_experiment({**config(model_dir), "methods": [
        "eval", {"discover": {"method": "eap-ig", "target": 0.5}}]})
    with pytest.raises(UnitTooLargeError, match=r"cannot fit; nothing was run") as err:
        run_experiment(spec, tmp_path / "run", memory=10**6)
    assert "__discover-eap-ig: " in str(err.value) and "needs" in str(err.value)
    assert not (tmp_path / "run").exists()

    def peak(batch):
        return plan_unit(model_dir, "discover", {"method": "eap-ig", "batch_size": batch},
                         n=6, memory_bytes=10**12, device="cpu").peak_bytes

    assert peak(1) < peak(2) < peak(6)
    spec = parse_experiment({**config(model_dir), "methods": [
        {"discover": {"method": "eap-ig", "target": 0.5}}]})
    run_experiment(spec, tmp_path / "small", memory=int(peak(2) / (1 - HEADROOM)) + 1,
                   report=False)
    records = RunStore(tmp_path / "small").records()
    assert {r["params"].get("batch_size") for r in records.values()
            if r["method"] == "discover"} == {2}
    assert all(r["run"]["attn_implementation"] for r in records.values())
    run_experiment(spec, tmp_path / "big", report=False)  # enough memory: the default batch
    assert all("batch_size" not in r["params"]
               for r in RunStore(tmp_path / "big").records().values())


def test_a_device_map_is_checked_before_anything_is_written(model_dir, tmp_path):
    from modelweave.errors import ModelLoadError
    from modelweave.models.device_map import meta_keys, two_part_map
    from modelweave.planner import load_config

    keys, _ = meta_keys(load_config(model_dir)[0])
    full = two_part_map(keys, "cpu", "cpu")
    layer = next(k for k in full if ".h.1" in k or ".layers.1" in k)
    broken = {k: v for k, v in full.items() if k != layer}
    spec = parse_experiment({**config(model_dir), "methods": ["lens"], "device_map": broken})
    with pytest.raises(ModelLoadError, match=f"places no device for {layer}"):
        run_experiment(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="either device or device_map"):
        parse_experiment({**config(model_dir), "device": "cpu", "device_map": full})
    with pytest.raises(ConfigError, match="device_map: expected one of auto"):
        parse_experiment({**config(model_dir), "device_map": "everywhere"})
    spec = parse_experiment({**config(model_dir), "methods": ["lens"], "device_map": full})
    outcome = run_experiment(spec, tmp_path / "split", report=False)
    assert len(outcome.computed) == 2 and not outcome.failed
    run = next(iter(RunStore(tmp_path / "split").records().values()))["run"]
    assert run["device"] == "cpu" and run["attn_implementation"]  # one device: no map kept


def test_resume_skips_only_finished_units_force_redoes_them_and_the_manifest_notes_each(
        model_dir, tmp_path):
    """A unit folder without its ``done.json`` (a leftover of a run before staging) is not
    finished: it is computed again, the finished one is skipped; ``force`` redoes both and
    the forced copies replace the old ones; the manifest notes every unit computed."""
    ran: list[str] = []

    @register
    class Tally(MethodKind):
        name = "toy_tally"

        def run(self, model, unit, experiment, folder, progress=None):
            ran.append(unit.task)
            (folder / "tally.json").write_text(json.dumps(len(ran)))
            return {"calls": len(ran)}

        def load(self, folder, record):
            return json.loads((folder / "tally.json").read_text())

    try:
        spec = parse_experiment({**config(model_dir), "methods": ["toy_tally"]})
        ids = [u.id for u in spec.units()]
        first = run_experiment(spec, tmp_path, report=False, plan=False)
        store = RunStore(tmp_path)
        assert first.computed == ids and ran == ["ioi", "seq_digits"]
        assert set(store.manifest()["units"]) == set(ids)
        (store.folder(ids[1]) / "done.json").unlink()  # its files are there, its marker not
        again = run_experiment(spec, tmp_path, report=False, plan=False)
        assert again.skipped == ids[:1] and again.computed == ids[1:]
        assert again.stale == []  # a leftover without its marker is unfinished, not stale
        assert ran == ["ioi", "seq_digits", "seq_digits"]
        forced = run_experiment(spec, tmp_path, force=True, report=False, plan=False)
        assert forced.computed == ids and len(ran) == 5
        assert store.load(ids[0]) == 4 and store.records()[ids[0]]["summary"] == {"calls": 4}
        assert store.manifest()["units"][ids[0]]["finished"] == store.records()[ids[0]][
            "finished"]
    finally:
        unregister("toy_tally")


def test_a_run_plan_declares_its_largest_unit_and_keeps_the_headroom(model_dir):
    from modelweave.experiments.planning import UnitTooLargeError, plan_method, plan_run
    from modelweave.planner import HEADROOM

    spec = parse_experiment({**config(model_dir), "methods": [
        "eval", {"discover": {"method": "eap-ig", "target": 0.5}}]})
    units = spec.units()

    def peak(unit, **params):
        return plan_method(unit.model, unit.method, {**unit.params, **params}, n=spec.n,
                           memory_bytes=10**12, device="cpu").peak_bytes

    peaks = [peak(u) for u in units]
    assert peaks[-1] == max(peaks) > peaks[0]  # discover (EAP-IG) needs more than eval
    for order in (units, units[::-1]):  # a Ray worker asks for the largest, wherever it is
        plan = plan_run(spec, order, 10**12, device="cpu")
        assert plan.memory == {model_dir: int(max(peaks))}
        assert [u.params for u in plan.units] == [u.params for u in order]  # nothing lowered
    discover = units[-1]
    # all of this memory would hold the default batch; its usable part holds 2 prompts
    tight = int(peak(discover, batch_size=2) / (1 - HEADROOM)) + 1
    assert peak(discover) < tight
    lowered = plan_run(spec, [discover], tight, device="cpu")
    assert lowered.units[0].params["batch_size"] == 2
    with pytest.raises(UnitTooLargeError, match="cannot fit"):
        plan_run(spec, [discover], int(peak(discover, batch_size=1)), device="cpu")


def test_a_finished_unit_is_recomputed_when_its_settings_change(model_dir, tmp_path):
    """The unit id leaves out ``n``, ``seed`` and ``dtype``: a finished unit computed with
    other settings is stale, computed again and replaced, never reused."""
    seen: list[tuple[int, int]] = []

    @register
    class Reads(MethodKind):
        name = "toy_reads"

        def run(self, model, unit, experiment, folder, progress=None):
            seen.append((experiment.n, experiment.seed))
            (folder / "n.json").write_text(json.dumps(experiment.n))
            return {"n": experiment.n}

        def load(self, folder, record):
            return json.loads((folder / "n.json").read_text())

    try:
        base = {**config(model_dir), "tasks": ["ioi"], "methods": ["toy_reads"]}
        first = run_experiment(parse_experiment(base), tmp_path, report=False, plan=False)
        (unit_id,) = first.computed
        same = run_experiment(parse_experiment(base), tmp_path, report=False, plan=False)
        assert same.skipped == [unit_id] and same.stale == [] and seen == [(6, 0)]
        more = run_experiment(parse_experiment({**base, "n": 7}), tmp_path, report=False,
                              plan=False)
        assert more.computed == more.stale == [unit_id] and seen[-1] == (7, 0)
        store = RunStore(tmp_path)
        assert store.load(unit_id) == 7 and store.records()[unit_id]["settings"]["n"] == 7
        reseeded = run_experiment(parse_experiment({**base, "n": 7, "seed": 1}), tmp_path,
                                  report=False, plan=False)
        assert reseeded.stale == [unit_id] and seen[-1] == (7, 1)
        assert run_experiment(parse_experiment({**base, "n": 7, "seed": 1}), tmp_path,
                              report=False, plan=False).skipped == [unit_id]
        assert len(seen) == 3
    finally:
        unregister("toy_reads")
