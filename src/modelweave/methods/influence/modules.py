"""Which linear modules influence is computed over, named through the model's adapter.

- ``"mlp"`` (default, as the papers): every linear map inside each block's MLP (the module that
  holds the adapter's ``mlp_down``): Llama's ``gate/up/down_proj``, GPT-2's ``c_fc/c_proj``,
  GPT-NeoX's ``dense_h_to_4h/dense_4h_to_h`` ...
- ``"all"``: every linear map inside the decoder blocks (attention and MLP), never the
  embedding or the (often tied) unembedding.
- a list of module paths (relative to the HF model), or of ``"mlp"``/``"all"`` restricted to
  layers with ``layers=``.

kronfluence tracks ``nn.Linear`` only; GPT-2's ``Conv1D`` layers are replaced by equal
``nn.Linear`` layers in the private copy the analysis prepares (:func:`prepared_copy`).
"""

from __future__ import annotations

import copy

from torch import nn

from ...models.adapters import as_linear, is_linear, linear_shape
from ...models.parts import block_path, mlp_down_path, mlp_path, unembed_paths
from .data import InfluenceError


def parse_layers(text: str | None) -> list[int] | None:
    """``"20-29"``, ``"3,5,7"`` or a mix; ``None`` for every layer."""
    if not text:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
            if sep and int(hi) < int(lo):
                raise InfluenceError(f"--layers {text!r}: the range {part.strip()!r} is "
                                     f"reversed; write {hi}-{lo}")
    except ValueError:
        raise InfluenceError(f"--layers {text!r}: expected numbers and ranges like "
                             "'20-29' or '3,5,7'") from None
    return out


def _linears_under(root: nn.Module, prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name, m in root.named_modules() if name and is_linear(m)]


def resolve_modules(model, modules: str | list[str] = "mlp",
                    layers: list[int] | None = None) -> list[str]:
    """Module paths (relative to ``model.hf_model``) to track.

    Args:
        model: a :class:`~modelweave.models.Model`.
        modules: ``"mlp"``, ``"all"``, or a list of module paths.
        layers: restrict ``"mlp"``/``"all"`` to these block indices (default: every block).

    Raises:
        InfluenceError: a named module the model lacks, one that is not linear, the
            unembedding, an empty selection or a layer out of range.
    """
    hf = model.hf_model
    n_layers = model.cfg.n_layers
    if isinstance(modules, str) and modules in ("mlp", "all"):
        chosen = list(range(n_layers)) if layers is None else list(layers)
        bad = [i for i in chosen if not 0 <= i < n_layers]
        if bad:
            raise InfluenceError(f"layer {bad[0]} is out of range; the model has {n_layers} "
                                 f"layers (0 to {n_layers - 1})")
        out = []
        for i in chosen:
            block = block_path(model, i)
            if modules == "all":
                out += _linears_under(hf.get_submodule(block), block)
            else:
                path = mlp_path(model, i)
                found = _linears_under(hf.get_submodule(path), path)
                if not found:  # an MLP that is itself one linear map
                    found = [mlp_down_path(model, i)]
                out += found
        if not out:
            raise InfluenceError(f"no linear modules found for {modules!r} in {model.name}")
        return out
    names = [modules] if isinstance(modules, str) else list(modules)
    if not names:
        raise InfluenceError("the module list is empty; name modules, 'mlp' or 'all' (an empty "
                             "list would track every linear map, the unembedding included)")
    known = dict(hf.named_modules())
    unembed = unembed_paths(model)
    out = []
    for name in names:
        if name in ("mlp", "all"):
            out += resolve_modules(model, name, layers)
            continue
        if name not in known:
            close = [k for k in known if k.endswith(name.rsplit(".", 1)[-1])][:3]
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise InfluenceError(f"module {name!r} does not exist in {model.name}{hint}")
        if name in unembed:
            raise InfluenceError(f"module {name!r} is the unembedding; its covariance would be "
                                 "vocab x vocab. Track block modules instead")
        if not is_linear(known[name]):
            raise InfluenceError(f"module {name!r} is a {type(known[name]).__name__}, not a "
                                 "linear layer; influence tracks linear layers")
        out.append(name)
    return list(dict.fromkeys(out))


def module_shapes(model, names: list[str]) -> dict[str, tuple[int, int, bool]]:
    """``name -> (in_features, out_features, has_bias)`` of each tracked module."""
    return {name: linear_shape(model.hf_model.get_submodule(name)) for name in names}


def prepared_copy(model, names: list[str]) -> nn.Module:
    """A float32 deep copy of ``model.hf_model`` for kronfluence (whose ``prepare_model``
    changes a model in place with no undo), tracked ``Conv1D`` layers replaced by equal
    ``nn.Linear`` layers."""
    hf = copy.deepcopy(model.hf_model).float().eval()
    for name in names:
        module = hf.get_submodule(name)
        if not isinstance(module, nn.Linear):
            parent_name, _, child = name.rpartition(".")
            parent = hf.get_submodule(parent_name) if parent_name else hf
            setattr(parent, child, as_linear(module))
    return hf
