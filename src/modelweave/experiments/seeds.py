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
from .methods.base import ConfigError, MethodKind, RunSettings, Settings, Unit

if TYPE_CHECKING:
    from ..models import Model

SEEDS_FILE = "seeds.json"
SEEDS_DIR = "seeds"

__all__ = ["SEEDS_DIR", "SEEDS_FILE", "check_k", "estimate_text", "estimates",
           "numeric_scalars", "run_seeds", "seed_folder", "seed_lines", "seeded",
           "shown_keys", "with_seed"]


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


# -- showing a seeded unit ----------------------------------------------------------------------
def seeded(summary: dict) -> dict | None:
    """The summary's compact ``seeds`` block when it ran more than one seed, else None."""
    block = summary.get("seeds") if isinstance(summary, dict) else None
    return block if isinstance(block, dict) and block.get("k", 1) > 1 else None


def shown_keys(kind: MethodKind | None, summary: dict, limit: int = 6) -> list[str]:
    """The estimates to show for a seeded unit: the kind's headline numbers
    (:meth:`MethodKind.headline_keys`) that have estimates, else the numbers that vary across
    seeds (at most ``limit``)."""
    block = seeded(summary) or {}
    est = block.get("estimates", {})
    keys = [k for k in (kind.headline_keys(summary) if kind else []) if k in est]
    if not keys:
        keys = [k for k, (_, low, high) in est.items() if low is not None and low != high]
    return keys[:limit]


def estimate_text(triple: list, digits: int = 3) -> str:
    """``mean [low, high]`` of a compact estimate (``nan`` for a missing end)."""
    def num(v):
        return "nan" if v is None else f"{v:.{digits}f}"

    mean, low, high = triple
    return f"{num(mean)} [{num(low)}, {num(high)}]"


def stability_text(block: dict) -> str:
    """``Jaccard m [l, h], stable core c`` of a seeded unit's block ('' without one)."""
    stable = block.get("stability")
    if not stable:
        return ""
    return (f"Jaccard {estimate_text(stable['jaccard'], 2)}, stable core {stable['core']} "
            f"(in >= {stable['threshold']:.0%} of {block['k']} seeds; sizes "
            f"{', '.join(map(str, stable['sizes']))})")


def seed_lines(kind: MethodKind | None, summary: dict) -> list[str]:
    """The command line's lines for a seeded unit: ``x = mean [low, high] over K seeds`` per
    headline number, then the stability line (none for a one-seed unit)."""
    block = seeded(summary)
    if block is None:
        return []
    k = block["k"]
    lines = [f"{key} = {estimate_text(block['estimates'][key])} over {k} seeds"
             for key in shown_keys(kind, summary)]
    stable = stability_text(block)
    return lines + ([f"stability over {k} seeds: {stable}"] if stable else [])


def seed_columns(kind: MethodKind | None, summary: dict) -> dict:
    """A seeded unit's dataframe columns: ``seeds`` (K), ``x_seeds_mean``, ``x_seeds_low``,
    ``x_seeds_high`` per shown number ``x``, and ``jaccard_seeds`` / ``stable_core`` with
    stability (none for a one-seed unit)."""
    block = seeded(summary)
    if block is None:
        return {}
    out: dict = {"seeds": block["k"]}
    for key in shown_keys(kind, summary):
        mean, low, high = block["estimates"][key]
        out.update({f"{key}_seeds_mean": mean, f"{key}_seeds_low": low,
                    f"{key}_seeds_high": high})
    if block.get("stability"):
        out.update(jaccard_seeds=block["stability"]["jaccard"][0],
                   stable_core=block["stability"]["core"])
    return out


def _varies(triple: list) -> bool:
    return triple[1] is None or triple[1] != triple[2]


def seeded_table(kind: MethodKind, units: list[tuple[str, dict]]) -> str:
    """The default report table of ``kind``'s units: its summary rows, where a seeded unit's
    numbers that vary across seeds read ``mean [low, high]``, with a ``seeds`` column and its
    stability when any unit is seeded (exactly the plain table when none is)."""
    from ..report.blocks import table

    rows, any_seeded, any_stable = [], False, False
    for _, record in units:
        row, block = kind.summary_row(record), seeded(record["summary"])
        if block is not None:
            any_seeded = True
            row = {k: v for k, v in row.items() if k not in seed_columns(kind, record["summary"])}
            for key, triple in block["estimates"].items():
                if key in row and (key in shown_keys(kind, record["summary"]) or
                                   _varies(triple)):
                    row[key] = estimate_text(triple)
            row["seeds"] = block["k"]
            if block.get("stability"):
                any_stable = True
                row["Jaccard over seeds"] = estimate_text(block["stability"]["jaccard"], 2)
                row["stable core"] = block["stability"]["core"]
        rows.append((record["task"] or "all", row))
    columns = list(dict.fromkeys(k for _, row in rows for k in row
                                 if k not in ("seeds", "Jaccard over seeds", "stable core")))
    columns += ["seeds"] if any_seeded else []
    columns += ["Jaccard over seeds", "stable core"] if any_stable else []
    return table(["task", *columns], [[task, *(row.get(c, 1 if c == "seeds" else "")
                                               for c in columns)] for task, row in rows])


def seeds_section(kind: MethodKind | None, units: list[tuple[str, dict]]) -> str:
    """A block the run page adds under a section whose kind draws its own report: one row
    per seeded unit with its headline numbers as ``mean [low, high]`` over its K seeds and
    its stability; '' when no unit of the section is seeded."""
    from ..report.blocks import note, table

    shown = [(uid, r, seeded(r["summary"])) for uid, r in units]
    shown = [(uid, r, b) for uid, r, b in shown if b is not None]
    if not shown:
        return ""
    keys = list(dict.fromkeys(k for _, r, _ in shown for k in shown_keys(kind, r["summary"])))
    stable = any(b.get("stability") for _, _, b in shown)
    header = ["unit", "seeds", *keys, *(["Jaccard over seeds", "stable core"] if stable else [])]
    rows = []
    for uid, _, block in shown:
        est = block["estimates"]
        row = [uid, block["k"], *(estimate_text(est[k]) if k in est else "" for k in keys)]
        if stable:
            found = block.get("stability")
            row += ([estimate_text(found["jaccard"], 2), found["core"]] if found else ["", ""])
        rows.append(row)
    return (note("Across seeds: mean [95% interval] over K seeds of prompts (Student t); "
                 "the stable core is what at least 90% of the seeds found.") + table(header, rows))
