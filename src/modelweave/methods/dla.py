"""Direct logit attribution: how much each head, MLP and neuron writes, through the frozen
final norm, along the answer direction ``W_U[answer] - mean W_U[wrong]`` at the last position.

The final norm is frozen at the scale it applies to the full residual stream, so it is linear
and the contributions add up: embeddings + heads + attention biases + MLPs + constant terms
(norm and unembedding biases) = the logit difference. With OLMo-2's norms after attention and
MLP, those norms are frozen too (heads are read from ``hook_result``, already their shares at
the norm's scale ``attn.hook_scale``; neurons through ``mlp.hook_scale``), so heads and neurons
add up to their layers there as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..metrics.scores import logit_diff
from ..models import Model
from ..models.device_map import module_tensor
from ..models.parts import final_norm, out_norm
from ..models.postnorm import at_scale
from ..models.weights import has_bias
from ..tasks import TaskBatch


@dataclass
class DLAResult:
    """Mean contributions to the logit difference over prompts.

    Attributes:
        embed: token (+ position) embeddings.
        attn: [layer] whole attention layers (heads + output bias).
        heads: [layer, head] (``None`` only in results saved by older versions).
        mlp: [layer].
        neurons: layer -> [d_mlp], for the layers asked for.
        constant: the norm's and unembedding's biases.
        logit_diff: the model's actual mean logit difference (= the sum of the parts).
        per_prompt: the values before the mean over prompts: ``logit_diff`` and ``embed``
            [N], ``attn`` and ``mlp`` [N, layer], ``heads`` [N, layer, head] (for intervals
            over prompts, :func:`layer_bands`).
    """

    embed: float
    attn: torch.Tensor
    heads: torch.Tensor | None
    mlp: torch.Tensor
    constant: float
    logit_diff: float
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)
    per_prompt: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Sum of the parts (equals ``logit_diff``)."""
        return self.embed + float(self.attn.sum()) + float(self.mlp.sum()) + self.constant


def _frozen_norm(model: Model, final: torch.Tensor):
    """The final norm as a linear map at the scale it applies to ``final`` [batch, d_model].

    Returns (apply(v [batch, ..., d_model]) -> [batch, ..., d_model], constant [batch, d_model])."""
    norm = final_norm(model)
    rms = "rms" in type(norm).__name__.lower()
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-5)
    weight = module_tensor(norm, "weight")
    weight = torch.ones(final.shape[-1], device=final.device) if weight is None else weight.to(
        final.device)
    centred = final if rms else final - final.mean(-1, keepdim=True)
    scale = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps)  # [batch, 1]
    bias = module_tensor(norm, "bias")
    constant = bias.to(final.device) if bias is not None else torch.zeros_like(weight)

    def apply(v: torch.Tensor) -> torch.Tensor:
        v = v if rms else v - v.mean(-1, keepdim=True)
        shape = (final.shape[0],) + (1,) * (v.dim() - 2) + (1,)
        return v * scale.view(shape) * weight

    return apply, constant.expand_as(final)


