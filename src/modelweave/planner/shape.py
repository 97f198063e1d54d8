"""A model's shape from its config alone: no weights are read or allocated.

:func:`model_shape` accepts a ``transformers`` ``PretrainedConfig``, a ``config.json`` path,
an HF model directory, the embedded model's name (``smollm2-135m``), a preset name of
:mod:`.presets` (published hyperparameters of common 7-8B checkpoints) or a hub id found in the
local HF cache. :attr:`ModelShape.n_params` is computed per family from the config (the tests
check it against ``sum(p.numel())`` of real tiny models of every supported family).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelWeaveError


class PlanError(ModelWeaveError):
    """A plan that cannot be made from the input: unreadable config, unknown method or dtype."""


#: bytes per element of each dtype name users write
DTYPES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2,
          "half": 2, "float": 4}
CANONICAL = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16",
             "half": "float16"}

#: families whose MLP is gated (gate, up, down: 3 matrices) rather than in/out (2)
_GATED = {"llama", "mistral", "qwen2", "olmo", "olmo2", "cohere", "cohere2"}
#: families with LayerNorm (weight and bias) rather than RMSNorm (weight)
_LAYER_NORM = {"gpt2", "gpt_neox"}


def dtype_name(dtype: str | None, default: str = "float32") -> str:
    """Canonical torch dtype name of ``dtype`` (``bf16`` -> ``bfloat16``); None -> default."""
    if dtype is None or dtype == "auto":
        return default
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise PlanError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return CANONICAL.get(key, key)


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name (``bfloat16`` -> 2)."""
    return DTYPES[dtype_name(dtype)]


