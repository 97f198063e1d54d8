"""Models split over devices (accelerate device maps): checking a map before loading, where each
part of a split model computes, and reading weights that accelerate keeps offloaded.

A device map assigns module-name prefixes to devices (``{"model.layers.0": 0, ...,
"lm_head": 1}``; values ``int`` GPU index, ``"cuda:N"``, ``"cpu"``, ``"mps"`` or ``"disk"``).
Accelerate attaches an ``AlignDevicesHook`` to every placed module: it moves the module's inputs
to its execution device and, for offloaded modules (``"disk"``, or ``"cpu"`` next to GPUs),
loads the weights just for the module's own forward and puts them back on the meta device
afterwards. Hence two rules for code that works on split models:

- a tensor added to an activation inside a hook goes to the activation's device
  (``value.to(activation.device)``), never to ``model.device``;
- a weight read outside the module's own forward (e.g. ``W_O`` in a forward hook of the
  output projection, where accelerate has already put it back) is read through
  :func:`module_tensor`, which fetches an offloaded weight from accelerate's store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from ..errors import ModelLoadError, ModelWeaveError

#: Device-map strings accelerate computes a map from.
AUTO_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE = re.compile(r"^(cpu|disk|meta|mps|cuda(:\d+)?|xpu(:\d+)?|npu(:\d+)?)$")


def _device_name(value) -> str:
    """``0`` -> ``"cuda:0"``; strings and torch devices as written."""
    if isinstance(value, bool):
        raise ModelLoadError(f"device map value {value!r} is not a device")
    if isinstance(value, int):
        return f"cuda:{value}"
    return str(value)


def placement_units(keys: Iterable[str]) -> list[str]:
    """The modules a device map places, in order, for state-dict ``keys``: each decoder block
    (``model.layers.3``) and each other module owning parameters (``model.embed_tokens``,
    ``lm_head``)."""
    units: list[str] = []
    for key in keys:
        parts = key.split(".")
        # blocks: the first numbered component and what precedes it; else the owning module
        idx = next((i for i, p in enumerate(parts[:-1]) if p.isdigit()), None)
        unit = ".".join(parts[: idx + 1]) if idx is not None else ".".join(parts[:-1]) or key
        if unit not in units:
            units.append(unit)
    return units


def two_part_map(keys: Iterable[str], first, second) -> dict[str, object]:
    """A complete device map putting the first half of :func:`placement_units` on ``first``
    and the rest on ``second`` (e.g. ``two_part_map(model.state_dict(), 0, 1)``)."""
    units = placement_units(keys)
    half = (len(units) + 1) // 2
    return {u: first if i < half else second for i, u in enumerate(units)}


def _example(keys: list[str]) -> str:
    """A complete two-device map for these parameter names, abbreviated in the middle."""
    entries = [f"{u!r}: {d}" for u, d in two_part_map(keys, 0, 1).items()]
    if len(entries) > 8:
        entries = [*entries[:4], "...", *entries[-3:]]
    return "{" + ", ".join(entries) + "}"


def _covered(key: str, prefixes: list[str]) -> bool:
    return any(p == "" or key == p or key.startswith(p + ".") for p in prefixes)


def unplaced_modules(keys: list[str], prefixes: list[str]) -> list[str]:
    """The shortest module names whose every parameter/buffer in ``keys`` no prefix covers."""
    missing = [k for k in keys if not _covered(k, prefixes)]
    out: list[str] = []
    for key in missing:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[:n])
            under = [k for k in keys if k == name or k.startswith(name + ".")]
            if all(not _covered(k, prefixes) for k in under):
                if name not in out:
                    out.append(name)
                break
    return out


def check_device_map(device_map: Mapping, keys: list[str], modules: Iterable[str] = (), *,
                     offload_folder=None, source: str = "the model") -> dict[str, str]:
    """Validate a dict device map against the model's state-dict ``keys`` and module names
    (computed on the meta device, before any weight is read). Returns the map with device
    names as strings.

    Raises:
        ModelLoadError: a module no entry places (named, with an example of a complete map),
            an entry naming no module, a value that is no device, or ``"disk"`` without an
            offload folder.
    """
    if not device_map:
        raise ModelLoadError("the device map is empty; pass device_map='auto' or a dict "
                             f"such as {_example(keys)}")
    names, modules = {}, set(modules)
    for prefix, value in device_map.items():
        name = _device_name(value.type if isinstance(value, torch.device) and value.index is None
                            else value)
        if not _DEVICE.match(name):
            raise ModelLoadError(f"device map entry {prefix!r}: {value!r} is not a device "
                                 "(use a GPU index, 'cuda:N', 'cpu', 'mps' or 'disk')")
        known = prefix in modules or any(k == prefix or k.startswith(prefix + ".") for k in keys)
        if prefix and not known:
            raise ModelLoadError(f"device map entry {prefix!r} names no module of {source}; "
                                 f"a complete map: {_example(keys)}")
        names[prefix] = name
    missing = unplaced_modules(keys, list(names))
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6
                                          else "")
        raise ModelLoadError(f"the device map places no device for {shown}; every module needs "
                             f"one, e.g. {_example(keys)} (or use device_map='auto')")
    if "disk" in names.values() and offload_folder is None:
        raise ModelLoadError("the device map offloads modules to 'disk'; pass offload_folder= "
                             "(a directory for the offloaded weights)")
    return names


def meta_keys(config, trust_remote_code: bool = False) -> tuple[list[str], list[str]]:
    """State-dict names and module names of the model a config describes, built on the meta
    device (no weights are allocated or read)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return list(empty.state_dict()), [name for name, _ in empty.named_modules()]