def _direction(model: Model, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """[batch, d_model] answer-minus-wrong unembedding directions and [batch] bias terms."""
    w_u = model.W_U.T  # [d_vocab, d_model]
    ans = batch.answers.to(w_u.device)
    wrong = batch.wrong_ids.to(w_u.device)
    mask = (wrong >= 0).float()
    wrong_mean = (w_u[wrong.clamp(min=0)] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    direction = w_u[ans] - wrong_mean
    bias = torch.zeros(len(ans), device=w_u.device)
    if has_bias(model, "b_U"):
        b = model.b_U
        bias = b[ans] - (b[wrong.clamp(min=0)] * mask).sum(1) / mask.sum(1)
    return direction * model.logit_scale, bias * model.logit_scale


def direct_logit_attribution(model: Model, batch: TaskBatch, neuron_layers: list[int] = ()
                             ) -> DLAResult:
    """Contributions of every component to the clean prompts' logit difference."""
    cfg = model.cfg
    n = cfg.n_layers
    names = ["blocks.0.hook_resid_pre", f"blocks.{n - 1}.hook_resid_post"]
    names += [f"blocks.{i}.hook_attn_out" for i in range(n)]
    names += [f"blocks.{i}.hook_mlp_out" for i in range(n)]
    names += [f"blocks.{i}.attn.hook_result" for i in range(n)]
    names += [f"blocks.{i}.mlp.hook_post" for i in neuron_layers]
    if cfg.post_norm:
        names += [f"blocks.{i}.mlp.hook_scale" for i in neuron_layers]
    logits, cache = model.run_with_cache(batch.clean, names, attention_mask=batch.mask)
    rows, last = torch.arange(len(batch)), batch.lengths - 1
    with torch.no_grad():
        direction, unembed_bias = _direction(model, batch)

    def at_last(name):  # float32, on the unembedding's device (layers may sit elsewhere)
        return cache[name][rows, last].float().to(direction.device)

    with torch.no_grad():
        apply, norm_bias = _frozen_norm(model, at_last(names[1]))

        def contrib(v):  # v [batch, ..., d_model] -> [batch, ...]
            d = direction.view(direction.shape[0], *([1] * (v.dim() - 2)), -1)
            return (apply(v) * d).sum(-1)

        embed_each = contrib(at_last("blocks.0.hook_resid_pre"))  # [N]
        attn_each = torch.stack([contrib(at_last(f"blocks.{i}.hook_attn_out"))
                                 for i in range(n)], dim=1)  # [N, layer]
        mlp_each = torch.stack([contrib(at_last(f"blocks.{i}.hook_mlp_out"))
                                for i in range(n)], dim=1)
        heads_each = torch.stack([contrib(at_last(f"blocks.{i}.attn.hook_result"))
                                  for i in range(n)], dim=1)  # [N, layer, head]
        embed, attn, mlp = embed_each.mean().item(), attn_each.mean(0), mlp_each.mean(0)
        heads = heads_each.mean(0)
        neurons = {}
        for layer in neuron_layers:
            w_out = model.W_out[layer].float().to(direction.device)  # [d_mlp, d_model]
            post = at_last(f"blocks.{layer}.mlp.hook_post")  # [batch, d_mlp]
            columns = w_out[None].expand(len(batch), -1, -1)  # [batch, d_mlp, d]
            if cfg.post_norm:  # through the MLP's post-norm at its frozen scale
                norm = out_norm(model, layer, "mlp")
                scale = at_last(f"blocks.{layer}.mlp.hook_scale")[:, None]  # [batch, 1, 1]
                columns = at_scale(norm, columns, scale)
            columns = apply(columns)
            neurons[layer] = (post * (columns * direction[:, None]).sum(-1)).mean(0).cpu()
        constant = ((norm_bias * direction).sum(-1) + unembed_bias).mean().item()
        diff = logit_diff(logits, batch)
    per_prompt = {"logit_diff": diff.float().cpu(), "embed": embed_each.cpu(),
                  "attn": attn_each.cpu(), "mlp": mlp_each.cpu(), "heads": heads_each.cpu()}
    return DLAResult(embed, attn.cpu(), heads.cpu(), mlp.cpu(),
                     constant, diff.mean().item(), neurons, per_prompt)


def layer_bands(result: DLAResult, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Per-layer attention and MLP contributions with pointwise bootstrap bands over prompts:
    ``{"attn": Band, "mlp": Band}`` (:func:`~modelweave.metrics.uncertainty.bootstrap_curve`;
    x = layer). Needs ``result.per_prompt``."""
    from ..metrics.uncertainty import ResamplingError, bootstrap_curve

    if not result.per_prompt:
        raise ResamplingError("this DLA result has no per-prompt values to resample")
    return {kind: bootstrap_curve(result.per_prompt[kind], n_resamples=n_resamples, seed=seed)
            for kind in ("attn", "mlp")}