@dataclass(frozen=True)
class ModelShape:
    """What memory and FLOP estimates need from a causal LM's config.

    Attributes:
        name: how the model was named (spec or preset).
        family: HF ``model_type`` (``llama``, ``gpt2``, ``cohere2`` ...).
        n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab: the usual sizes
            (``d_head`` from ``head_dim`` when the config sets it, else ``d_model / n_heads``).
        tied: input embedding and unembedding share one matrix.
        gated_mlp: gate/up/down MLP (Llama-style) rather than in/out (GPT-2-style).
        layer_norm: LayerNorm with bias (GPT-2, Pythia) rather than RMSNorm / weight-only norms.
        n_params: parameter count (elements, not bytes).
        config_dtype: the checkpoint's dtype as its config states it, or None.
    """

    name: str
    family: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    tied: bool
    gated_mlp: bool
    layer_norm: bool
    n_params: int
    config_dtype: str | None = None

    @property
    def n_senders(self) -> int:
        """Nodes of the EAP-IG graph that write to the residual: input, every head, every MLP
        (counted by :class:`~modelweave.circuits.graph.Graph`)."""
        from ..circuits.graph import Graph

        return Graph(self.n_layers, self.n_heads).n_senders

    @property
    def n_receivers(self) -> int:
        """Nodes that read it: q, k, v of every head, every MLP, the logits."""
        from ..circuits.graph import Graph

        return Graph(self.n_layers, self.n_heads).n_receivers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _get(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def count_params(config: Any) -> int:
    """Parameters of the HF causal LM ``config`` describes (elements), from its sizes alone.

    Families: llama, mistral, qwen2, olmo, olmo2, cohere, cohere2, gpt2, gpt_neox (others:
    :class:`PlanError`, or use :func:`count_params_meta`)."""
    family = config.model_type
    d, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    heads = config.num_attention_heads
    if family == "gpt2":
        f = _get(config, "n_inner", default=4 * d)
        per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
        total = vocab * d + config.n_positions * d + layers * per_layer + 2 * d
        return total + (0 if config.tie_word_embeddings else vocab * d)
    if family == "gpt_neox":
        f = config.intermediate_size
        bias = 1 if _get(config, "attention_bias", default=True) else 0
        per_layer = (4 * d + 3 * d * d + 3 * d * bias + d * d + d * bias
                     + d * f + f + f * d + d)
        total = vocab * d + layers * per_layer + 2 * d
        return total + (0 if config.tie_word_embeddings else vocab * d)
    if family not in _GATED:
        raise PlanError(f"no parameter count for model type {family!r}")
    kv = _get(config, "num_key_value_heads", default=heads)
    dh = _get(config, "head_dim", default=d // heads)
    f = config.intermediate_size
    q, k = heads * dh, kv * dh
    attn = d * q + 2 * d * k + q * d
    if family == "qwen2":
        attn += q + 2 * k
    elif _get(config, "attention_bias", default=False):
        attn += q + 2 * k + d
    mlp = 3 * d * f + ((2 * f + d) if _get(config, "mlp_bias", default=False) else 0)
    norms = {"olmo": 0, "olmo2": 2 * d + q + k, "cohere": d, "cohere2": d}.get(family, 2 * d)
    if family == "cohere" and _get(config, "use_qk_norm", default=False):
        norms += q + k
    final = 0 if family == "olmo" else d
    total = vocab * d + layers * (attn + mlp + norms) + final
    return total + (0 if config.tie_word_embeddings else vocab * d)


def count_params_meta(config: Any) -> int:
    """Parameters counted by building the model on torch's ``meta`` device (no memory): the
    fallback for families :func:`count_params` does not know."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def shape_from_config(config: Any, name: str | None = None) -> ModelShape:
    """:class:`ModelShape` of a ``transformers`` ``PretrainedConfig``."""
    family = getattr(config, "model_type", None)
    try:
        d, heads = config.hidden_size, config.num_attention_heads
        layers, vocab = config.num_hidden_layers, config.vocab_size
    except AttributeError as err:
        raise PlanError(f"config of {name or family!r} lacks a size: {err}") from None
    try:
        n_params = count_params(config)
    except PlanError:
        try:
            n_params = count_params_meta(config)
        except Exception as err:  # noqa: BLE001 - any failure means: not a causal LM we know
            raise PlanError(f"cannot size model type {family!r}: {err}") from None
    kv = _get(config, "num_key_value_heads", default=heads)
    d_mlp = _get(config, "intermediate_size", "n_inner", default=4 * d)
    dtype = _get(config, "dtype", "torch_dtype")
    return ModelShape(
        name=name or _get(config, "name_or_path", "_name_or_path", default="") or family,
        family=family, n_layers=layers, d_model=d, n_heads=heads, n_kv_heads=kv,
        d_head=_get(config, "head_dim", default=d // heads), d_mlp=d_mlp, d_vocab=vocab,
        tied=bool(getattr(config, "tie_word_embeddings", False)), gated_mlp=family in _GATED,
        layer_norm=family in _LAYER_NORM, n_params=int(n_params),
        config_dtype=str(dtype).removeprefix("torch.") if dtype else None)


def _config_from_dict(data: dict, where: str) -> Any:
    from transformers import AutoConfig

    data = dict(data)
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise PlanError(f"{where} has no model_type")
    try:
        return AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError) as err:
        raise PlanError(f"{where}: unknown model type {model_type!r} ({err})") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PlanError(f"cannot read config {path}: {err}") from None


def load_config(spec: Any) -> tuple[Any, str]:
    """(``PretrainedConfig``, display name) for a model spec, reading no weights.

    ``spec``: a ``PretrainedConfig``; a ``config.json`` file; an HF model directory; the
    embedded model's name; a preset name (:data:`.presets.PRESETS`); or a hub id present in
    the local HF cache (``HF_HUB_OFFLINE`` is honoured; otherwise the hub is asked for the
    config only)."""
    from transformers import PretrainedConfig

    from ..models import embedded
    from .presets import PRESETS, preset_config

    if isinstance(spec, PretrainedConfig):
        return spec, _get(spec, "name_or_path", default="") or spec.model_type
    text = os.fspath(spec)
    key = text.lower()
    if key in embedded.ALIASES:
        cached = embedded.cached_dir() / "config.json"
        if cached.is_file():
            return _config_from_dict(_read_json(cached), str(cached)), embedded.NAME
        return preset_config(embedded.NAME), embedded.NAME
    if key in PRESETS:
        return preset_config(key), key
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise PlanError(f"{text} has no config.json")
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            raise PlanError(f"{text}: plan a GGUF file through its HF config (a directory or "
                            "config.json of the same architecture)")
        return _config_from_dict(_read_json(path), str(path)), text
    if text.startswith((".", "/", "~")) or text.endswith(".json"):
        raise PlanError(f"no such file or directory: {text}")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(text, local_files_only=True), text
    except (OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise PlanError(f"no config for {text!r}: not a preset ({', '.join(sorted(PRESETS))}), "
                        "a file, a directory, or a hub id in the local cache")
    try:
        return AutoConfig.from_pretrained(text), text
    except (OSError, ValueError) as err:
        raise PlanError(f"no config for {text!r} (not a preset, file, directory or reachable "
                        f"hub id): {str(err).splitlines()[0]}") from None


def model_shape(spec: Any) -> ModelShape:
    """:class:`ModelShape` of a model spec (see :func:`load_config`)."""
    config, name = load_config(spec)
    return shape_from_config(config, name)
