"""The run store's file hygiene: stale temporaries and staging folders of dead writers are
cleared, live or other hosts' ones kept; two workers racing on one unit never mix files."""

import json
import os
import subprocess
import sys

from modelweave.experiments import RunStore
from modelweave.experiments.store import remove_stale_temporaries


def test_stale_temporaries_of_dead_writers_are_cleared(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".manifest.json.{dead.pid}.tmp"
    live = tmp_path / f".manifest.json.{os.getppid()}.tmp"  # a writer still running
    for p in (stale, live):
        p.write_text("{")
    removed = remove_stale_temporaries(tmp_path)
    assert removed == [stale] and not stale.exists() and live.exists()


def test_two_workers_racing_on_one_unit_never_mix_their_files(tmp_path):
    """Both compute the unit into their own staging folders; the first commit wins whole, the
    second copy is discarded; a forced recompute replaces the finished copy whole."""
    from modelweave.experiments import Unit

    store = RunStore(tmp_path)
    unit = Unit("m", "ioi", "eval", {})
    first, second = store.stage(unit), store.stage(unit)
    (first / "a.json").write_text('{"by": "first"}')
    (second / "a.json").write_text('{"by": "second"}')
    (second / "b.json").write_text("{}")
    assert store.commit(unit, first, {"by": "first"}, 1.0) is not None
    assert store.commit(unit, second, {"by": "second"}, 1.0) is None
    folder = store.folder(unit.id)
    assert sorted(p.name for p in folder.iterdir()) == ["a.json", "done.json"]
    assert json.loads((folder / "a.json").read_text()) == {"by": "first"}
    assert store.records()[unit.id]["summary"] == {"by": "first"}
    assert not list((tmp_path / "staging").iterdir())
    store.fail(unit, ValueError("boom"), 0.5)
    assert store.failures()[unit.id]["error"] == "ValueError: boom"
    again = store.stage(unit)
    (again / "c.json").write_text("{}")
    assert store.commit(unit, again, {"by": "forced"}, 1.0, replace=True) is not None
    assert sorted(p.name for p in folder.iterdir()) == ["c.json", "done.json"]
    assert not store.failures() and not list((tmp_path / "staging").iterdir())


def test_staging_of_live_or_other_hosts_workers_is_kept(tmp_path):
    """Only this host's staging folders whose worker is gone are removed: a folder of another
    host (a worker of the same run on another node) or of a live process stays."""
    from modelweave.experiments.store import HOST, remove_stale_staging

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"u__ioi__eval.{HOST}.{dead.pid}.0a1b"
    elsewhere = tmp_path / f"u__ioi__eval.not-{HOST}.{dead.pid}.0a1b"
    live = tmp_path / f"u__ioi__eval.{HOST}.{os.getppid()}.0a1b"
    for folder in (stale, elsewhere, live):
        folder.mkdir()
    assert remove_stale_staging(tmp_path) == [stale]
    assert not stale.exists() and elsewhere.exists() and live.exists()
