"""``plan_unit``: will a unit fit, with which batch, and how long will it take.

A unit is planned from a :class:`PlanSpec` (a memory model of :mod:`.memory`, its batch knob
and a note); the experiment method kinds say which spec each of their units follows, so this
module knows memory kinds only. The total peak is the runtime baseline (the
process with torch and transformers imported on CPU, :data:`CPU_RUNTIME`; the CUDA context on
a GPU, :data:`CUDA_RUNTIME`), the weights (``n_params x`` bytes per element) and the method's
peak. The largest batch that fits is found by bisection (every model grows with the batch).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from . import memory as mem
from .flops import CPU_FLOPS, GPU_FLOPS, method_flops
from .shape import ModelShape, PlanError, dtype_bytes, dtype_name, model_shape
from .sizes import format_size

#: resident memory of a CPU process that has imported modelweave, torch and transformers,
#: before any model (measured: ``bench/plan.py`` prints it as ``runtime``)
CPU_RUNTIME = 0.35e9
#: a CUDA context plus the kernels torch loads (an assumption, not measured here: 0.5 GB is
#: typical of recent CUDA versions on an H100)
CUDA_RUNTIME = 0.5e9
#: positions per prompt when the caller does not say
DEFAULT_SEQ = 32
#: recommended share of the memory to leave free (``headroom=``; the CLI's default): on CPU
#: the measured total peaks ran up to 14% above the prediction (docs/planner.md)
HEADROOM = 0.15

#: memory-model kind -> (the batch parameter it sizes, its default)
BATCH: dict[str, tuple[str | None, int | None]] = {
    "eval": ("batch_size", 32), "patch": ("max_rows", 512), "eap": ("batch_size", 16),
    "eap-ig": ("batch_size", 16), "attribution": (None, None), "faithfulness": ("batch_size", 16)}


@dataclass(frozen=True)
class PlanSpec:
    """How to plan a unit: which memory model of :mod:`.memory` it follows and which of its
    parameters is the batch knob. A method kind returns one from ``plan(params)``; the planner
    knows memory kinds only, never a method name.

    Attributes:
        kind: a memory-model kind (a key of :data:`BATCH`: ``eval``, ``patch``, ``eap``,
            ``eap-ig``, ``attribution``, ``faithfulness``).
        batch_param: the unit parameter that sets the batch (None: nothing to size).
        batch_default: its value when the unit does not set it.
        note: how the unit is approximated (empty when the model is exact), shown with the plan.
        label: the plan's name for the unit (``Plan.method``: ``discover/eap-ig``).
    """

    kind: str
    batch_param: str | None = None
    batch_default: int | None = None
    note: str = ""
    label: str = ""

    @classmethod
    def of(cls, kind: str, note: str = "", label: str = "") -> PlanSpec:
        """The spec of memory kind ``kind`` with its own batch knob (:data:`BATCH`)."""
        if kind not in BATCH:
            raise PlanError(f"unknown memory kind {kind!r}; kinds: {', '.join(BATCH)}")
        param, default = BATCH[kind]
        return cls(kind, param, default, note, label or kind)


@dataclass
class Plan:
    """A unit's memory and time plan. Sizes in bytes, time in seconds.

    Attributes:
        fits: some batch fits ``memory_bytes`` (less the ``headroom`` asked for).
        batch_size: the largest value of ``batch_param`` that fits (capped where a larger one
            cannot help), or None.
        peak_bytes: total peak at the batch the unit would run with (the requested or default
            one, lowered to ``batch_size``; batch 1 when nothing fits).
        breakdown: ``runtime``, ``weights``, ``activations``, ``caches``, ``gradients`` at that
            peak (they sum to ``peak_bytes``); ``phase`` names when it occurs.
        flops, seconds: work of the whole unit and its time at ``flops_per_second``.
        message: when it does not fit, what would (one line).
    """

    model: str
    method: str
    kind: str
    note: str
    n: int
    seq: int
    dtype: str
    device: str
    memory_bytes: int
    fits: bool
    batch_param: str | None
    batch: int | None
    batch_size: int | None
    peak_bytes: float
    breakdown: dict[str, float]
    phase: str
    flops: float
    seconds: float
    flops_per_second: float
    message: str = ""
    shape: dict[str, Any] = field(default_factory=dict)
    #: the batch parameter's value when the unit does not set it
    batch_default: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def method_memory(shape: ModelShape, kind: str, e: int, n: int, seq: int, batch: int | None,
                  params: dict, device: str = "cpu") -> mem.MethodMemory:
    """The memory model of ``kind`` at ``batch`` (see :mod:`.memory`)."""
    if kind == "eval":
        return mem.eval_memory(shape, e, n, seq, batch)
    if kind == "patch":
        layers = params.get("layers")
        return mem.patch_memory(shape, e, n, seq, batch, params.get("grid", "heads"),
                                len(layers) if layers else None)
    if kind in ("eap", "eap-ig"):
        scoring = mem.eap_memory(shape, e, n, seq, min(batch, n), int(params.get("steps", 5)),
                                 ig=kind == "eap-ig", heap=device == "cpu")
        if params.get("scoring_only"):
            return scoring
        return mem._peak(scoring, mem.faithfulness_memory(shape, e, n, seq, batch))
    if kind == "faithfulness":
        return mem.faithfulness_memory(shape, e, n, seq, batch)
    return mem.attribution_memory(shape, e, n, seq)


def _device_memory(device: str) -> int:
    if device == "cpu":
        try:
            with open("/proc/meminfo") as handle:
                for line in handle:
                    if line.startswith("MemTotal:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    import torch

    if not torch.cuda.is_available():
        raise PlanError("no GPU here: state its memory (--gpu-memory 80GB)")
    return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)


def _total(shape: ModelShape, kind: str, dtype: str, device: str, n: int, seq: int,
           batch: int | None, params: dict) -> tuple[float, dict[str, float], str]:
    e = dtype_bytes(dtype)
    m = method_memory(shape, kind, e, n, seq, batch, params, device)
    parts = {"runtime": CPU_RUNTIME if device == "cpu" else CUDA_RUNTIME,
             "weights": float(shape.n_params * e), "activations": 0.0, "caches": 0.0,
             "gradients": 0.0}
    for key, value in m.parts.items():
        parts[key] += float(value)
    return sum(parts.values()), parts, m.phase


def _largest(fits, low: int, high: int) -> int | None:
    """Largest ``x`` in ``low..high`` with ``fits(x)`` (monotone: true then false), or None."""
    if not fits(low):
        return None
    if fits(high):
        return high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def _cap(shape: ModelShape, kind: str, n: int, seq: int, params: dict) -> int:
    if kind == "patch":
        return n * mem.units_per_layer(shape, params.get("grid", "heads"), seq)
    return n


def plan_unit(model_spec: Any, spec: PlanSpec | str, params: dict | None = None, n: int = 64,
              seq: int | None = None, dtype: str | None = None,
              memory_bytes: int | None = None, *, device: str | None = None,
              flops_per_second: float | None = None, headroom: float = 0.0) -> Plan:
    """Plan one unit that follows ``spec`` (a :class:`PlanSpec`, or a memory kind's name
    such as ``eap-ig``) with parameters ``params`` on ``model_spec`` (see
    :func:`.shape.load_config`) over ``n`` prompts of ``seq`` tokens (default
    :data:`DEFAULT_SEQ`). An experiment method by name: :func:`modelweave.experiments.plan_method`.

    Args:
        dtype: ``float32``/``bfloat16``/``float16`` (aliases ``fp32``, ``bf16``); default as
            ``load_model``: float32 on CPU, the checkpoint's dtype on a GPU.
        memory_bytes: memory to fit in (default: this machine's RAM on CPU, the GPU's memory).
        device: ``cpu`` or ``cuda`` (default: ``cuda`` when a GPU is visible, else ``cpu``).
        flops_per_second: throughput for ``seconds`` (default :data:`.flops.CPU_FLOPS` /
            :data:`.flops.GPU_FLOPS`).
        headroom: share of ``memory_bytes`` kept free (a plan fits when its peak is at most
            ``(1 - headroom) * memory_bytes``); default 0, :data:`HEADROOM` recommended.

    Raises:
        PlanError: unknown memory kind or dtype, unreadable config, n or seq below 1.
    """
    params = dict(params or {})
    if isinstance(spec, str):
        spec = PlanSpec.of(spec)
    elif spec.kind not in BATCH:
        raise PlanError(f"unknown memory kind {spec.kind!r}; kinds: {', '.join(BATCH)}")
    kind, key, note = spec.kind, spec.label or spec.kind, spec.note
    if n < 1 or (seq is not None and seq < 1):
        raise PlanError(f"n and seq must be at least 1, got n={n}, seq={seq}")
    seq = seq or DEFAULT_SEQ
    shape = model_shape(model_spec)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = "cpu" if device == "cpu" else "cuda"
    default_dtype = "float32" if device == "cpu" else (shape.config_dtype or "float32")
    dtype = dtype_name(dtype, default_dtype)
    memory_bytes = int(memory_bytes or _device_memory(device))
    param, default = spec.batch_param, spec.batch_default
    requested = int(params.get(param) or default) if param else None
    cap = _cap(shape, kind, n, seq, params)

    def total(batch, dt=dtype, n_=n, seq_=seq):
        return _total(shape, kind, dt, device, n_, seq_, batch, params)

    def fits_at(batch, **kw) -> bool:
        return total(batch, **kw)[0] <= (1 - headroom) * memory_bytes

    largest = _largest(fits_at, 1, cap) if param else (1 if fits_at(None) else None)
    if param is None:
        batch = None
    else:
        batch = 1 if largest is None else max(1, min(requested, largest, cap))
    peak, parts, phase = total(batch)
    rate = flops_per_second or (CPU_FLOPS if device == "cpu" else GPU_FLOPS)
    flops = method_flops(shape, kind, n, seq, steps=int(params.get("steps", 5)),
                         grid=params.get("grid", "heads"), layers=params.get("layers"))
    if kind in ("eap", "eap-ig") and not params.get("scoring_only"):
        flops += method_flops(shape, "faithfulness", n, seq)
    plan = Plan(model=shape.name, method=key, kind=kind, note=note, n=n, seq=seq, dtype=dtype,
                device=device, memory_bytes=memory_bytes, fits=largest is not None,
                batch_param=param, batch=batch, batch_size=largest, peak_bytes=peak,
                breakdown=parts, phase=phase, flops=flops, seconds=flops / rate,
                flops_per_second=rate, shape=shape.to_dict(), batch_default=default)
    if not plan.fits:
        plan.message = _advice(plan, fits_at, memory_bytes, headroom)
    return plan


def _advice(plan: Plan, fits_at, memory_bytes: int, headroom: float) -> str:
    """One line: what the unit needs and what would fit."""
    where = f"{'a GPU' if plan.device == 'cuda' else 'a machine'} with " \
        f"{format_size(memory_bytes)}"
    if headroom:
        where = f"the {format_size((1 - headroom) * memory_bytes)} usable ({headroom:.0%} " \
            f"headroom) of {where}"
    at = f" at {plan.batch_param} 1" if plan.batch_param else ""
    head = (f"{plan.method} on {plan.model} needs {format_size(plan.peak_bytes)}{at} "
            f"({plan.dtype}, n={plan.n}, seq={plan.seq}; weights "
            f"{format_size(plan.breakdown['weights'])}), more than {where}")
    options = []
    one = 1 if plan.batch_param else None
    if plan.dtype == "float32" and fits_at(one, dt="bfloat16"):
        options.append("--dtype bfloat16")
    n_fit = _largest(lambda k: fits_at(one, n_=k), 1, plan.n - 1) if plan.n > 1 else None
    if n_fit and n_fit < plan.n:
        options.append(f"--n {n_fit}")
    seq_fit = _largest(lambda k: fits_at(one, seq_=k), 1, plan.seq - 1) if plan.seq > 1 else None
    if seq_fit and seq_fit < plan.seq:
        options.append(f"prompts of at most {seq_fit} tokens")
    options.append(f"{format_size(plan.peak_bytes / (1 - headroom))} of memory"
                   + (f" ({headroom:.0%} headroom)" if headroom else ""))
    return f"{head}; fits with " + ", or ".join(options)
