"""The results store of one run directory: nothing half-written, nothing computed twice.

Layout::

    RUN/manifest.json              config, versions, seeds, git revision, unit timings
    RUN/units/<unit id>/...        a finished unit's files (JSON, safetensors, figures)
    RUN/units/<unit id>/done.json  its record (model, task, method, summary, seconds, worker)
    RUN/staging/<unit id>.<host>.<pid>.<nonce>/   a unit being computed
    RUN/failed/<unit id>.json      the last failure of a unit not finished since (traceback)

A unit is computed into a staging folder of its own; its ``done.json`` is written there last
and the folder is then renamed to ``units/<unit id>`` in one step (:meth:`RunStore.commit`).
So ``units/`` only ever holds finished units, a run killed at any moment loses at most the
units in flight (their staging folders are cleared on the next start), and two workers that
compute the same unit (a retry racing a slow first attempt) never mix their files: the first
rename wins, the second worker's copy is discarded. Every single file (the manifest, records)
is written to a temporary name and renamed into place. Only the driver writes the manifest.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import traceback
from pathlib import Path

from ..errors import ModelWeaveError
from ..io import atomic_write, pid_alive, read_json, remove_stale_temporaries
from .config import Experiment, Unit
from .methods import METHODS, get_method, scalar_summary

DONE = "done.json"
HOST = socket.gethostname()


class UnknownUnitError(ModelWeaveError, KeyError):
    """A unit id with no finished unit in the run directory (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one plain line.
        return str(self.args[0]) if self.args else ""


def remove_stale_staging(staging: Path) -> list[Path]:
    """Delete staging folders (``<unit>.<host>.<pid>.<nonce>``) of this host whose worker
    process is gone: units a killed run left half-computed."""
    removed = []
    for folder in staging.glob("*.*.*.*") if staging.is_dir() else ():
        _, host, pid, _ = folder.name.rsplit(".", 3)
        if host != HOST or not pid.isdigit() or (int(pid) != os.getpid() and pid_alive(int(pid))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _about(unit: Unit, seconds: float) -> dict:
    """The fields every unit record starts with (finished or failed)."""
    return {"model": unit.model, "task": unit.task, "method": unit.method,
            "params": unit.params, "seconds": round(seconds, 3)}


def unit_settings(unit: Unit, experiment: Experiment) -> dict:
    """What a unit's result depends on beyond its id: its parameters and seeds, and the run's
    prompt count, seed and dtype (JSON-normalised, so it compares equal to a saved copy)."""
    return json.loads(json.dumps({"params": unit.params, "seeds": unit.seeds, "n": experiment.n,
                                  "seed": experiment.seed, "dtype": experiment.dtype},
                                 sort_keys=True, default=str))


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
        return read_json(self.manifest_path)

    def start(self, experiment: Experiment) -> dict:
        """Create or update the manifest for a (re)started run; returns it."""
        if self.root.exists():
            remove_stale_temporaries(self.root)
            remove_stale_staging(self.root / "staging")
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
        """The folder of the unit named ``unit_id`` (it exists once the unit is finished)."""
        return self.root / "units" / unit_id

    def is_done(self, unit: Unit) -> bool:
        return (self.unit_dir(unit) / DONE).exists()

    def is_current(self, unit: Unit, settings: dict) -> bool:
        """Finished, with the same :func:`unit_settings` (a record saved before settings were
        recorded counts as current)."""
        done = self.unit_dir(unit) / DONE
        if not done.exists():
            return False
        saved = read_json(done).get("settings")
        return saved is None or saved == settings

    def stage(self, unit: Unit) -> Path:
        """A new, empty staging folder for computing ``unit`` (this worker's own)."""
        folder = self.root / "staging" / f"{unit.id}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}"
        folder.mkdir(parents=True)
        return folder

    def commit(self, unit: Unit, staged: Path, summary: dict, seconds: float,
               extra: dict | None = None, *, replace: bool = False) -> dict | None:
        """Publish a computed unit: write its ``done.json`` into ``staged`` last, then rename
        the folder to ``units/<unit id>`` in one step.

        Args:
            extra: more fields for the record (the worker, the model's run facts).
            replace: a forced recompute: an earlier finished copy makes way.

        Returns:
            The record written, or None when another worker had already finished the unit
            (its copy stays, ``staged`` is deleted): a unit is never written twice.
        """
        record = {**_about(unit, seconds), "summary": summary,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        atomic_write(staged / DONE, json.dumps(record, indent=1))
        final = self.unit_dir(unit)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and (replace or not (final / DONE).exists()
                               or not self._same_settings(final, record)):
            # the old copy of a forced unit or of other settings, or a pre-staging leftover
            self._discard(final)
        try:
            os.rename(staged, final)  # fails if a finished copy is there: the first one wins
        except OSError:
            shutil.rmtree(staged, ignore_errors=True)
            return None
        (self.root / "failed" / f"{unit.id}.json").unlink(missing_ok=True)
        return record

    @staticmethod
    def _same_settings(final: Path, record: dict) -> bool:
        """Whether the finished copy in ``final`` was computed with ``record``'s settings."""
        if "settings" not in record:
            return True
        saved = read_json(final / DONE).get("settings")
        return saved is None or saved == record["settings"]

    def _discard(self, folder: Path) -> None:
        """Move ``folder`` out of the way in one rename (only one worker can), then delete it."""
        trash = self.root / "staging" / f"{folder.name}.{HOST}.{os.getpid()}.old"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(folder, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def fail(self, unit: Unit, error: BaseException, seconds: float,
             extra: dict | None = None) -> dict:
        """Record that ``unit`` raised ``error`` (type, message, traceback) in
        ``failed/<unit id>.json``; returns the record. A later success removes it."""
        record = {**_about(unit, seconds),
                  "error": f"{type(error).__name__}: {error}",
                  "traceback": "".join(traceback.format_exception(error)),
                  "failed": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        atomic_write(self.root / "failed" / f"{unit.id}.json", json.dumps(record, indent=1))
        return record

    def failures(self) -> dict[str, dict]:
        """unit id -> its failure record, for every unit whose last attempt failed."""
        return {p.stem: read_json(p)
                for p in sorted((self.root / "failed").glob("*.json"))}

    def record_finished(self, unit_id: str, record: dict) -> None:
        """Note a finished unit's time in the manifest (the driver's job, not a worker's)."""
        manifest = self.manifest()
        manifest.setdefault("units", {})[unit_id] = {"seconds": record["seconds"],
                                                      "finished": record["finished"]}
        atomic_write(self.manifest_path, json.dumps(manifest, indent=1))

    def records(self) -> dict[str, dict]:
        """unit id -> its ``done.json`` record, for every finished unit."""
        out = {}
        for done in sorted((self.root / "units").glob(f"*/{DONE}")):
            out[done.parent.name] = read_json(done)
        return out

    def load(self, unit_id: str):
        """A finished unit's result as a Python object, without running a model, through its
        method kind's ``load``: ``eval`` -> dict (with per-example values), ``patch`` ->
        ``PatchingResult``, ``discover`` -> ``Circuit``, ``lens`` -> ``LensResult``, ``heads``
        -> DataFrame."""
        record = self.records().get(unit_id)
        if record is None:
            known = sorted(self.records())
            more = f", ... ({len(known)} in all)" if len(known) > 5 else ""
            shown = ", ".join(known[:5]) + more
            raise UnknownUnitError(f"no finished unit {unit_id!r} in {self.root}; known units: "
                                   f"{shown or 'none'}")
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
