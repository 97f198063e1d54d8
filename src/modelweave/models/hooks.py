"""Installing TransformerLens-named hooks on an unmodified HF model.

``installed(model, requests)`` registers plain PyTorch forward (pre-)hooks on the modules the
adapter names, for exactly the requested sites, and removes them on exit. A hook function has
the TransformerLens signature ``fn(tensor, hook) -> tensor | None``; returning a tensor
replaces the activation. Sites that HF computes only implicitly are derived here:

- ``hook_z``: the input of the output projection, viewed per head.
- ``hook_result``: each head's share of the output projection, ``z_h @ W_O[:, h]ᵀ``; when a hook
  replaces it, the projection's output becomes ``sum_h result + b_O`` (computed as the original
  output plus the summed change, so an unchanged value stays bit-exact). With post-norms
  (OLMo-2) it is the share at the norm's frozen scale, ``w * (z_h @ W_O[:, h]ᵀ) * s`` (see
  :mod:`.postnorm`), and a replacement's change is added to the norm's output.
- ``attn.hook_scale``/``mlp.hook_scale`` (post-norms only): ``s`` [batch, pos, 1]; a replacement
  rescales the norm's output.
- ``hook_resid_mid``: ``resid_pre + attn_out``; a replacement ``new_mid`` is applied by adding
  ``new_mid - resid_mid`` to the attention contribution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import HookError
from .adapters import linear_weight
from .attention import pattern_hooks
from .postnorm import at_scale, inverse_scale
from .sites import Site, parse_site

if TYPE_CHECKING:
    from .model import Model


@dataclass(frozen=True)
class Hook:
    """Passed to every hook function: the site's full ``name``, its ``kind`` and ``layer``."""

    name: str
    kind: str
    layer: int | None


HookFn = Callable[[torch.Tensor, Hook], "torch.Tensor | None"]


def _apply(fns: list[HookFn], value: torch.Tensor, hook: Hook) -> torch.Tensor:
    """Run hook functions in order; each may return a replacement of the same shape. A
    replacement computed on another device (a patch from a cache kept elsewhere, on a model
    split over devices) is moved to the hooked activation's device."""
    for fn in fns:
        out = fn(value, hook)
        if out is not None:
            if out.shape != value.shape:
                raise HookError(
                    f"hook on {hook.name} returned shape {tuple(out.shape)}, "
                    f"expected {tuple(value.shape)}"
                )
            value = out if out.device == value.device else out.to(value.device)
    return value


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _with_first(out, value):
    return (value, *out[1:]) if isinstance(out, tuple) else value


