"""Ranking MLP neurons and building neuron circuits (Nikankin et al. 2024, §3.2).

1. :func:`neuron_attribution`: attribution patching of the Eq. 1 effect for every neuron at
   the last position, per prompt: ``(a' - a) · dE/da`` at the clean run, where a' is the
   counterfactual's activation. At the clean run dE/da = 1/2 d/da [log P(r') - log P(r)], so
   one forward + backward of the clean prompts and one forward of the counterfactuals score
   every neuron of every layer.
2. :func:`rank_neurons`: score = mean + std over prompts (signed, as the released code does),
   per layer.
3. :func:`exact_neuron_effects`: exact patching of chosen neurons (the same quantity, no
   linearisation) on the fast engine, to confirm the top candidates.
4. :func:`decoding`: per layer, how well the residual stream at the last position predicts the
   answer (linear probe on held-out prompts, or the logit lens) against the majority-class
   baseline; the first decodable layer beats it by a margin, with its bootstrap interval.
5. :func:`neuron_curve`: the circuit "chosen heads + whole MLPs before the decodable layer +
   top-k neurons per layer from it on", faithfulness for each k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...circuits.node_faithfulness import NodeEvaluator
from ...circuits.nodes import NodeCircuit
from ...engine.suffix import base_run
from ...methods.activation_patching import patch_units
from ...methods.grids import Unit
from ...metrics.scores import final_logits
from ...models import Model
from ...progress import Progress, Steps
from ...tasks import TaskBatch, TaskError
from .localize import effect_metric

POST = "mlp.hook_post"


def _last(tensor: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return tensor[torch.arange(tensor.shape[0]), lengths.to(tensor.device) - 1]


def neuron_attribution(model: Model, batch: TaskBatch, *, layers: list[int] | None = None,
                       batch_size: int = 32) -> torch.Tensor:
    """[N, n_layers, d_mlp] attribution of the Eq. 1 effect of patching each neuron at the
    last position from the counterfactual (``batch.corrupt``) into the clean prompt (layers
    not in ``layers`` are zero)."""
    c = model.cfg
    layers = list(range(c.n_layers)) if layers is None else layers
    bad = [L for L in layers if not 0 <= L < c.n_layers]
    if bad:
        raise TaskError(f"layer {bad[0]} out of range (model has {c.n_layers})")
    sites = [f"blocks.{L}.{POST}" for L in layers]
    out = torch.zeros(len(batch), c.n_layers, c.d_mlp)
    acts: dict[str, torch.Tensor] = {}

    def keep(tensor, hook):
        acts[hook.name] = tensor.clone()  # a node of the graph, so it receives a gradient
        return acts[hook.name]

    for start, part in batch.chunks(batch_size):
        clean, corrupt, mask = part.clean, part.corrupt, part.mask
        _, cf = model.run_with_cache(corrupt, sites, attention_mask=mask)
        with torch.enable_grad():
            logits = model.run_with_hooks(clean, [(s, keep) for s in sites],
                                          attention_mask=mask, grad=True)
            logp = final_logits(logits, part).log_softmax(-1)
            rows = torch.arange(len(part))
            objective = 0.5 * (logp[rows, part.wrong_ids[:, 0].to(logp.device)]
                               - logp[rows, part.answers.to(logp.device)]).sum()
            grads = torch.autograd.grad(objective, [acts[s] for s in sites])
        for L, site, grad in zip(layers, sites, grads, strict=True):
            delta = _last(cf[site], part.lengths) - _last(acts[site].detach(), part.lengths)
            out[start:start + len(part), L] = (delta * _last(grad, part.lengths)).float().cpu()
    return out


def rank_neurons(scores: torch.Tensor) -> torch.Tensor:
    """[n_layers, d_mlp] neuron score = mean + std over prompts of ``scores`` [N, L, d]."""
    std = scores.std(0) if scores.shape[0] > 1 else torch.zeros_like(scores[0])
    return scores.mean(0) + std


def top_neurons(ranking: torch.Tensor, k: int, layers) -> dict[int, tuple[int, ...]]:
    """layer -> the ``k`` best neurons of ``ranking`` [n_layers, d_mlp] for each layer."""
    k = min(k, ranking.shape[1])
    return {L: tuple(ranking[L].topk(k).indices.sort().values.tolist()) for L in layers}


def exact_neuron_effects(model: Model, batch: TaskBatch, neurons: list[tuple[int, int]], *,
                         max_rows: int = 512) -> torch.Tensor:
    """[len(neurons)] exact Eq. 1 effect (mean over prompts) of patching each ``(layer,
    neuron)`` at the last position from the counterfactual into the clean prompt. Prompts are
    grouped by length; each group runs on the suffix engine."""
    total = torch.zeros(len(neurons))
    for length in batch.lengths.unique().tolist():
        rows = (batch.lengths == length).nonzero()[:, 0].tolist()
        part = batch.select(rows).trimmed()
        sites = sorted({f"blocks.{L}.{POST}" for L, _ in neurons})
        _, source = model.run_with_cache(part.corrupt, sites)
        base_logits, base = base_run(model, part.clean, sites)
        metric = effect_metric(final_logits(base_logits, part), part)
        units = [Unit(L, length - 1, i) for L, i in neurons]
        raw = patch_units(model, part, base, source, "neurons", units, metric, max_rows)
        total += torch.tensor([raw[u] for u in units]) * len(rows)
    return total / len(batch)


def _resid_last(model: Model, batch: TaskBatch, batch_size: int = 64) -> torch.Tensor:
    """[n_layers, N, d_model] residual stream after each layer at the last position."""
    sites = [f"blocks.{L}.hook_resid_post" for L in range(model.cfg.n_layers)]
    out = []
    for _, part in batch.chunks(batch_size):
        _, cache = model.run_with_cache(part.clean, sites, attention_mask=part.mask)
        out.append(torch.stack([_last(cache[s], part.lengths).float().cpu() for s in sites]))
    return torch.cat(out, dim=1)


def _probe_correct(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor,
                   test: torch.Tensor) -> torch.Tensor:
    """[len(test)] bool: held-out correctness of a multinomial logistic regression (L2 1e-2,
    LBFGS) fitted on the ``train`` rows of ``x`` [N, d] with labels ``y`` [N]."""
    classes, target = y.unique(return_inverse=True)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    z = (x - mean) / std
    weight = torch.zeros(x.shape[1], len(classes), requires_grad=True)
    bias = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=100)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z[train] @ weight + bias, target[train])
        loss = loss + 1e-2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (z[test] @ weight + bias).argmax(-1) == target[test]


def _halves(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[: n // 2], order[n // 2:]


def decodability(model: Model, batch: TaskBatch, method: str = "probe") -> list[float]:
    """Per layer, how well the answer's unit token is read from the last position's residual
    stream: held-out linear-probe accuracy (``"probe"``) or logit-lens top-1 accuracy
    (``"lens"``). Accuracy alone says little: compare it with the majority-class baseline
    (:func:`decoding`)."""
    return decoding(model, batch, method).accuracy


@dataclass
class Decoding:
    """Decodability of the answer per layer against the majority-class baseline.

    Attributes:
        accuracy, accuracy_ci: [n_layers] held-out accuracy and its 95% bootstrap interval
            over the held-out prompts ([n_layers] pairs).
        majority: held-out accuracy of always answering the commonest answer of the training
            half (the same for every layer).
        gain, gain_ci: accuracy - majority, and its paired bootstrap interval, per layer.
        margin: the gain a layer needs; ``first_layer``: the first layer with gain >= margin
            and gain_ci's low end > 0 (None if no layer).
        method: ``"probe"`` or ``"lens"``; n_test: held-out prompts.
    """

    accuracy: list[float]
    accuracy_ci: list[list[float]]
    majority: float
    gain: list[float]
    gain_ci: list[list[float]]
    margin: float
    first_layer: int | None
    method: str
    n_test: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> Decoding:
        return cls(**data)


def decode_layers(resid: torch.Tensor, answers: torch.Tensor, *, method: str = "probe",
                  margin: float = 0.1, seed: int = 0, lens=None) -> Decoding:
    """:class:`Decoding` of ``answers`` [N] from residual streams ``resid`` [n_layers, N, d].

    ``"probe"``: a probe per layer fitted on a random half of the prompts, scored on the other
    half, against the majority class of the fitting half scored on the same held-out half.
    ``"lens"``: ``lens(resid[L])`` -> logits [N, vocab] (no fitting; every prompt held out, the
    majority baseline the commonest answer of them all, which favours the baseline). A layer is
    decodable when the probe beats the baseline by ``margin`` and the paired bootstrap interval
    (over held-out prompts) of the gain lies above 0; a fixed accuracy threshold is not used,
    since the baseline alone can pass it (an imbalanced answer distribution).
    """
    from ...metrics.uncertainty import bootstrap_stat

    if method not in ("probe", "lens"):
        raise TaskError(f"decodability method must be 'probe' or 'lens', got {method!r}")
    if not 0 <= margin < 1:
        raise TaskError(f"decodability margin must be in [0, 1), got {margin}")
    y = answers.cpu()
    n = len(y)
    if n < 4:
        raise TaskError(f"decodability needs at least 4 prompts, got {n}")
    if method == "probe":
        train, test = _halves(n, seed)
        common = torch.mode(y[train]).values
    else:
        train, test = torch.arange(n), torch.arange(n)
        common = torch.mode(y).values
    base = (y[test] == common).float().numpy()
    acc, acc_ci, gain, gain_ci = [], [], [], []
    for L, r in enumerate(resid):
        if method == "probe":
            ok = _probe_correct(r, y, train, test)
        else:
            with torch.no_grad():
                ok = lens(r).argmax(-1).cpu() == y
        ok = ok.float().numpy()
        a = bootstrap_stat(ok, seed=seed + L)
        g = bootstrap_stat([ok, base], lambda u, v: float(u.mean() - v.mean()), seed=seed + L)
        acc.append(a.mean)
        acc_ci.append([a.ci_low, a.ci_high])
        gain.append(g.mean)
        gain_ci.append([g.ci_low, g.ci_high])
    first = next((L for L in range(len(gain))
                  if gain[L] >= margin - 1e-12 and gain_ci[L][0] > 0), None)
    return Decoding(acc, acc_ci, float(base.mean()), gain, gain_ci, margin, first, method,
                    len(test))


def decoding(model: Model, batch: TaskBatch, method: str = "probe", margin: float = 0.1,
             seed: int = 0) -> Decoding:
    """:func:`decode_layers` of ``batch``'s answer tokens from the residual stream after each
    layer at the last position (run on held-out prompts: not those the neurons were ranked
    on)."""
    if method not in ("probe", "lens"):
        raise TaskError(f"decodability method must be 'probe' or 'lens', got {method!r}")
    resid = _resid_last(model, batch)

    def lens(r):
        return model.unembed(r.to(model.device, model.dtype)).float()

    return decode_layers(resid, batch.answers, method=method, margin=margin, seed=seed,
                         lens=lens)


def first_decodable_layer(scores: list[float] | Decoding, threshold: float | None = None) -> int:
    """The first decodable layer of a :class:`Decoding` (0, i.e. every layer, if none is), or,
    for a plain list of accuracies, the first reaching ``threshold`` (the last layer if none;
    kept for old callers: a fixed threshold ignores the majority baseline)."""
    if isinstance(scores, Decoding):
        return scores.first_layer if scores.first_layer is not None else 0
    return next((L for L, s in enumerate(scores) if s >= threshold), len(scores) - 1)


NEURON_COUNTS = (0, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000)


@dataclass
class NeuronCurve:
    """Faithfulness of the neuron circuit for each k (neurons per layer from ``first_layer``);
    ``chosen`` the smallest k reaching the target (or the best k)."""

    counts: list[int]
    faithfulness: list[float]
    chosen: int
    first_layer: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> NeuronCurve:
        return cls(**data)


def neuron_circuit(heads, ranking: torch.Tensor, first_layer: int, k: int) -> NodeCircuit:
    """Chosen ``heads``, whole MLPs before ``first_layer``, the top-``k`` neurons of
    ``ranking`` [n_layers, d_mlp] in every layer from ``first_layer`` on."""
    n_layers = ranking.shape[0]
    layers = range(first_layer, n_layers)
    neurons = {L: v for L, v in top_neurons(ranking, k, layers).items() if v} if k else {}
    if k >= ranking.shape[1]:
        return NodeCircuit(frozenset(heads), frozenset(range(n_layers)))
    return NodeCircuit(frozenset(heads), frozenset(range(first_layer)), neurons)


def neuron_curve(evaluator: NodeEvaluator, heads, ranking: torch.Tensor, first_layer: int, *,
                 target: float = 0.9, counts=NEURON_COUNTS,
                 progress: Progress = None) -> NeuronCurve:
    """Faithfulness of :func:`neuron_circuit` for each k in ``counts`` (capped at d_mlp).
    ``progress`` phase ``"neurons"``: circuits evaluated of ``len(counts)`` (distinct)."""
    d_mlp = ranking.shape[1]
    ks = sorted({min(k, d_mlp) for k in counts})
    values, steps = [], Steps(progress, "neurons", len(ks))
    for k in ks:
        values.append(evaluator.faithfulness(neuron_circuit(heads, ranking, first_layer, k)))
        steps.advance()
    hits = [k for k, f in zip(ks, values, strict=True) if f >= target]
    chosen = hits[0] if hits else ks[max(range(len(values)), key=values.__getitem__)]
    return NeuronCurve(ks, values, chosen, first_layer)
