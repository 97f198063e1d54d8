"""TransformerLens-style weight accessors: ``model.W_Q[L]`` ... ``model.W_U``, read per layer.

Conventions are TransformerLens's: activations multiply weights from the left (``x @ W``), so
``W_Q[L][h]`` maps ``d_model -> d_head`` and ``W_O[L][h]`` maps ``d_head -> d_model``. Per layer
``L`` (``n`` query heads, ``n_kv`` key/value heads):

- ``W_Q[L]`` [n_heads, d_model, d_head]: queries, before any q/k norm and rotary;
  ``b_Q[L]`` [n_heads, d_head].
- ``W_K[L]``, ``W_V[L]`` [n_kv_heads, d_model, d_head]: one per key/value head (grouped-query
  attention); ``b_K[L]``, ``b_V[L]`` [n_kv_heads, d_head].
- ``W_O[L]`` [n_heads, d_head, d_model]: the output projection, per query head; ``b_O[L]``
  [d_model].
- ``W_in[L]`` [d_model, d_mlp]: the MLP input (Llama's ``up_proj``, GPT-2's ``c_fc``);
  ``b_in[L]`` [d_mlp]. ``W_gate[L]`` [d_model, d_mlp], ``b_gate[L]``: the gate of a gated MLP
  (an error in GPT-2 and GPT-NeoX, which have none).
- ``W_out[L]`` [d_mlp, d_model]: the MLP output, read by ``mlp.hook_post``; ``b_out[L]``
  [d_model].
- ``W_E`` [d_vocab, d_model]: the token embedding; ``W_pos`` [n_ctx, d_model]: learned
  positions (GPT-2 only).
- ``W_U`` [d_model, d_vocab], ``b_U`` [d_vocab]: the unembedding, without Cohere's logit scale.

A bias the family lacks reads as zeros (as in TransformerLens), on the weight's device and
dtype. With grouped-query attention ``model.W_K(L, per_query_head=True)`` (also ``W_V``,
``b_K``, ``b_V``) repeats each key/value head for the query heads that read it
(:func:`repeat_kv`): query head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``.

What the weights reproduce (``x`` = the block's attention input: the attention pre-norm of
``hook_resid_pre``, or the residual itself in OLMo-2):

- ``x @ W_Q[L] + b_Q[L]`` is ``attn.hook_q`` where that site is the projection (it is
  pre-rotary in every family); OLMo's ``clip_qkv`` clamps it, and OLMo-2/Cohere's q/k norms
  follow it (their ``hook_q``/``hook_k`` are after the norm).
- ``einsum(z, W_O) summed over heads + b_O`` is ``hook_attn_out`` (OLMo-2: before its
  post-norm); ``hook_post @ W_out + b_out`` is ``hook_mlp_out`` likewise.
- ``ln_final.hook_normalized @ W_U + b_U`` are the logits before Cohere's ``logit_scale``
  (:attr:`~modelweave.models.Model.logit_scale`).

Nothing is stacked over layers (at 8B a stacked copy would double memory): each ``[L]`` reads
that layer's parameters, as views where the layout allows (do not edit them in place), through
:func:`~modelweave.models.device_map.module_tensor` for offloaded weights. Fused and transposed
layouts (GPT-2's ``Conv1D`` ``c_attn``, GPT-NeoX's per-head interleaved ``query_key_value``)
are split by the adapter's q/k/v layout (``split_weight``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch

from ..errors import ModelWeaveError
from .adapters import linear_weight, projections
from .device_map import module_tensor

if TYPE_CHECKING:
    from .model import Model

#: The accessors that have one entry per key/value head.
KV_NAMES = ("W_K", "W_V", "b_K", "b_V")


def repeat_kv(tensor: torch.Tensor, n_heads: int) -> torch.Tensor:
    """A per-key/value-head tensor ``[n_kv_heads, ...]`` -> ``[n_heads, ...]``, each key/value
    head repeated for the query heads of its group (as HF's grouped-query attention reads it)."""
    n_kv = tensor.shape[0]
    if n_heads % n_kv:
        raise ModelWeaveError(f"{n_heads} query heads do not divide into {n_kv} kv heads")
    return tensor if n_kv == n_heads else tensor.repeat_interleave(n_heads // n_kv, dim=0)


class LayerWeights:
    """One weight per layer, read lazily: ``acc[L]``, ``acc(L, per_query_head=...)``,
    ``len(acc)``, ``for w in acc``."""

    def __init__(self, name: str, model: Model, read: Callable[[int], torch.Tensor]):
        self.name, self._model, self._read = name, model, read

    def __getitem__(self, layer: int) -> torch.Tensor:
        n = self._model.cfg.n_layers
        if not isinstance(layer, int) or not -n <= layer < n:
            raise ModelWeaveError(f"{self.name}[{layer!r}]: layer must be an int in [0, {n})")
        return self._read(layer % n)

    def __call__(self, layer: int, *, per_query_head: bool = False) -> torch.Tensor:
        """Layer ``layer``'s weight; ``per_query_head=True`` repeats key/value heads to the
        query heads (``W_K``, ``W_V``, ``b_K``, ``b_V`` only)."""
        value = self[layer]
        if not per_query_head:
            return value
        if self.name not in KV_NAMES:
            raise ModelWeaveError(f"per_query_head applies to {', '.join(KV_NAMES)}, "
                                  f"not {self.name}")
        return repeat_kv(value, self._model.cfg.n_heads)

    def __len__(self) -> int:
        return self._model.cfg.n_layers

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[layer] for layer in range(len(self)))

    def __repr__(self) -> str:
        return f"LayerWeights({self.name}, layers={len(self)})"


def _bias(module: torch.nn.Module, like: torch.Tensor, size: int) -> torch.Tensor:
    bias = module_tensor(module, "bias")
    if bias is None:
        return torch.zeros(size, dtype=like.dtype, device=like.device)
    return bias


def _qkv_module(model: Model, layer: int, kind: str) -> tuple[torch.nn.Module, tuple]:
    layout = projections(model.adapter)
    path, kinds = next((p, k) for p, k in layout.modules().items() if kind in k)
    return model.block(layer).get_submodule(path), kinds


def qkv_weight(model: Model, layer: int, kind: str) -> torch.Tensor:
    """``W_Q``/``W_K``/``W_V`` of ``layer`` (``kind``: q, k, v): ``[heads, d_model, d_head]``."""
    module, kinds = _qkv_module(model, layer, kind)
    split = projections(model.adapter).split_weight(linear_weight(module), kinds, model.cfg)
    return split[kind].transpose(1, 2)


def qkv_bias(model: Model, layer: int, kind: str) -> torch.Tensor:
    """``b_Q``/``b_K``/``b_V`` of ``layer``: ``[heads, d_head]`` (zeros without a bias)."""
    module, kinds = _qkv_module(model, layer, kind)
    weight = linear_weight(module)
    bias = _bias(module, weight, weight.shape[0])
    split = projections(model.adapter).split_weight(bias[:, None], kinds, model.cfg)
    return split[kind][..., 0]


def _module(model: Model, layer: int, path: str | None, what: str) -> torch.nn.Module:
    if path is None:
        raise ModelWeaveError(f"{model.cfg.architecture} has no {what}")
    return model.block(layer).get_submodule(path)


def _out_weight(model: Model, layer: int) -> torch.Tensor:
    cfg = model.cfg
    w = linear_weight(model.block(layer).get_submodule(model.adapter.out_proj))
    return w.T.view(cfg.n_heads, cfg.d_head, cfg.d_model)


def _mlp_weight(path_of: Callable[[Model], str | None], what: str, transpose: bool):
    def read(model: Model, layer: int) -> torch.Tensor:
        w = linear_weight(_module(model, layer, path_of(model), what))
        return w.T if transpose else w

    return read


def _layer_bias(path_of: Callable[[Model], str | None], what: str):
    def read(model: Model, layer: int) -> torch.Tensor:
        module = _module(model, layer, path_of(model), what)
        weight = linear_weight(module)
        return _bias(module, weight, weight.shape[0])

    return read


def _root(model: Model, path: str | None, what: str) -> torch.nn.Module:
    if path is None:
        raise ModelWeaveError(f"{model.cfg.architecture} has no {what}")
    return model.hf_model.get_submodule(path)


def _unembed(model: Model) -> torch.nn.Module:
    out = model.hf_model.get_output_embeddings()
    return out if out is not None else model.hf_model.get_submodule(model.adapter.unembed)


_LAYER: dict[str, Callable[[Model, int], torch.Tensor]] = {
    "W_Q": lambda m, L: qkv_weight(m, L, "q"),
    "W_K": lambda m, L: qkv_weight(m, L, "k"),
    "W_V": lambda m, L: qkv_weight(m, L, "v"),
    "b_Q": lambda m, L: qkv_bias(m, L, "q"),
    "b_K": lambda m, L: qkv_bias(m, L, "k"),
    "b_V": lambda m, L: qkv_bias(m, L, "v"),
    "W_O": _out_weight,
    "b_O": _layer_bias(lambda m: m.adapter.out_proj, "attention output"),
    "W_in": _mlp_weight(lambda m: m.adapter.mlp_in, "MLP input", True),
    "b_in": _layer_bias(lambda m: m.adapter.mlp_in, "MLP input"),
    "W_gate": _mlp_weight(lambda m: m.adapter.mlp_gate, "gated MLP (no W_gate)", True),
    "b_gate": _layer_bias(lambda m: m.adapter.mlp_gate, "gated MLP (no b_gate)"),
    "W_out": _mlp_weight(lambda m: m.adapter.mlp_down, "MLP output", True),
    "b_out": _layer_bias(lambda m: m.adapter.mlp_down, "MLP output"),
}


def layer_weights(model: Model, name: str) -> LayerWeights:
    """The lazy per-layer accessor ``name`` (a key of the table in this module's docstring)."""
    read = _LAYER[name]
    return LayerWeights(name, model, lambda layer: read(model, layer))


class WeightAccessors:
    """The weight accessors :class:`~modelweave.models.Model` exposes (see this module)."""

    # per layer --------------------------------------------------------------------------
    W_Q = property(lambda self: layer_weights(self, "W_Q"),
                   doc="``W_Q[L]``: [n_heads, d_model, d_head].")
    W_K = property(lambda self: layer_weights(self, "W_K"),
                   doc="``W_K[L]``: [n_kv_heads, d_model, d_head].")
    W_V = property(lambda self: layer_weights(self, "W_V"),
                   doc="``W_V[L]``: [n_kv_heads, d_model, d_head].")
    W_O = property(lambda self: layer_weights(self, "W_O"),
                   doc="``W_O[L]``: [n_heads, d_head, d_model].")
    b_Q = property(lambda self: layer_weights(self, "b_Q"), doc="``b_Q[L]``: [n_heads, d_head].")
    b_K = property(lambda self: layer_weights(self, "b_K"),
                   doc="``b_K[L]``: [n_kv_heads, d_head].")
    b_V = property(lambda self: layer_weights(self, "b_V"),
                   doc="``b_V[L]``: [n_kv_heads, d_head].")
    b_O = property(lambda self: layer_weights(self, "b_O"), doc="``b_O[L]``: [d_model].")
    W_in = property(lambda self: layer_weights(self, "W_in"),
                    doc="``W_in[L]``: [d_model, d_mlp].")
    W_gate = property(lambda self: layer_weights(self, "W_gate"),
                      doc="``W_gate[L]``: [d_model, d_mlp] (gated MLPs only).")
    W_out = property(lambda self: layer_weights(self, "W_out"),
                     doc="``W_out[L]``: [d_mlp, d_model].")
    b_in = property(lambda self: layer_weights(self, "b_in"), doc="``b_in[L]``: [d_mlp].")
    b_gate = property(lambda self: layer_weights(self, "b_gate"), doc="``b_gate[L]``: [d_mlp].")
    b_out = property(lambda self: layer_weights(self, "b_out"), doc="``b_out[L]``: [d_model].")

    # whole model ------------------------------------------------------------------------
    @property
    def W_E(self) -> torch.Tensor:
        """Token embedding [d_vocab, d_model]."""
        return module_tensor(_root(self, self.adapter.embed, "token embedding"))

    @property
    def W_pos(self) -> torch.Tensor:
        """Learned position embedding [n_ctx, d_model] (GPT-2; other families have none)."""
        return module_tensor(_root(self, self.adapter.pos_embed, "learned position embedding"))

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding [d_model, d_vocab] (without Cohere's logit scale)."""
        return linear_weight(_unembed(self)).T

    @property
    def b_U(self) -> torch.Tensor:
        """Unembedding bias [d_vocab] (zeros without one)."""
        module = _unembed(self)
        weight = linear_weight(module)
        return _bias(module, weight, weight.shape[0])


_BIAS_PATHS = {"b_O": "out_proj", "b_in": "mlp_in", "b_gate": "mlp_gate", "b_out": "mlp_down"}


def has_bias(model: Model, name: str, layer: int = 0) -> bool:
    """Whether the family has the bias ``name`` (``b_Q`` ... ``b_U``) rather than reading as
    zeros."""
    if name == "b_U":
        module = _unembed(model)
    elif name in ("b_Q", "b_K", "b_V"):
        module = _qkv_module(model, layer, name[-1].lower())[0]
    elif name in _BIAS_PATHS:
        module = _module(model, layer, getattr(model.adapter, _BIAS_PATHS[name]), name)
    else:
        raise ModelWeaveError(f"no bias named {name!r}")
    return module_tensor(module, "bias") is not None
