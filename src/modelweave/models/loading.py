"""``load_model``: one entry point for every way a user names a model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..errors import ModelLoadError, UnsupportedArchitectureError
from . import embedded
from .adapters import get_adapter, supported_architectures
from .device_map import AUTO_MAPS, check_device_map, meta_keys
from .model import Model

# GGUF ``general.architecture`` values that transformers converts and ModelWeave has adapters for.
GGUF_ARCHITECTURES = ("gpt2", "llama", "mistral", "qwen2")


def _resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:  # exact fp32 on CPU; the checkpoint's own dtype (usually bf16) on GPU
        return torch.float32 if device == "cpu" else "auto"
    if dtype == "auto":
        return "auto"
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ModelLoadError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
    return resolved


def _resolve_device(device: str | torch.device | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _check_config(config_dir: Path | str, trust_remote_code: bool, **kwargs) -> object:
    """Read the config and make sure an adapter exists, before any weights are loaded."""
    config_file = Path(config_dir) / "config.json"
    if config_file.is_file():
        try:
            raw = json.loads(config_file.read_text())
        except ValueError as err:
            raise ModelLoadError(f"{config_file} is not valid JSON: {err}") from None
        if "auto_map" in raw and not trust_remote_code:
            raise ModelLoadError(
                f"{config_dir} needs custom code from the checkpoint (auto_map in config.json); "
                "it is not run unless you pass trust_remote_code=True (CLI: --trust-remote-code)"
            )
    try:
        config = AutoConfig.from_pretrained(config_dir, trust_remote_code=trust_remote_code,
                                            **kwargs)
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ModelLoadError(
                f"{config_dir} needs custom code; pass trust_remote_code=True if you trust it"
            ) from None
        raise UnsupportedArchitectureError(
            f"{config_dir}: architecture not recognised ({str(err).splitlines()[0]}); "
            f"supported: {', '.join(supported_architectures())}"
        ) from None
    get_adapter(config)  # raises UnsupportedArchitectureError with the supported list
    return config


def _gguf_architecture(path: Path) -> str:
    try:
        from gguf import GGUFReader

        field = GGUFReader(path).fields.get("general.architecture")
        if field is None:
            raise ValueError("no general.architecture field")
        return bytes(field.parts[field.data[0]]).decode()
    except Exception as err:  # noqa: BLE001 - any parse failure means unreadable
        raise ModelLoadError(f"cannot read GGUF file {path}: {err}") from None


def _load_gguf(path: Path, dtype, place: dict):
    arch = _gguf_architecture(path)
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"GGUF file {path} holds a {arch!r} model; ModelWeave loads GGUF causal LMs of "
            f"architecture {', '.join(GGUF_ARCHITECTURES)} (or convert it to a HF directory)"
        )
    kwargs = dict(gguf_file=path.name)
    config = _check_config(path.parent, False, **kwargs)
    place = _checked_placement(place, config, False, str(path))
    tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=dtype, **place, **kwargs)
    return model, tokenizer


def _load_dir(path: Path | str, dtype, place: dict, trust_remote_code: bool,
              tokenizer_needed: bool, **kwargs):
    config = _check_config(path, trust_remote_code, **kwargs)
    place = _checked_placement(place, config, trust_remote_code, str(path))
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code, **place, **kwargs
    )
    tokenizer = None
    if tokenizer_needed:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                      **kwargs)
        except (OSError, ValueError):
            tokenizer = None  # weights without a tokenizer: token-id input only
    return model, tokenizer


def _load_hub(repo_id: str, dtype, place: dict, trust_remote_code: bool, tokenizer_needed: bool):
    try:  # already in the local HF cache: no network needed
        return _load_dir(repo_id, dtype, place, trust_remote_code, tokenizer_needed,
                         local_files_only=True)
    except OSError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelLoadError(
            f"{repo_id!r} is neither a local path nor in the Hugging Face cache, and "
            "HF_HUB_OFFLINE is set; download it where the hub is reachable and pass its directory"
        )
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(repo_id, timeout=10)
    except Exception as err:  # noqa: BLE001 - connection, auth and not-found errors alike
        raise ModelLoadError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(err).__name__}); it is "
            "not a local path either. Download it where the hub is reachable (huggingface-cli "
            "download ID --local-dir DIR) and pass DIR, or use the embedded 'smollm2-135m'"
        ) from None
    return _load_dir(repo_id, dtype, place, trust_remote_code, tokenizer_needed)


def _checked_placement(place: dict, config, trust_remote_code: bool, source: str) -> dict:
    """``from_pretrained`` placement arguments, a dict device map checked against the module
    names of the model ``config`` describes (built on the meta device: no weight is read)."""
    device_map = place.get("device_map")
    if isinstance(device_map, dict):
        keys, modules = meta_keys(config, trust_remote_code)
        place = {**place, "device_map": check_device_map(
            device_map, keys, modules, offload_folder=place.get("offload_folder"), source=source)}
    return place


def _placement(device: str | torch.device | None, device_map, max_memory,
               offload_folder) -> tuple[dict, str]:
    """(``from_pretrained`` placement arguments, the device string the dtype default keys
    on: ``cpu`` when everything runs on the CPU)."""
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise ModelLoadError("max_memory and offload_folder apply with a device_map only")
        device_str = _resolve_device(device)
        return {"device_map": device_str}, device_str
    if device is not None:
        raise ModelLoadError("pass either device= or device_map=, not both")
    if isinstance(device_map, str):
        if device_map not in AUTO_MAPS:
            raise ModelLoadError(f"device_map {device_map!r}: use one of {', '.join(AUTO_MAPS)} "
                                 "or a dict of module name -> device")
        on_cpu = not torch.cuda.is_available()
    elif isinstance(device_map, dict):
        on_cpu = all(str(v) in ("cpu", "disk", "meta") for v in device_map.values())
    else:
        raise ModelLoadError(f"device_map must be a string or a dict, not "
                             f"{type(device_map).__name__}")
    place = {"device_map": device_map}
    if max_memory is not None:
        place["max_memory"] = max_memory
    if offload_folder is not None:
        place["offload_folder"] = str(offload_folder)
    return place, "cpu" if on_cpu else "auto"


def _dispatch(model: PreTrainedModel, device_map, offload_folder, max_memory=None
              ) -> PreTrainedModel:
    """An in-memory model placed by ``device_map`` with accelerate."""
    from accelerate import dispatch_model, infer_auto_device_map

    if isinstance(device_map, str):
        device_map = infer_auto_device_map(
            model, max_memory=max_memory,
            no_split_module_classes=getattr(model, "_no_split_modules", None))
    checked = check_device_map(device_map, list(model.state_dict()),
                               [name for name, _ in model.named_modules()],
                               offload_folder=offload_folder)
    return dispatch_model(model, checked, offload_dir=offload_folder)


def load_model(
    spec: str | os.PathLike | PreTrainedModel,
    *,
    tokenizer=None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    prepend_bos: bool | None = None,
    trust_remote_code: bool = False,
) -> Model:
    """Load a causal LM as a hookable :class:`Model`.

    Args:
        spec: ``"smollm2-135m"`` (the embedded default), a local HF directory, a ``.gguf``
            file, a hub id (needs a reachable hub or a local HF cache), or a ``PreTrainedModel``
            (used as it is; moved only if ``device`` or ``dtype`` is given, dispatched if
            ``device_map`` is; a model accelerate already dispatched is used as placed).
        tokenizer: a tokenizer to use instead of the one found with the model.
        dtype: ``float32`` (default on CPU), ``bfloat16``, ``float16`` or ``auto`` (the
            checkpoint's dtype; default on GPU).
        device: ``cpu``, ``cuda``, ``cuda:1``, or ``auto`` (the same as ``device_map="auto"``);
            default: ``cuda`` if available, else ``cpu``.
        device_map: split the model over devices (accelerate): ``"auto"``, ``"balanced"``,
            ``"balanced_low_0"``, ``"sequential"``, or a dict of module name -> device
            (``{"model.embed_tokens": 0, "model.layers.0": 0, ..., "lm_head": 1}``; devices are
            GPU indices, ``"cuda:N"``, ``"cpu"`` or ``"disk"``). A dict must place every module;
            it is checked against the model's module names before any weight is loaded.
            Not together with ``device``. See ``docs/large_models.md``.
        max_memory: with a string ``device_map``: the most each device may hold
            (``{0: "20GiB", 1: "20GiB", "cpu": "60GiB"}``).
        offload_folder: where weights mapped to ``"disk"`` are kept.
        prepend_bos: override the tokenizer's BOS rule (see ``modelweave.models.tokenization``).
        trust_remote_code: allow running code shipped with a checkpoint (off by default).

    Raises:
        ModelLoadError: with a one-line reason (unsupported architecture, missing embedded
            package, unreadable file, remote code needed, unreachable hub, a device map that
            leaves a module unplaced).
    """
    place, device_str = _placement(device, device_map, max_memory, offload_folder)
    if isinstance(spec, PreTrainedModel):
        get_adapter(spec.config)
        if dtype is not None:
            spec.to(dtype=_resolve_dtype(dtype, device_str))
        if device_map is not None or str(device) == "auto":
            spec = _dispatch(spec, device_map or "auto", place.get("offload_folder"),
                             max_memory)
        elif device is not None:  # only what was asked for explicitly
            spec.to(device=device)
        hf_model, name = spec, getattr(spec, "name_or_path", None) or spec.config.model_type
        if tokenizer is None and name and Path(name).is_dir():
            tokenizer = AutoTokenizer.from_pretrained(name)
        return Model(hf_model, tokenizer, name=name, prepend_bos=prepend_bos)

    dtype_ = _resolve_dtype(dtype, device_str)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if text.lower() in embedded.ALIASES:
        hf_model, found = _load_dir(embedded.ensure_cached(), dtype_, place, False, True)
        name = embedded.NAME
    elif path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{path} is a file but not a .gguf; pass a directory or a .gguf")
        hf_model, found = _load_gguf(path, dtype_, place)
        name = str(path)
    elif path.is_dir():
        hf_model, found = _load_dir(path, dtype_, place, trust_remote_code, tokenizer is None)
        name = str(path)
    elif text.startswith((".", "/", "~")) or text.lower().endswith(".gguf"):
        raise ModelLoadError(f"no such file or directory: {text}")
    else:
        hf_model, found = _load_hub(text, dtype_, place, trust_remote_code, tokenizer is None)
        name = text
    return Model(hf_model, tokenizer or found, name=name, prepend_bos=prepend_bos)
