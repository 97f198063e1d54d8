"""Any checkpoint series through a method: one row of numbers per checkpoint, for a
metric-over-steps plot (:func:`modelweave.report.toy.series_figure`).

A series is a list of ``(step, HF directory)``: a toy run's ``OUT/checkpoints/step-N``, or a
fine-tuning run's ``OUT/checkpoints/step-N`` (:func:`modelweave.models.finetune.finetune` with
``save_every``) -- :func:`find_checkpoints` reads either layout. Methods (:data:`METHODS`):

- ``eval``: accuracy and logit difference on a task (``task`` param; toy checkpoints default to
  their own toy task).
- ``heads``: the highest previous-token, induction and duplicate-token head scores
  (:func:`modelweave.methods.head_roles.pattern_scores`).
- ``composition``: the highest Q-, K- and V-composition scores.
- ``grokking``: the progress measures of :mod:`.fourier` (modular-addition toy runs), with the
  final checkpoint's key frequencies.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelWeaveError
from ..progress import Progress, Steps
from ..tasks.toy import toy_meta

METHODS = ("eval", "heads", "composition", "grokking")


def find_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-N`` HF directory under ``folder`` (or
    ``folder/checkpoints``), in step order."""
    root = Path(folder)
    if (root / "checkpoints").is_dir():
        root = root / "checkpoints"
    found = [(int(p.name.split("-")[1]), p) for p in root.glob("step-*")
             if p.name.split("-")[1].isdigit() and (p / "config.json").is_file()]
    if not found:
        raise ModelWeaveError(f"no checkpoints (step-N folders with a config.json) under {folder}")
    return sorted(found)


def _eval(model, task: str | None, n: int, seed: int) -> dict:
    from ..metrics import evaluate
    from ..tasks import resolve_task
    from ..tasks.toy import task_for_model

    resolved = resolve_task(task) if task else task_for_model(model)
    result = evaluate(model, resolved, n=n, seed=seed)
    return {"accuracy": result.accuracy.mean, "logit_diff": result.logit_diff.mean}


def _heads(model, seed: int) -> dict:
    from ..methods.head_roles import pattern_scores

    meta = toy_meta(model) or {}
    length = meta.get("task_params", {}).get("length", 20)
    scores = pattern_scores(model, batch=16, length=length, seed=seed)
    return {f"max_{k}": float(v.max()) for k, v in scores.items()}


def _composition(model) -> dict:
    from .composition import composition_scores

    comp = composition_scores(model)
    out = {}
    for mode, grid in comp.scores.items():
        finite = grid[~torch.isnan(grid)]
        out[f"max_{mode}_composition"] = float(finite.max()) if len(finite) else float("nan")
    return out


def run_series(checkpoints: list[tuple[int, Path]], method: str, *, task: str | None = None,
               n: int = 64, seed: int = 0,
               progress: Progress = None) -> list[dict]:
    """One dict per checkpoint: ``{"step": N, <metric>: value, ...}``. ``progress`` phase
    ``"checkpoints"``: checkpoints done of all (``grokking`` analyses them in one go).

    Raises:
        ModelWeaveError: unknown method, or ``grokking`` on a run that is not modular addition.
    """
    from ..models import load_model

    if method not in METHODS:
        raise ModelWeaveError(f"unknown series method {method!r}; use one of {', '.join(METHODS)}")
    rows, steps = [], Steps(progress, "checkpoints", len(checkpoints))
    if method == "grokking":
        from .fourier import analyse_grokking

        final = load_model(checkpoints[-1][1], device="cpu")
        try:
            analysis = analyse_grokking(final, ((s, load_model(p, device="cpu"))
                                                for s, p in checkpoints))
        except ValueError as err:
            raise ModelWeaveError(str(err)) from None
        rows = [pt.to_dict() | {"key_frequencies": analysis.key_frequencies}
                for pt in analysis.progress]
        steps.set(len(checkpoints))
        return rows
    for step, path in checkpoints:
        model = load_model(path, device="cpu")
        if method == "eval":
            row = _eval(model, task, n, seed)
        elif method == "heads":
            row = _heads(model, seed)
        else:
            row = _composition(model)
        rows.append({"step": step, **row})
        steps.advance()
    return rows
