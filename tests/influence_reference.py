"""A slow, plain EK-FAC influence reference: the oracle the engine (kronfluence under
``methods/influence``) is tested against. Shares no code with the engine or kronfluence.

For each tracked linear module, from one document at a time (no padding):

- activations ``a`` [T, in] (every token) and output gradients ``g`` [T, out] of the document's
  summed next-token loss with targets *sampled* from the model (a generator seeded by a hash of
  the document's tokens, as the engine documents it);
- ``A = sum a^T a``, ``S = sum g^T g`` (scale is irrelevant: only eigenvectors are used),
  ``Q_A``, ``Q_S`` their eigenvectors (fp64);
- ``Lambda = mean over documents of (Q_S^T G Q_A)^2`` with ``G = g^T a`` the document's gradient;
- the query's gradient ``G_q`` (summed completion loss) preconditioned as
  ``Q_S ((Q_S^T G_q Q_A) / (Lambda + damping)) Q_A^T`` (damping default 0.1 x mean(Lambda) per
  module), dotted with each document's gradient under its true targets; summed over modules.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F


def _seed(ids: list[int]) -> int:
    digest = hashlib.blake2b(torch.tensor(ids, dtype=torch.int64).numpy().tobytes(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _capture(hf, names, ids, targets):
    """Per module: activations [T, in], output gradients [T, out] of the summed loss."""
    acts, grads, handles = {}, {}, []

    def hook(name):
        def forward(module, inputs, output):
            acts[name] = inputs[0].detach()[0].double()
            output.register_hook(lambda g: grads.__setitem__(name, g.detach()[0].double()))
        return forward

    for n in names:
        handles.append(hf.get_submodule(n).register_forward_hook(hook(n)))
    try:
        x = torch.tensor([ids])
        logits = hf(input_ids=x, use_cache=False).logits[0].float()
        F.cross_entropy(logits, torch.tensor(targets), ignore_index=-100,
                        reduction="sum").backward()
    finally:
        for h in handles:
            h.remove()
    hf.zero_grad(set_to_none=True)
    return {n: (acts[n], grads[n]) for n in names}


def _sampled(hf, ids):
    with torch.no_grad():
        probs = torch.softmax(hf(input_ids=torch.tensor([ids]), use_cache=False)
                              .logits[0].float(), -1)
    drawn = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(_seed(ids)))
    return drawn.squeeze(-1)[:-1].tolist() + [-100]


def ekfac_scores(hf, names: list[str], docs: list[list[int]],
                 queries: list[tuple[list[int], int]], damping: float | None = None,
                 lambdas: dict | None = None) -> torch.Tensor:
    """[Q, D] EK-FAC influence (see the module docstring). ``docs``: token ids;
    ``queries``: (token ids, number of prompt tokens). ``lambdas``, when given, receives
    each module's mean eigenvalue correction (to pick a damping on its scale)."""
    params = [p for n in names for p in hf.get_submodule(n).parameters()]
    for p in params:
        p.requires_grad_(True)
    fisher = [_capture(hf, names, ids, _sampled(hf, ids)) for ids in docs]
    true = [_capture(hf, names, ids, ids[1:] + [-100]) for ids in docs]
    qgrads = [_capture(hf, names, ids, [-100] * (n - 1) + ids[n:] + [-100])
              for ids, n in queries]
    for p in params:
        p.requires_grad_(False)
    total = torch.zeros(len(queries), len(docs), dtype=torch.float64)
    for name in names:
        a_cov = sum(c[name][0].T @ c[name][0] for c in fisher)
        s_cov = sum(c[name][1].T @ c[name][1] for c in fisher)
        qa, qs = torch.linalg.eigh(a_cov).eigenvectors, torch.linalg.eigh(s_cov).eigenvectors
        lam = torch.stack([(qs.T @ (c[name][1].T @ c[name][0]) @ qa) ** 2
                           for c in fisher]).mean(0)
        if lambdas is not None:
            lambdas[name] = float(lam.mean())
        damp = 0.1 * float(lam.mean()) if damping is None else damping
        for i, c in enumerate(qgrads):
            gq = c[name][1].T @ c[name][0]
            pre = qs @ ((qs.T @ gq @ qa) / (lam + damp)) @ qa.T
            for j, t in enumerate(true):
                total[i, j] += float((pre * (t[name][1].T @ t[name][0])).sum())
    return total


def gradient_scores(hf, names, docs, queries) -> tuple[torch.Tensor, torch.Tensor,
                                                      torch.Tensor]:
    """The plain gradient dot products [Q, D] and the query [Q] and document [D] gradient
    norms (true targets)."""
    params = [p for n in names for p in hf.get_submodule(n).parameters()]
    for p in params:
        p.requires_grad_(True)

    def flat(ids, targets):
        c = _capture(hf, names, ids, targets)
        return torch.cat([(c[n][1].T @ c[n][0]).flatten() for n in names])

    d = torch.stack([flat(ids, ids[1:] + [-100]) for ids in docs])
    q = torch.stack([flat(ids, [-100] * (n - 1) + ids[n:] + [-100]) for ids, n in queries])
    for p in params:
        p.requires_grad_(False)
    return q @ d.T, q.norm(dim=1), d.norm(dim=1)
