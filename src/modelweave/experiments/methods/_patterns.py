"""Attention patterns of a few heads on a unit's first prompt, saved as data
(``patterns.safetensors`` + ``patterns.json``) by a kind's ``run`` and drawn by its ``draw``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...models import Model
    from ...tasks import TaskBatch


def head_name(layer: int, head: int) -> str:
    """A head's circuit-component name, ``aL.hH``."""
    return f"a{layer}.h{head}"


def save_patterns(model: Model, batch: TaskBatch, heads: list[tuple[int, int]], folder: Path,
                  why: str = "") -> list[str]:
    """Save the [query, key] patterns of ``heads`` ((layer, head) pairs) on the batch's first
    prompt, with its tokens and text (and ``why`` they were chosen); returns their names."""
    from ...io import save_bundle
    from ...methods.patterns import attention_patterns

    if not heads:
        return []
    names = [head_name(*pair) for pair in heads]
    prompt = batch.clean[0, : batch.lengths[0]]
    patterns, tokens = attention_patterns(model, prompt, heads)
    save_bundle(folder / "patterns",
                {"heads": names, "tokens": tokens, "prompt": batch.examples[0].clean, "why": why},
                {name: patterns[pair] for name, pair in zip(names, heads, strict=True)},
                indent=None)
    return names


def load_patterns(folder: Path) -> tuple[dict, dict] | None:
    """``(meta, patterns)`` saved by :func:`save_patterns` (meta: heads, tokens, prompt, why;
    patterns: name -> [query, key] tensor), or None when the unit saved none."""
    if not (folder / "patterns.json").exists():
        return None
    from ...io import load_bundle

    return load_bundle(folder / "patterns")


def draw_patterns(folder: Path, file_name=lambda name: f"pattern_{name}") -> list[Path]:
    """Heatmaps (``.png`` + ``.html``) of the saved patterns; returns the files."""
    from ...report.figures import save_heatmap

    saved = load_patterns(folder)
    if saved is None:
        return []
    meta, patterns = saved
    labels = [f"{i}: {t}" for i, t in enumerate(meta["tokens"])]
    files: list[Path] = []
    for name in meta["heads"]:
        why = f" ({meta['why']})" if meta.get("why") else ""
        files += save_heatmap(patterns[name], labels, labels, "query", "key",
                              f"attention of head {name}{why}", folder / file_name(name),
                              center=False)
    return files
