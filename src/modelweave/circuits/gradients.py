"""The metric's gradient at every receiver's input, from ordinary forward+backward passes.

Each receiver reads the residual ``x`` through a norm and (for q/k/v) one head's slice of a
projection, so its gradient is ``J_norm(x)ᵀ W_hᵀ g_h``, where ``g_h`` is the gradient at head
``h``'s slice of the projection output. The pass itself is the unmodified model; hooks only
keep ``x`` and the tensors whose gradients are needed:

- q/k/v: each projection's output (grouped-query keys and values are first repeated per query
  head, so every query head has its own key/value gradient, as in EAP-IG);
- MLP: the MLP's input (a copy, so a norm shared with attention, as in Cohere, is not mixed);
- logits: the final norm's input.

Afterwards ``W_hᵀ g_h`` is one batched matmul per layer and ``J_normᵀ`` a closed form
(:mod:`.norms`). The result equals differentiating ``x + delta_r`` per receiver (what
:func:`~.wiring.wired` does), at the cost of a plain backward pass plus small extras.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from ..models import Model
from ..models.adapters import projections
from ..models.adapters.base import SeparateQKV
from ..models.parts import (
    attn_in_norm,
    final_norm,
    mlp_in_norm,
    mlp_module,
    qkv_module,
    qkv_modules,
)
from .graph import QKV
from .norms import ProjectedPullback, joint_norm_pullback, norm_vjp
from .wiring import (
    OutputFn,
    check_model,
    key_value_per_query_head,
    output_hooks,
    qkv_weights,
    ungroup,
)


def _head_weights(model: Model, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's q, k and v projections per query-head slot: weight [d_model, 3 * n_heads,
    d_head] and bias [3 * n_heads, d_head] or None."""
    parts = qkv_weights(model, layer)
    weight = torch.cat([parts[k][0] for k in QKV], dim=1)
    if all(parts[k][1] is None for k in QKV):
        return weight, None
    zeros = weight.new_zeros(model.cfg.n_heads, model.cfg.d_head)
    return weight, torch.cat([zeros if parts[k][1] is None else parts[k][1] for k in QKV])


def _run(model: Model, tokens: torch.Tensor, objective, embed, mask,
         on_output: OutputFn | None = None) -> list[dict]:
    """One forward+backward pass; per layer the residuals and the gradients the hooks kept.
    ``on_output`` receives the run's sender outputs."""
    cfg, adapter = model.cfg, model.adapter
    graph = check_model(model)
    layout = projections(adapter)
    clip = layout.clip if isinstance(layout, SeparateQKV) else None
    joint = adapter.qk_norm == "joint"
    groups = cfg.n_heads // cfg.n_kv_heads
    layers: list[dict] = [{"proj": {}} for _ in range(cfg.n_layers)]
    handles = []
    final: dict[str, torch.Tensor] = {}

    def block_pre(layer):
        device = model.layer_device(layer)

        def hook(_module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            # the block's input arrives from the previous layer's device: on to this block's
            replaced = (layer == 0 and embed is not None) or x.device != device
            if layer == 0 and embed is not None:
                x = embed
            x = x.to(device, x.dtype)
            layers[layer]["x"] = x
            if layer == 0 and on_output is not None:
                on_output(slice(0, 1), x.detach()[:, :, None])
            if not replaced:
                return None
            return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})
        return hook

    def pre_norm(layer, kind):
        def hook(_module, _args, out):
            layers[layer].setdefault("pre", {})[kind] = out.detach()
        return hook

    def projection(layer, kinds):
        def hook(_module, _args, out):
            if groups > 1 and kinds != ("q",):
                out = ungroup(out, groups, cfg.d_head)
            if clip is not None:  # the model clamps in place afterwards: keep where it passes
                layers[layer].setdefault("inside", {})[kinds] = out.detach().abs() < clip
            layers[layer]["proj"][kinds] = out
            layers[layer].setdefault("values", {})[kinds] = out.detach()
            return out
        return hook

    def mlp_pre(layer):
        def hook(_module, args, kwargs):
            x = (args[0] if args else kwargs["hidden_states"]).clone()
            layers[layer]["mlp_in"] = x
            return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})
        return hook

    def keep(layer, key):
        def hook(_module, args):
            layers[layer][key] = args[0]
        return hook

    def final_pre(_module, args):
        final["x"] = args[0].clone()
        return (final["x"], *args[1:])

    try:
        for layer in range(cfg.n_layers):
            block = model.block(layer)
            handles.append(block.register_forward_pre_hook(block_pre(layer), with_kwargs=True))
            # behind a joint q/k norm, the receivers' queries and keys are the norms' outputs
            for module, kinds in qkv_modules(model, layer, after_norm=joint):
                handles.append(module.register_forward_hook(projection(layer, kinds)))
            if joint:
                for kind in ("q", "k"):
                    handles.append(qkv_module(model, layer, kind).register_forward_hook(
                        pre_norm(layer, kind)))
            handles.append(mlp_module(model, layer).register_forward_pre_hook(
                mlp_pre(layer), with_kwargs=True))
            mlp_norm = mlp_in_norm(model, layer)
            if mlp_norm is not None:
                handles.append(mlp_norm.register_forward_pre_hook(keep(layer, "x_mlp")))
            if on_output is not None:
                handles += output_hooks(model, graph, layer, on_output)
        handles.append(final_norm(model).register_forward_pre_hook(final_pre))
        with torch.enable_grad(), key_value_per_query_head(model):
            value = objective(model.forward(tokens, attention_mask=mask, grad=True))
            wanted = [t for info in layers for t in (*info["proj"].values(), info["mlp_in"])]
            grads = iter(torch.autograd.grad(value, [*wanted, final["x"]]))
    finally:
        for h in handles:
            h.remove()
    for info in layers:
        info["proj"] = {kinds: next(grads) for kinds in info["proj"]}
        info["mlp_in"] = next(grads)
        info.setdefault("x_mlp", info["x"])
    layers.append({"logits": next(grads)})
    return layers


