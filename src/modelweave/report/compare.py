"""Figures of circuit comparisons, drawn from saved results (no model):

- :func:`upset_figure`: the components each subset of circuits shares exclusively (the output
  of :func:`modelweave.analysis.shared_components`);
- :func:`overlap_figure` / :func:`overlap_cells`: overlaps beside their chance baseline and
  matched null (``compare.json`` pair rows);
- :func:`cmap_figure`: CMAP recoveries with intervals and matched nulls."""

from __future__ import annotations


def upset_figure(shared: dict[tuple[str, ...], list[str]], names: list[str], path, title: str = ""
                 ) -> None:
    """An UpSet plot (matplotlib PNG): a bar per subset with its count of exclusively shared
    components, over a dot matrix saying which circuits the subset is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(shared, key=lambda g: (-len(shared[g]), -len(g)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(4, 0.6 * len(groups) + 2), 4.5),
                                      sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    xs = range(len(groups))
    top.bar(xs, [len(shared[g]) for g in groups], color="#4c72b0")
    for x, g in zip(xs, groups, strict=True):
        top.text(x, len(shared[g]), str(len(shared[g])), ha="center", va="bottom", fontsize=8)
    top.set_ylabel("components")
    top.set_title(title, fontsize=9)
    for x, g in zip(xs, groups, strict=True):
        ys = [names.index(n) for n in g]
        bottom.scatter([x] * len(names), range(len(names)), color="#ddd", s=30)
        bottom.scatter([x] * len(ys), ys, color="#222", s=30)
        if len(ys) > 1:
            bottom.plot([x, x], [min(ys), max(ys)], color="#222")
    bottom.set_yticks(range(len(names)), names, fontsize=8)
    bottom.set_xticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def overlap_cells(row: dict, measure: str) -> str:
    """``0.918 (chance 0.85, p 0.02)`` for one measure of a pair row of ``compare.json``
    (just the value when the row has no chance baseline, ``-`` when it has no value)."""
    if measure not in row:
        return "-"
    chance, null = row.get(f"{measure}_chance"), row.get(f"{measure}_null")
    if chance is None:
        return _fmt(row[measure])
    p = f", p {null['p_value']:.2g}" if null else ""
    return f"{_fmt(row[measure])} (chance {chance:.3f}{p})"


def overlap_figure(pairs: list[dict], path, title: str = "") -> None:
    """Per pair and measure (Jaccard, precision, recall): the observed value (dot) beside
    its chance baseline (exact expectation, tick) and the matched null's 95% range (grey
    bar). ``pairs`` are the rows of ``compare.json`` that have a null."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = ("jaccard", "precision", "recall")
    rows = [r for r in pairs if "recall_null" in r]
    fig, axes = plt.subplots(1, len(measures), figsize=(9, 0.5 * len(rows) + 1.6), sharey=True)
    for ax, measure in zip(axes, measures, strict=True):
        for i, row in enumerate(rows):
            null = row[f"{measure}_null"]
            ax.plot([null["null_low"], null["null_high"]], [i, i], color="#bbb", lw=6,
                    solid_capstyle="butt")
            ax.plot([row[f"{measure}_chance"]], [i], "|", color="#444", ms=12)
            ax.plot([row[measure]], [i], "o", color="#4c72b0")
        ax.set_title(measure, fontsize=9)
        ax.set_xlim(-0.02, 1.02)
    axes[0].set_yticks(range(len(rows)), [f"{r['a']} / {r['b']}"[:48] for r in rows],
                       fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(title or "overlap (dot) vs chance (tick) and matched null 95% (grey)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmap_figure(result, path, title: str = "") -> None:
    """Each group's CMAP recovery (bar) with its bootstrap interval over prompts, and the
    matched null's mean (tick) and 95% range (grey) where the group has one.

    Args:
        result: a :class:`~modelweave.analysis.cmap.CMAPResult` (or its dict).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = result["groups"] if isinstance(result, dict) else {
        k: g.to_dict() for k, g in result.groups.items()}
    names = list(groups)
    rec = [groups[n]["recovery"] for n in names]
    err = [[max(0.0, r - groups[n]["recovery_ci"][0]) for n, r in zip(names, rec, strict=True)],
           [max(0.0, groups[n]["recovery_ci"][1] - r) for n, r in zip(names, rec, strict=True)]]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    ax.barh(range(len(names)), rec, color="#4c72b0", xerr=err, ecolor="#222", capsize=3)
    labelled = False
    for i, n in enumerate(names):
        null = groups[n].get("recovery_null")
        if null:
            ax.plot([null["null_low"], null["null_high"]], [i + 0.3, i + 0.3], color="#e08a2c",
                    lw=4, solid_capstyle="butt", zorder=3,
                    label=None if labelled else "matched random heads (mean, 95% range)")
            ax.plot([null["null_mean"]], [i + 0.3], "|", color="#7a3d00", ms=9, zorder=4)
            labelled = True
    ax.set_yticks(range(len(names)), [f"{n} ({groups[n]['n_components']})" for n in names],
                  fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(title or "share of the source's advantage recovered in the target (CMAP)")
    if labelled:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
