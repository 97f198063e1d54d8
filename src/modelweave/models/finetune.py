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
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelWeaveError
from ..io import write_json
from ..progress import Progress
from .model import Model
from .training import SCHEDULES, Batch, adamw, train_steps


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
        raise ValueError("steps and lora_r must be positive")
    if save_every is not None and save_every < 1:
        raise ValueError("save_every must be positive")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
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

    def save(done: int) -> None:
        _save_merged(peft_model, model, out / "checkpoints" / f"step-{done}")

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
    write_json(out / "finetune.json", {
        "model": model.name, "task": batch.task, "steps": steps, "lora_r": lora_r, "lr": lr,
        "batch_size": batch_size, "n": len(batch), "seed": seed, "seconds": seconds,
        "scoring": scoring, "task_params": task_params or {}, "save_every": save_every,
        "schedule": schedule,
        "losses": losses}, indent=1)
    tuned = Model(merged, model.tokenizer, name=f"{model.name}+lora-{batch.task}")
    return FinetuneResult(tuned, losses, out / "adapter", out / "merged", seconds)


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
