"""Matched nulls: what a random choice of the same shape gives, and how special a result is.

A claim that a set of components, a neuron class or a direction is special is only as good as
its null. This module draws the nulls matched as the claim needs and compares an observed
value with them:

- :func:`matched_components` / :func:`matched_draws`: random components with the same number
  per layer and type as a chosen set (heads ``aL.hH``, MLPs ``mL``, neurons ``mL.nI``,
  dictionary features ``fL.<site>.I``), from a universe of candidates, excluding the chosen
  ones by default. A layer that cannot supply enough is a :class:`NullError`.
- :func:`equal_norm_vectors` / :func:`random_directions`: Gaussian directions, scaled to a
  given vector's norm or to unit norm.
- :func:`permutation`: a permutation of prompts (a permuted map keeps every marginal and
  breaks the pairing).
- :func:`compare`: an observed value against null draws: the null's mean with its 2.5-97.5%
  range, the ratio (enrichment) and an empirical one-sided p-value ``(1 + #{null >= obs}) /
  (1 + draws)`` (never 0: with 200 draws the smallest p is 1/201).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ModelWeaveError
from .stats import _array

_COMPONENT = re.compile(r"^(?:a(?P<ah>\d+)\.h\d+|m(?P<n>\d+)\.n\d+|m(?P<m>\d+)|"
                        r"f(?P<f>\d+)\.(?P<site>[A-Za-z0-9_]+)\.\d+)$")


class NullError(ModelWeaveError):
    """A null that cannot be drawn as matched (too few candidates in a layer, bad names)."""


def stratum(name: str) -> tuple[str, int]:
    """The (type, layer) a component is matched on: ``a3.h4`` -> ("head", 3), ``m3`` ->
    ("mlp", 3), ``m3.n12`` -> ("neuron", 3), ``f3.resid.7`` -> ("feature:resid", 3).
    Receiver-qualified heads (``a3.h4<q>``) match as heads of their layer."""
    base = re.sub(r"<[qkv]>$", "", name)
    m = _COMPONENT.match(base)
    if m is None:
        raise NullError(f"cannot match a null to component {name!r}: expected aL.hH, mL, "
                        f"mL.nI or fL.<site>.I")
    if m["ah"] is not None:
        return "head", int(m["ah"])
    if m["n"] is not None:
        return "neuron", int(m["n"])
    if m["m"] is not None:
        return "mlp", int(m["m"])
    return f"feature:{m['site']}", int(m["f"])


def _by_stratum(names: Iterable[str]) -> dict[tuple[str, int], list[str]]:
    out: dict[tuple[str, int], list[str]] = defaultdict(list)
    for name in names:
        out[stratum(name)].append(name)
    return out


def matched_components(chosen: Iterable[str], universe: Iterable[str],
                       rng: np.random.Generator | int = 0, *, exclude: bool = True) -> list[str]:
    """Random components with the chosen set's count per (type, layer), drawn from
    ``universe`` without replacement (and, with ``exclude``, never one of ``chosen``).

    Raises:
        NullError: a (type, layer) of ``chosen`` has fewer candidates than it needs.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    chosen = list(dict.fromkeys(chosen))
    pool = _by_stratum(dict.fromkeys(universe))
    taken = set(chosen) if exclude else set()
    out: list[str] = []
    for key, members in sorted(_by_stratum(chosen).items()):
        candidates = sorted(c for c in pool.get(key, []) if c not in taken)
        if len(candidates) < len(members):
            kind, layer = key
            raise NullError(f"cannot draw {len(members)} random {kind}(s) of layer {layer} "
                            f"matched to the chosen set: the layer has {len(candidates)}"
                            + (" other candidate(s) (the chosen ones are excluded)"
                               if exclude else " candidate(s)"))
        picks = rng.choice(len(candidates), size=len(members), replace=False)
        out.extend(candidates[i] for i in sorted(picks.tolist()))
    return out


def matched_draws(chosen: Iterable[str], universe: Iterable[str], n_draws: int,
                  seed: int = 0, *, exclude: bool = True) -> list[list[str]]:
    """``n_draws`` independent :func:`matched_components` sets (one generator, ``seed``)."""
    if n_draws < 1:
        raise NullError(f"a null needs at least one draw, got {n_draws}")
    chosen, universe = list(chosen), list(universe)
    rng = np.random.default_rng(seed)
    return [matched_components(chosen, universe, rng, exclude=exclude) for _ in range(n_draws)]


