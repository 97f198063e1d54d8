"""The run page: ``RUN/report.html``, one self-contained page rendered from a run store's
stored results (no model).

Sections (each present even when the run has nothing for it): the overview, then one per
registered experiment method kind, in its order, rendered by the kind's ``report_section``
(built in: tasks (accuracy table), patching (heatmaps), circuits (graph, faithfulness curve
with CPR/CMD, the circuit's top heads with their role scores and attention patterns over an
example prompt), logit lens, head roles). A unit of K > 1 seeds shows its numbers as
``mean [low, high]`` over the seeds and its stability (:mod:`.seeds`): in the default section
table, or in a block under a kind's own section. This module never names a method. Before
rendering, each finished unit's figure files are drawn by its kind's ``draw`` (once:
``figures.json`` in the unit's folder lists what was drawn, and a unit is drawn again only when
one is missing).
Every text that comes from prompts, tokens or files is escaped (:mod:`modelweave.report`).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from ..io import atomic_write, read_json, write_json
from ..report.blocks import note, table
from ..report.html import html_page
from .methods import METHODS, MethodKind, ReportContext, methods
from .seeds import seeds_section
from .store import RunStore

#: the file in a unit's folder naming the figures its kind drew there
FIGURES = "figures.json"


def sections() -> list[tuple[str, str]]:
    """``(id, title)`` of every section, in page order: the overview, then the method kinds'."""
    return [("overview", "Overview"), *((k.section_id, k.section_title) for k in methods())]


def __getattr__(name: str):
    if name == "SECTIONS":  # the section ids, current with the registry
        return tuple(section for section, _ in sections())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _overview(manifest: dict, records: dict) -> str:
    config = manifest.get("config", {})
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())
    total = sum(r["seconds"] for r in records.values())
    rows = [["experiment", config.get("name", "")], ["models", ", ".join(config.get("models", []))],
            ["tasks", ", ".join(config.get("tasks", []))], ["prompts per task", config.get("n")],
            ["seed", manifest.get("seed")],
            *([["seeds per unit", config["seeds"]]] if config.get("seeds", 1) != 1 else []),
            ["units finished", len(records)],
            ["compute time", f"{total:.0f} s"], ["versions", versions],
            ["git revision", manifest.get("git_revision") or "none"]]
    return table(["", ""], rows)


def _failures(failures: dict[str, dict]) -> str:
    """The units whose last attempt failed: error line, worker, traceback (folded)."""
    if not failures:
        return ""
    rows = "".join(
        f"<tr><td>{escape(uid)}</td><td>{escape(r['error'])}<details><summary>traceback"
        f"</summary><pre>{escape(r['traceback'])}</pre></details></td></tr>"
        for uid, r in failures.items())
    return (f"<h3>Failed units ({len(failures)})</h3><p class='note'>Recorded in failed/; "
            f"running the experiment again retries them.</p><table><tr><th>unit</th>"
            f"<th>error</th></tr>{rows}</table>")


def draw_unit(folder: Path, record: dict) -> list[Path]:
    """The unit's figures, drawn by its method kind from its saved files unless the ones it
    drew before are all still there; returns them (none for an unregistered method)."""
    kind = METHODS.get(record["method"])
    if kind is None:
        return []
    listed = folder / FIGURES
    if listed.exists():
        files = [folder / name for name in read_json(listed)]
        if all(f.exists() for f in files):
            return files
    files = kind.draw(folder, record)
    write_json(listed, [str(Path(f).relative_to(folder)) for f in files])
    return files


def _seeds_block(kind: MethodKind, units: list[tuple[str, dict]]) -> str:
    """Seeded units' numbers as ``mean [low, high]`` over their seeds, under a section the
    kind draws itself (the default section shows them in its own table)."""
    if type(kind).report_section is MethodKind.report_section:
        return ""
    return seeds_section(kind, units)


def build_report(run_dir: str | Path) -> Path:
    """Render ``RUN/report.html`` from the stored results of ``run_dir`` (drawing the figures
    of units not drawn yet); returns its path."""
    store = RunStore(run_dir)
    manifest, records = store.manifest(), store.records()
    for unit_id, record in records.items():
        draw_unit(store.folder(unit_id), record)
    ctx = ReportContext(store, manifest, records)
    bodies = {"overview": _overview(manifest, records) + _failures(store.failures())}
    for kind in methods():
        units = ctx.units(kind.name)
        bodies[kind.section_id] = (kind.report_section(units, ctx) + _seeds_block(kind, units)
                                   if units else note(kind.empty_note))
    name = str(manifest.get("config", {}).get("name", store.root.name))
    page = html_page(name, [(k, title, bodies[k]) for k, title in sections()])
    return atomic_write(store.root / "report.html", page)
