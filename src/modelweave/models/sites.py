"""Hook site names (TransformerLens vocabulary), their parsing and validation.

Per layer ``L``::

    blocks.L.hook_resid_pre    [batch, pos, d_model]
    blocks.L.attn.hook_q       [batch, pos, n_heads, d_head]      (before rotary)
    blocks.L.attn.hook_k       [batch, pos, n_kv_heads, d_head]   (before rotary)
    blocks.L.attn.hook_v       [batch, pos, n_kv_heads, d_head]
    blocks.L.attn.hook_pattern [batch, n_heads, query_pos, key_pos] (softmaxed)
    blocks.L.attn.hook_z       [batch, pos, n_heads, d_head]      (input of the output projection)
    blocks.L.attn.hook_result  [batch, pos, n_heads, d_model]     (each head's share of attn_out)
    blocks.L.attn.hook_scale   [batch, pos, 1]                    (post-norm scale: OLMo-2 only)
    blocks.L.hook_attn_out     [batch, pos, d_model]              (attention's residual share)
    blocks.L.hook_resid_mid    [batch, pos, d_model]              (sequential blocks only)
    blocks.L.mlp.hook_post     [batch, pos, d_mlp]                (neurons)
    blocks.L.mlp.hook_scale    [batch, pos, 1]                    (post-norm scale: OLMo-2 only)
    blocks.L.hook_mlp_out      [batch, pos, d_model]              (the MLP's residual share)
    blocks.L.hook_resid_post   [batch, pos, d_model]

and ``hook_embed``, ``hook_pos_embed`` (learned positions only), ``ln_final.hook_normalized``
[batch, pos, d_model] and ``logits`` [batch, pos, d_vocab].
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SiteError
from .config import ModelConfig

LAYER_KINDS = (
    "hook_resid_pre",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_pattern",
    "attn.hook_z",
    "attn.hook_result",
    "attn.hook_scale",
    "hook_attn_out",
    "hook_resid_mid",
    "mlp.hook_post",
    "mlp.hook_scale",
    "hook_mlp_out",
    "hook_resid_post",
)
ROOT_KINDS = ("hook_embed", "hook_pos_embed", "ln_final.hook_normalized", "logits")

_SHORT = {k.rsplit("hook_", 1)[-1]: k for k in LAYER_KINDS}
_SHORT.update({"post": "mlp.hook_post", "embed": "hook_embed", "pos_embed": "hook_pos_embed",
               "attn_scale": "attn.hook_scale", "mlp_scale": "mlp.hook_scale"})
del _SHORT["scale"]
_LAYER_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Site:
    """A parsed hook site: its full ``name``, its ``kind`` (name without ``blocks.L.``) and its
    ``layer`` (``None`` for root sites)."""

    name: str
    kind: str
    layer: int | None


def act_name(short: str, layer: int | None = None) -> str:
    """Full site name from a short one: ``act_name("z", 3) == "blocks.3.attn.hook_z"``.

    Short names: resid_pre, q, k, v, pattern, z, result, attn_scale, attn_out, resid_mid, post,
    mlp_scale, mlp_out, resid_post, embed, pos_embed. Full names pass through unchanged."""
    if short in ROOT_KINDS or short.startswith("blocks."):
        return short
    kind = _SHORT.get(short, short)
    if kind in ("hook_embed", "hook_pos_embed"):
        return kind
    if kind not in LAYER_KINDS:
        raise SiteError(f"unknown site {short!r}; short names: {', '.join(sorted(_SHORT))}")
    if layer is None:
        raise SiteError(f"site {short!r} needs a layer")
    return f"blocks.{layer}.{kind}"


def absent_kinds(cfg: ModelConfig) -> dict[str, str]:
    """Site kinds this model does not have, with the reason."""
    absent = {}
    if cfg.parallel_attn_mlp:
        absent["hook_resid_mid"] = (
            f"{cfg.architecture} blocks run attention and MLP in parallel on the same residual, "
            "so there is no residual stream between them"
        )
    if not cfg.post_norm:
        reason = (f"{cfg.architecture} adds attention and MLP outputs to the residual without a "
                  "post-norm, so there is no post-norm scale")
        absent["attn.hook_scale"] = absent["mlp.hook_scale"] = reason
    if cfg.positional != "learned":
        absent["hook_pos_embed"] = f"{cfg.architecture} has no learned position embedding"
    return absent


def parse_site(name: str, cfg: ModelConfig) -> Site:
    """Validate a site name against a model; raise :class:`SiteError` with the reason if bad."""
    absent = absent_kinds(cfg)
    if name in ROOT_KINDS:
        if name in absent:
            raise SiteError(f"site {name!r} is absent: {absent[name]}")
        return Site(name, name, None)
    match = _LAYER_RE.match(name)
    if not match or match.group(2) not in LAYER_KINDS:
        raise SiteError(
            f"unknown site {name!r}; sites are blocks.L.<{'|'.join(LAYER_KINDS)}> or "
            f"{', '.join(ROOT_KINDS)}"
        )
    layer, kind = int(match.group(1)), match.group(2)
    if layer >= cfg.n_layers:
        raise SiteError(f"site {name!r}: layer {layer} out of range (model has {cfg.n_layers})")
    if kind in absent:
        raise SiteError(f"site {name!r} is absent: {absent[kind]}")
    return Site(name, kind, layer)


def all_sites(cfg: ModelConfig) -> list[str]:
    """Every site name this model has, in forward order."""
    absent = absent_kinds(cfg)
    names = [k for k in ("hook_embed", "hook_pos_embed") if k not in absent]
    for layer in range(cfg.n_layers):
        names += [f"blocks.{layer}.{k}" for k in LAYER_KINDS if k not in absent]
    return names + ["ln_final.hook_normalized", "logits"]
