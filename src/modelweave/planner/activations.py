"""Bytes per token of one pass through a model: what autograd saves for the backward pass, and
the transient peak of a pass without gradients.

All figures are bytes per token (one position of one prompt), for activations of ``e`` bytes
per element (4: float32, 2: bfloat16/float16). They were read from the HF modelling code and
checked with ``torch.autograd.graph.saved_tensors_hooks`` (``tests/test_planner.py`` measures
them on tiny models). Per layer of a Llama-style block, autograd saves:

- each RMS norm: its input upcast to float32 (``4 d``), the inverse scale (4), the normalised
  input cast back (``e d``) and the product with the weight (``e d``, the projection's input):
  ``4 d + 4 + 2 e d``; a LayerNorm with bias (GPT-2, Pythia) saves ``2 e d + 8``;
- attention (``sdpa``): rotated queries and keys, values, output (``e (2 H + 2 H_kv) d_head``)
  and the log-sum-exp (``4 H``);
- a gated MLP: gate and up outputs, the activation and the product (``4 e d_mlp``); an in/out
  MLP: the hidden pre- and post-activation (``2 e d_mlp``).

Attention scores are not kept (``sdpa`` recomputes them), so nothing grows with ``T^2``.
"""

from __future__ import annotations

from .shape import ModelShape


def norm_saved(shape: ModelShape, e: int) -> int:
    """Bytes per token one residual norm saves for backward."""
    d = shape.d_model
    return 2 * e * d + 8 if shape.layer_norm else 4 * d + 4 + 2 * e * d


def attention_saved(shape: ModelShape, e: int, kv_heads: int | None = None) -> int:
    """Bytes per token one attention layer saves (``kv_heads``: the key/value heads attention
    really sees; circuit methods repeat them per query head)."""
    kv = shape.n_kv_heads if kv_heads is None else kv_heads
    return e * (2 * shape.n_heads + 2 * kv) * shape.d_head + 4 * shape.n_heads


def mlp_saved(shape: ModelShape, e: int) -> int:
    """Bytes per token one MLP saves."""
    return (4 if shape.gated_mlp else 2) * e * shape.d_mlp


def saved_per_token(shape: ModelShape, e: int) -> int:
    """Bytes per token autograd saves for one plain forward pass with gradients (all layers
    plus the final norm); parameters themselves are not counted."""
    layer = 2 * norm_saved(shape, e) + attention_saved(shape, e) + mlp_saved(shape, e)
    return shape.n_layers * layer + norm_saved(shape, e) + 8


def eap_saved_per_token(shape: ModelShape, e: int) -> int:
    """Bytes per token a gradient pass of EAP/EAP-IG holds (``circuits.gradients._run``):
    the plain pass's saved tensors, with attention at query-head width (keys and values are
    repeated per query head), plus what its hooks keep: each projection's output per query
    head (``3 e H d_head``) and, below float32, the block and MLP-norm inputs (``2 e d``; in
    float32 the norms save these very tensors)."""
    h, dh, d = shape.n_heads, shape.d_head, shape.d_model
    attention = attention_saved(shape, e, kv_heads=h) + 3 * e * h * dh
    kept = 2 * e * d if e < 4 else 0
    layer = 2 * norm_saved(shape, e) + attention + mlp_saved(shape, e) + kept
    return shape.n_layers * layer + norm_saved(shape, e) + e * shape.d_model + 8


def forward_transient_per_token(shape: ModelShape, e: int) -> int:
    """Peak bytes per token of the tensors alive inside one layer of a pass without gradients:
    the residual, the normed input and the attention output (``3 e d``), queries, keys and
    values repeated per query head (``e 3 H d_head``), and three MLP-wide tensors (the
    activation, the up projection and their product, ``3 e d_mlp``)."""
    mlp = (3 if shape.gated_mlp else 2) * e * shape.d_mlp
    return 3 * e * shape.d_model + 3 * e * shape.n_heads * shape.d_head + mlp
