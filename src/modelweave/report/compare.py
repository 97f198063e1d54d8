"""Figures of circuit comparisons: :func:`upset_figure` draws the components each subset of
circuits shares exclusively (the output of :func:`modelweave.analysis.shared_components`)."""

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