class _Installer:
    """Registers the torch hooks for one set of requests; ``handles`` are removed on exit."""

    def __init__(self, model: Model, requests: dict[Site, list[HookFn]]):
        self.model, self.cfg, self.adapter = model, model.cfg, model.adapter
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.patterns: dict[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]] = {}
        self.fns = {site.name: fns for site, fns in requests.items()}
        self.hooks = {site.name: Hook(site.name, site.kind, site.layer) for site in requests}

    # helpers ---------------------------------------------------------------------------
    def _get(self, kind: str, layer: int | None = None):
        name = kind if layer is None else f"blocks.{layer}.{kind}"
        return (self.fns[name], self.hooks[name]) if name in self.fns else (None, None)

    def _forward(self, module: torch.nn.Module, kind: str, layer: int | None = None) -> None:
        """Hook on a module's output (first element if it returns a tuple)."""
        fns, hook = self._get(kind, layer)
        if fns is None:
            return

        def fwd(_module, _args, out):
            value = _first(out)
            new = _apply(fns, value, hook)
            return None if new is value else _with_first(out, new)

        self.handles.append(module.register_forward_hook(fwd))

    # sites -----------------------------------------------------------------------------
    def install(self) -> None:
        hf, a = self.model.hf_model, self.adapter
        self._forward(hf.get_submodule(a.embed), "hook_embed")
        if a.pos_embed:
            self._forward(hf.get_submodule(a.pos_embed), "hook_pos_embed")
        layers = sorted({s.layer for s in self.hooks.values() if s.layer is not None})
        for layer in layers:
            self._install_block(layer)
        self._forward(hf.get_submodule(a.final_norm), "ln_final.hook_normalized")
        fns, hook = self._get("logits")
        if fns is not None:

            def logits_hook(_module, _args, out):
                new = _apply(fns, out.logits, hook)
                if new is not out.logits:
                    out["logits"] = new
                return out

            self.handles.append(hf.register_forward_hook(logits_hook))

    def _install_block(self, layer: int) -> None:
        a, cfg = self.adapter, self.cfg
        block = self.model.block(layer)
        state: dict[str, torch.Tensor] = {}
        pre_fns, pre_hook = self._get("hook_resid_pre", layer)
        mid_fns, mid_hook = self._get("hook_resid_mid", layer)
        if pre_fns is not None or mid_fns is not None:
            device = self.model.layer_device(layer)

            def resid_pre(_module, args, kwargs):
                positional = bool(args)
                raw = args[0] if positional else kwargs["hidden_states"]
                x = raw.to(device)  # from the previous layer's device on to this block's
                new = _apply(pre_fns, x, pre_hook) if pre_fns else x
                state["resid_pre"] = new
                if new is raw:
                    return None
                if positional:
                    return (new, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": new}

            self.handles.append(block.register_forward_pre_hook(resid_pre, with_kwargs=True))

        for path, kinds in a.qkv.modules().items():
            self._install_qkv(block.get_submodule(path), kinds, layer)

        fns, hook = self._get("attn.hook_pattern", layer)
        if fns is not None:
            self.patterns[block.get_submodule(a.attn)] = (
                lambda p, fns=fns, hook=hook: _apply(fns, p, hook)
            )

        out_proj = block.get_submodule(a.out_proj)
        z_fns, z_hook = self._get("attn.hook_z", layer)
        if z_fns is not None:

            def z_pre(_module, args):
                z = args[0]
                heads = z.view(*z.shape[:-1], cfg.n_heads, cfg.d_head)
                new = _apply(z_fns, heads, z_hook)
                return None if new is heads else (new.reshape(z.shape), *args[1:])

            self.handles.append(out_proj.register_forward_pre_hook(z_pre))
        r_fns, r_hook = self._get("attn.hook_result", layer)
        attn_norm = block.get_submodule(a.attn_out_norm) if a.attn_out_norm else None
        if r_fns is not None:

            def result(module, args, out):
                z = args[0].view(*args[0].shape[:-1], cfg.n_heads, cfg.d_head)
                w_o = linear_weight(module).view(cfg.d_model, cfg.n_heads, cfg.d_head)
                per_head = torch.einsum("bphd,mhd->bphm", z, w_o)
                if attn_norm is not None:  # shares at the post-norm's frozen scale
                    scale = inverse_scale(attn_norm, out)[..., None, :]
                    per_head = at_scale(attn_norm, per_head, scale)
                new = _apply(r_fns, per_head, r_hook)
                if new is per_head:
                    return None
                change = (new - per_head).sum(dim=-2)
                if attn_norm is not None:  # joins the residual after the norm
                    state["attn_change"] = change
                    return None
                # add the change rather than re-summing, so an unchanged value is bit-exact
                return out + change

            self.handles.append(out_proj.register_forward_hook(result))
        if attn_norm is not None:
            self._install_post_norm(attn_norm, "attn", layer, state)

        a_fns, a_hook = self._get("hook_attn_out", layer)
        if a_fns is not None or mid_fns is not None:

            def attn_out(_module, _args, out):
                value = _first(out)
                new = _apply(a_fns, value, a_hook) if a_fns else value
                if mid_fns is not None:
                    mid = state["resid_pre"] + new
                    new_mid = _apply(mid_fns, mid, mid_hook)
                    if new_mid is not mid:
                        new = new + (new_mid - mid)
                return None if new is value else _with_first(out, new)

            self.handles.append(block.get_submodule(a.attn_out).register_forward_hook(attn_out))

        post_fns, post_hook = self._get("mlp.hook_post", layer)
        if post_fns is not None:

            def post_pre(_module, args):
                new = _apply(post_fns, args[0], post_hook)
                return None if new is args[0] else (new, *args[1:])

            self.handles.append(block.get_submodule(a.mlp_down).register_forward_pre_hook(post_pre))
        if a.mlp_out_norm:
            self._install_post_norm(block.get_submodule(a.mlp_out_norm), "mlp", layer, state)
        self._forward(block.get_submodule(a.mlp_out), "hook_mlp_out", layer)
        self._forward(block, "hook_resid_post", layer)

    def _install_post_norm(self, norm: torch.nn.Module, part: str, layer: int,
                           state: dict) -> None:
        """``{part}.hook_scale`` on a post-norm, and the change of replaced ``hook_result``
        values (stashed by the output projection's hook) added to its output."""
        fns, hook = self._get(f"{part}.hook_scale", layer)
        if fns is None and part != "attn":
            return

        def post_norm(_module, args, out):
            new = out
            if fns is not None:
                scale = inverse_scale(norm, args[0])
                new_scale = _apply(fns, scale, hook)
                if new_scale is not scale:
                    new = at_scale(norm, args[0], new_scale)
            change = state.pop(f"{part}_change", None)
            if change is not None:
                new = new + change.to(new.dtype)
            return None if new is out else new

        self.handles.append(norm.register_forward_hook(post_norm))

    def _install_qkv(self, module: torch.nn.Module, kinds: tuple[str, ...], layer: int) -> None:
        wanted = {k: self._get(f"attn.hook_{k}", layer) for k in kinds}
        wanted = {k: fh for k, fh in wanted.items() if fh[0] is not None}
        if not wanted:
            return
        layout, cfg = self.adapter.qkv, self.cfg

        def qkv(_module, _args, out):
            parts = layout.split(out, kinds, cfg)
            changed = False
            for kind, (fns, hook) in wanted.items():
                new = _apply(fns, parts[kind], hook)
                if new is not parts[kind]:
                    parts[kind], changed = new, True
            return layout.merge(out, parts, cfg) if changed else None

        self.handles.append(module.register_forward_hook(qkv))


def normalize_requests(
    model: Model, fwd_hooks: list[tuple[str | Callable[[str], bool], HookFn]]
) -> dict[Site, list[HookFn]]:
    """``[(name or name-filter, fn), ...]`` -> validated ``{Site: [fn, ...]}`` in order."""
    from .sites import all_sites

    requests: dict[Site, list[HookFn]] = {}
    for name, fn in fwd_hooks:
        names = [n for n in all_sites(model.cfg) if name(n)] if callable(name) else [name]
        for n in names:
            requests.setdefault(parse_site(n, model.cfg), []).append(fn)
    return requests


@contextmanager
def installed(model: Model, requests: dict[Site, list[HookFn]]) -> Iterator[None]:
    """Context in which ``requests`` are hooked into ``model``; all hooks are removed on exit,
    also when the forward pass raises."""
    installer = _Installer(model, requests)
    with ExitStack() as stack:
        stack.callback(lambda: [h.remove() for h in installer.handles])
        installer.install()
        stack.enter_context(pattern_hooks(model.hf_model, installer.patterns))
        yield