def compact(device_map: Mapping | None) -> dict[str, str] | None:
    """A device map as JSON-ready ``{prefix: device}``, runs of consecutive numbered blocks on
    one device merged (``"model.layers.0-15": "cuda:0"``)."""
    if not device_map:
        return None
    out: dict[str, str] = {}
    run: list = []  # [stem, first, last, device]

    def flush():
        if run:
            stem, first, last, dev = run
            out[f"{stem}.{first}" if first == last else f"{stem}.{first}-{last}"] = dev
            run.clear()

    for prefix, value in device_map.items():
        dev = _device_name(value)
        stem, _, tail = prefix.rpartition(".")
        if tail.isdigit() and run and run[0] == stem and run[3] == dev \
                and int(tail) == run[2] + 1:
            run[2] = int(tail)
            continue
        flush()
        if tail.isdigit():
            run.extend([stem, int(tail), int(tail), dev])
        else:
            out[prefix] = dev
    flush()
    return out


def execution_device(module: torch.nn.Module, default: torch.device) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device, else the device of
    its first parameter that is not on the meta device, else ``default``."""
    for sub in module.modules():
        hook = getattr(sub, "_hf_hook", None)
        dev = getattr(hook, "execution_device", None)
        if dev is not None:
            return torch.device(_device_name(dev))
        for p in sub.parameters(recurse=False):
            if p.device.type != "meta":
                return p.device
    return default


def is_offloaded(module: torch.nn.Module) -> bool:
    """Whether some part of ``module`` keeps its weights offloaded between forward passes."""
    return any(getattr(getattr(m, "_hf_hook", None), "offload", False) for m in module.modules())


def require_resident(model, what: str) -> None:
    """Raise a one-line :class:`ModelWeaveError` if ``model`` (a ``Model`` or HF module) keeps
    weights offloaded: ``what`` (a method that edits or trains weights) cannot run then."""
    hf = getattr(model, "hf_model", model)
    if is_offloaded(hf):
        raise ModelWeaveError(f"{what} cannot run on a model with offloaded weights (device map "
                              "'disk', or 'cpu' beside GPUs); place every module on a device")


def module_tensor(module: torch.nn.Module, name: str = "weight") -> torch.Tensor | None:
    """``module.<name>`` with its values: read from accelerate's offload store when the module
    is offloaded (its parameter is then on the meta device outside its forward)."""
    value = getattr(module, name, None)
    if value is None or value.device.type != "meta":
        return value
    hook = getattr(module, "_hf_hook", None)
    weights = getattr(hook, "weights_map", None)
    if getattr(hook, "offload", False) and weights is not None:
        return weights[name].to(_device_name(hook.execution_device))
    if hook is not None and _device_name(getattr(hook, "execution_device", "")) == "meta":
        return value  # a module placed on the meta device on purpose (shape-only runs)
    raise ModelWeaveError(f"{type(module).__name__}.{name} is on the meta device with no "
                          "offloaded copy: the model's weights were never loaded")
