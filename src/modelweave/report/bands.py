"""Curves with their bootstrap bands (:class:`~modelweave.metrics.uncertainty.Band`), drawn from
saved results: the logit lens's P(answer) per layer, DLA per layer."""

from __future__ import annotations

from pathlib import Path


def _as_dict(band) -> dict:
    return band if isinstance(band, dict) else band.to_dict()


def save_band_figure(bands: dict, path: str | Path, xlabel: str, ylabel: str, title: str = "",
                     xticks: list[str] | None = None) -> list[Path]:
    """One line per named band (``label -> Band`` or its dict) with its shaded pointwise 95%
    interval; writes ``path.png`` and returns ``[path.png]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for (label, band), color in zip(bands.items(), ("#4c72b0", "#dd8452", "#55a868", "#c44e52"),
                                    strict=False):
        b = _as_dict(band)
        ax.plot(b["x"], b["value"], color=color, lw=1.5, label=f"{label} (n = {b['n']})")
        ax.fill_between(b["x"], b["low"], b["high"], color=color, alpha=0.25, lw=0)
    if xticks is not None:
        first = _as_dict(next(iter(bands.values())))
        step = max(1, len(xticks) // 16)
        ax.set_xticks(first["x"][::step], xticks[::step], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + ("; " if title else "") + "shaded: 95% bootstrap over prompts",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
