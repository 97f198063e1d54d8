"""Grokking on modular addition in the Fourier basis (Nanda et al. 2023, "Progress measures for
grokking via mechanistic interpretability").

- :func:`fourier_basis`: the ``p`` orthonormal functions on ``Z_p``: the constant, then
  ``cos(2 pi k x / p)`` and ``sin(2 pi k x / p)`` for ``k = 1 .. (p-1)//2`` (and the
  alternating function for even ``p``).
- :func:`embedding_spectrum`: the share of the number embeddings' squared norm carried by each
  frequency (``W_E`` [p, d_model] in the Fourier basis, cos and sin rows together). A grokked
  model puts it on a handful of *key frequencies* (:func:`key_frequencies`).
- :func:`neuron_spectrum`: each MLP neuron's activation at ``=`` over all ``p^2`` inputs, in the
  2-D Fourier basis: the share of its variance carried by each frequency.
- :func:`progress_point`: over all inputs, the final residual stream at ``=`` (a function
  of ``(a, b)``, [p*p, d_model]) is projected onto the functions ``cos(w_k (a+b))``,
  ``sin(w_k (a+b))`` of the key frequencies. *Restricted loss*: the model's logits from the
  constant plus those components only (loss over all pairs). *Excluded loss*: from the residual
  with those components removed (loss over the training pairs). Nanda et al. project the
  neuron activations and add the logits' mean; here the projection is of the final residual
  before the final norm (the sum of the neurons' and every other contribution, all linear in
  the projected functions), then read out through the model's own final norm and unembedding,
  so the measures work for any family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models import Model
from ..tasks.toy import toy_meta


def fourier_basis(p: int) -> tuple[torch.Tensor, list[str]]:
    """The orthonormal basis [p, p] (rows are functions of ``x``) and the row names
    (``const``, ``cos 1``, ``sin 1``, ...)."""
    x = torch.arange(p, dtype=torch.float64)
    rows, names = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, p // 2 + 1):
        rows.append(torch.cos(2 * math.pi * k * x / p))
        names.append(f"cos {k}")
        if 2 * k != p:
            rows.append(torch.sin(2 * math.pi * k * x / p))
            names.append(f"sin {k}")
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float(), names


def _frequency_of_row(p: int) -> torch.Tensor:
    """[p] the frequency of each basis row (0 for the constant)."""
    _, names = fourier_basis(p)
    return torch.tensor([0 if n == "const" else int(n.split()[1]) for n in names])


def _toy_p(model: Model) -> int:
    meta = toy_meta(model) or {}
    if meta.get("task") != "modular_addition":
        raise ValueError(f"{model.name} is not a modular-addition toy model")
    return int(meta["task_params"]["p"])


def embedding_spectrum(model: Model) -> torch.Tensor:
    """[p//2 + 1] share of the number embeddings' squared norm at each frequency (index 0:
    the constant); sums to 1."""
    p = _toy_p(model)
    basis, _ = fourier_basis(p)
    w_e = model.W_E.detach().float()[:p]  # tokens 0..p-1
    power = ((basis @ w_e) ** 2).sum(1)  # [p]
    freq = _frequency_of_row(p)
    out = torch.zeros(p // 2 + 1).index_add_(0, freq, power)
    return out / out.sum()


def key_frequencies(spectrum: torch.Tensor, most: int = 10) -> list[int]:
    """The frequencies (>= 1) above the largest drop in the sorted spectrum: sort the shares,
    find the largest ratio between consecutive shares among the top ``most + 1``, keep those
    before it (largest first). Only frequencies above the uniform share count."""
    shares = spectrum[1:].double()
    uniform = float(shares.sum()) / len(shares)
    values, order = shares.sort(descending=True)
    top = values[: most + 1].clamp_min(1e-12)
    if len(top) < 2:
        return [int(order[0]) + 1]
    cut = int((top[:-1] / top[1:]).argmax()) + 1
    return [int(k) + 1 for k, v in zip(order[:cut], values[:cut], strict=True)
            if float(v) > uniform]


def _all_pairs(p: int) -> torch.Tensor:
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], 1)  # [p*p, 3]: "a b ="


@torch.no_grad()
def _final_state(model: Model, p: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Final residual at ``=`` [p*p, d_model] and the last MLP's neurons there [p*p, d_mlp]."""
    last = model.cfg.n_layers - 1
    names = [f"blocks.{last}.hook_resid_post", f"blocks.{last}.mlp.hook_post"]
    tokens = _all_pairs(p).to(model.device)
    resid, neurons = [], []
    for i in range(0, len(tokens), chunk):
        _, cache = model.run_with_cache(tokens[i:i + chunk], names)
        resid.append(cache[names[0]][:, -1].float())
        neurons.append(cache[names[1]][:, -1].float())
    return torch.cat(resid), torch.cat(neurons)


def neuron_spectrum(model: Model) -> torch.Tensor:
    """[d_mlp, p//2 + 1] share of each last-layer neuron's variance (over all ``(a, b)``) at
    each frequency: a 2-D Fourier term counts for frequency ``k`` when either axis has it (the
    constant-constant term, the mean, is left out)."""
    p = _toy_p(model)
    _, neurons = _final_state(model, p)
    basis, _ = fourier_basis(p)
    grid = neurons.T.reshape(-1, p, p)  # [n, a, b]
    coef = basis @ grid @ basis.T  # [n, p, p]
    power = coef ** 2
    power[:, 0, 0] = 0
    freq = _frequency_of_row(p)
    n_freq = p // 2 + 1
    out = torch.zeros(power.shape[0], n_freq)
    fa, fb = freq[:, None].expand(p, p), freq[None, :].expand(p, p)
    for k in range(1, n_freq):
        mask = (fa == k) | (fb == k)
        out[:, k] = power[:, mask].sum(1)
    total = power.sum((1, 2)).clamp_min(1e-30)
    return out / total[:, None]