def heads_universe(n_layers: int, n_heads: int) -> list[str]:
    """Every head name ``aL.hH`` of a model with that shape."""
    return [f"a{layer}.h{head}" for layer in range(n_layers) for head in range(n_heads)]


def neurons_universe(layers: Iterable[int], d_mlp: int) -> list[str]:
    """Every neuron name ``mL.nI`` of the given layers."""
    return [f"m{layer}.n{i}" for layer in layers for i in range(d_mlp)]


def equal_norm_vectors(vector, n: int, seed: int = 0):
    """[n, d] Gaussian random directions, each scaled to ``vector``'s L2 norm (a tensor in,
    tensors out, on its device and dtype; numpy otherwise)."""
    if n < 1:
        raise NullError(f"need at least one random vector, got {n}")
    flat = (vector.detach().double().cpu().numpy() if hasattr(vector, "detach")
            else np.asarray(vector, dtype=np.float64))
    norm = float(np.linalg.norm(flat.reshape(-1)))
    if not np.isfinite(norm) or norm == 0:
        raise NullError("an equal-norm null needs a finite, non-zero vector")
    return _scaled(vector, n, norm, seed)


def random_directions(d: int | object, n: int, seed: int = 0):
    """[n, d] unit-norm random directions (``d`` an int, or a vector whose width, device and
    dtype they take)."""
    if n < 1:
        raise NullError(f"need at least one random direction, got {n}")
    like = np.zeros(d) if isinstance(d, int) else d
    return _scaled(like, n, 1.0, seed)


def _scaled(like, n: int, norm: float, seed: int):
    width = int(np.prod(like.shape))
    draws = np.random.default_rng(seed).standard_normal((n, width))
    draws *= norm / np.linalg.norm(draws, axis=1, keepdims=True)
    if hasattr(like, "detach"):
        import torch

        return torch.as_tensor(draws, dtype=like.dtype, device=like.device)
    return draws


def permutation(n: int, seed: int = 0, *, derangement: bool = True) -> np.ndarray:
    """A random permutation of ``range(n)``; with ``derangement`` no item stays in place
    (``n`` >= 2), so every pairing is broken."""
    rng = np.random.default_rng(seed)
    if derangement and n < 2:
        raise NullError(f"a derangement needs at least 2 items, got {n}")
    while True:
        perm = rng.permutation(n)
        if not derangement or not np.any(perm == np.arange(n)):
            return perm


@dataclass(frozen=True)
class NullComparison:
    """An observed value beside its matched null.

    Attributes:
        observed: the value of the result itself.
        null_mean, null_low, null_high: the null draws' mean and 2.5% / 97.5% quantiles.
        ratio: observed / null_mean (the enrichment; NaN when the null mean is 0).
        p_value: empirical one-sided p of the null reaching the observed value.
        draws: how many null draws; ``null``: what the null is, in words.
    """

    observed: float
    null_mean: float
    null_low: float
    null_high: float
    ratio: float
    p_value: float
    draws: int
    null: str = ""
    alternative: str = "greater"

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.observed:.3g} vs null {self.null_mean:.3g} "
                f"[{self.null_low:.3g}, {self.null_high:.3g}], p = {self.p_value:.3g}")


def compare(observed: float, null_values: Sequence[float], *, null: str = "",
            alternative: str = "greater") -> NullComparison:
    """Compare ``observed`` with ``null_values`` (one value per null draw).

    ``alternative``: ``"greater"`` (the result is larger than chance), ``"less"``, or
    ``"two-sided"`` (distance from the null mean).
    """
    x = _array(null_values)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise NullError("no finite null values to compare with")
    obs = float(observed)
    if alternative == "greater":
        hits = int(np.sum(x >= obs))
    elif alternative == "less":
        hits = int(np.sum(x <= obs))
    elif alternative == "two-sided":
        centre = x.mean()
        hits = int(np.sum(np.abs(x - centre) >= abs(obs - centre)))
    else:
        raise NullError(f"alternative must be 'greater', 'less' or 'two-sided', got "
                        f"{alternative!r}")
    mean = float(x.mean())
    low, high = np.percentile(x, [2.5, 97.5])
    ratio = obs / mean if mean != 0 else float("nan")
    return NullComparison(obs, mean, float(low), float(high), float(ratio),
                          (1 + hits) / (1 + x.size), int(x.size), null, alternative)
