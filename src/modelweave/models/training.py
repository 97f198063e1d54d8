"""The training loop every trainer shares: LoRA fine-tuning (:mod:`.finetune`), influence
fine-tunes on documents and toy models on algorithmic data.

One step: the batch of ``step`` (inputs, targets, optional attention mask), next-token
cross-entropy over the targets that are not ``-100`` (the logits taken in float32), a
backward pass, an AdamW step and a learning-rate schedule step. What differs between trainers
is a setting of :func:`adamw` (weight decay, betas, warm-up, decay) or of :func:`train_steps`
(the batches, the device, the first step of a resumed run, evaluation and checkpoint hooks and
their intervals, a per-step callback); which parameters train is the caller's (those with
``requires_grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from ..errors import ModelWeaveError
from ..progress import Progress, Steps

#: One training batch: inputs [B, T] token ids, targets [B, T] (``-100``: no loss there),
#: attention mask [B, T] (1 = a real token) or ``None`` (every token real).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
SCHEDULES = ("constant", "linear")


def adamw(params: Iterable[torch.nn.Parameter], *, lr: float, steps: int,
          weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
          warmup: int = 0, schedule: str = "constant"
          ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (decoupled ``weight_decay``; the defaults are torch's) and its learning-rate
    schedule: the factor at step ``i`` (from 0) is ``min(1, (i + 1) / warmup)`` while
    warming up (``warmup`` > 0), times 1 (``schedule="constant"``) or ``1 - i / steps``
    (``"linear"`` decay to zero at the last step)."""
    if schedule not in SCHEDULES:
        raise ModelWeaveError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))

    def factor(i: int) -> float:
        up = min(1.0, (i + 1) / warmup) if warmup > 0 else 1.0
        return up * (1.0 if schedule == "constant" else 1 - i / steps)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _due(done: int, every: int | None, steps: int) -> bool:
    """Whether a hook run every ``every`` steps (if given) and after the last is due after
    step ``done``."""
    return done == steps or bool(every) and done % every == 0


def train_steps(module: torch.nn.Module, batches: Callable[[int], Batch],
                optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, *, steps: int,
                start: int = 0, device: torch.device | str | None = None,
                evaluate: Callable[[int], dict] | None = None, eval_every: int | None = None,
                save: Callable[[int], None] | None = None, save_every: int | None = None,
                on_step: Callable[[int, float, dict | None], None] | None = None,
                progress: Progress = None) -> list[float]:
    """Train ``module`` (an HF causal LM, or a peft wrapper of one) from step ``start`` to
    ``steps``; return the loss of each step run.

    Args:
        batches: ``batches(step) -> (inputs, targets, mask)`` (:data:`Batch`); moved to
            ``device`` (``None``: used where they are).
        evaluate: called as ``evaluate(done)`` after the first step, every ``eval_every``
            steps (if given) and after the last, in eval mode; its dict goes to ``on_step``.
        save: called as ``save(done)`` every ``save_every`` steps (if given) and after the
            last, in eval mode (after ``evaluate`` when both are due).
        on_step: called after every step as ``on_step(done, loss, record)``, ``record``
            being ``evaluate``'s dict when it ran, else ``None`` (training metrics, not
            progress).
        progress: phase ``"train"``: steps done of ``steps`` (from ``start``).

    The module is in train mode during the steps and left in eval mode.
    """
    def to(x: torch.Tensor) -> torch.Tensor:
        return x if device is None else x.to(device)

    losses, counter = [], Steps(progress, "train", steps, start)
    module.train()
    for step in range(start, steps):
        inputs, targets, mask = batches(step)
        extra = {} if mask is None else {"attention_mask": to(mask)}
        logits = module(input_ids=to(inputs), use_cache=False, **extra).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), to(targets).flatten(),
                               ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        done, record = step + 1, None
        if evaluate is not None and (done == 1 or _due(done, eval_every, steps)):
            module.eval()
            record = evaluate(done)
            module.train()
        if save is not None and _due(done, save_every, steps):
            module.eval()
            save(done)
            module.train()
        if on_step:
            on_step(done, losses[-1], record)
        counter.set(done)
    module.eval()
    return losses
