"""Running a model with a separate input for every receiver: the one mechanism under every
circuit method.

In an ordinary forward pass all receivers of a layer read the same residual stream ``x``. Here
every receiver ``r`` reads ``x + delta_r`` instead, where ``delta_r`` ([batch, pos, d_model])
comes from a callback:

- *evaluating a circuit*: ``delta_r = sum over removed edges s -> r of (corrupted_s - current_s)``,
  so ``r`` sees the corrupted output of every sender it is cut off from;
- *attribution*: ``delta_r = 0`` as a leaf tensor, so ``d metric / d delta_r`` is the gradient
  at ``r``'s input (EAP, EAP-IG).

How each receiver reads ``x + delta_r`` on an unmodified HF model:

- q/k/v of head ``h``: the q/k/v projection's output is replaced by head ``h``'s slice of
  ``W · norm(x + delta_r) + b``, computed per head with the projection's own weights (the same
  FLOPs as the projection). Grouped-query models get one key/value per *query* head (their
  ``num_key_value_groups`` is set to 1 for the run, and per-head key norms get their gain
  repeated to match), as in EAP-IG.
- q/k behind a norm over the whole projection (OLMo-2's ``q_norm``/``k_norm``): head ``h``'s
  query is its slice of ``q_norm(W_q · (x + delta_r) + b)``, the full projection of its own
  input normalised as the model does, so the norm's output is replaced instead (the full
  projection per receiver: ``n_heads`` times the projection's FLOPs, only in layers whose
  inputs change).
- MLP: its input becomes ``norm(x_mlp + delta)``, ``x_mlp`` being the residual it reads.
- logits: the final norm's input becomes ``x + delta``.

Sender outputs are reported through ``on_output``: the embeddings (block 0's input), each
head's ``hook_result`` and each ``hook_mlp_out``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace

import torch

from ..errors import ModelWeaveError, UnsupportedArchitectureError
from ..models import Model
from ..models.adapters import linear_weight, projections
from ..models.adapters.base import SeparateQKV
from ..models.device_map import is_offloaded, module_tensor
from .graph import QKV, Graph

#: ``delta(receivers, n_upstream) -> [batch, pos, n_receivers, d_model]`` or ``None`` (no change).
DeltaFn = Callable[[slice, int], "torch.Tensor | None"]
#: ``on_output(senders, values [batch, pos, n_senders, d_model])``.
OutputFn = Callable[[slice, torch.Tensor], None]


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def check_model(model: Model) -> Graph:
    """The model's graph; a clear error for families the wiring cannot serve."""
    graph = Graph.from_config(model.cfg)
    cfg = model.cfg
    layout = projections(model.adapter)
    if cfg.n_kv_heads != cfg.n_heads and not isinstance(layout, SeparateQKV):
        raise UnsupportedArchitectureError(
            "grouped-query attention with a fused q/k/v projection is not supported")
    if model.adapter.qk_norm == "joint" and model.adapter.attn_in_norm is not None:
        raise UnsupportedArchitectureError(
            "a query/key norm over the whole projection behind an input norm is not supported")
    return graph


