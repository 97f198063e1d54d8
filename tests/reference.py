"""A slow, plain reference forward pass: the oracle the fast circuit and hook machinery is
tested against. Slow on purpose; shares no code with ``circuits/`` or ``models/hooks.py``.

The model is computed layer by layer from its modules' weights, head by head, and every
receiver's input (each head's q, k and v input, each MLP's input, the logits) is *assembled
explicitly* as the sum over its upstream senders of the value it reads from each: the current
run's value for a kept edge, the corrupted value for a removed one. OLMo-2's heads are summed
and passed through their layer's post-norm per receiver; attention output biases are constants.

Edits are given by site name (TransformerLens vocabulary) and applied where the site's
definition says (see :meth:`Reference.run`), so a hook edit can be checked against what it must
do to the logits. Padding is not modelled: use prompts without it.

Shapes: B prompts, T positions, N senders, R receivers, d = d_model, H heads, K key heads.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from modelweave import Model
from modelweave.circuits import Graph

Edit = Callable[[torch.Tensor], torch.Tensor]


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    return weight.float() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    centred = x - x.mean(-1, keepdim=True)
    return weight.float() * centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps)


class Reference:
    """The reference computation of one model (every family with an adapter)."""

    def __init__(self, model: Model):
        self.model, self.cfg, self.a = model, model.cfg, model.adapter
        self.hf = model.hf_model
        self.graph = Graph.from_config(self.cfg)
        self.groups = self.cfg.n_heads // self.cfg.n_kv_heads
        config = self.hf.config
        self.layer_types = getattr(config, "layer_types", None)
        self.window = getattr(config, "sliding_window", None)

    # one head's pieces ---------------------------------------------------------------------
    def projection(self, layer: int, kind: str, x: torch.Tensor) -> torch.Tensor:
        """[B, T, H or K, d_head]: every head's ``kind`` (q, k or v) computed from ``x``."""
        cfg, block = self.cfg, self.model.block(layer)
        attn = block.get_submodule(self.a.attn)
        dh, i = cfg.d_head, "qkv".index(kind)
        if hasattr(attn, "c_attn"):  # GPT-2: Conv1D, output [q | k | v]
            out = x @ attn.c_attn.weight + attn.c_attn.bias
            return out.split(cfg.d_model, dim=-1)[i].view(*x.shape[:2], -1, dh)
        if hasattr(attn, "query_key_value"):  # GPT-NeoX: per head [q | k | v]
            out = F.linear(x, attn.query_key_value.weight, attn.query_key_value.bias)
            return out.view(*x.shape[:2], cfg.n_heads, 3, dh)[:, :, :, i]
        proj = getattr(attn, f"{kind}_proj")
        out = F.linear(x, proj.weight, proj.bias)
        clip = getattr(self.hf.config, "clip_qkv", None)
        if clip is not None:
            out = out.clamp(-clip, clip)
        norm = getattr(attn, f"{kind}_norm", None)
        if norm is not None and norm.weight.dim() == 1:  # OLMo-2: the whole projection
            out = _rms(out, norm.weight, norm.variance_epsilon).to(out.dtype)
        out = out.view(*x.shape[:2], -1, dh)
        if norm is not None and norm.weight.dim() == 2:  # Cohere: each head, its own gain
            out = _layer_norm(out, norm.weight, norm.variance_epsilon).to(out.dtype)
        return out

    def rotate(self, layer: int, q: torch.Tensor, k: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary embedding of q, k [B, T, d_head] as the family applies it (none for GPT-2
        and for Cohere2's global layers)."""
        rotary = getattr(self.hf.base_model, "rotary_emb", None)
        if rotary is None or (self.cfg.architecture == "cohere2" and not self.sliding(layer)):
            return q, k
        attn = self.model.block(layer).get_submodule(self.a.attn)
        apply = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        positions = torch.arange(q.shape[1])[None]
        cos, sin = rotary(q, positions)
        q, k = apply(q[:, None], k[:, None], cos, sin)
        return q[:, 0], k[:, 0]

    def sliding(self, layer: int) -> bool:
        return bool(self.layer_types) and self.layer_types[layer] == "sliding_attention"

    def pattern(self, layer: int, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """[B, T, T] softmax(q kᵀ · scale) under the causal (and sliding-window) mask."""
        attn = self.model.block(layer).get_submodule(self.a.attn)
        scale = getattr(attn, "scaling", None) or self.cfg.d_head ** -0.5
        scores = (q @ k.transpose(-1, -2)).float() * scale
        t = q.shape[1]
        query, key = torch.arange(t)[:, None], torch.arange(t)[None]
        allowed = key <= query
        if self.sliding(layer):
            allowed &= query - key < self.window
        return scores.masked_fill(~allowed, float("-inf")).softmax(-1).to(q.dtype)

    def mlp(self, layer: int, x: torch.Tensor, edits: dict, scale_edit: Edit | None = None
            ) -> torch.Tensor:
        """[B, T, d] the MLP's output (after OLMo-2's post-norm) for its normalised input."""
        block = self.model.block(layer)
        mlp = block.get_submodule(self.a.mlp_down.rpartition(".")[0])
        if hasattr(mlp, "gate_proj"):
            post = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
        elif hasattr(mlp, "c_fc"):
            post = mlp.act(mlp.c_fc(x))
        else:
            post = mlp.act(mlp.dense_h_to_4h(x))
        post = edits.get(f"blocks.{layer}.mlp.hook_post", lambda t: t)(post)
        down = block.get_submodule(self.a.mlp_down)
        out = post @ down.weight if type(down).__name__ == "Conv1D" else F.linear(
            post, down.weight)
        if down.bias is not None:
            out = out + down.bias
        if self.a.mlp_out_norm:
            norm = block.get_submodule(self.a.mlp_out_norm)
            s = torch.rsqrt(out.float().pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
            s = edits.get(f"blocks.{layer}.mlp.hook_scale", lambda t: t)(s)
            out = (norm.weight.float() * out.float() * s).to(out.dtype)
        return out

    def w_out(self, layer: int) -> torch.Tensor:
        """[d, H, d_head] the attention output projection per head."""
        proj = self.model.block(layer).get_submodule(self.a.out_proj)
        w = proj.weight.T if type(proj).__name__ == "Conv1D" else proj.weight
        return w.view(self.cfg.d_model, self.cfg.n_heads, self.cfg.d_head)

    def out_bias(self, layer: int) -> torch.Tensor | None:
        return self.model.block(layer).get_submodule(self.a.out_proj).bias

    def in_norm(self, layer: int, which: str, x: torch.Tensor) -> torch.Tensor:
        path = self.a.attn_in_norm if which == "attn" else self.a.mlp_in_norm
        return self.model.block(layer).get_submodule(path)(x) if path else x

    # the forward pass ------------------------------------------------------------------------
    def run(self, tokens: torch.Tensor, *, removed: torch.Tensor | None = None,
            corrupted: torch.Tensor | None = None, leaves: dict[int, torch.Tensor] | None = None,
            embed: torch.Tensor | None = None, edits: dict[str, Edit] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass.

        Args:
            tokens: [B, T] (no padding).
            removed: [N, R] bool, edges whose receiver reads ``corrupted`` instead.
            corrupted: [B, T, N, d] sender values for removed edges (heads behind a post-norm:
                before it).
            leaves: receiver index -> [B, T, d] added to that receiver's input.
            embed: [B, T, d] the ``input`` sender's value instead of the embeddings.
            edits: site name -> function of the site's value returning its new value.

        Returns:
            (logits [B, T, vocab], sender values [B, T, N, d]).
        """
        cfg, g = self.cfg, self.graph
        edits, leaves = edits or {}, leaves or {}
        ident = lambda t: t  # noqa: E731
        values: dict[int, torch.Tensor] = {}
        # residual edits: (first receiver index they reach, added tensor)
        extras: list[tuple[int, torch.Tensor]] = []

        def reach(receiver: int) -> torch.Tensor:
            total = self.assemble(values, receiver, removed, corrupted)
            for first, extra in extras:
                if receiver >= first:
                    total = total + extra
            return total + leaves[receiver] if receiver in leaves else total

        hf = self.hf
        if embed is None:
            tok = edits.get("hook_embed", ident)(hf.get_input_embeddings()(tokens))
            if self.a.pos_embed:
                positions = torch.arange(tokens.shape[1])[None]
                tok = tok + edits.get("hook_pos_embed", ident)(
                    hf.get_submodule(self.a.pos_embed)(positions))
            embed = tok
        values[0] = embed
        for layer in range(cfg.n_layers):
            self._layer(layer, values, reach, extras, edits)
        final = reach(g.logits_receiver)
        normed = edits.get("ln_final.hook_normalized", ident)(
            hf.get_submodule(self.a.final_norm)(final))
        unembed = hf.get_output_embeddings()
        logits = F.linear(normed, unembed.weight, unembed.bias)
        logits = logits * float(getattr(hf, "logit_scale", 1.0) or 1.0)
        logits = edits.get("logits", ident)(logits)
        return logits, torch.stack([values[s] for s in range(g.n_senders)], dim=2)

    def assemble(self, values: dict[int, torch.Tensor], receiver: int,
                 removed: torch.Tensor | None = None, corrupted: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """[B, T, d] what ``receiver`` reads: each upstream sender's value from ``values``
        (sender index -> [B, T, d]), or from ``corrupted`` [B, T, N, d] where ``removed``
        [N, R] cuts the edge; attention biases added, OLMo-2's heads through their post-norm."""
        cfg, g = self.cfg, self.graph
        n_up = g.upstream(receiver)
        total = torch.zeros_like(values[0])
        heads: dict[int, torch.Tensor] = {}
        for s in range(n_up):
            cut = removed is not None and bool(removed[s, receiver])
            v = corrupted[:, :, s] if cut else values[s]
            layer = (s - 1) // (cfg.n_heads + 1)
            if s > 0 and s != g.mlp(layer) and cfg.post_norm:
                heads[layer] = heads.get(layer, 0) + v
            else:
                total = total + v
        for layer in range(cfg.n_layers):
            if g.head(layer, 0) >= n_up:
                break
            bias = self.out_bias(layer)
            if cfg.post_norm:
                y = heads[layer] + (0 if bias is None else bias)
                norm = self.model.block(layer).get_submodule(self.a.attn_out_norm)
                total = total + _rms(y, norm.weight, norm.variance_epsilon).to(y.dtype)
            elif bias is not None:
                total = total + bias
        return total

    def _residual_edit(self, name: str, first: int, current: torch.Tensor, edits: dict,
                       extras: list) -> None:
        if name in edits:
            extras.append((first, edits[name](current) - current))

    def _layer(self, layer: int, values: dict, reach, extras: list, edits: dict) -> None:
        cfg, g, H = self.cfg, self.graph, self.cfg.n_heads
        ident = lambda t: t  # noqa: E731
        site = f"blocks.{layer}."
        qkv = g.qkv_receivers(layer)
        self._residual_edit(site + "hook_resid_pre", qkv.start, reach(qkv.start), edits, extras)
        # q, k, v of every head from its own receiver's input
        parts = {}
        for i, kind in enumerate("qkv"):
            per_head = []
            for h in range(H):
                x = self.in_norm(layer, "attn", reach(qkv.start + i * H + h))
                heads = self.projection(layer, kind, x)
                per_head.append(heads[:, :, h if kind == "q" else h // self.groups])
            parts[kind] = torch.stack(per_head, dim=2)  # [B, T, H, d_head]
        clip = getattr(self.hf.config, "clip_qkv", None)
        for kind in "qkv":  # k and v sites hold the key heads: one per group
            name = site + f"attn.hook_{kind}"
            if name in edits:
                step = 1 if kind == "q" else self.groups
                new = edits[name](parts[kind][:, :, ::step]).repeat_interleave(step, dim=2)
                parts[kind] = new if clip is None else new.clamp(-clip, clip)  # OLMo clamps
        z = []
        patterns = []
        for h in range(H):
            q, k = self.rotate(layer, parts["q"][:, :, h], parts["k"][:, :, h])
            patterns.append(self.pattern(layer, q, k))
        pattern = edits.get(site + "attn.hook_pattern", ident)(torch.stack(patterns, dim=1))
        for h in range(H):
            z.append(pattern[:, h] @ parts["v"][:, :, h])
        z = edits.get(site + "attn.hook_z", ident)(torch.stack(z, dim=2))  # [B, T, H, d_head]
        raw = torch.einsum("bthe,dhe->bthd", z, self.w_out(layer))  # [B, T, H, d]
        bias = self.out_bias(layer)
        y = raw.sum(2) + (0 if bias is None else bias)
        downstream = g.qkv_receivers(layer + 1).start if layer + 1 < cfg.n_layers \
            else g.logits_receiver
        first_reader = downstream if cfg.parallel_attn_mlp else g.mlp_receiver(layer)
        if cfg.post_norm:
            norm = self.model.block(layer).get_submodule(self.a.attn_out_norm)
            s = torch.rsqrt(y.float().pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
            attn_out = _rms(y, norm.weight, norm.variance_epsilon).to(y.dtype)
            share = (norm.weight.float() * raw.float() * s[:, :, None]).to(y.dtype)
            name = site + "attn.hook_result"
            change = (edits[name](share) - share).sum(2) if name in edits else 0
            new_s = edits.get(site + "attn.hook_scale", ident)(s)
            edited = (norm.weight.float() * y.float() * new_s).to(y.dtype) + change
            for h in range(H):
                values[g.head(layer, h)] = raw[:, :, h]
            self._residual_edit(site + "hook_attn_out", first_reader, edited, edits, extras)
            if name in edits or site + "attn.hook_scale" in edits:
                extras.append((first_reader, edited - attn_out))
        else:
            result = edits.get(site + "attn.hook_result", ident)(raw)
            for h in range(H):
                values[g.head(layer, h)] = result[:, :, h]
            attn_out = result.sum(2) + (0 if bias is None else bias)
            self._residual_edit(site + "hook_attn_out", first_reader, attn_out, edits, extras)
        m = g.mlp_receiver(layer)
        if not cfg.parallel_attn_mlp:
            self._residual_edit(site + "hook_resid_mid", m, reach(m), edits, extras)
        out = self.mlp(layer, self.in_norm(layer, "mlp", reach(m)), edits)
        values[g.mlp(layer)] = edits.get(site + "hook_mlp_out", ident)(out)
        self._residual_edit(site + "hook_resid_post", downstream, reach(downstream), edits,
                            extras)
