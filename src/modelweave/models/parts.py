"""The modules of a block that methods run, hook or edit besides reading its weights: the
norms, the attention, the MLP, the q/k/v and output projections, named through the adapter so
that no method spells an HF module path.

Weights themselves are read through :mod:`modelweave.models.weights` (``model.W_Q[L]`` ...);
the modules here are for hooks and for in-place edits (:func:`projection_weight`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ModelWeaveError
from .adapters import linear_weight, projections

if TYPE_CHECKING:
    from .model import Model


def final_norm(model: Model) -> nn.Module:
    """The norm before the unembedding (``ln_final``)."""
    return model.hf_model.get_submodule(model.adapter.final_norm)


def attn_in_norm(model: Model, layer: int) -> nn.Module | None:
    """The norm attention reads the residual through (``None``: OLMo-2 has no pre-norm)."""
    path = model.adapter.attn_in_norm
    return model.block(layer).get_submodule(path) if path else None


def mlp_in_norm(model: Model, layer: int) -> nn.Module | None:
    """The norm the MLP reads the residual through (``None``: it reads the residual as is)."""
    path = model.adapter.mlp_in_norm
    return model.block(layer).get_submodule(path) if path else None


def out_norm(model: Model, layer: int, part: str) -> nn.Module | None:
    """The post-norm on the ``part`` (``"attn"`` or ``"mlp"``) output before it joins the
    residual (OLMo-2), or ``None`` for families without one."""
    if part not in ("attn", "mlp"):
        raise ModelWeaveError(f"part must be 'attn' or 'mlp', not {part!r}")
    path = model.adapter.attn_out_norm if part == "attn" else model.adapter.mlp_out_norm
    return model.block(layer).get_submodule(path) if path else None


def attention(model: Model, layer: int) -> nn.Module:
    """The attention module of ``layer`` (the one whose attention function carries
    ``hook_pattern``; :func:`~modelweave.models.attention.captured_attention` records it)."""
    return model.block(layer).get_submodule(model.adapter.attn)


def attn_out_proj(model: Model, layer: int) -> nn.Module:
    """The attention output projection of ``layer`` (``W_O``/``b_O``'s module)."""
    return model.block(layer).get_submodule(model.adapter.out_proj)


def mlp_out_proj(model: Model, layer: int) -> nn.Module:
    """The MLP output projection of ``layer`` (``W_out``/``b_out``'s module)."""
    return model.block(layer).get_submodule(model.adapter.mlp_down)


def position_embedding(model: Model) -> nn.Module | None:
    """The learned position embedding (GPT-2; ``W_pos``'s module), or ``None`` for families
    without one."""
    path = model.adapter.pos_embed
    return model.hf_model.get_submodule(path) if path else None


def projection_weight(module: nn.Module) -> torch.Tensor:
    """The weight of a linear module (``nn.Linear`` or GPT-2's ``Conv1D``) as ``[out, in]``:
    the parameter itself, or a view of it for ``Conv1D``, so an in-place edit of the returned
    tensor edits the model."""
    return linear_weight(module)


def qk_normed(model: Model) -> bool:
    """Whether a norm acts on the projections' queries/keys before attention reads them
    (OLMo-2's and Cohere's q/k norms), so ``W_Q``/``W_K`` alone do not give them."""
    return model.adapter.qkv_proj is not None or model.adapter.qk_norm is not None


def mlp_module(model: Model, layer: int) -> nn.Module:
    """The MLP of ``layer`` (the parent of its output projection)."""
    return model.block(layer).get_submodule(model.adapter.mlp_down.rpartition(".")[0])


def is_gated(model: Model) -> bool:
    """Whether the MLP is gated (SwiGLU-style: ``W_gate`` exists)."""
    return model.adapter.mlp_gate is not None


def qkv_clip(model: Model) -> float | None:
    """OLMo's ``clip_qkv``: the model clamps q, k and v to ``[-clip, clip]`` (``None``: no
    clamp)."""
    return getattr(model.adapter.qkv, "clip", None)


def qkv_modules(model: Model, layer: int, *, after_norm: bool = False
                ) -> list[tuple[nn.Module, tuple[str, ...]]]:
    """The q/k/v projection modules of ``layer`` with the kinds each produces: one per kind,
    or one fused module producing ``("q", "k", "v")``. With ``after_norm``, the modules whose
    outputs the ``attn.hook_q/k/v`` sites are (q/k norms where a family has them)."""
    layout = model.adapter.qkv if after_norm else projections(model.adapter)
    block = model.block(layer)
    return [(block.get_submodule(path), kinds) for path, kinds in layout.modules().items()]


def qkv_module(model: Model, layer: int, kind: str, *, after_norm: bool = False) -> nn.Module:
    """The module producing ``kind`` (q, k or v) of ``layer``: its projection, or with
    ``after_norm`` the module whose output ``attn.hook_{kind}`` is (a q/k norm in OLMo-2 and
    Cohere with QK norm; the projection elsewhere)."""
    layout = model.adapter.qkv if after_norm else projections(model.adapter)
    path = next(p for p, kinds in layout.modules().items() if kind in kinds)
    return model.block(layer).get_submodule(path)


# module paths (relative to the HF root), for tools that address modules by name ----------
def block_path(model: Model, layer: int) -> str:
    """The path of decoder block ``layer`` (``"model.layers.3"``)."""
    return f"{model.adapter.blocks}.{layer}"


def mlp_path(model: Model, layer: int) -> str:
    """The path of the MLP of ``layer`` (the parent of its output projection)."""
    parent = model.adapter.mlp_down.rpartition(".")[0]
    return f"{block_path(model, layer)}.{parent}" if parent else block_path(model, layer)


def mlp_down_path(model: Model, layer: int) -> str:
    """The path of the MLP output projection of ``layer``."""
    return f"{block_path(model, layer)}.{model.adapter.mlp_down}"


def unembed_paths(model: Model) -> set[str]:
    """The paths the unembedding goes by (its adapter path and, when tied or renamed, the
    name of the module HF returns as the output embeddings)."""
    out = model.hf_model.get_output_embeddings()
    return {model.adapter.unembed,
            *(name for name, m in model.hf_model.named_modules() if m is out)}
