"""How a unit of K > 1 seeds is shown: the command line's ``x = mean [low, high] over K seeds``
lines, the dataframe's seed columns, the report's tables (:mod:`modelweave.experiments.seeds`
runs the seeds; this module only reads the summary's compact ``seeds`` block, so the default
:class:`~modelweave.experiments.methods.MethodKind` methods can use it).

``kind`` arguments are method kinds (anything with ``headline_keys(summary)`` and
``summary_row(record)``), or None.
"""

from __future__ import annotations

from typing import Any


def seeded(summary: dict) -> dict | None:
    """The summary's compact ``seeds`` block when it ran more than one seed, else None."""
    block = summary.get("seeds") if isinstance(summary, dict) else None
    return block if isinstance(block, dict) and block.get("k", 1) > 1 else None


def shown_keys(kind: Any, summary: dict, limit: int = 6) -> list[str]:
    """The estimates to show for a seeded unit: the kind's headline numbers
    (:meth:`~modelweave.experiments.methods.MethodKind.headline_keys`) that have estimates,
    else the numbers that vary across seeds, counts (``n``, ``n_*``) left out (at most
    ``limit``)."""
    block = seeded(summary) or {}
    est = block.get("estimates", {})
    keys = [k for k in (kind.headline_keys(summary) if kind else []) if k in est]
    if not keys:
        keys = [k for k, (_, low, high) in est.items() if low is not None and low != high
                and k != "n" and not k.startswith("n_")]
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


def seed_lines(kind: Any, summary: dict) -> list[str]:
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


def seed_columns(kind: Any, summary: dict) -> dict:
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


def seeded_table(kind: Any, units: list[tuple[str, dict]]) -> str:
    """The default report table of ``kind``'s units: its summary rows, where a seeded unit's
    numbers that vary across seeds read ``mean [low, high]``, with a ``seeds`` column and its
    stability when any unit is seeded (exactly the plain table when none is)."""
    from ...report.blocks import table

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


def seeds_section(kind: Any, units: list[tuple[str, dict]]) -> str:
    """A block the run page adds under a section whose kind draws its own report: one row
    per seeded unit with its headline numbers as ``mean [low, high]`` over its K seeds and
    its stability; '' when no unit of the section is seeded."""
    from ...report.blocks import note, table

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
