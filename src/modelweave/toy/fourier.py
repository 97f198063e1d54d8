"""Grokking on modular addition in the Fourier basis (Nanda et al. 2023, "Progress measures for
grokking via mechanistic interpretability").

- :func:`fourier_basis`: the ``p`` orthonormal functions on ``Z_p``: the constant, then
  ``cos(2 pi k x / p)`` and ``sin(2 pi k x / p)`` for ``k = 1 .. (p-1)//2`` (and the
  alternating function for even ``p``).
- :func:`embedding_spectrum`: the share of the number embeddings' squared norm carried by each
  frequency (``W_E`` [p, d_model] in the Fourier basis, cos and sin rows together). A grokked
  model puts it on a handful of *key frequencies* (:func:`key_frequencies`).
- :func:`neuron_spectrum`: each MLP neuron's activation at ``=`` over all ``p^2`` inputs, in the
  2-D Fourier basis: the share of its variance carried by each frequency
  (:func:`grid_spectrum`). A 2-D term ``(k1, k2)`` is one term of the variance: it counts
  wholly for ``k`` when both axes have ``k`` or one axis is constant, and half for each of
  ``k1`` and ``k2`` when they differ, so every neuron's spectrum sums to 1 (a dead neuron's
  to 0) and a share of it on any set of frequencies is at most 1. (Before this, a term
  ``(k1, k2)`` counted wholly for both: ``cos(19a) cos(45b)`` summed to 2.)
- :func:`progress_point`: over all inputs, the final residual stream at ``=`` (a function
  of ``(a, b)``, [p*p, d_model]) is projected onto the functions ``cos(w_k (a+b))``,
  ``sin(w_k (a+b))`` of the key frequencies. *Restricted loss*: the model's logits from the
  constant plus those components only (loss over all pairs). *Excluded loss*: from the residual
  with those components removed (loss over the training pairs). Nanda et al. project the
  neuron activations and add the logits' mean; here the projection is of the final residual
  before the final norm (the sum of the neurons' and every other contribution, all linear in
  the projected functions), then read out through the model's own final norm and unembedding,
  so the measures work for any family. Every loss and accuracy of a progress point is a mean
  over pairs and carries a 95% bootstrap interval over *unordered* pairs ``{a, b}`` (both
  orders resampled together, as the split keeps them together): ``<measure>_ci``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from ..metrics.uncertainty import bootstrap_stat
from ..models import Model
from ..tasks.toy import toy_meta
from ..tasks.toy_data import ToyModelError, checkpoint_params, unordered_key


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
        raise ToyModelError(f"{model.name} is not a modular-addition toy model (its toy task: "
                            f"{meta.get('task')}); train one with train-toy --task "
                            "modular_addition")
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


def grid_spectrum(grid: torch.Tensor) -> torch.Tensor:
    """[n, p//2 + 1] share of the variance of each function on ``Z_p x Z_p`` (``grid``
    [n, p, p], ``grid[i, a, b]``) at each frequency; see the module docstring for how a 2-D
    term is counted. Rows sum to 1 (0 for a constant function); index 0 is always 0."""
    p = grid.shape[-1]
    basis, _ = fourier_basis(p)
    coef = basis.double() @ grid.double() @ basis.double().T  # [n, p, p]
    power = coef ** 2
    scale = power.sum((1, 2))  # with the mean: a (numerically) constant row is tiny against it
    power[:, 0, 0] = 0  # the mean
    freq = _frequency_of_row(p)
    n_freq = p // 2 + 1
    fa, fb = freq[:, None].expand(p, p), freq[None, :].expand(p, p)
    # each term's weight for frequency k: 1 if both axes are k (or one is k, the other
    # constant), 1/2 if one axis is k and the other a different frequency
    out = torch.zeros(power.shape[0], n_freq, dtype=torch.float64)
    for k in range(1, n_freq):
        a_k, b_k = fa == k, fb == k
        whole = (a_k & b_k) | (a_k & (fb == 0)) | (b_k & (fa == 0))
        half = (a_k ^ b_k) & (fa != 0) & (fb != 0)
        out[:, k] = power[:, whole].sum(1) + 0.5 * power[:, half].sum(1)
    total = power.sum((1, 2))
    varies = total > 1e-10 * scale
    out = torch.where(varies[:, None], out / total.clamp_min(1e-30)[:, None],
                      torch.zeros_like(out))
    return out.float()


def neuron_spectrum(model: Model) -> torch.Tensor:
    """[d_mlp, p//2 + 1] share of each last-layer neuron's variance (over all ``(a, b)``) at
    each frequency (:func:`grid_spectrum`; the mean is left out). Each row sums to 1 (a
    neuron constant over the grid: 0)."""
    p = _toy_p(model)
    _, neurons = _final_state(model, p)
    return grid_spectrum(neurons.T.reshape(-1, p, p))


def _sum_directions(p: int, freqs: list[int]) -> torch.Tensor:
    """[p*p, 1 + 2*len(freqs)] orthonormal functions of (a, b): the constant and
    cos/sin(w_k (a + b)) for each k."""
    s = (torch.arange(p).repeat_interleave(p) + torch.arange(p).repeat(p)).double()
    cols = [torch.ones_like(s)]
    for k in freqs:
        cols += [torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)]
    q, _ = torch.linalg.qr(torch.stack(cols, 1))
    return q.float()


#: the measures of a progress point that are means over pairs (each gets ``<name>_ci``)
PAIR_MEASURES = ("train_loss", "test_loss", "restricted_loss", "excluded_loss", "train_acc",
                 "test_acc", "swap_free_acc", "swap_trained_acc")


@dataclass
class ProgressPoint:
    """The measures of one checkpoint (losses are mean cross-entropy of the answer).

    ``swap_free_acc``: test accuracy on the test pairs whose swap was not trained (all of them
    on an unordered split); ``swap_trained_acc``: on the others (``None`` when there are
    none). ``ci``: measure -> its 95% bootstrap interval over unordered pairs."""

    step: int
    train_loss: float
    test_loss: float
    restricted_loss: float
    excluded_loss: float
    weight_norm: float
    key_share: float  # share of the embedding spectrum on the key frequencies
    train_acc: float | None = None
    test_acc: float | None = None
    swap_free_acc: float | None = None
    swap_trained_acc: float | None = None
    ci: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "ci"}
        out.update({f"{k}_ci": list(v) for k, v in self.ci.items()})
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ProgressPoint:
        ci = {k[:-3]: v for k, v in data.items() if k.endswith("_ci")}
        return cls(**{k: v for k, v in data.items() if not k.endswith("_ci")}, ci=ci)


def _pair_mean(values: torch.Tensor, pairs: torch.Tensor, p: int, n_resamples: int
               ) -> tuple[float, list[float]]:
    """Mean of per-pair ``values`` [n] and its bootstrap interval over unordered pairs (the
    per-cluster sums and counts resampled together; statistic: their ratio)."""
    _, cluster = torch.unique(unordered_key(pairs, p), return_inverse=True)
    m = int(cluster.max()) + 1
    sums = torch.zeros(m, dtype=torch.float64).index_add_(0, cluster, values.double().cpu())
    counts = torch.zeros(m, dtype=torch.float64).index_add_(
        0, cluster, torch.ones(len(values), dtype=torch.float64))
    agg = bootstrap_stat([sums.numpy(), counts.numpy()], lambda s, c: s.sum() / c.sum(),
                         n_resamples=n_resamples, seed=0)
    return agg.mean, [agg.ci_low, agg.ci_high]


@torch.no_grad()
def progress_point(model: Model, key_freqs: list[int], train_mask: torch.Tensor,
                   step: int = 0, swap_trained: torch.Tensor | None = None,
                   n_resamples: int = 1000) -> ProgressPoint:
    """The restricted/excluded losses (see the module docstring) and companions of one model.

    Args:
        key_freqs: the frequencies kept (restricted) or removed (excluded).
        train_mask: [p*p] bool, which pairs (in ``a``-major order) are training pairs.
        swap_trained: [p*p] bool, test pairs whose swap is a training pair (default: from
            ``train_mask``).
        n_resamples: bootstrap resamples of each interval (0: no intervals).
    """
    p = _toy_p(model)
    resid, _ = _final_state(model, p)
    pairs = _all_pairs(p)[:, :2]
    labels = pairs.sum(1) % p
    train_mask = train_mask.cpu()
    if swap_trained is None:
        swap_trained = ~train_mask & train_mask.view(p, p).T.flatten()
    q = _sum_directions(p, key_freqs).to(resid.device)
    q_key = q[:, 1:]
    restricted = q @ (q.T @ resid)  # the mean and the key (a+b) components
    excluded = resid - q_key @ (q_key.T @ resid)

    def per_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model.unembed(x).float()[:, :p].cpu()  # number tokens only, as the paper
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        return loss, (logits.argmax(-1) == labels).double()

    loss, hit = per_pair(resid)
    r_loss, _ = per_pair(restricted)
    e_loss, _ = per_pair(excluded)
    test = ~train_mask
    free = test & ~swap_trained
    rows = {"train_loss": (loss, train_mask), "test_loss": (loss, test),
            "restricted_loss": (r_loss, torch.ones_like(test)),
            "excluded_loss": (e_loss, train_mask), "train_acc": (hit, train_mask),
            "test_acc": (hit, test), "swap_free_acc": (hit, free),
            "swap_trained_acc": (hit, test & swap_trained)}
    values, ci = {}, {}
    for name, (v, rows_) in rows.items():
        if not rows_.any():
            values[name] = None
            continue
        if n_resamples:
            values[name], ci[name] = _pair_mean(v[rows_], pairs[rows_], p, n_resamples)
        else:
            values[name] = float(v[rows_].mean())
    spectrum = embedding_spectrum(model)
    weights = torch.cat([w.detach().float().flatten() for w in model.hf_model.parameters()])
    return ProgressPoint(step, values.pop("train_loss"), values.pop("test_loss"),
                         values.pop("restricted_loss"), values.pop("excluded_loss"),
                         float(weights.pow(2).sum()),
                         float(spectrum[key_freqs].sum()) if key_freqs else 0.0,
                         **values, ci=ci)


def train_mask_of(model: Model) -> torch.Tensor:
    """[p*p] bool in ``a``-major order: the checkpoint's training pairs."""
    from ..tasks.toy_data import make_dataset

    meta = model.hf_model.config.modelweave_toy
    data = make_dataset("modular_addition", **checkpoint_params("modular_addition",
                                                                meta["task_params"]))
    p = data.params["p"]
    train = data.split("train")
    mask = torch.zeros(p * p, dtype=torch.bool)
    mask[train[:, 0] * p + train[:, 1]] = True
    return mask


@dataclass
class GrokkingAnalysis:
    """Fourier analysis of a final model plus progress measures over a checkpoint series.

    ``key_share``: the embedding spectrum's share on the key frequencies (a sum over
    frequencies, not a mean: no interval within a run; intervals come from seeds).
    ``neuron_key_share``: mean over live neurons of each neuron's share on them, with a 95%
    bootstrap interval over neurons (``neuron_key_share_ci``)."""

    p: int
    key_frequencies: list[int]
    embedding_spectrum: list[float]
    neuron_frequency_counts: dict[int, int]  # dominant frequency -> number of neurons
    neuron_key_share: float  # mean share of neuron variance on the key frequencies
    progress: list[ProgressPoint]
    neuron_key_share_ci: list[float] | None = None
    key_share: float | None = None

    def to_dict(self) -> dict:
        return {"p": self.p, "key_frequencies": self.key_frequencies,
                "embedding_spectrum": self.embedding_spectrum,
                "key_share": self.key_share,
                "neuron_frequency_counts": {str(k): v for k, v in
                                            self.neuron_frequency_counts.items()},
                "neuron_key_share": self.neuron_key_share,
                "neuron_key_share_ci": self.neuron_key_share_ci,
                "progress": [pt.to_dict() for pt in self.progress]}

    @classmethod
    def from_dict(cls, d: dict) -> GrokkingAnalysis:
        return cls(d["p"], d["key_frequencies"], d["embedding_spectrum"],
                   {int(k): v for k, v in d["neuron_frequency_counts"].items()},
                   d["neuron_key_share"],
                   [ProgressPoint.from_dict(pt) for pt in d["progress"]],
                   d.get("neuron_key_share_ci"), d.get("key_share"))


def neuron_key_share(neurons: torch.Tensor, keys: list[int], n_resamples: int = 1000
                     ) -> tuple[float, list[float] | None]:
    """Mean over live neurons (rows of ``neurons`` [d_mlp, p//2+1] that sum to 1) of the
    share on ``keys``, with its bootstrap interval over neurons (``None`` for < 2 live)."""
    alive = neurons.sum(1) > 0.5
    if not keys or not alive.any():
        return 0.0, None
    shares = neurons[alive][:, keys].sum(1).double().numpy()
    if len(shares) < 2 or not n_resamples:
        return float(shares.mean()), None
    agg = bootstrap_stat(shares, n_resamples=n_resamples, seed=0)
    return agg.mean, [agg.ci_low, agg.ci_high]


def analyse_grokking(final: Model, checkpoints: Iterable[tuple[int, Model]] | None = None,
                     key_freqs: list[int] | None = None, n_resamples: int = 1000
                     ) -> GrokkingAnalysis:
    """Key frequencies of ``final`` (unless given), its neurons' spectra, and the progress
    measures of each ``(step, model)`` checkpoint with those frequencies (an iterable: a
    generator loads one checkpoint at a time)."""
    p = _toy_p(final)
    spectrum = embedding_spectrum(final)
    keys = key_freqs if key_freqs is not None else key_frequencies(spectrum)
    neurons = neuron_spectrum(final)
    dominant = neurons.argmax(1)
    alive = neurons.sum(1) > 0.5
    counts: dict[int, int] = {}
    for k in dominant[alive].tolist():
        counts[k] = counts.get(k, 0) + 1
    share, share_ci = neuron_key_share(neurons, keys, n_resamples)
    mask = train_mask_of(final)
    progress = [progress_point(m, keys, mask, step, n_resamples=n_resamples)
                for step, m in (checkpoints or [])]
    return GrokkingAnalysis(p, keys, spectrum.tolist(), dict(sorted(counts.items())),
                            share, progress, share_ci,
                            float(spectrum[keys].sum()) if keys else 0.0)
