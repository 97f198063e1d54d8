"""K seeds of one unit (``seeds: K`` in an experiment file, ``--seeds K`` on the command line),
for every method kind at once.

:func:`run_seeds` calls the kind's ``run`` once per seed ``s = seed + i`` (``i = 0..K-1``) with
:class:`Settings` whose ``seed`` is ``s``, so prompts, counterfactuals and sampled nulls differ
between seeds; the model is loaded once by the caller (the worker, or the single-method command)
and shared. With K = 1 it is exactly ``kind.run``: same files, same summary, same unit id.

Layout of a unit with K > 1::

    <unit>/...                    seed ``seed``'s files, as a one-seed unit has them (the
                                  kind's ``load`` and ``draw`` read them unchanged)
    <unit>/seeds/seed-<s>/...     every other seed's files
    <unit>/seeds.json             per-seed summaries, estimates over seeds, stability

``seeds.json``::

    {"k": 3, "seeds": [0, 1, 2], "folders": [".", "seeds/seed-1", "seeds/seed-2"],
     "summaries": [{...}, {...}, {...}],                 # each seed's kind summary
     "estimates": {"accuracy": {"mean": .., "ci_low": .., "ci_high": .., "n": 3,
                                "confidence": 0.95}, ...},
     "stability": Stability.to_dict() | null,            # over the kind's components sets
     "components": [[...], [...], [...]] | null}

``estimates`` has every numeric scalar of the summaries (nested mappings flattened with dots:
``x_null.p_value``) through :func:`~modelweave.metrics.uncertainty.across_seeds` (mean and
Student-t 95% interval over the K seeds). ``stability`` is
:func:`~modelweave.metrics.uncertainty.stability` of the sets the kind's
:meth:`~modelweave.experiments.methods.MethodKind.components` hook returns for each seed
(absent when the kind has none). The unit's summary (its ``done.json``) is the first seed's
summary plus a compact ``"seeds"`` block::

    "seeds": {"k": 3, "seeds": [0, 1, 2],
              "estimates": {"accuracy": [mean, low, high], ...},
              "stability": {"jaccard": [mean, low, high], "core": 7, "threshold": 0.9,
                            "sizes": [9, 8, 9]}}          # only with components

A unit interrupted between seeds is not committed (the store's staging): it is computed again,
all seeds, when the run restarts.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import read_json, write_json
from ..progress import Progress, nested, report
from .methods._seeded import (
    estimate_text,
    seed_columns,
    seed_lines,
    seeded,
    seeded_table,
    seeds_section,
    shown_keys,
    stability_text,
)
from .methods.base import ConfigError, MethodKind, RunSettings, Settings, Unit

if TYPE_CHECKING:
    from ..models import Model

SEEDS_FILE = "seeds.json"
SEEDS_DIR = "seeds"

__all__ = ["SEEDS_DIR", "SEEDS_FILE", "check_k", "clear_seed_files", "estimate_text",
           "estimates", "numeric_scalars", "read_seeds", "run_seeds", "seed_columns",
           "seed_folder", "seed_lines", "seeded", "seeded_table", "seeds_section", "shown_keys",
           "stability_text", "with_seed"]


def check_k(value: Any, where: str = "seeds") -> int:
    """``value`` as K >= 1, or a :class:`ConfigError` naming ``where`` (the wording of
    :func:`~modelweave.metrics.uncertainty.check_seeds`, without importing numpy)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be a positive integer (1 = a single run), "
                          f"got {value!r}")
    return value


def with_seed(settings: Settings, seed: int) -> Settings:
    """``settings`` with its ``seed`` replaced (an ``Experiment`` or a ``RunSettings`` keep
    their type; any other :class:`Settings` becomes a ``RunSettings``)."""
    if is_dataclass(settings) and not isinstance(settings, type):
        return replace(settings, seed=seed)
    return RunSettings(n=settings.n, seed=seed, tasks=tuple(settings.tasks))


def seed_folder(folder: Path, index: int, seed: int) -> Path:
    """Where seed number ``index`` (its value ``seed``) writes: the unit folder for the first,
    ``seeds/seed-<seed>`` under it for the others."""
    return folder if index == 0 else folder / SEEDS_DIR / f"seed-{seed}"


