"""The computation graph circuits are made of, as EAP-IG and the MIB benchmark define it.

*Senders* (forward nodes) write into the residual stream: ``input`` (the embeddings), every
attention head ``a{L}.h{H}`` (its share of the output projection, ``hook_result``) and every MLP
``m{L}``. *Receivers* read from it: each head's query, key and value inputs
(``a{L}.h{H}<q>``/``<k>``/``<v>``), each MLP's input and the ``logits`` (the final residual).
An edge joins a sender to every receiver downstream of it; in parallel-residual blocks
(GPT-NeoX, Cohere) a layer's heads do not feed that layer's MLP.

Indices follow EAP-IG exactly, so score matrices ``[n_senders, n_receivers]`` line up with
theirs: senders ``input, a0.h0 .. a0.h{H-1}, m0, a1.h0, ...``; receivers per layer ``q`` of
every head, then ``k``, then ``v``, then the MLP, and ``logits`` last. With grouped-query
attention the query heads are the unit: each has its own ``k`` and ``v`` receiver.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from ..errors import ModelWeaveError
from ..models.config import ModelConfig

QKV = ("q", "k", "v")


class CircuitError(ModelWeaveError):
    """Bad circuit input: an incompatible file, an unknown edge, an impossible target."""


@dataclass(frozen=True)
class Graph:
    """Topology of one model's graph (no scores; see :class:`~modelweave.circuits.Circuit`)."""

    n_layers: int
    n_heads: int
    parallel_attn_mlp: bool = False

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> Graph:
        """The graph of a model."""
        return cls(cfg.n_layers, cfg.n_heads, cfg.parallel_attn_mlp)

    # sizes and indices ---------------------------------------------------------------------
    @property
    def n_senders(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_receivers(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1) + 1

    def head(self, layer: int, head: int) -> int:
        """Sender index of head ``a{layer}.h{head}``."""
        return 1 + layer * (self.n_heads + 1) + head

    def mlp(self, layer: int) -> int:
        """Sender index of MLP ``m{layer}``."""
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def qkv_receivers(self, layer: int) -> slice:
        """Receiver indices of a layer's q (all heads), then k, then v: ``3 * n_heads`` of them."""
        start = layer * (3 * self.n_heads + 1)
        return slice(start, start + 3 * self.n_heads)

    def mlp_receiver(self, layer: int) -> int:
        return layer * (3 * self.n_heads + 1) + 3 * self.n_heads

    @property
    def logits_receiver(self) -> int:
        return self.n_receivers - 1

    def upstream(self, receiver: int) -> int:
        """Number of senders that feed ``receiver`` (they are senders ``0 .. n-1``)."""
        if receiver == self.logits_receiver:
            return self.n_senders
        layer, offset = divmod(receiver, 3 * self.n_heads + 1)
        before = 1 + layer * (self.n_heads + 1)
        if offset == 3 * self.n_heads and not self.parallel_attn_mlp:
            return before + self.n_heads  # the MLP also reads this layer's heads
        return before

    # names -------------------------------------------------------------------------------
    @cached_property
    def sender_names(self) -> list[str]:
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"]
        return names

    @cached_property
    def receiver_names(self) -> list[str]:
        names = []
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}<{k}>" for k in QKV for h in range(self.n_heads)]
            names.append(f"m{layer}")
        return names + ["logits"]

    @cached_property
    def receiver_nodes(self) -> list[str]:
        """The node each receiver belongs to (``a3.h1<k>`` -> ``a3.h1``)."""
        return [name.split("<")[0] for name in self.receiver_names]

    @cached_property
    def node_names(self) -> list[str]:
        """Every node: the senders, then ``logits``."""
        return self.sender_names + ["logits"]

    def edge_name(self, sender: int, receiver: int) -> str:
        """MIB's edge name, e.g. ``a0.h1->a2.h3<k>`` or ``m4->logits``."""
        return f"{self.sender_names[sender]}->{self.receiver_names[receiver]}"

    @cached_property
    def _receiver_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.receiver_names)}

    @cached_property
    def _sender_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.sender_names)}

    def parse_edge(self, name: str) -> tuple[int, int]:
        """``"a0.h1->m2"`` -> (sender index, receiver index); a clear error otherwise."""
        sender, _, receiver = name.partition("->")
        if sender not in self._sender_index or receiver not in self._receiver_index:
            raise CircuitError(f"edge {name!r} is not in the graph of a {self.n_layers}-layer, "
                               f"{self.n_heads}-head model")
        s, r = self._sender_index[sender], self._receiver_index[receiver]
        if s >= self.upstream(r):
            raise CircuitError(f"edge {name!r} does not point downstream")
        return s, r

    # masks -------------------------------------------------------------------------------
    @cached_property
    def real_edges(self) -> torch.Tensor:
        """[n_senders, n_receivers] bool: which sender -> receiver pairs are edges."""
        counts = torch.tensor([self.upstream(r) for r in range(self.n_receivers)])
        return torch.arange(self.n_senders)[:, None] < counts[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.real_edges.sum())

    def receiver_to_sender(self) -> torch.Tensor:
        """[n_receivers] the sender index of the node each receiver belongs to (-1: logits)."""
        index = self._sender_index
        return torch.tensor([index.get(node, -1) for node in self.receiver_nodes])

    def to_dict(self) -> dict:
        return {"n_layers": self.n_layers, "n_heads": self.n_heads,
                "parallel_attn_mlp": self.parallel_attn_mlp}
