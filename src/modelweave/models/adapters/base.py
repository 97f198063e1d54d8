"""What an architecture adapter declares: where each hook site lives in an unmodified HF model.

An adapter is data, not code that re-implements the model: module paths (dotted, relative to
the HF ``*ForCausalLM`` root or to one decoder block) plus the layout of the query/key/value
projections. The hook machinery in :mod:`modelweave.models.hooks` turns these paths into sites.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ModelConfig
from ..device_map import module_tensor

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class SeparateQKV:
    """One projection module per q/k/v; outputs are ``[batch, pos, heads*d_head]`` or already
    ``[batch, pos, heads, d_head]`` (Cohere's per-head QK norm)."""

    q: str
    k: str
    v: str
    clip: float | None = None  # OLMo's clip_qkv: the model clamps the projections in place

    def modules(self) -> dict[str, tuple[str, ...]]:
        """Module path -> the q/k/v kinds it produces."""
        return {self.q: ("q",), self.k: ("k",), self.v: ("v",)}

    def split(self, out: torch.Tensor, kinds: tuple[str, ...], cfg: ModelConfig) -> dict:
        """Module output -> ``{kind: [batch, pos, heads, d_head]}``."""
        (kind,) = kinds
        if self.clip is not None:  # what attention will use after the model's in-place clamp
            out = out.clamp(-self.clip, self.clip)
        if out.dim() == 4:
            return {kind: out}
        return {kind: out.view(*out.shape[:-1], -1, cfg.d_head)}

    def merge(self, out: torch.Tensor, parts: dict, cfg: ModelConfig) -> torch.Tensor:
        """Inverse of :meth:`split`: per-head tensors -> a module output shaped like ``out``."""
        (value,) = parts.values()
        return value.reshape(out.shape)

    def split_weight(self, weight: torch.Tensor, kinds: tuple[str, ...], cfg: ModelConfig
                     ) -> dict:
        """One projection's ``[out, in]`` weight -> ``{kind: [heads, d_head, in]}`` (no clip:
        OLMo's clamp acts on activations, not weights)."""
        (kind,) = kinds
        return {kind: weight.view(-1, cfg.d_head, weight.shape[-1])}


@dataclass(frozen=True)
class ConcatQKV:
    """One module whose output is ``[q | k | v]`` along the last axis (GPT-2's ``c_attn``)."""

    module: str

    def modules(self) -> dict[str, tuple[str, ...]]:
        return {self.module: QKV}

    def _sizes(self, cfg: ModelConfig) -> list[int]:
        return [cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head]

    def split(self, out: torch.Tensor, kinds: tuple[str, ...], cfg: ModelConfig) -> dict:
        chunks = out.split(self._sizes(cfg), dim=-1)
        return {k: c.view(*c.shape[:-1], -1, cfg.d_head) for k, c in zip(QKV, chunks, strict=True)}

    def merge(self, out: torch.Tensor, parts: dict, cfg: ModelConfig) -> torch.Tensor:
        return torch.cat([parts[k].flatten(-2) for k in QKV], dim=-1)

    def split_weight(self, weight: torch.Tensor, kinds: tuple[str, ...], cfg: ModelConfig
                     ) -> dict:
        """``[out, in]`` rows of the fused ``[q | k | v]`` -> ``{kind: [heads, d_head, in]}``."""
        chunks = weight.split(self._sizes(cfg), dim=0)
        return {k: c.view(-1, cfg.d_head, c.shape[-1]) for k, c in zip(QKV, chunks, strict=True)}


@dataclass(frozen=True)
class InterleavedQKV:
    """One module whose output is ``[heads, (q | k | v)]`` per head (GPT-NeoX's
    ``query_key_value``)."""

    module: str

    def modules(self) -> dict[str, tuple[str, ...]]:
        return {self.module: QKV}

    def split(self, out: torch.Tensor, kinds: tuple[str, ...], cfg: ModelConfig) -> dict:
        per_head = out.view(*out.shape[:-1], cfg.n_heads, 3 * cfg.d_head)
        return dict(zip(QKV, per_head.split(cfg.d_head, dim=-1), strict=True))

    def merge(self, out: torch.Tensor, parts: dict, cfg: ModelConfig) -> torch.Tensor:
        return torch.cat([parts[k] for k in QKV], dim=-1).reshape(out.shape)

    def split_weight(self, weight: torch.Tensor, kinds: tuple[str, ...], cfg: ModelConfig
                     ) -> dict:
        """``[out, in]`` rows ordered ``[heads, (q | k | v), d_head]`` ->
        ``{kind: [heads, d_head, in]}``."""
        per_head = weight.view(cfg.n_heads, 3 * cfg.d_head, weight.shape[-1])
        return dict(zip(QKV, per_head.split(cfg.d_head, dim=1), strict=True))


QKVLayout = SeparateQKV | ConcatQKV | InterleavedQKV


def linear_weight(module: nn.Module) -> torch.Tensor:
    """Weight of a linear map in ``[out_features, in_features]`` layout.

    Handles ``nn.Linear`` and GPT-2's ``Conv1D`` (which stores ``[in, out]``). Weights that
    accelerate keeps offloaded are read from its store (see :mod:`modelweave.models.device_map`)."""
    if isinstance(module, nn.Linear):
        return module_tensor(module, "weight")
    if type(module).__name__ == "Conv1D":
        return module_tensor(module, "weight").T
    raise TypeError(f"not a linear module: {type(module).__name__}")


def is_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a linear map: ``nn.Linear`` or GPT-2's ``Conv1D``."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def linear_shape(module: nn.Module) -> tuple[int, int, bool]:
    """``(in_features, out_features, has_bias)`` of a linear map (``Conv1D`` stores
    ``[in, out]``)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, module.bias is not None
    d_in, d_out = module.weight.shape
    return d_in, d_out, module.bias is not None


def as_linear(module: nn.Module) -> nn.Linear:
    """An ``nn.Linear`` computing what a ``Conv1D`` computes (weights copied, transposed)."""
    d_in, d_out = module.weight.shape
    linear = nn.Linear(d_in, d_out, bias=module.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(module.weight.T)
        if module.bias is not None:
            linear.bias.copy_(module.bias)
    return linear


@dataclass(frozen=True)
class Adapter:
    """Where the TransformerLens-named sites live in one HF architecture family.

    Root paths are relative to the ``*ForCausalLM`` module; block paths to one decoder block.

    Attributes:
        model_types: HF ``config.model_type`` values this adapter serves.
        make_config: HF config -> :class:`ModelConfig`.
        blocks, embed, final_norm, unembed, pos_embed: root paths.
        qkv: layout of the q/k/v projections inside a block.
        attn: the attention module (its attention function carries ``hook_pattern``).
        out_proj: the attention output projection; its input is ``hook_z``.
        attn_out: module whose output is what attention adds to the residual stream
            (``hook_attn_out``); usually the attention module, a post-attention norm in OLMo-2.
        mlp_down: the MLP output projection; its input is ``mlp.hook_post`` (the neurons).
        mlp_in: the MLP input projection (``W_in``: Llama's ``up_proj``, GPT-2's ``c_fc``).
        mlp_gate: the gate projection of a gated MLP (``W_gate``), ``None`` without a gate.
        mlp_out: module whose output is what the MLP adds to the residual (``hook_mlp_out``).
        attn_out_norm: a norm applied to the projected attention output before it joins the
            residual (OLMo-2), or ``None``; then ``hook_attn_out = norm(sum_h hook_result + b_O)``.
        mlp_out_norm: likewise for the MLP output.
        attn_in_norm: the norm attention reads the residual through (``None`` in OLMo-2,
            which has no pre-norm).
        mlp_in_norm: the norm the MLP reads the residual through (``None``: reads it as is).
        qkv_proj: the q/k/v projections themselves when ``qkv`` names norms applied after them
            (OLMo-2, Cohere with QK norm); ``None`` when ``qkv`` already names projections.
        qk_norm: how those query/key norms act: ``"per_head"`` (each head's ``d_head`` slice on
            its own, with a gain per head: Cohere) or ``"joint"`` (the whole projection, all
            heads together: OLMo-2); ``None`` without such norms.
    """

    model_types: tuple[str, ...]
    make_config: Callable[[object], ModelConfig]
    qkv: QKVLayout
    blocks: str = "model.layers"
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"
    pos_embed: str | None = None
    attn: str = "self_attn"
    out_proj: str = "self_attn.o_proj"
    attn_out: str = "self_attn"
    mlp_down: str = "mlp.down_proj"
    mlp_in: str = "mlp.up_proj"
    mlp_gate: str | None = "mlp.gate_proj"
    mlp_out: str = "mlp"
    attn_out_norm: str | None = None
    mlp_out_norm: str | None = None
    attn_in_norm: str | None = "input_layernorm"
    mlp_in_norm: str | None = "post_attention_layernorm"
    qkv_proj: QKVLayout | None = None
    qk_norm: str | None = None
    notes: str = field(default="", compare=False)


def projections(adapter: Adapter) -> QKVLayout:
    """The layout of the q/k/v projection modules (not of norms applied after them)."""
    return adapter.qkv_proj or adapter.qkv


def standard_config(hf_config, *, parallel: bool = False, positional: str = "rotary",
                    d_mlp: int | None = None) -> ModelConfig:
    """Build a :class:`ModelConfig` from the attribute names most HF configs share."""
    n_heads = hf_config.num_attention_heads
    d_model = hf_config.hidden_size
    d_head = getattr(hf_config, "head_dim", None) or d_model // n_heads
    return ModelConfig(
        architecture=hf_config.model_type,
        n_layers=hf_config.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=getattr(hf_config, "num_key_value_heads", None) or n_heads,
        d_model=d_model,
        d_head=d_head,
        d_mlp=d_mlp if d_mlp is not None else hf_config.intermediate_size,
        d_vocab=hf_config.vocab_size,
        parallel_attn_mlp=parallel,
        positional=positional,
    )
