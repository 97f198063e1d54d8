"""Ablation: the value a site is replaced with, and replacing it.

One helper for every "knock this component out" in the package: the edge evaluator's mean
intervention, node circuits, knockouts and the engine's declarative interventions.

The flags, for a site of shape [B, T, U, ...] (prompts, positions, units: heads of ``hook_z``,
neurons of ``mlp.hook_post``, then any trailing axes):

- ``kind="zero"``: zeros.
- ``kind="mean"``: a mean over a *reference distribution* (other prompts' values of the site,
  [N, T', U, ...], e.g. the corrupted prompts or a reference set), with ``per``:

  - ``"position"``: at each position t, the mean over the reference prompts that reach t (their
    mask is set there); the same [1, T, U, ...] value for every ablated prompt. Without a mask
    every reference prompt counts at every position.
  - ``"length"``: at each position t, the mean over the reference prompts *of the same token
    length* as the ablated prompt (position 3 of ``"5+3="`` and of ``"12+34="`` are different
    tokens); a length the reference lacks falls back to the ``"position"`` mean. Gives
    [B, T, U, ...], zeros past each prompt's length.
- ``kind="resample"``: the reference prompts' values in a shuffled order (a permutation of the
  prompts drawn from ``seed``): each prompt gets the whole site of one other prompt, each
  reference prompt used once.

Means over many prompts are streamed (:class:`MeanAccumulator`, one batch at a time) into
:class:`Means`; :func:`reference_means` is the one-shot form. :func:`replacement` gives the value
for a kind, :func:`ablate` puts it in place except for kept units, :func:`ablation_hook` wraps
that as a hook. Prompts are right-padded: a prompt of length L has its real tokens at 0..L-1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from ..errors import ModelWeaveError

KINDS = ("zero", "mean", "resample")
PER = ("position", "length")


class AblationError(ModelWeaveError):
    """An ablation that cannot be computed as asked (unknown kind, no reference, too short)."""


def check_kind(kind: str, per: str = "position") -> None:
    """Raise :class:`AblationError` for an unknown ``kind`` or ``per``."""
    if kind not in KINDS:
        raise AblationError(f"ablation kind {kind!r}; kinds: {', '.join(KINDS)}")
    if per not in PER:
        raise AblationError(f"mean ablation per {per!r}; choose {' or '.join(PER)}")


@dataclass
class Means:
    """Per-position means of one site over a reference distribution.

    Attributes:
        per: ``"position"`` or ``"length"`` (see the module docstring).
        overall: [T_max, U, ...] at each position the mean over every reference prompt that
            reaches it (``per="length"``: the fallback for lengths the reference lacks).
        by_length: prompt length T -> [T, U, ...] mean over the reference prompts of that
            length (``per="length"`` only; empty otherwise).
        counts: prompt length T -> number of reference prompts of that length.
    """

    per: str
    overall: torch.Tensor
    by_length: dict[int, torch.Tensor] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)

    @property
    def longest(self) -> int:
        """The last position any reference prompt reaches, plus one."""
        return self.overall.shape[0]

    def for_batch(self, lengths: torch.Tensor, width: int) -> torch.Tensor:
        """The mean for a batch of prompts with ``lengths`` [B] padded to ``width``.

        Returns:
            ``per="position"``: [1, width, U, ...] (broadcast over prompts);
            ``per="length"``: [B, width, U, ...], each prompt its length's mean, zeros past
            its length.
        """
        ref = self.overall
        if self.per == "position":
            return ref[None, :width]
        out = ref.new_zeros(len(lengths), width, *ref.shape[1:])
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero()[:, 0]
            mean = self.by_length[length] if length in self.by_length else ref[:length]
            if mean.shape[0] < length:
                raise AblationError(f"no reference prompt reaches position {mean.shape[0]}; "
                                    "use reference prompts at least as long as the ablated ones")
            out[rows, :length] = mean[:width].to(out.dtype)
        return out


class MeanAccumulator:
    """Streams batches of a site's values into :class:`Means`.

    Args:
        per: ``"position"`` or ``"length"``.
        dtype: the dtype sums are kept in, and the means come back in (``None``: the values'
            own).
        device: where sums are kept (``None``: the values' device).
    """

    def __init__(self, per: str = "position", dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        check_kind("mean", per)
        self.per, self.dtype, self.device = per, dtype, device
        self._sums: dict[int, torch.Tensor] = {}  # "length": T -> [T, U, ...] sums
        self._counts: dict[int, int] = {}
        self._total: torch.Tensor | None = None  # "position": [T_max, U, ...] sums
        self._reach: torch.Tensor | None = None  # "position": [T_max, 1, ...] prompt counts

    def add(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add a batch: ``values`` [B, T, U, ...], ``mask`` [B, T] (1 on real tokens, right
        padding; ``None``: every position is real)."""
        if mask is None:
            mask = torch.ones(values.shape[:2], dtype=torch.long, device=values.device)
        mask = mask.to(values.device)
        if self.per == "position":
            self._add_positions(values, mask)
            return
        lengths = mask.sum(1)
        for length in lengths.unique().tolist():
            sel = (lengths == length).nonzero()[:, 0]
            value = values[sel, :length]
            value = (value if self.dtype is None else value.to(self.dtype)).sum(0)
            if self.device is not None:
                value = value.to(self.device)
            sums = self._sums
            sums[length] = sums[length] + value if length in sums else value
            self._counts[length] = self._counts.get(length, 0) + len(sel)

    def _add_positions(self, values: torch.Tensor, mask: torch.Tensor) -> None:
        dtype = self.dtype or values.dtype
        t = values.shape[1]
        weight = mask.view(*mask.shape, *([1] * (values.dim() - 2))).to(dtype)
        part = (values.to(dtype) * weight).sum(0)
        reach = weight.sum(0)
        if self.device is not None:
            part, reach = part.to(self.device), reach.to(self.device)
        if self._total is None:
            self._total, self._reach = part.new_zeros(part.shape), reach.new_zeros(reach.shape)
        elif self._total.shape[0] < t:  # grow to the longest batch seen
            grow = t - self._total.shape[0]
            self._total = torch.cat([self._total, self._total.new_zeros(grow, *part.shape[1:])])
            self._reach = torch.cat([self._reach, self._reach.new_zeros(grow, *reach.shape[1:])])
        self._total[:t] += part
        self._reach[:t] += reach
        for length, n in zip(*mask.sum(1).unique(return_counts=True), strict=True):
            self._counts[int(length)] = self._counts.get(int(length), 0) + int(n)

    def means(self) -> Means:
        """The means of everything added so far."""
        if not self._counts:
            raise AblationError("no reference values to take a mean over")
        if self.per == "position":
            return Means("position", self._total / self._reach.clamp(min=1), {},
                         dict(self._counts))
        by_length = {T: v / self._counts[T] for T, v in self._sums.items()}
        longest = max(self._counts)
        total = torch.zeros_like(self._sums[longest])
        reach = torch.zeros(longest, dtype=total.dtype, device=total.device)
        for T, v in self._sums.items():
            total[:T] += v
            reach[:T] += self._counts[T]
        shape = (longest,) + (1,) * (total.dim() - 1)
        return Means("length", total / reach.view(shape), by_length,
                     dict(self._counts))


def reference_means(values: torch.Tensor, mask: torch.Tensor | None = None,
                    per: str = "position", dtype: torch.dtype | None = None) -> Means:
    """:class:`Means` of ``values`` [N, T, U, ...] (``mask`` [N, T], right padding) in one go."""
    acc = MeanAccumulator(per, dtype)
    acc.add(values, mask)
    return acc.means()


def prompt_mean(reference: torch.Tensor) -> torch.Tensor:
    """[1, T, ...] the mean of ``reference`` [N, T, ...] over its prompts at each position
    (every prompt counts at every position: same-length prompts)."""
    return reference.mean(dim=0, keepdim=True)


def permutation(n: int, seed: int = 0) -> torch.Tensor:
    """[n] a permutation of ``0 .. n-1`` drawn from ``seed`` (the prompt order of a resample)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def resampled(reference: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """[N, ...] ``reference`` [N, ...] with its prompts in the order :func:`permutation` draws."""
    return reference[permutation(reference.shape[0], seed).to(reference.device)]


def replacement(kind: str, like: torch.Tensor, *,
                reference: torch.Tensor | Means | None = None,
                lengths: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """The value a site ``like`` [B, T, U, ...] is replaced with, in ``like``'s dtype and device.

    Args:
        kind: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference: ``"mean"``: :class:`Means` (per position or per length), or the reference
            run's values [N, T, U, ...] (mean over all N prompts at each position);
            ``"resample"``: the reference run's values [B, T, U, ...].
        lengths: [B] prompt lengths (``"mean"`` from :class:`Means` per length).
        seed: ``"resample"``'s permutation.

    Returns:
        a tensor of ``like``'s shape ([1, T, U, ...] for a per-position :class:`Means`, which
        broadcasts).
    """
    check_kind(kind)
    if kind == "zero":
        return torch.zeros_like(like)
    if reference is None:
        raise AblationError(f"a {kind!r} ablation needs reference values")
    if isinstance(reference, Means):
        if kind != "mean":
            raise AblationError("resampling needs the reference values, not their means")
        if lengths is None:
            lengths = torch.full((like.shape[0],), like.shape[1], dtype=torch.long)
        return reference.for_batch(lengths.cpu(), like.shape[1]).to(like.device, like.dtype)
    ref = reference.to(like.device, like.dtype)
    if kind == "mean":
        return prompt_mean(ref).expand_as(like)
    return resampled(ref, seed)


def ablate(tensor: torch.Tensor, value: torch.Tensor | None = None,
           keep: torch.Tensor | None = None) -> torch.Tensor:
    """``tensor`` [B, T, U, ...] with every unit not kept replaced by ``value``.

    Args:
        value: broadcastable to ``tensor`` ([B or 1, T, U, ...], e.g. from
            :func:`replacement`); ``None``: zeros.
        keep: bool, units kept (left as they are): [U] the same units for every prompt,
            [B, U] per prompt (at every position), or ``None``: nothing kept.

    Returns:
        a new tensor (``tensor`` itself is not modified).
    """
    if value is None:
        value = torch.zeros((), dtype=tensor.dtype, device=tensor.device)
    else:
        value = value.to(tensor.device, tensor.dtype)
    if keep is None:
        return value.expand_as(tensor).clone()
    trailing = [1] * (tensor.dim() - 3)
    keep = keep.to(tensor.device)
    k = keep.view(1, 1, -1, *trailing) if keep.dim() == 1 else keep.view(
        keep.shape[0], 1, keep.shape[1], *trailing)
    return torch.where(k, tensor, value)


def units_mask(width: int, units: Iterable[int], kept: bool = True) -> torch.Tensor:
    """[width] bool: True at ``units`` (``kept=False``: False there and True elsewhere)."""
    mask = torch.full((width,), not kept, dtype=torch.bool)
    mask[list(units)] = kept
    return mask


def ablation_hook(value: torch.Tensor | None = None, keep: torch.Tensor | None = None
                  ) -> Callable:
    """A hook ``(tensor, hook) -> tensor`` doing :func:`ablate` with ``value`` and ``keep``."""

    def hook(tensor: torch.Tensor, _hook) -> torch.Tensor:
        return ablate(tensor, value, keep)

    return hook
