"""The modules of a block that methods run or hook besides its weights: the norms, the MLP, the
q/k/v projections, named through the adapter so that no method spells an HF module path.

Weights themselves are read through :mod:`modelweave.models.weights` (``model.W_Q[L]`` ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ..errors import ModelWeaveError
from .adapters import projections

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
