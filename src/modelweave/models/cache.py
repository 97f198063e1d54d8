"""``ActivationCache``: the activations of one run, by site name."""

from __future__ import annotations

import torch

from ..errors import SiteError
from .sites import act_name


class ActivationCache(dict):
    """A ``dict`` from site name to tensor, also indexable TransformerLens-style:
    ``cache["z", 3]`` is ``cache["blocks.3.attn.hook_z"]``.

    Shapes are those documented in :mod:`modelweave.models.sites`.
    """

    def __getitem__(self, key: str | tuple[str, int]) -> torch.Tensor:
        if isinstance(key, tuple):
            key = act_name(*key)
        try:
            return super().__getitem__(key)
        except KeyError:
            raise SiteError(
                f"{key!r} was not cached; cached sites: {', '.join(list(self)[:8])}"
                f"{' ...' if len(self) > 8 else ''}"
            ) from None

    def to(self, device: str | torch.device) -> ActivationCache:
        """A copy with every tensor on ``device``."""
        return ActivationCache({k: v.to(device) for k, v in self.items()})

    def stack(self, kind: str) -> torch.Tensor:
        """Stack one site kind over layers: ``stack("resid_post")`` -> [layer, ...]."""
        names = sorted(
            (k for k in self if k.startswith("blocks.") and k.endswith(act_name(kind, 0)[9:])),
            key=lambda k: int(k.split(".")[1]),
        )
        if not names:
            raise SiteError(f"no cached site of kind {kind!r}")
        return torch.stack([super(ActivationCache, self).__getitem__(k) for k in names])