def qkv_weights(model: Model, layer: int) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Per-query-head projection weights of one layer, as views where possible.

    Returns:
        kind (``q``/``k``/``v``) -> (W [d_model, n_heads, d_head], b [n_heads, d_head] or None);
        key/value heads are repeated for every query head of their group (a copy only then).
    """
    cfg, block = model.cfg, model.block(layer)
    layout = projections(model.adapter)
    if isinstance(layout, SeparateQKV):
        layout = replace(layout, clip=None)  # clamping applies to outputs, not weights
    weights = {}
    for path, kinds in layout.modules().items():
        module = block.get_submodule(path)
        w = layout.split(linear_weight(module).T, kinds, cfg)  # [d, heads, d_head] views
        bias = module_tensor(module, "bias")
        b = layout.split(bias, kinds, cfg) if bias is not None else {}
        for kind in kinds:
            repeat = cfg.n_heads // w[kind].shape[1]
            weight = w[kind] if repeat == 1 else w[kind].repeat_interleave(repeat, dim=1)
            bias = b[kind].repeat_interleave(repeat, dim=0) if kind in b else None
            weights[kind] = (weight, bias)
    return weights


def joint_norm_heads(model: Model, layer: int, kind: str, x: torch.Tensor) -> torch.Tensor:
    """Queries or keys behind a norm over the whole projection (OLMo-2), one input per head.

    Args:
        kind: ``"q"`` or ``"k"``.
        x: [B, T, n_heads, d_model] the input of each query head's receiver.

    Returns:
        [B, T, n_heads, d_head]: for head ``h``, its (key head's) slice of
        ``norm(W · x[..., h, :] + b)``, the full projection normalised as the model does.
    """
    cfg, block = model.cfg, model.block(layer)
    proj = block.get_submodule(getattr(projections(model.adapter), kind))
    norm = block.get_submodule(getattr(model.adapter.qkv, kind))
    full = x @ linear_weight(proj).T  # [B, T, H, n_out * d_head]
    bias = module_tensor(proj, "bias")
    if bias is not None:
        full = full + bias
    heads = norm.forward(full)  # not norm(...): that would run this module's own hooks
    heads = heads.view(*full.shape[:-1], -1, cfg.d_head)  # [B, T, H, n_out, d_head]
    own = torch.arange(cfg.n_heads, device=x.device)
    return heads[:, :, own, own // (cfg.n_heads // heads.shape[-2])]


@contextmanager
def key_value_per_query_head(model: Model) -> Iterator[None]:
    """Context in which the attention modules expect one key/value head per query head
    (``num_key_value_groups = 1``), so projections may feed them ungrouped keys and values
    (see :func:`ungroup`); restored on exit. A no-op without grouped-query attention."""
    if model.cfg.n_kv_heads == model.cfg.n_heads:
        yield
        return
    adapter, groups = model.adapter, model.cfg.n_heads // model.cfg.n_kv_heads
    modules = [model.block(layer).get_submodule(adapter.attn)
               for layer in range(model.cfg.n_layers)]
    saved = [m.num_key_value_groups for m in modules]
    # per-head key norms (Cohere) carry one gain per key head: repeat it per query head
    norms = [model.block(layer).get_submodule(adapter.qkv.k)
             for layer in range(model.cfg.n_layers)] if adapter.qk_norm == "per_head" else []
    if any(is_offloaded(n) for n in norms):
        raise ModelWeaveError(
            "circuit methods cannot run on this model with its per-head key norms offloaded "
            "(device map 'disk', or 'cpu' beside GPUs); place every layer on a device")
    gains = [(n, name, getattr(n, name)) for n in norms for name in ("weight", "bias")
             if isinstance(getattr(n, name, None), torch.nn.Parameter)]
    for m in modules:
        m.num_key_value_groups = 1
    for norm, name, gain in gains:
        setattr(norm, name, torch.nn.Parameter(gain.detach().repeat_interleave(groups, dim=0),
                                               requires_grad=False))
    try:
        yield
    finally:
        for m, value in zip(modules, saved, strict=True):
            m.num_key_value_groups = value
        for norm, name, gain in gains:
            setattr(norm, name, gain)


def ungroup(out: torch.Tensor, groups: int, d_head: int) -> torch.Tensor:
    """A key or value projection's output [..., kv_heads * d_head] repeated per query head:
    [..., kv_heads * groups * d_head]."""
    heads = out.view(*out.shape[:-1], -1, d_head)
    return heads.repeat_interleave(groups, dim=-2).flatten(-2)


@contextmanager
def wired(model: Model, *, delta: DeltaFn | None = None, on_output: OutputFn | None = None,
          embed: torch.Tensor | None = None) -> Iterator[Graph]:
    """Context in which forward passes of ``model`` run with per-receiver inputs.

    Args:
        delta: receiver input changes (see the module docstring); ``None``: none.
        on_output: called with every sender's output as the pass reaches it.
        embed: [batch, pos, d_model] replacement for the embeddings (block 0's input).

    Yields:
        the model's :class:`Graph`.
    """
    graph = check_model(model)
    with ExitStack() as stack:
        handles: list = []
        stack.callback(lambda: [h.remove() for h in handles])
        stack.enter_context(key_value_per_query_head(model))
        for layer in range(model.cfg.n_layers):
            handles += _wire_block(model, graph, layer, delta, on_output, embed)
        if delta is not None:
            handles.append(_wire_logits(model, graph, delta))
        yield graph


def _wire_logits(model: Model, graph: Graph, delta: DeltaFn):
    r = graph.logits_receiver

    def final_pre(_module, args):
        d = delta(slice(r, r + 1), graph.n_senders)
        return None if d is None else (args[0] + d[:, :, 0].to(args[0].device), *args[1:])

    return model.hf_model.get_submodule(model.adapter.final_norm).register_forward_pre_hook(
        final_pre)


def _norm(block: torch.nn.Module, path: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    return block.get_submodule(path) if path else _identity


def output_hooks(model: Model, graph: Graph, layer: int, on_output: OutputFn) -> list:
    """Hooks reporting a layer's sender outputs (each head's ``hook_result``, the MLP's
    ``hook_mlp_out``) to ``on_output``, detached from autograd."""
    cfg, adapter, block = model.cfg, model.adapter, model.block(layer)
    first_head, m = graph.head(layer, 0), graph.mlp(layer)

    def result_hook(module, args, _out):
        z = args[0].detach().view(*args[0].shape[:-1], cfg.n_heads, cfg.d_head)
        w_o = linear_weight(module).detach().view(cfg.d_model, cfg.n_heads, cfg.d_head)
        on_output(slice(first_head, first_head + cfg.n_heads),
                  torch.einsum("bthe,dhe->bthd", z, w_o))

    def mlp_out_hook(_module, _args, out):
        on_output(slice(m, m + 1), _first(out).detach()[:, :, None])

    return [block.get_submodule(adapter.out_proj).register_forward_hook(result_hook),
            block.get_submodule(adapter.mlp_out).register_forward_hook(mlp_out_hook)]


def _wire_block(model: Model, graph: Graph, layer: int, delta: DeltaFn | None,
                on_output: OutputFn | None, embed: torch.Tensor | None) -> list:
    cfg, adapter = model.cfg, model.adapter
    block, n_heads = model.block(layer), cfg.n_heads
    layout = projections(adapter)
    joint = adapter.qk_norm == "joint"
    groups = n_heads // cfg.n_kv_heads
    weights: dict = {}  # filled on the first pass that changes this layer's q/k/v inputs
    attn_norm, mlp_norm = _norm(block, adapter.attn_in_norm), _norm(block, adapter.mlp_in_norm)
    state: dict[str, torch.Tensor | None] = {}
    handles = []

    device = model.layer_device(layer)

    def block_pre(_module, args, kwargs):
        positional = bool(args)
        x = args[0] if positional else kwargs["hidden_states"]
        # the block's input arrives from the previous layer's device: on to this block's
        replaced = (layer == 0 and embed is not None) or x.device != device
        if layer == 0 and embed is not None:
            x = embed
        x = x.to(device, x.dtype)
        state.clear()
        state["x"] = x
        if layer == 0 and on_output is not None:
            on_output(slice(0, 1), x[:, :, None])
        if not replaced:
            return None
        return ((x, *args[1:]), kwargs) if positional else (args, {**kwargs, "hidden_states": x})

    handles.append(block.register_forward_pre_hook(block_pre, with_kwargs=True))

    qkv = graph.qkv_receivers(layer)

    def projection_hook(kinds: tuple[str, ...]):
        def hook(_module, _args, out):
            if "delta" not in state:  # computed where the senders' outputs are: move here
                d = delta(qkv, graph.upstream(qkv.start)) if delta else None
                state["delta"] = None if d is None else d.to(state["x"].device)
            d = state["delta"]
            if d is None:  # everyone reads x: only ungroup keys and values if needed
                if groups == 1 or kinds == ("q",):
                    return None
                return ungroup(out, groups, cfg.d_head)
            if "normed" not in state:
                state["normed"] = attn_norm(state["x"].unsqueeze(2) + d)  # [B, T, 3H, d]
            if not weights:
                weights.update(qkv_weights(model, layer))
            parts = {}
            for kind in kinds:
                i = QKV.index(kind)
                x = state["normed"][:, :, i * n_heads: (i + 1) * n_heads]  # [B, T, H, d]
                if joint and kind != "v":
                    parts[kind] = joint_norm_heads(model, layer, kind, x)
                    continue
                w, b = weights[kind]
                y = torch.einsum("bthd,dhe->bthe", x, w)
                parts[kind] = y if b is None else y + b
            if len(kinds) == 1:
                return parts[kinds[0]].flatten(-2)
            return layout.merge(out, parts, cfg)

        return hook

    # with a joint q/k norm the receivers' queries and keys are the norms' outputs
    hooked = adapter.qkv if joint else layout
    for path, kinds in hooked.modules().items():
        handles.append(block.get_submodule(path).register_forward_hook(projection_hook(kinds)))

    if on_output is not None:
        handles += output_hooks(model, graph, layer, on_output)

    if delta is not None:
        r = graph.mlp_receiver(layer)

        def attn_out_hook(_module, _args, out):
            state["attn_out"] = _first(out)

        if not cfg.parallel_attn_mlp:
            handles.append(block.get_submodule(adapter.attn_out).register_forward_hook(
                attn_out_hook))

        def mlp_pre(_module, args, kwargs):
            d = delta(slice(r, r + 1), graph.upstream(r))
            if d is None:
                return None
            x = state["x"] if cfg.parallel_attn_mlp else state["x"] + state["attn_out"]
            new = mlp_norm(x + d[:, :, 0].to(x.device))
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        mlp = block.get_submodule(adapter.mlp_down.rpartition(".")[0])
        handles.append(mlp.register_forward_pre_hook(
            mlp_pre, with_kwargs=True))
    return handles
