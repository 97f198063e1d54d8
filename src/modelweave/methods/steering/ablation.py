"""Directional ablation (Arditi et al. 2024): remove one direction from the residual stream.

With a unit direction ``r``, every write into the residual stream becomes ``x - (x . r) r``:
the embedding (and GPT-2's position embedding), each block's attention output and MLP output
(``hook_embed``, ``hook_pos_embed``, ``blocks.L.hook_attn_out``, ``blocks.L.hook_mlp_out``:
after OLMo-2's post-norms, since that is what joins the residual). The residual stream, a sum
of these writes, then has no component along ``r`` at any layer or position, generated ones
included.

The same change as a *weight edit* (:func:`ablate_weights`): ``W <- W - r rᵀ W`` for every
matrix writing the residual (embedding rows, position embedding rows, attention output and MLP
output projections) and ``b <- b - (b . r) r`` for their biases (GPT-2, Pythia, Llama with
``attention_bias``). Tied embeddings are untied first (else the unembedding would change too).
It equals the hooks exactly where each write is an affine map of its projection's input; with
post-norms (OLMo-2) the norm re-scales and re-introduces the direction, so the edit is refused
(:class:`~modelweave.errors.WeightEditError`): use the hooks there.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...errors import SteeringError, WeightEditError
from ...models.device_map import is_offloaded
from ...models.parts import attn_out_proj, mlp_out_proj, position_embedding, projection_weight
from ...models.steering import check_vector

if TYPE_CHECKING:
    from ...models import Model


def unit(model: Model, direction: torch.Tensor) -> torch.Tensor:
    """The direction [d_model] normalised to length 1 (float32)."""
    direction = check_vector(model, direction).float()
    norm = direction.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise SteeringError(f"cannot ablate a direction of norm {float(norm):g}: it needs a "
                            "non-zero, finite vector (it is normalised to length 1)")
    return direction / norm


def residual_writes(model: Model) -> list[str]:
    """Every site whose output is added into the residual stream, in forward order."""
    names = ["hook_embed"]
    if model.cfg.positional == "learned":
        names.append("hook_pos_embed")
    for layer in range(model.cfg.n_layers):
        names += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"]
    return names


def project_out(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``x - (x . r) r`` along the last axis (``r`` unit, [d_model]); ``x`` keeps its dtype."""
    r = r.to(x.device, torch.float32)
    xf = x.float()
    return (xf - (xf @ r)[..., None] * r).to(x.dtype)


@contextmanager
def ablate_direction(model: Model, direction: torch.Tensor) -> Iterator[Model]:
    """Context in which every residual write of every forward pass (generation included) has
    ``direction`` [d_model] projected out (see the module docstring)."""
    r = unit(model, direction)

    def hook(x: torch.Tensor, _hook) -> torch.Tensor:
        return project_out(x, r)

    with model.hooks([(name, hook) for name in residual_writes(model)]):
        yield model


def check_weight_edit(model: Model) -> None:
    """Raise :class:`WeightEditError` where a weight edit is not equivalent to the hooks."""
    if is_offloaded(model.hf_model):
        raise WeightEditError("weight edits need resident weights; this model keeps some "
                              "offloaded (device map 'disk'): use the hook form "
                              "(ablate_direction)")
    if model.cfg.post_norm:
        raise WeightEditError(
            f"{model.cfg.architecture}: the attention and MLP outputs pass through post-norms "
            "that re-scale them and re-introduce an ablated direction, so no weight edit "
            "equals directional ablation here; use the hook form (ablate_direction)")


def _edit_rows(weight: torch.Tensor, r: torch.Tensor) -> None:
    """In place: rows w <- w - (w . r) r of an embedding [n, d_model]."""
    rf = r.to(weight.device, torch.float32)
    weight.copy_((weight.float() - (weight.float() @ rf)[:, None] * rf).to(weight.dtype))


def _edit_linear(module: torch.nn.Module, r: torch.Tensor) -> None:
    """In place: W <- W - r rᵀ W (W [d_model, in]) and b <- b - (b . r) r."""
    weight = projection_weight(module)  # a view for GPT-2's Conv1D: edited through it
    rf = r.to(weight.device, torch.float32)
    new = weight.float() - torch.outer(rf, rf @ weight.float())
    weight.copy_(new.to(weight.dtype))
    bias = getattr(module, "bias", None)
    if bias is not None:
        bias.copy_((bias.float() - (bias.float() @ rf) * rf).to(bias.dtype))


def _untie(model: Model) -> None:
    hf = model.hf_model
    out, inp = hf.get_output_embeddings(), hf.get_input_embeddings()
    if out is not None and out.weight is inp.weight:
        out.weight = torch.nn.Parameter(inp.weight.detach().clone())
    hf.config.tie_word_embeddings = False
    text_config = getattr(hf.config, "get_text_config", None)
    if text_config is not None:
        text_config().tie_word_embeddings = False


def ablate_weights(model: Model, direction: torch.Tensor, *, inplace: bool = False) -> Model:
    """A model whose weights no longer write ``direction`` into the residual stream (a deep
    copy unless ``inplace``); its logits equal those under :func:`ablate_direction`.

    Raises:
        WeightEditError: for families where the edit is not equivalent (post-norms).
    """
    from ...models import Model

    check_weight_edit(model)
    r = unit(model, direction)
    target = model if inplace else Model(copy.deepcopy(model.hf_model), model.tokenizer,
                                         name=f"{model.name}+ablated")
    if target.tokenization is not None and model.tokenization is not None:
        target.tokenization = model.tokenization
    _untie(target)
    positions = position_embedding(target)
    with torch.no_grad():
        _edit_rows(target.hf_model.get_input_embeddings().weight, r)
        if positions is not None:
            _edit_rows(positions.weight, r)
        for layer in range(target.cfg.n_layers):
            _edit_linear(attn_out_proj(target, layer), r)
            _edit_linear(mlp_out_proj(target, layer), r)
    return target


def save_ablated(model: Model, direction: torch.Tensor, out: str | Path) -> Path:
    """Write the weight-edited model (and its tokenizer) as an HF checkpoint in ``out``;
    ``load_model(out)`` reads it back. Returns ``out``."""
    edited = ablate_weights(model, direction)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    edited.hf_model.save_pretrained(out)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(out)
    return out