def _sum_directions(p: int, freqs: list[int]) -> torch.Tensor:
    """[p*p, 1 + 2*len(freqs)] orthonormal functions of (a, b): the constant and
    cos/sin(w_k (a + b)) for each k."""
    s = (torch.arange(p).repeat_interleave(p) + torch.arange(p).repeat(p)).double()
    cols = [torch.ones_like(s)]
    for k in freqs:
        cols += [torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)]
    q, _ = torch.linalg.qr(torch.stack(cols, 1))
    return q.float()


@dataclass
class ProgressPoint:
    """The measures of one checkpoint (losses are mean cross-entropy of the answer)."""

    step: int
    train_loss: float
    test_loss: float
    restricted_loss: float
    excluded_loss: float
    weight_norm: float
    key_share: float  # share of the embedding spectrum on the key frequencies

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def progress_point(model: Model, key_freqs: list[int], train_mask: torch.Tensor,
                   step: int = 0) -> ProgressPoint:
    """The restricted/excluded losses (see the module docstring) and companions of one model.

    Args:
        key_freqs: the frequencies kept (restricted) or removed (excluded).
        train_mask: [p*p] bool, which pairs (in ``a``-major order) are training pairs.
    """
    p = _toy_p(model)
    resid, _ = _final_state(model, p)
    labels = (torch.arange(p).repeat_interleave(p) + torch.arange(p).repeat(p)) % p
    q = _sum_directions(p, key_freqs).to(resid.device)
    q_key = q[:, 1:]
    restricted = q @ (q.T @ resid)  # the mean and the key (a+b) components
    excluded = resid - q_key @ (q_key.T @ resid)

    def loss(x: torch.Tensor, rows: torch.Tensor) -> float:
        logits = model.unembed(x[rows]).float()[:, :p]  # number tokens only, as the paper
        return float(torch.nn.functional.cross_entropy(logits, labels[rows].to(logits.device)))

    everything = torch.ones(p * p, dtype=torch.bool)
    spectrum = embedding_spectrum(model)
    weights = torch.cat([w.detach().float().flatten() for w in model.hf_model.parameters()])
    return ProgressPoint(step, loss(resid, train_mask), loss(resid, ~train_mask),
                         loss(restricted, everything), loss(excluded, train_mask),
                         float(weights.pow(2).sum()),
                         float(spectrum[key_freqs].sum()) if key_freqs else 0.0)


def train_mask_of(model: Model) -> torch.Tensor:
    """[p*p] bool in ``a``-major order: the checkpoint's training pairs."""
    from ..tasks.toy_data import make_dataset

    meta = model.hf_model.config.modelweave_toy
    data = make_dataset("modular_addition", **meta["task_params"])
    p = data.params["p"]
    train = data.split("train")
    mask = torch.zeros(p * p, dtype=torch.bool)
    mask[train[:, 0] * p + train[:, 1]] = True
    return mask


@dataclass
class GrokkingAnalysis:
    """Fourier analysis of a final model plus progress measures over a checkpoint series."""

    p: int
    key_frequencies: list[int]
    embedding_spectrum: list[float]
    neuron_frequency_counts: dict[int, int]  # dominant frequency -> number of neurons
    neuron_key_share: float  # mean share of neuron variance on the key frequencies
    progress: list[ProgressPoint]

    def to_dict(self) -> dict:
        return {"p": self.p, "key_frequencies": self.key_frequencies,
                "embedding_spectrum": self.embedding_spectrum,
                "neuron_frequency_counts": {str(k): v for k, v in
                                            self.neuron_frequency_counts.items()},
                "neuron_key_share": self.neuron_key_share,
                "progress": [pt.to_dict() for pt in self.progress]}

    @classmethod
    def from_dict(cls, d: dict) -> GrokkingAnalysis:
        return cls(d["p"], d["key_frequencies"], d["embedding_spectrum"],
                   {int(k): v for k, v in d["neuron_frequency_counts"].items()},
                   d["neuron_key_share"], [ProgressPoint(**pt) for pt in d["progress"]])


def analyse_grokking(final: Model, checkpoints: list[tuple[int, Model]] | None = None,
                     key_freqs: list[int] | None = None) -> GrokkingAnalysis:
    """Key frequencies of ``final`` (unless given), its neurons' spectra, and the progress
    measures of each ``(step, model)`` checkpoint with those frequencies."""
    p = _toy_p(final)
    spectrum = embedding_spectrum(final)
    keys = key_freqs if key_freqs is not None else key_frequencies(spectrum)
    neurons = neuron_spectrum(final)
    dominant = neurons.argmax(1)
    alive = neurons.sum(1) > 0
    counts: dict[int, int] = {}
    for k in dominant[alive].tolist():
        counts[k] = counts.get(k, 0) + 1
    key_share = float(neurons[alive][:, keys].sum(1).mean()) if keys and alive.any() else 0.0
    mask = train_mask_of(final)
    progress = [progress_point(m, keys, mask, step) for step, m in (checkpoints or [])]
    return GrokkingAnalysis(p, keys, spectrum.tolist(), dict(sorted(counts.items())),
                            key_share, progress)
