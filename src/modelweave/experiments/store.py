"""The results store of one run directory: nothing half-written, nothing computed twice.

Layout::

    RUN/manifest.json            config, versions, seeds, git revision, unit timings
    RUN/units/<unit id>/...      the unit's files (JSON, safetensors, figures)
    RUN/units/<unit id>/done.json  written last: the unit is finished

Every file is written to a temporary name and renamed into place, so a run killed at any
moment leaves whole files only; a unit without ``done.json`` is recomputed from scratch (its
folder is emptied first), a unit with it is skipped unless forced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .config import Experiment, Unit
from .methods import METHODS, get_method, scalar_summary

DONE = "done.json"


def atomic_write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete ``.NAME.PID.tmp`` files in ``folder`` whose writer process is gone.

    A run killed while writing leaves its temporary behind (the rename never happened);
    the next run clears it so the directory holds whole files only.
    """
    removed = []
    for tmp in folder.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict:
    import torch
    import transformers

    from .. import __version__

    return {"modelweave": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__}


class RunStore:
    """One run directory. ``unit_dir(unit)`` is where a unit writes; ``finish`` marks it done."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"

    # manifest ------------------------------------------------------------------------
    def manifest(self) -> dict:
        """The manifest (empty before the first run)."""
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text())

    def start(self, experiment: Experiment) -> dict:
        """Create or update the manifest for a (re)started run; returns it."""
        if self.root.exists():
            remove_stale_temporaries(self.root)
        manifest = self.manifest()
        manifest.update({"config": experiment.to_dict(), "versions": _versions(),
                         "seed": experiment.seed, "git_revision": _git_revision()})
        manifest.setdefault("units", {})
        manifest.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write(self.manifest_path, json.dumps(manifest, indent=1))
        return manifest

    # units ---------------------------------------------------------------------------
    def unit_dir(self, unit: Unit) -> Path:
        return self.folder(unit.id)

    def folder(self, unit_id: str) -> Path:
        """The folder of the unit named ``unit_id``."""
        return self.root / "units" / unit_id

    def is_done(self, unit: Unit) -> bool:
        return (self.unit_dir(unit) / DONE).exists()

    def begin(self, unit: Unit) -> Path:
        """An empty folder for a unit about to be computed (leftovers of a killed run go)."""
        folder = self.unit_dir(unit)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def finish(self, unit: Unit, summary: dict, seconds: float) -> None:
        """Mark a unit finished (its ``done.json`` last) and record it in the manifest."""
        record = {"model": unit.model, "task": unit.task, "method": unit.method,
                  "params": unit.params, "seconds": round(seconds, 3), "summary": summary,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write(self.unit_dir(unit) / DONE, json.dumps(record, indent=1))
        manifest = self.manifest()
        manifest.setdefault("units", {})[unit.id] = {"seconds": record["seconds"],
                                                      "finished": record["finished"]}
        atomic_write(self.manifest_path, json.dumps(manifest, indent=1))

    def records(self) -> dict[str, dict]:
        """unit id -> its ``done.json`` record, for every finished unit."""
        out = {}
        for done in sorted((self.root / "units").glob(f"*/{DONE}")):
            out[done.parent.name] = json.loads(done.read_text())
        return out

    def load(self, unit_id: str):
        """A finished unit's result as a Python object, without running a model, through its
        method kind's ``load``: ``eval`` -> dict (with per-example values), ``patch`` ->
        ``PatchingResult``, ``discover`` -> ``Circuit``, ``lens`` -> ``LensResult``, ``heads``
        -> DataFrame."""
        record = self.records().get(unit_id)
        if record is None:
            raise KeyError(f"no finished unit {unit_id!r} in {self.root}")
        return get_method(record["method"]).load(self.folder(unit_id), record)

    def to_dataframe(self):
        """One row per finished unit: model, task, method, seconds and its method kind's
        ``summary_row`` (by default the summary's scalar values; the same for a unit whose
        method is not registered in this process)."""
        import pandas as pd

        rows = []
        for unit_id, record in self.records().items():
            kind = METHODS.get(record["method"])
            flat = kind.summary_row(record) if kind else scalar_summary(record["summary"])
            rows.append({"unit": unit_id, "model": record["model"], "task": record["task"],
                         "method": record["method"], "seconds": record["seconds"], **flat})
        return pd.DataFrame(rows)
