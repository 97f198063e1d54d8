"""The runner's use of the planner: refuse a unit that cannot fit before anything runs, lower a
batch size that would not fit, and tell Ray how much memory a model's workers need.

Every unit is planned from its model's config alone (:func:`modelweave.planner.plan_unit`,
no weights), with the memory model its method kind names (``MethodKind.plan``). A unit whose
model or method the planner cannot read (a plug-in method without a plan, a model path only the
workers see) runs unplanned, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ModelWeaveError
from .config import Experiment
from .methods import MethodKind, Unit, get_method, methods


def resolve_method(method: str, params: dict | None = None) -> tuple[MethodKind, dict]:
    """The method kind registered as ``method`` and ``params``; or, for a sub-method's name
    (``eap-ig``, ``atp*``, ``locate``), the first kind (in report order) whose ``method``
    parameter allows it, with ``method`` set. A ``PlanError`` names what is plannable."""
    from ..planner import PlanError

    params = dict(params or {})
    try:
        return get_method(method), params
    except KeyError:
        pass
    for kind in methods():
        if method in (kind.params.get("method") or ()):
            return kind, {**params, "method": method}
    names = sorted({k.name for k in methods()}
                   | {m for k in methods() for m in (k.params.get("method") or ())})
    raise PlanError(f"unknown method {method!r}; plannable: {', '.join(names)}")


def plan_method(model_spec: Any, method: str, params: dict | None = None, n: int = 64,
                seq: int | None = None, dtype: str | None = None,
                memory_bytes: int | None = None, **options: Any):
    """Plan one unit of an experiment ``method`` (``discover`` with ``params={"method":
    "eap-ig"}``, or a sub-method such as ``eap-ig``) on ``model_spec``: the method kind's
    :class:`~modelweave.planner.PlanSpec` given to :func:`modelweave.planner.plan_unit`
    (same arguments and keyword options: ``device``, ``flops_per_second``, ``headroom``).

    Raises:
        PlanError: an unknown method or sub-method, a method without a plan, or any of
            ``plan_unit``'s errors.
    """
    from ..planner import PlanError, plan_unit

    kind, params = resolve_method(method, params)
    spec = kind.plan(params)
    if spec is None:
        raise PlanError(f"method {kind.name!r} has no memory plan")
    return plan_unit(model_spec, spec, params, n, seq, dtype, memory_bytes, **options)


class UnitTooLargeError(ModelWeaveError):
    """A unit of the experiment cannot fit the memory it would run in (nothing was run)."""


@dataclass
class RunPlan:
    """The plans of a run's pending units.

    Attributes:
        units: the units to compute, a batch parameter lowered where the default would not fit.
        plans: unit id -> its plan (a :class:`modelweave.planner.Plan`), for planned units.
        memory: model -> the largest peak (bytes) of its units, what a Ray worker declares.
    """

    units: list[Unit]
    plans: dict = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)


def check_device_map(experiment: Experiment) -> None:
    """Check a dict ``device_map`` against every model's modules (built on the meta device
    from its config): a module left unplaced is one ``ModelLoadError`` before anything runs."""
    if not isinstance(experiment.device_map, dict):
        return
    from ..models.device_map import check_device_map as check
    from ..models.device_map import meta_keys
    from ..planner import PlanError, load_config

    for model in experiment.models:
        try:
            config, _ = load_config(model)
        except PlanError:
            continue  # a model only the workers can read: checked when they load it
        keys, modules = meta_keys(config)
        check(experiment.device_map, keys, modules, source=model)


def plan_run(experiment: Experiment, units: list[Unit], memory_bytes: int | None = None,
             device: str | None = None) -> RunPlan:
    """Plan ``units`` to run in ``memory_bytes`` each (default: the device's memory), keeping
    the planner's headroom (15%: measured CPU peaks ran up to ~14% above its predictions).

    Raises:
        UnitTooLargeError: naming every unit that cannot fit and what would.
    """
    from ..planner import HEADROOM, PlanError

    device = device or experiment.device
    if device not in (None, "cpu"):
        device = "cuda"  # "cuda:1", "auto": planned as a GPU
    out = RunPlan([])
    refused = []
    for unit in units:
        n = unit.params.get("n", experiment.n)
        try:
            plan = plan_method(unit.model, unit.method, unit.params, n=n,
                               dtype=experiment.dtype, memory_bytes=memory_bytes, device=device,
                               headroom=HEADROOM)
        except PlanError:
            out.units.append(unit)
            continue
        if not plan.fits:
            refused.append(f"{unit.id}: {plan.message}")
            continue
        out.plans[unit.id] = plan
        out.memory[unit.model] = max(out.memory.get(unit.model, 0), int(plan.peak_bytes))
        param, default = plan.batch_param, plan.batch_default
        if (param and param not in unit.params and param in get_method(unit.method).params
                and plan.batch is not None and plan.batch < min(default, n)):
            unit = replace(unit, params={**unit.params, param: plan.batch})
        out.units.append(unit)
    if refused:
        more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
        raise UnitTooLargeError(f"{len(refused)} unit(s) cannot fit; nothing was run{more}:\n  "
                                + "\n  ".join(refused[:3]))
    return out