def numeric_scalars(summary: dict, prefix: str = "") -> dict[str, float]:
    """The summary's numbers (not booleans), nested mappings flattened as ``a.b``; the
    ``seeds`` block itself is left out."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        if not prefix and key == "seeds":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_scalars(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def estimates(summaries: list[dict]) -> dict[str, dict]:
    """key -> ``across_seeds`` of its values (``Aggregate.to_dict()``), for every numeric key
    all ``summaries`` share, in the first summary's order."""
    from ..metrics.uncertainty import across_seeds

    flat = [numeric_scalars(s) for s in summaries]
    keys = [k for k in flat[0] if all(k in f for f in flat[1:])]
    return {k: across_seeds([f[k] for f in flat]).to_dict() for k in keys}


def _compact(agg: dict) -> list[float | None]:
    return [None if v is None or not math.isfinite(v) else round(float(v), 6)
            for v in (agg["mean"], agg["ci_low"], agg["ci_high"])]


def _record(unit: Unit, summary: dict, seed: int) -> dict:
    """The record a kind's ``components`` hook sees for one seed (as a ``done.json``)."""
    return {"model": unit.model, "task": unit.task, "method": unit.method,
            "params": unit.params, "seed": seed, "summary": summary}


def clear_seed_files(folder: Path) -> None:
    """Remove what an earlier K-seed run left in a reused folder (a command's ``--out``)."""
    (folder / SEEDS_FILE).unlink(missing_ok=True)
    shutil.rmtree(folder / SEEDS_DIR, ignore_errors=True)


def run_seeds(kind: MethodKind, model: Model, unit: Unit, settings: Settings, folder: Path,
              progress: Progress = None, seeds: int | None = None) -> dict:
    """Run ``unit`` for K seeds on the loaded ``model``; returns the unit's summary.

    Args:
        seeds: K (default ``unit.seeds``); seed i is ``settings.seed + i``.
        progress: gets ``("seeds", i, K)`` as seeds finish and each seed's own phases as
            ``"seed-<s>/<phase>"`` (K = 1: the kind's phases unchanged).

    Returns:
        K = 1: the kind's summary, untouched. K > 1: the first seed's summary plus the compact
        ``"seeds"`` block; ``seeds.json`` is written into ``folder`` (see the module text).
    """
    from ..metrics.uncertainty import check_seeds

    k = check_seeds(unit.seeds if seeds is None else seeds)
    folder = Path(folder)
    clear_seed_files(folder)
    if k == 1:
        return kind.run(model, unit, settings, folder, progress)
    values = [settings.seed + i for i in range(k)]
    summaries, sets, folders = [], [], []
    for i, seed in enumerate(values):
        report(progress, "seeds", i, k)
        sub = seed_folder(folder, i, seed)
        sub.mkdir(parents=True, exist_ok=True)
        summary = kind.run(model, unit, with_seed(settings, seed), sub,
                           nested(progress, f"seed-{seed}"))
        summaries.append(summary)
        folders.append(sub.relative_to(folder).as_posix())
        sets.append(kind.components(sub, _record(unit, summary, seed)))
    report(progress, "seeds", k, k)
    found = None if any(s is None for s in sets) else [sorted(map(str, s)) for s in sets]
    return {**summaries[0], "seeds": _finish(folder, values, folders, summaries, found)}


def _finish(folder: Path, values: list[int], folders: list[str], summaries: list[dict],
            found: list[list[str]] | None) -> dict:
    """Write ``seeds.json``; return the compact block of the summary."""
    from ..metrics.uncertainty import stability

    est = estimates(summaries)
    stable = stability(found).to_dict() if found is not None else None
    write_json(folder / SEEDS_FILE, {"k": len(values), "seeds": values, "folders": folders,
                                     "summaries": summaries, "estimates": est,
                                     "stability": stable, "components": found}, indent=1)
    block: dict = {"k": len(values), "seeds": values,
                   "estimates": {key: _compact(agg) for key, agg in est.items()}}
    if stable is not None:
        block["stability"] = {"jaccard": _compact(stable["jaccard"]), "core": len(stable["core"]),
                              "threshold": stable["threshold"], "sizes": stable["sizes"]}
    return block


def read_seeds(folder: Path) -> dict | None:
    """A unit's ``seeds.json`` (None for a one-seed unit)."""
    path = Path(folder) / SEEDS_FILE
    return read_json(path) if path.exists() else None
