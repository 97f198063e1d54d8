"""Contrastive steering vectors (Rimsky et al. 2023, and the mean / PCA variants of repeng and
steering-vectors).

From pairs of texts that differ in one property (positive vs negative), read a residual-width
site at one or more layers and one position per text, and take per layer

- ``mean``: the mean over pairs of (positive - negative) (CAA's vector);
- ``pca``: the first principal direction of the differences, *uncentred* (the top right
  singular vector of the [pairs, d_model] difference matrix), signed to agree with the mean
  and scaled to its length;
- ``pca_centred``: the same after centring the differences (repeng's default; it is *not*
  the mean difference and can point elsewhere).

Where it was read is kept with the vector (:class:`SteeringVectors`: site, layers, position,
method, pair count), so it can be applied where it was measured.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...errors import PairCountError, SteeringError
from ...io import load_bundle, read_json, read_jsonl, save_bundle
from ...models.steering import check_layer, site_name

if TYPE_CHECKING:
    from ...models import Model

METHODS = ("mean", "pca", "pca_centred")


@dataclass
class SteeringVectors:
    """Directions read at one site of several layers.

    Attributes:
        vectors: [n_layers_read, d_model] float32, row ``i`` for ``layers[i]``.
        layers: the layers read.
        site: the site kind (``hook_resid_post``: the block output).
        position: ``"last"`` (each text's last token), ``"mean"`` (mean over its tokens) or
            a token index.
        method: ``mean``, ``pca`` or ``pca_centred``.
        n_pairs: contrastive pairs used.
        meta: anything else (model name, pair file ...).
    """

    vectors: torch.Tensor
    layers: list[int]
    site: str = "hook_resid_post"
    position: str | int = "last"
    method: str = "mean"
    n_pairs: int = 0
    meta: dict = field(default_factory=dict)

    def at(self, layer: int) -> torch.Tensor:
        """The vector [d_model] read at ``layer``."""
        if layer not in self.layers:
            raise SteeringError(f"no vector for layer {layer}; read at {self.layers}")
        return self.vectors[self.layers.index(layer)]

    def norms(self) -> list[float]:
        return self.vectors.norm(dim=-1).tolist()

    def save(self, path: str | Path) -> Path:
        """``path.safetensors`` (the vectors) and ``path.json`` (the rest)."""
        path = Path(path)
        info = {"layers": self.layers, "site": self.site, "position": self.position,
                "method": self.method, "n_pairs": self.n_pairs, "meta": self.meta,
                "norms": self.norms()}
        save_bundle(path, info, {"vectors": self.vectors}, indent=1)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SteeringVectors:
        info, tensors = load_bundle(path, error=SteeringError)
        info.pop("norms", None)
        return cls(tensors["vectors"], **info)


def load_pairs_file(path: str | Path) -> tuple[list[str], list[str]]:
    """Positive and negative texts from a pairs file: ``.jsonl`` (``{"positive": ...,
    "negative": ...}`` per line), ``.json`` (a list of such objects, or ``{"positive":
    [...], "negative": [...]}``), or ``.csv``/``.tsv`` with ``positive`` and ``negative``
    columns."""
    path = Path(path)
    if not path.exists():
        raise SteeringError(f"pairs file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = [row for _, row in read_jsonl(path, SteeringError)]
    elif suffix == ".json":
        data = read_json(path, error=SteeringError)
        if isinstance(data, dict):
            columns = [data.get("positive", []), data.get("negative", [])]
            if not all(isinstance(c, list) for c in columns):
                raise SteeringError(f"pairs file {path}: 'positive' and 'negative' must be "
                                    "lists of texts")
            return _check_pairs(*columns, where=f"pairs file {path}: ")
        rows = data
    elif suffix in (".csv", ".tsv"):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    else:
        raise SteeringError(f"pairs file {path}: unknown suffix {path.suffix!r}; use .jsonl, "
                            ".json, .csv or .tsv")
    if not isinstance(rows, list):
        raise SteeringError(f"pairs file {path}: expected a list of records with 'positive' "
                            f"and 'negative', got {type(rows).__name__}")
    bad = next((i for i, r in enumerate(rows, 1)
                if not isinstance(r, dict) or "positive" not in r or "negative" not in r), None)
    if bad is not None:
        raise SteeringError(f"pairs file {path}: record {bad} needs 'positive' and 'negative'"
                            " (every record does)")
    return _check_pairs([r["positive"] for r in rows], [r["negative"] for r in rows],
                        where=f"pairs file {path}: ")


def _check_pairs(positives: Sequence[str], negatives: Sequence[str], where: str = ""
                 ) -> tuple[list[str], list[str]]:
    for i, text in enumerate([*positives, *negatives]):
        if not isinstance(text, str) or not text:
            side, j = ("positive", i) if i < len(positives) else ("negative", i - len(positives))
            raise SteeringError(f"{where}{side} text {j + 1} is {text!r}: pairs are non-empty "
                                "texts")
    if len(positives) != len(negatives):
        raise PairCountError(f"contrastive pairs: {len(positives)} positive texts but "
                             f"{len(negatives)} negative ones; give one negative per positive")
    if not positives:
        raise PairCountError("contrastive pairs: no pairs given")
    return list(positives), list(negatives)


def read_site(model: Model, texts: list[str], names: list[str], position: str | int = "last",
              batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Per site name, [len(texts), d_model] activations (float32) at each text's last token
    (``position="last"``), averaged over its tokens (``"mean"``), or at token ``position``
    of each text (an int; negative counts from the text's end: -1 is ``"last"``)."""
    if position not in ("last", "mean") and not isinstance(position, int):
        raise SteeringError(f"position must be 'last', 'mean' or a token index, got "
                            f"{position!r}")
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for start in range(0, len(texts), batch_size):
        tokens, mask = model.encode(texts[start:start + batch_size])
        _, cache = model.run_with_cache(tokens, names, attention_mask=mask)
        lengths = mask.sum(-1)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        for n in names:
            acts = cache[n].float()
            if position == "last" or isinstance(position, int):
                index = lengths - 1 if position == "last" else (
                    position + lengths if position < 0 else torch.full_like(lengths, position))
                if bool(((index < 0) | (index >= lengths)).any()):
                    raise SteeringError(f"position {position} is outside a text of "
                                        f"{int(lengths.min())} tokens")
                out[n].append(acts[rows, index].cpu())
            else:
                m = mask[..., None].to(acts.dtype)
                out[n].append(((acts * m).sum(1) / m.sum(1)).cpu())
    return {n: torch.cat(v) for n, v in out.items()}


def direction(diffs: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """One direction [d_model] from differences [pairs, d_model] (see the module docstring)."""
    if method not in METHODS:
        raise SteeringError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    mean = diffs.mean(0)
    if method == "mean":
        return mean
    x = diffs - mean if method == "pca_centred" else diffs
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    pc = vh[0]
    if float(pc @ mean) < 0:
        pc = -pc
    return pc * mean.norm()


def contrastive_vectors(model: Model, positives: Sequence[str], negatives: Sequence[str], *,
                        layers: int | Sequence[int] | None = None,
                        site: str = "hook_resid_post", position: str | int = "last",
                        method: str = "mean", batch_size: int = 16) -> SteeringVectors:
    """Steering directions from contrastive pairs (``positives[i]`` vs ``negatives[i]``).

    Args:
        layers: a layer, several, or ``None`` for every layer.
        site: a residual-width site kind (``hook_resid_post``, ``hook_resid_pre`` ...).
        position: ``"last"`` token of each text, ``"mean"`` over its tokens, or a token index
            (negative from the end).
        method: ``mean``, ``pca`` or ``pca_centred``.

    Raises:
        PairCountError: mismatched or empty pairs. LayerRangeError: a bad layer.
    """
    positives, negatives = _check_pairs(positives, negatives)
    if method not in METHODS:
        raise SteeringError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if layers is None:
        layers = list(range(model.cfg.n_layers))
    layers = [check_layer(model, layer) for layer in
              ([layers] if isinstance(layers, int) else list(layers))]
    names = [site_name(model, site, layer) for layer in layers]
    pos = read_site(model, positives, names, position, batch_size)
    neg = read_site(model, negatives, names, position, batch_size)
    vectors = torch.stack([direction(pos[n] - neg[n], method) for n in names])
    return SteeringVectors(vectors, layers, names[0].split(".", 2)[-1], position, method,
                           len(positives), {"model": model.name})