def receiver_gradients(model: Model, tokens: torch.Tensor,
                       objective: Callable[[torch.Tensor], torch.Tensor],
                       embeds: Sequence[torch.Tensor | None] = (None,),
                       mask: torch.Tensor | None = None,
                       on_output: OutputFn | None = None,
                       select: torch.Tensor | None = None,
                       ) -> list[tuple[slice, int, torch.Tensor]]:
    """Gradient of ``objective(logits)`` (a scalar) at every receiver input, summed over runs.

    Args:
        tokens: [B, T]; objective: logits [B, T, vocab] -> scalar tensor.
        embeds: one run per entry, each with that [B, T, d] embedding (``None``: the tokens' own).
        on_output: receives the sender outputs of the *first* run (saves a separate pass when
            that run is one whose outputs are needed anyway).
        select: [B, T] bool, the tokens whose gradients are wanted (default: all); e.g. only
            tokens where clean and corrupted activations can differ.

    Returns:
        ``[(receivers, n_upstream, grad [K, len(receivers), d] float32), ...]`` for the K
        selected tokens in row-major (batch, position) order, in forward order of receivers,
        one entry per group of receivers that read the same senders ``0 .. n_upstream-1``
        (a layer's q/k/v receivers, its MLP, the logits).
    """
    graph = check_model(model)
    cfg, adapter = model.cfg, model.adapter
    layout = projections(adapter)
    if isinstance(layout, SeparateQKV):
        layout = replace(layout, clip=None)
    b, t = tokens.shape
    pullbacks = []
    for layer in range(cfg.n_layers):
        pullbacks.append(ProjectedPullback(attn_in_norm(model, layer),
                                           *_head_weights(model, layer)))
    # float32 sums, each on the device of the layer it belongs to (a split model's layers
    # compute on different devices); results are gathered on the input device
    devices = [model.layer_device(layer) for layer in range(cfg.n_layers)]
    mlp_totals = [torch.zeros(b, t, 1, cfg.d_model, device=dev) for dev in devices]
    logits_total = torch.zeros(b, t, 1, cfg.d_model,
                               device=model.site_device("ln_final.hook_normalized"))
    # joint q/k norms: a residual-space term per q/k slot besides the projection pullback
    corrections = [torch.zeros(b, t, 3 * cfg.n_heads, cfg.d_model, device=dev)
                   if adapter.qk_norm == "joint" else None for dev in devices]
    for step, embed in enumerate(embeds):
        layers = _run(model, tokens, objective, embed, mask, on_output if step == 0 else None)
        with torch.no_grad():
            for layer in range(cfg.n_layers):
                info = layers[layer]
                heads, values = {}, {}
                for kinds, grad in info["proj"].items():
                    if "inside" in info:
                        grad = grad * info["inside"][kinds]
                    heads.update(layout.split(grad, kinds, cfg))
                    values.update(layout.split(info["values"][kinds], kinds, cfg))
                if "pre" in info:  # joint q/k norm: through it, per head (OLMo-2)
                    for kind in ("q", "k"):
                        w = getattr(model, f"W_{kind.upper()}")[layer]  # [heads, d_model, dh]
                        heads[kind], extra = joint_norm_pullback(
                            qkv_module(model, layer, kind, after_norm=True),
                            w.transpose(1, 2).flatten(0, 1), info["pre"][kind], heads[kind])
                        i = QKV.index(kind) * cfg.n_heads
                        corrections[layer][:, :, i: i + cfg.n_heads] += extra.to(
                            corrections[layer].device)
                pullbacks[layer].add(info["x"], torch.cat([heads[k] for k in QKV], dim=2),
                                     torch.cat([values[k] for k in QKV], dim=2))
                mlp_totals[layer] += norm_vjp(mlp_in_norm(model, layer), info["x_mlp"],
                                              info["mlp_in"][:, :, None]).to(devices[layer])
            logits_total += layers[-1]["logits"].float()[:, :, None].to(logits_total.device)
            del layers
    flat = None if select is None else torch.nonzero(select.flatten().to(model.device))[:, 0]

    def pick(grad: torch.Tensor) -> torch.Tensor:  # [B, T, R, d] -> [K, R, d], input device
        grad = grad.flatten(0, 1)
        return (grad if flat is None else grad[flat.to(grad.device)]).to(model.device)

    out = []
    with torch.no_grad():
        for layer in range(cfg.n_layers):
            qkv = graph.qkv_receivers(layer)
            here = None if flat is None else flat.to(devices[layer])
            qkv_grads = pullbacks[layer].total(here).to(model.device).transpose(0, 1)  # [K,3H,d]
            if corrections[layer] is not None:
                qkv_grads = qkv_grads + pick(corrections[layer])
            out.append((qkv, graph.upstream(qkv.start), qkv_grads))
            r = graph.mlp_receiver(layer)
            out.append((slice(r, r + 1), graph.upstream(r), pick(mlp_totals[layer])))
    r = graph.logits_receiver
    out.append((slice(r, r + 1), graph.n_senders, pick(logits_total)))
    return out
