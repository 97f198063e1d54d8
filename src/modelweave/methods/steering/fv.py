"""Function vectors (Todd et al. 2023): the heads that carry an in-context task, and their
summed output as a vector that makes the model do the task.

1. :func:`last_token_acts`: on clean ``shots``-shot prompts, each head's ``hook_z`` and
   ``hook_result`` and each block's output at the last token (and the model's prediction there,
   to keep only queries it answers correctly).
2. :func:`head_effects`: the causal indirect effect of each head: on shuffled-label prompts, set
   the head's ``hook_z`` at the last token to its task mean and measure the change in the
   probability of the answer's first token. Batched through the engine's suffix runner
   (:func:`~modelweave.methods.activation_patching.patch_units`): the patch is at the last
   token, so only that position of the layers from the head's on is recomputed, every head of a
   layer in one pass. Prompts are grouped by token length.
3. :func:`function_vector`: the sum over the top heads of their mean ``hook_result`` at the last
   token: each head's mean output mapped into the residual stream through its slice of the
   output projection, *without* the projection's bias (the reference code adds it once per
   head) and with each head's own ``d_head`` (not ``d_model / n_heads``). For OLMo-2,
   ``hook_result`` is the head's share after the post-norm at each prompt's frozen scale (gain
   ``w``, scale ``s``), so the mean is the mean of what the head wrote into the residual.
   :func:`project_head` maps a ``hook_z`` value the same way (with a given scale for OLMo-2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...engine.suffix import base_run
from ...models.device_map import module_tensor
from ...models.parts import out_norm
from ...progress import Progress, Steps
from ...tasks import TaskBatch
from ..activation_patching import patch_units
from ..grids import Unit


@dataclass
class LastTokenActs:
    """Activations at each prompt's last token. N prompts.

    Attributes:
        z: [N, n_layers, n_heads, d_head] ``hook_z``.
        result: [N, n_layers, n_heads, d_model] ``hook_result`` (no bias; frozen-scale shares
            after OLMo-2's post-norm).
        resid: [N, n_layers, d_model] block outputs (``hook_resid_post``).
        scale: [N, n_layers] the attention post-norm's scale ``s`` (OLMo-2) or ``None``.
        predicted: [N] top-1 next token.
    """

    z: torch.Tensor
    result: torch.Tensor
    resid: torch.Tensor
    scale: torch.Tensor | None
    predicted: torch.Tensor

    def select(self, rows: torch.Tensor) -> LastTokenActs:
        return LastTokenActs(self.z[rows], self.result[rows], self.resid[rows],
                             None if self.scale is None else self.scale[rows],
                             self.predicted[rows])


def last_token_acts(model, batch: TaskBatch, chunk: int = 8, tokens: str = "clean"
                    ) -> LastTokenActs:
    """Run ``batch``'s ``clean`` (or ``corrupt``) prompts, keeping the last token's head and
    block outputs (see :class:`LastTokenActs`), ``chunk`` prompts per pass."""
    cfg = model.cfg
    kinds = ["attn.hook_z", "attn.hook_result", "hook_resid_post"]
    if cfg.post_norm:
        kinds.append("attn.hook_scale")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in [*kinds, "predicted"]}
    for _, sub in batch.chunks(chunk):
        last = sub.lengths.to(model.device) - 1
        rows = torch.arange(len(sub), device=model.device)
        store: dict[tuple[str, int], torch.Tensor] = {}

        def keep(x: torch.Tensor, hook, rows=rows, last=last, store=store) -> None:
            store[(hook.kind, hook.layer)] = x[rows, last].detach().float().cpu()

        hooks = [(f"blocks.{layer}.{k}", keep) for layer in range(cfg.n_layers) for k in kinds]
        logits = model.run_with_hooks(getattr(sub, tokens), hooks, attention_mask=sub.mask)
        for k in kinds:
            parts[k].append(torch.stack([store[(k, layer)] for layer in range(cfg.n_layers)],
                                        dim=1))
        parts["predicted"].append(logits[rows, last].argmax(-1).cpu())
    cat = {k: torch.cat(v) for k, v in parts.items()}
    scale = cat["attn.hook_scale"][..., 0] if cfg.post_norm else None
    return LastTokenActs(cat["attn.hook_z"], cat["attn.hook_result"], cat["hook_resid_post"],
                         scale, cat["predicted"])


def correct_rows(acts: LastTokenActs, batch: TaskBatch) -> torch.Tensor:
    """[N] bool: the top-1 next token is the answer's first token."""
    return acts.predicted == batch.answers.cpu()


def project_head(model, layer: int, head: int, z: torch.Tensor,
                 scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """A head's output ``z`` [..., d_head] mapped into the residual: ``z @ W_O[:, head]ᵀ``,
    no bias; for post-norm families (OLMo-2) times the norm gain and ``scale`` (the frozen
    scale ``s``, e.g. its mean over prompts). Returns [..., d_model] float32."""
    w_h = model.W_O[layer].detach().float()[head]  # [d_head, d_model]
    out = z.float().to(w_h.device) @ w_h
    norm = out_norm(model, layer, "attn")
    if norm is not None:
        if scale is None:
            raise ValueError("post-norm families need the frozen scale to map a head's output")
        gain = module_tensor(norm).detach().float()
        out = gain.to(out.device) * out * torch.as_tensor(scale, dtype=torch.float32,
                                                          device=out.device)
    return out


def length_index_groups(batch: TaskBatch) -> list[list[int]]:
    """The batch's row indices grouped by token length, longest first."""
    lengths = batch.lengths.tolist()
    return [[i for i, n in enumerate(lengths) if n == length]
            for length in sorted(set(lengths), reverse=True)]


def length_groups(batch: TaskBatch) -> list[TaskBatch]:
    """Sub-batches of prompts of one token length each (trimmed), longest first (the rows of
    :func:`length_index_groups`)."""
    return [batch.select(rows).trimmed() for rows in length_index_groups(batch)]


def _answer_prob(answers: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def metric(last: torch.Tensor) -> torch.Tensor:  # [groups, n, vocab] -> [groups, n]
        probs = last.float().softmax(-1)
        ids = answers.to(probs.device)[None, :, None].expand(probs.shape[0], -1, 1)
        return probs.gather(-1, ids)[..., 0]

    return metric


def head_effects(model, batch: TaskBatch, z_mean: torch.Tensor,
                 layers: list[int] | None = None, max_rows: int = 256,
                 progress: Progress = None) -> torch.Tensor:
    """Causal indirect effect of every head, averaged over ``batch``'s corrupted
    (shuffled-label) prompts: P(answer | head's last-token ``hook_z`` := ``z_mean``) -
    P(answer).

    Args:
        z_mean: [n_layers, n_heads, d_head] task means (:class:`LastTokenActs` ``z`` mean).
        layers: the layers to measure (others stay NaN); default every layer.
        progress: phase ``"effects"``: heads patched of all (every prompt-length group).

    Returns:
        [n_layers, n_heads] mean change in the answer's first-token probability.
    """
    cfg = model.cfg
    layers = list(range(cfg.n_layers)) if layers is None else list(layers)
    total = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
    count, groups = 0, list(length_groups(batch))
    steps = Steps(progress, "effects", len(groups) * len(layers) * cfg.n_heads)
    for group in groups:
        n, last = len(group), int(group.lengths[0]) - 1
        names = [f"blocks.{layer}.attn.hook_z" for layer in layers]
        _, base = base_run(model, group.corrupt, names)
        source = {}
        for layer, name in zip(layers, names, strict=True):
            src = base.sites[name].clone()
            src[:, last] = z_mean[layer].to(src.device, src.dtype)
            source[name] = src
        units = [Unit(layer, last, h) for layer in layers for h in range(cfg.n_heads)]
        metric = _answer_prob(group.answers)
        base_p = metric(base.last_logits[None])[0].mean().item()
        raw = patch_units(model, group, base, source, "heads-by-pos", units, metric, max_rows,
                          steps.within())
        for unit, value in raw.items():
            total[unit.layer, unit.index] += n * (value - base_p)
        count += n
    out = (total / max(count, 1)).float()
    missing = [layer for layer in range(cfg.n_layers) if layer not in layers]
    out[missing] = float("nan")
    return out


def top_heads(effects: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The ``k`` ``(layer, head)`` with the largest effects [n_layers, n_heads] (NaN last)."""
    flat = torch.nan_to_num(effects, nan=float("-inf")).flatten()
    order = flat.argsort(descending=True)[:k].tolist()
    n_heads = effects.shape[1]
    return [(i // n_heads, i % n_heads) for i in order]


def function_vector(result_mean: torch.Tensor, heads: list[tuple[int, int]]) -> torch.Tensor:
    """The FV [d_model]: the sum of ``result_mean[layer, head]`` ([n_layers, n_heads,
    d_model], mean ``hook_result`` at the last token) over ``heads``."""
    if not heads:
        return torch.zeros(result_mean.shape[-1])
    return torch.stack([result_mean[layer, head] for layer, head in heads]).sum(0)
