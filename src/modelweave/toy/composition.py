"""Q-, K- and V-composition scores between heads of different layers (Elhage et al. 2021).

Row-vector convention (TransformerLens): a head reads ``x`` [d_model] as ``q = x W_Q``,
``k = x W_K``, ``v = x W_V`` (each [d_model, d_head]) and writes ``z W_O`` (W_O [d_head,
d_model]), so ``W_QK = W_Q W_K^T`` (the score is ``x_q W_QK x_k^T``) and ``W_OV = W_V W_O``.
The norm a head reads through multiplies its input by a gain ``g``: it is folded into the
reading side (``diag(g) W_Q``, ``diag(g) W_K``, ``diag(g) W_V``); centring, biases and rotary
position embeddings are left out (as in the paper).

For an earlier head ``A`` and a later head ``B``:

    Q: ||W_OV^A W_QK^B||_F   / (||W_OV^A||_F ||W_QK^B||_F)
    K: ||W_OV^A W_QK^B^T||_F / (||W_OV^A||_F ||W_QK^B||_F)
    V: ||W_OV^A W_OV^B||_F   / (||W_OV^A||_F ||W_OV^B||_F)

Each lies in [0, 1]; for rank-1 maps ``W_OV^A = v u^T`` and ``W_QK^B = a b^T`` the K score is
``|cos(u, b)|`` (what ``A`` writes against what ``B``'s keys read). A head whose map is zero
scores 0. ``baseline`` is the mean score of random Gaussian matrices of the same ranks, the
level Elhage et al. compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import Model
from ..models.parts import attn_in_norm, qk_normed
from ..tasks.toy_data import ToyModelError

MODES = ("q", "k", "v")


@dataclass
class HeadWeights:
    """One layer's head matrices, biases dropped, the input norm's gain folded in.

    Attributes:
        W_Q, W_K, W_V: [head, d_model, d_head] (key/value heads repeated for grouped-query
            attention).
        W_O: [head, d_head, d_model].
    """

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor

    @property
    def QK(self) -> torch.Tensor:
        """[head, d_model, d_model]."""
        return self.W_Q @ self.W_K.transpose(1, 2)

    @property
    def OV(self) -> torch.Tensor:
        """[head, d_model, d_model]."""
        return self.W_V @ self.W_O


def head_weights(model: Model, layer: int) -> HeadWeights:
    """The head matrices of ``layer`` read from the HF modules through the adapter."""
    cfg = model.cfg
    if qk_normed(model):
        raise ToyModelError(f"composition scores need plain q/k/v projections; {cfg.architecture} "
                            "applies norms after them")
    gain = torch.ones(cfg.d_model)
    norm = attn_in_norm(model, layer)
    if norm is not None and getattr(norm, "weight", None) is not None:
        gain = norm.weight.detach().float()

    def per_head(name: str) -> torch.Tensor:  # [H, d_model, d_head], the pre-norm's gain in
        w = getattr(model, name)(layer, per_query_head=name != "W_Q")
        return w.detach().float() * gain[None, :, None]

    W_O = model.W_O[layer].detach().float()  # [H, d_head, d_model]
    return HeadWeights(per_head("W_Q"), per_head("W_K"), per_head("W_V"), W_O)


def composition_score(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``||L R||_F / (||L||_F ||R||_F)`` over the last two axes (broadcast over the rest);
    0 where either matrix is zero."""
    num = torch.linalg.matrix_norm(left @ right)
    den = torch.linalg.matrix_norm(left) * torch.linalg.matrix_norm(right)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))


@dataclass
class CompositionScores:
    """``scores[mode]`` is [layer_A, head_A, layer_B, head_B]: how much head ``B`` reads what
    head ``A`` writes, NaN unless ``layer_A < layer_B``. ``baseline[mode]`` is the random
    level."""

    model: str
    scores: dict[str, torch.Tensor]
    baseline: dict[str, float]

    def top(self, mode: str = "k", k: int = 5) -> list[tuple[int, int, int, int, float]]:
        """The ``k`` highest pairs: (layer_A, head_A, layer_B, head_B, score)."""
        grid = torch.nan_to_num(self.scores[mode], nan=-1.0)
        order = grid.flatten().argsort(descending=True)[:k]
        shape = grid.shape
        out = []
        for i in order.tolist():
            la, rest = divmod(i, shape[1] * shape[2] * shape[3])
            ha, rest = divmod(rest, shape[2] * shape[3])
            lb, hb = divmod(rest, shape[3])
            out.append((la, ha, lb, hb, float(grid.flatten()[i])))
        return out

    def matrix(self, mode: str) -> torch.Tensor:
        """[layer*head, layer*head] for a heatmap (rows: earlier head A, columns: B)."""
        s = self.scores[mode]
        return s.reshape(s.shape[0] * s.shape[1], -1)

    def to_dict(self) -> dict:
        return {"model": self.model, "baseline": self.baseline,
                "scores": {m: torch.nan_to_num(v, nan=-1.0).tolist()
                           for m, v in self.scores.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> CompositionScores:
        scores = {}
        for m, v in data["scores"].items():
            t = torch.tensor(v)
            scores[m] = torch.where(t < 0, torch.full_like(t, float("nan")), t)
        return cls(data["model"], scores, data["baseline"])


def random_baseline(d_model: int, d_head: int, samples: int = 64, seed: int = 0
                    ) -> dict[str, float]:
    """Mean score of independent Gaussian ``W_OV`` / ``W_QK`` of rank ``d_head``."""
    gen = torch.Generator().manual_seed(seed)

    def low_rank():
        return (torch.randn(samples, d_model, d_head, generator=gen)
                @ torch.randn(samples, d_head, d_model, generator=gen))

    ov, qk, ov2 = low_rank(), low_rank(), low_rank()
    return {"q": float(composition_score(ov, qk).mean()),
            "k": float(composition_score(ov, qk.transpose(1, 2)).mean()),
            "v": float(composition_score(ov, ov2).mean())}


@torch.no_grad()
def composition_scores(model: Model) -> CompositionScores:
    """Q/K/V composition of every pair of heads in different layers (see the module)."""
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    weights = [head_weights(model, layer) for layer in range(L)]
    OV = torch.stack([w.OV for w in weights])  # [L, H, d, d]
    QK = torch.stack([w.QK for w in weights])
    scores = {m: torch.full((L, H, L, H), float("nan")) for m in MODES}
    for la in range(L):
        left = OV[la][:, None, None]  # [H, 1, 1, d, d]
        for lb in range(la + 1, L):
            right = {"q": QK[lb], "k": QK[lb].transpose(-1, -2), "v": OV[lb]}
            for m in MODES:
                scores[m][la, :, lb] = composition_score(left[:, 0], right[m][None])
    return CompositionScores(model.name, scores, random_baseline(cfg.d_model, cfg.d_head))
