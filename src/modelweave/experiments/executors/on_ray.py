"""The Ray executor: units as calls on worker actors, on this machine or a Ray cluster.

The algorithm, driver side:

1. Connect: ``ray.init()`` starts a local Ray with this machine's cores (zero set-up); with
   ``address`` it joins a running cluster (an unreachable address is one clear error, before
   anything is written). A Ray session already open in this process (a notebook) is reused.
2. Start up to ``workers`` actors. Each declares its resources (CPUs, a GPU where the cluster
   has them, and the memory its model's largest unit needs, from the planner) and sizes its
   torch thread pool to its CPUs.
3. Model-major dispatch: an idle actor takes the next unit of the model it already holds;
   failing that, a unit of a model no other actor holds; failing that, the next unit. So each
   model is loaded by as few workers as possible.
4. Each actor computes its unit with :class:`~modelweave.experiments.worker.UnitWorker`,
   which commits it to the shared run directory atomically (so on a cluster ``--out`` must be
   on a file system every node mounts). A unit whose method raises comes back ``failed`` with
   its traceback; the sweep goes on.
5. Hygiene: an actor is recycled (killed, replaced on demand) after ``recycle_after`` units or
   when its resident memory passes ``max_worker_memory`` bytes, so long sweeps do not leak.
   An actor that dies (out of memory, preempted node) has its unit retried ``retries`` times
   on a fresh actor, then recorded as failed.

Method kinds registered in the driver but not built in (a notebook's, a plug-in's) are sent to
the actors by value, so they run there as they would here.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from dataclasses import dataclass

from ...errors import ModelWeaveError
from ..config import Unit
from ..worker import UnitReport
from . import Job


class RayUnavailableError(ModelWeaveError):
    """Ray is not installed, or the cluster named by ``--address`` cannot be reached."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "the Ray executor needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.40')"
        ) from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when ``host:port`` accepts no connection."""
    if address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailableError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT "
                                  "or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise RayUnavailableError(
            f"cannot reach a Ray cluster at {address} ({err.strerror or err}); start one with "
            "`ray start --head` there, or leave out --address to run on this machine"
        ) from None


def connect(address: str | None, cores: int) -> bool:
    """Open the Ray session; returns True if this call started it (and should shut it down)."""
    ray = _import_ray()
    if address:
        _check_reachable(address)
    if ray.is_initialized():
        return False
    kwargs = ({"address": address} if address else
              {"num_cpus": cores, "include_dashboard": False})
    try:
        ray.init(**kwargs, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"at {address}" if address else "on this machine"
        raise RayUnavailableError(f"cannot start or join Ray {where}: "
                                  f"{str(err).splitlines()[0]}") from None
    return True


class _Actor:
    """The worker actor: one :class:`~modelweave.experiments.worker.UnitWorker` (one model
    loaded at a time)."""

    def __init__(self, root, experiment, force: bool, threads: int, kinds: list) -> None:
        from ...runtime import configure_threads, keep_freed_memory
        from ..methods import METHODS, register
        from ..worker import UnitWorker

        configure_threads(threads)
        keep_freed_memory()
        for kind in kinds:
            if kind.name not in METHODS:
                register(kind)
        self.worker = UnitWorker(root, experiment, force=force)

    def run(self, unit: Unit) -> UnitReport:
        return self.worker.run(unit)


@dataclass(eq=False)
class _Slot:
    """One worker place: its actor (None until needed), the model it holds, the unit it is
    computing (None: idle)."""

    actor: object = None
    model: str | None = None
    unit: Unit | None = None


def _plugin_kinds(units: list[Unit], ray) -> list:
    """Method kinds of these units that are not built in, made picklable by value."""
    from ..methods import get_method

    kinds = []
    for name in dict.fromkeys(u.method for u in units):
        kind = get_method(name)
        module = type(kind).__module__
        if not module.startswith("modelweave."):
            import sys

            if module in sys.modules and module != "__main__":
                ray.cloudpickle.register_pickle_by_value(sys.modules[module])
            kinds.append(kind)
    return kinds


def _next_unit(pending: deque, model: str | None, held: set[str]) -> Unit:
    for rule in (lambda u: u.model == model, lambda u: u.model not in held, lambda u: True):
        for unit in pending:
            if rule(unit):
                pending.remove(unit)
                return unit
    raise IndexError("no pending unit")


def open_session(job: Job):
    """Connect to Ray before anything is written (step 1); returns the closer to call at the
    end (it shuts down a session this call started)."""
    from ...runtime import available_cores

    ray = _import_ray()
    started = connect(job.options.get("address"), available_cores())
    return ray.shutdown if started else (lambda: None)


def execute(units: list[Unit], job: Job) -> None:
    """Compute ``units`` on Ray actors (steps 2-5 of the module's docstring).

    ``job.options``: ``workers`` (actors at once; default: the cluster's GPUs over
    ``gpus_per_worker``, else 1), ``cpus_per_worker`` (default: the cluster's CPUs shared
    out), ``gpus_per_worker`` (default 1 where the cluster has GPUs; more for a model split
    over several with ``device: auto``), ``recycle_after`` (units;
    0: never), ``max_worker_memory`` (bytes; 0: no limit), ``memory`` (model -> bytes a
    worker declares), ``retries`` (per unit, after a worker died; default 1).
    """
    ray = _import_ray()
    opts = job.options
    resources = ray.cluster_resources()
    cluster_gpus = int(resources.get("GPU", 0))
    gpus = cluster_gpus if job.experiment.device != "cpu" else 0
    per_worker = opts.get("gpus_per_worker") or (1 if gpus else 0)
    if per_worker > cluster_gpus:  # such a worker could never be scheduled
        raise RayUnavailableError(f"--gpus-per-worker {per_worker}: the cluster has "
                                  f"{cluster_gpus} GPUs; use at most {cluster_gpus} or omit it")
    workers = max(1, min(opts.get("workers") or max(1, gpus // max(per_worker, 1)), len(units)))
    cpus = opts.get("cpus_per_worker") or max(1, int(resources.get("CPU", 1)) // workers)
    recycle_after = opts.get("recycle_after") or 0
    max_memory = opts.get("max_worker_memory") or 0
    retries = opts.get("retries", 1)
    memory = opts.get("memory") or {}
    kinds = _plugin_kinds(units, ray)
    remote = ray.remote(_Actor)

    def new_actor(model: str):
        options = {"num_cpus": cpus, "num_gpus": per_worker, "max_restarts": 0}
        if memory.get(model):  # never more than a node has: Ray would wait for it forever
            options["memory"] = int(min(memory[model], resources.get("memory", memory[model])))
        return remote.options(**options).remote(job.root, job.experiment, job.force, cpus,
                                                kinds)

    pending, slots = deque(units), [_Slot() for _ in range(workers)]
    in_flight: dict = {}
    attempts: dict[str, int] = {}
    try:
        while pending or in_flight:
            for slot in slots:
                if pending and slot.unit is None:
                    held = {s.model for s in slots if s is not slot and s.model}
                    unit = _next_unit(pending, slot.model, held)
                    if slot.actor is None:
                        slot.actor = new_actor(unit.model)
                    slot.model, slot.unit = unit.model, unit
                    in_flight[slot.actor.run.remote(unit)] = slot
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            slot = in_flight.pop(ref)
            unit, slot.unit = slot.unit, None
            try:
                report = ray.get(ref)
            except ray.exceptions.RayActorError as err:  # the worker died under the unit
                slot.actor, slot.model = None, None
                attempts[unit.id] = attempts.get(unit.id, 0) + 1
                if attempts[unit.id] <= retries:
                    pending.appendleft(unit)
                    continue
                report = _died(job, unit, err)
            else:
                done, rss = report.worker["units_run"], report.worker["rss_bytes"]
                if (recycle_after and done >= recycle_after) or (max_memory and rss >= max_memory):
                    ray.kill(slot.actor)
                    slot.actor, slot.model = None, None
            job.report(unit, report)
    finally:
        for slot in slots:
            if slot.actor is not None:
                ray.kill(slot.actor)


def _died(job: Job, unit: Unit, err: Exception) -> UnitReport:
    """Record a unit whose worker died on every attempt."""
    from ..store import RunStore

    error = RuntimeError(f"the Ray worker died while computing this unit: "
                         f"{str(err).splitlines()[0]}")
    failure = RunStore(job.root).fail(unit, error, 0.0, {"worker": {"executor": "ray"}})
    return UnitReport(unit.id, "failed", 0.0, error=failure["error"], record=failure)
