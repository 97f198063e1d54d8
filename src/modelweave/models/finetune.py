"""LoRA fine-tuning on a task, with peft: an adapter and a merged model ``load_model`` reads.

The training signal is the task itself: for each generated example, cross-entropy of the
correct answer's first token at the prompt's last position (the quantity the task metrics
read), or with ``scoring="full"`` of every token of the answer, teacher-forced (what a
multi-digit answer on a digit-splitting tokenizer needs). LoRA adapters go on every linear
layer of the decoder blocks (``"all-linear"``: the attention and MLP projections, not the
embeddings or the unembedding); the base weights stay frozen, so only the adapter changes them.

Writes ``OUT/adapter/`` (peft's adapter files), ``OUT/merged/`` (the merged model as
safetensors with its tokenizer, loadable with ``load_model(OUT/merged)``) and
``OUT/finetune.json`` (settings, loss curve, timings). With ``save_every=N`` the merged model
is also saved every N steps as ``OUT/checkpoints/step-N/`` (and the last step), for studies of
how a mechanism appears during training. The steps are those of :mod:`.training`.

The exact training items (every example some step trained on: prompt, answers and, for
``arith``, the operands ``op1 op op2``) are written as ``training_data.jsonl`` into ``OUT/``
and into every model directory saved (``merged/``, each checkpoint), so a model loaded from
any of them knows what it was trained on: :func:`load_training_data` reads them back,
:func:`training_operands` gives the arithmetic prompts, and :func:`without_training` drops
training prompts from a task batch (the heuristics prompts do it automatically).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelWeaveError
from ..io import read_jsonl, write_json, write_jsonl
from ..progress import Progress
from .model import Model
from .training import SCHEDULES, Batch, adamw, train_steps

TRAINING_DATA = "training_data.jsonl"
#: the ``TaskBatch.dropped`` reason under which training prompts are counted when excluded
EXCLUDED = "excluded (training prompts of the fine-tune)"


class FinetuneError(ModelWeaveError, ValueError):
    """Fine-tuning settings out of range (steps, rank, checkpoint interval, schedule)."""


@dataclass
class FinetuneResult:
    """What :func:`finetune` did: the merged model, the loss per step, paths and timing."""

    model: Model
    losses: list[float]
    adapter: Path
    merged: Path
    seconds: float


def finetune(model: Model, task: str, out: str | Path, *, steps: int = 200, lora_r: int = 8,
             lr: float = 1e-3, batch_size: int = 16, n: int = 256, seed: int = 0,
             scoring: str = "first", save_every: int | None = None,
             task_params: dict | None = None, schedule: str = "constant",
             progress: Progress = None,
             on_step: Callable[[int, float], None] | None = None) -> FinetuneResult:
    """Fine-tune ``model`` with LoRA on ``task`` (a built-in task or a task file).

    Args:
        steps: optimiser steps (AdamW); batch_size: prompts per step, cycling over ``n``
            generated examples.
        lora_r: adapter rank (alpha = 2 r).
        scoring: ``"first"`` (the answer's first token) or ``"full"`` (every answer token).
        save_every: also save the merged model every this many steps under
            ``OUT/checkpoints/step-N/`` (the last step included).
        task_params: the task's parameters (``{"operators": "+,-"}``).
        schedule: ``"constant"`` learning rate or ``"linear"`` decay to zero at the last
            step.
        progress: phase ``"train"``: steps done of ``steps``.
        on_step: called after every step as ``on_step(step, loss)`` (the loss to show).

    Returns:
        a :class:`FinetuneResult`; ``model`` is itself left unchanged.
    """
    from peft import LoraConfig, get_peft_model

    from ..tasks import make_batch

    if steps < 1 or lora_r < 1:
        raise FinetuneError(f"steps and lora_r must be at least 1, got steps={steps}, "
                            f"lora_r={lora_r}")
    if save_every is not None and save_every < 1:
        raise FinetuneError(f"save_every must be at least 1 (or None), got {save_every}")
    if schedule not in SCHEDULES:
        raise FinetuneError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
    if model.device_map is not None and len(set(map(str, model.device_map.values()))) > 1:
        raise ModelWeaveError("fine-tuning runs on a model on one device; this one is split "
                              "by a device map (load it with device= instead)")
    out = Path(out)
    batch = make_batch(model, task, n=n, seed=seed, scoring=scoring, **(task_params or {}))
    inputs, targets, mask = _training_rows(batch, scoring, model.tokenization.pad_token_id)
    torch.manual_seed(seed)
    base = copy.deepcopy(model.hf_model).float()
    config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, config)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer, decay = adamw(trainable, lr=lr, steps=steps, schedule=schedule)
    start = time.perf_counter()
    order = torch.randperm(len(batch), generator=torch.Generator().manual_seed(seed))

    def rows_of(step: int) -> Batch:
        rows = order[(torch.arange(batch_size) + step * batch_size) % len(batch)]
        return inputs[rows], targets[rows], mask[rows]

    items = training_items(batch, _seen(order, batch_size, steps))
    write_jsonl(out / TRAINING_DATA, items)

    def save(done: int) -> None:
        _save_merged(peft_model, model, out / "checkpoints" / f"step-{done}")
        write_jsonl(out / "checkpoints" / f"step-{done}" / TRAINING_DATA,
                    training_items(batch, _seen(order, batch_size, done)))

    def report(done: int, loss: float, _record: None) -> None:
        on_step(done, loss)

    losses = train_steps(peft_model, rows_of, optimizer, decay, steps=steps,
                         device=model.device, save=save if save_every else None,
                         save_every=save_every, on_step=report if on_step else None,
                         progress=progress)
    seconds = time.perf_counter() - start
    peft_model.save_pretrained(out / "adapter")
    merged = peft_model.merge_and_unload()  # in place: the training copy is not needed again
    _save_hf(merged, model, out / "merged")
    write_jsonl(out / "merged" / TRAINING_DATA, items)
    merged.name_or_path = merged.config._name_or_path = str(out / "merged")
    write_json(out / "finetune.json", {
        "model": model.name, "task": batch.task, "steps": steps, "lora_r": lora_r, "lr": lr,
        "batch_size": batch_size, "n": len(batch), "seed": seed, "seconds": seconds,
        "scoring": scoring, "task_params": task_params or {}, "save_every": save_every,
        "schedule": schedule, "n_training_items": len(items),
        "losses": losses}, indent=1)
    tuned = Model(merged, model.tokenizer, name=f"{model.name}+lora-{batch.task}")
    return FinetuneResult(tuned, losses, out / "adapter", out / "merged", seconds)


def _seen(order: torch.Tensor, batch_size: int, steps: int) -> list[int]:
    """The batch rows the first ``steps`` steps train on (in first-seen order)."""
    rows = order[torch.arange(min(steps * batch_size, 10 ** 7)) % len(order)]
    return list(dict.fromkeys(rows.tolist()))


def training_items(batch, rows: list[int]) -> list[dict]:
    """JSON-ready training items of ``batch`` rows (one per distinct prompt): ``prompt``,
    ``answers`` and, for arithmetic, ``op1``, ``op``, ``op2``."""
    out, seen = [], set()
    for i in rows:
        ex = batch.examples[i]
        if ex.clean in seen:
            continue
        seen.add(ex.clean)
        item = {"prompt": ex.clean, "answers": list(ex.answers)}
        if {"op1", "op", "op2"} <= ex.meta.keys():
            item.update(op1=int(ex.meta["op1"]), op=ex.meta["op"], op2=int(ex.meta["op2"]))
        out.append(item)
    return out


def _folder_of(source) -> Path | None:
    if isinstance(source, str | Path):
        return Path(source)
    path = getattr(getattr(source, "hf_model", None), "name_or_path", None)
    return Path(path) if path else None


def load_training_data(source) -> list[dict] | None:
    """The training items recorded beside a fine-tuned model: ``source`` is a folder (a
    fine-tune's ``OUT/``, ``OUT/merged`` or a checkpoint) or a :class:`Model` loaded from one.
    ``None`` when no ``training_data.jsonl`` is there (not a fine-tune of this toolkit)."""
    folder = _folder_of(source)
    if folder is None or not (folder / TRAINING_DATA).is_file():
        return None
    return [row for _, row in read_jsonl(folder / TRAINING_DATA)]


def training_operands(source) -> set[tuple[int, str, int]]:
    """``(op1, operator, op2)`` of every arithmetic training item of ``source`` (see
    :func:`load_training_data`); empty when there are none."""
    rows = load_training_data(source) or []
    return {(int(r["op1"]), r["op"], int(r["op2"])) for r in rows if "op" in r}


def without_training(model: Model, batch, exclude: set[str] | None = None):
    """``batch`` without the prompts ``model`` was fine-tuned on (``exclude``: prompt texts;
    default read from the model's folder); the count is ``batch.dropped[EXCLUDED]``.

    Raises:
        ModelWeaveError: every prompt of the batch is a training prompt.
    """
    if exclude is None:
        exclude = {r["prompt"] for r in load_training_data(model) or []}
    keep = [i for i, ex in enumerate(batch.examples) if ex.clean not in exclude]
    if len(keep) == len(batch):
        return batch
    if not keep:
        raise ModelWeaveError(f"all {len(batch)} prompts of the {batch.task} batch are training "
                              f"prompts of the fine-tune ({len(exclude)} recorded): nothing "
                              "left to evaluate; draw more (n) or another seed")
    out = batch.select(keep)
    out.dropped = {**batch.dropped, EXCLUDED: len(batch) - len(keep)}
    return out


def _training_rows(batch, scoring: str, pad: int) -> tuple[torch.Tensor, torch.Tensor,
                                                           torch.Tensor]:
    """Inputs [N, T], targets [N, T] (-100 where no loss) and mask [N, T]: each prompt followed
    by its main answer's tokens but the last, the targets being the answer's tokens (only the
    first with ``scoring="first"``)."""
    rows, goals = [], []
    for i in range(len(batch)):
        prompt = batch.clean[i, : batch.lengths[i]].tolist()
        answer = batch.answer_tokens[i][0] if scoring == "full" else batch.answer_tokens[i][0][:1]
        rows.append(prompt + answer[:-1])
        goals.append([-100] * (len(prompt) - 1) + answer)
    width = max(map(len, rows))
    inputs = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    targets = torch.tensor([g + [-100] * (width - len(g)) for g in goals])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return inputs, targets, mask


def _save_merged(peft_model, model: Model, folder: Path) -> None:
    """The adapter merged into a copy of the base weights, saved as an HF model directory."""
    merged = copy.deepcopy(peft_model).merge_and_unload()
    _save_hf(merged, model, folder)
    del merged


def _save_hf(hf_model, model: Model, folder: Path) -> None:
    """An HF model directory: ``hf_model``'s weights and config with ``model``'s tokenizer."""
    hf_model.save_pretrained(folder)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(folder)
