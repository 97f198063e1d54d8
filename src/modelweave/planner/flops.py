"""FLOP counts of each method and the throughput that turns them into seconds.

A forward pass costs ``2`` FLOPs per weight it multiplies per token (the unembedding included,
the embedding lookup not) plus attention's ``4 T H d_head`` per token and layer (scores and
mix over ``T`` keys); a backward pass twice the forward. Seconds = FLOPs / throughput.

Default throughputs (FLOP/s actually reached, not peak): on CPU :data:`CPU_FLOPS` (measured by
``bench/plan.py`` on this project's 2-core machine, fp32), on a GPU :data:`GPU_FLOPS`
(an assumption: 40% of an H100 SXM's 989 TFLOP/s dense bf16 peak). Pass your own with
``--flops`` / ``flops_per_second``.
"""

from __future__ import annotations

from .shape import ModelShape

CPU_FLOPS = 5.0e10
GPU_FLOPS = 0.4 * 989e12


def forward_flops_per_token(s: ModelShape, seq: int) -> float:
    """FLOPs of one token's forward pass at context length ``seq``."""
    embedding = s.d_vocab * s.d_model
    unembed = embedding  # tied or not, the unembedding multiplies V x d per token
    body = s.n_params - embedding - (0 if s.tied else embedding)
    return 2 * (body + unembed) + 4 * s.n_layers * seq * s.n_heads * s.d_head


def _grid_units(s: ModelShape, grid: str, seq: int) -> tuple[int, float]:
    """(units, mean fraction of positions a suffix pass recomputes) of a patching grid."""
    per_pos = (seq + 1) / (2 * seq)
    return {"heads": (s.n_layers * s.n_heads, 1.0),
            "heads-by-pos": (s.n_layers * s.n_heads * seq, per_pos),
            "neurons": (s.n_layers * s.d_mlp, 1.0)}.get(grid, (s.n_layers * seq, per_pos))


def method_flops(s: ModelShape, kind: str, n: int, seq: int, *, steps: int = 5,
                 grid: str = "heads", layers: list[int] | None = None) -> float:
    """FLOPs of a memory-model kind (``eval``, ``patch``, ``eap``, ``eap-ig``,
    ``attribution``, ``faithfulness``) over ``n`` prompts of ``seq`` tokens (``layers``:
    the patching grid's layers, default all)."""
    fwd = forward_flops_per_token(s, seq) * n * seq
    if kind == "eval":
        return 2 * fwd
    if kind == "patch":
        units, positions = _grid_units(s, grid, seq)
        if layers:  # a suffix from layer l runs (L - l) / L of the model
            units = units // s.n_layers * len(layers)
            share = sum(s.n_layers - layer for layer in layers) / (len(layers) * s.n_layers)
        else:
            share = (s.n_layers + 1) / (2 * s.n_layers)
        unembed = 2 * s.d_vocab * s.d_model * n  # only the last position is unembedded
        return 2 * fwd + units * (fwd * share * positions + unembed)
    if kind in ("eap", "eap-ig"):
        runs = steps if kind == "eap-ig" else 1
        contraction = n * seq * s.d_model * s.n_senders * s.n_receivers  # scores += diff @ g
        return fwd + 3 * runs * fwd + contraction
    if kind == "attribution":
        return 4 * fwd
    if kind == "faithfulness":
        return (3 + 2 * 10) * fwd  # reference runs, empty circuit, two curves of 10 points
    raise ValueError(kind)
