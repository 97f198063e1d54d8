"""Experiments as files: a validated YAML config expanded into units (model × task × method).

.. code-block:: yaml

    name: quickstart
    models: [smollm2-135m]          # or model: smollm2-135m
    tasks: [ioi, seq_digits]
    n: 32                           # prompts per task (default 32)
    seed: 0
    seeds: 3                        # seeds of prompts per unit (default 1; see .seeds)
    methods:
      - eval: {n: 64, tasks: all}   # a method may name its own tasks ("all": every built-in)
      - patch: {grid: heads}
      - discover: {method: eap-ig, target: 0.9}
      - lens: {seeds: 1}            # a method entry may set its own seeds
      - heads: {}                   # head roles: one unit per model, not per task

Every error names the field and the allowed values. The methods, their parameters and how
they expand into units come from the method-kind registry (:mod:`.methods`); this module
names none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .methods import METHODS, RegistryView
from .methods.base import ConfigError, Unit
from .seeds import check_k

#: method -> allowed parameters and, where the set is closed, their allowed values (a live
#: view of the registered method kinds' ``params``).
METHOD_PARAMS: RegistryView[dict[str, tuple | None]] = RegistryView(lambda kind: kind.params)
TOP_LEVEL = ("name", "model", "models", "tasks", "n", "seed", "seeds", "methods", "device",
             "dtype", "device_map")

__all__ = ["METHOD_PARAMS", "TOP_LEVEL", "ConfigError", "Experiment", "Unit", "load_experiment",
           "parse_experiment"]


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: what to run, on what, with which seeds."""

    name: str
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    methods: tuple[tuple[str, dict], ...]
    n: int = 32
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    #: ``auto``/``balanced``/``sequential`` or ``{module prefix: device}`` (see ``load_model``)
    device_map: str | dict | None = field(default=None, hash=False)
    #: seeds of prompts each unit runs (a method entry's ``seeds`` overrides it)
    seeds: int = 1

    def units(self) -> list[Unit]:
        """Every unit, models outermost; a per-model method (``heads``) once per model."""
        out = []
        for model in self.models:
            for method, params in self.methods:
                params = dict(params)
                tasks = params.pop("tasks", None) or self.tasks
                seeds = params.pop("seeds", None) or self.seeds
                tasks = (None,) if METHODS[method].per_model else tasks
                out += [Unit(model, task, method, params, seeds) for task in tasks]
        ids = [u.id for u in out]
        clashes = sorted({i for i in ids if ids.count(i) > 1})
        if clashes:
            unit = next(u for u in out if u.id == clashes[0])
            naming = METHODS[unit.method].id_params
            fix = (f"different parameters ({', '.join(naming)})" if naming else
                   f"different tasks ({unit.method} units are named by model and task only)")
            raise ConfigError(f"methods: two entries give the same unit {clashes[0]!r}; give them "
                              f"{fix}")
        return out

    def to_dict(self) -> dict:
        methods = [{m: {k: list(v) if k == "tasks" else v for k, v in p.items()}}
                   for m, p in self.methods]
        return {"name": self.name, "models": list(self.models), "tasks": list(self.tasks),
                "methods": methods, "n": self.n, "seed": self.seed, "seeds": self.seeds,
                "device": self.device, "dtype": self.dtype, "device_map": self.device_map}


def _list(data: dict, key: str) -> tuple[str, ...]:
    value = data[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a name or a non-empty list of names, got {value!r}")
    return tuple(value)


def _tasks(value, where: str) -> tuple[str, ...]:
    """A task list (``"all"``: every built-in task), each task checked."""
    from ..tasks import list_tasks, resolve_task

    if value == "all":
        return tuple(t.name for t in list_tasks())
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a task name, a list of them, or 'all'")
    for task in value:
        resolve_task(task)
    return tuple(value)


def _method(entry, index: int) -> tuple[str, dict]:
    where = f"methods[{index}]"
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(f"{where}: expected one method name with its parameters, e.g. "
                          "{patch: {grid: heads}}")
    (method, params), = entry.items()
    if method not in METHODS:
        raise ConfigError(f"{where}: unknown method {method!r}; allowed: "
                          f"{', '.join(METHODS)}")
    params = params or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}.{method}: parameters must be a mapping, got {params!r}")
    own = {}  # the entry's own tasks and seeds, kept beside the kind's parameters
    if "tasks" in params:  # this method's own task list
        own["tasks"] = _tasks(params["tasks"], f"{where}.{method}.tasks")
    if "seeds" in params:
        own["seeds"] = check_k(params["seeds"], f"{where}.{method}.seeds")
    checked = METHODS[method].check_params({k: v for k, v in params.items() if k not in own},
                                           f"{where}.{method}")
    ordered = {k: own[k] if k in own else checked[k] for k in params
               if k in own or k in checked}  # as written, then what the kind added
    return method, {**ordered, **checked}


def parse_experiment(data: dict, source: str = "experiment") -> Experiment:
    """Validate a loaded config mapping into an :class:`Experiment`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    unknown = [k for k in data if k not in TOP_LEVEL]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown field; allowed: {', '.join(TOP_LEVEL)}")
    if ("model" in data) == ("models" in data):
        raise ConfigError("models: give exactly one of 'model' or 'models'")
    for key in ("tasks", "methods"):
        if key not in data:
            raise ConfigError(f"{key}: missing (required: models, tasks, methods)")
    models = _list(data, "models" if "models" in data else "model")
    tasks = _tasks(data["tasks"], "tasks")
    if not isinstance(data["methods"], list) or not data["methods"]:
        raise ConfigError("methods: expected a non-empty list")
    methods = tuple(_method(entry, i) for i, entry in enumerate(data["methods"]))
    for key in ("n", "seed"):
        if key in data and (not isinstance(data[key], int) or data[key] < (1 if key == "n"
                                                                            else 0)):
            raise ConfigError(f"{key}: expected a {'positive' if key == 'n' else 'non-negative'}"
                              f" integer, got {data[key]!r}")
    seeds = check_k(data["seeds"], "seeds") if "seeds" in data else 1
    experiment = Experiment(str(data.get("name", Path(source).stem)), models, tasks, methods,
                            data.get("n", 32), data.get("seed", 0), data.get("device"),
                            data.get("dtype"), _device_map(data), seeds)
    experiment.units()  # duplicate units are a config error
    return experiment


def _device_map(data: dict) -> str | dict | None:
    """The ``device_map`` field: a strategy name or a mapping of module prefixes to devices
    (checked against each model's modules when the run starts)."""
    from ..models.device_map import AUTO_MAPS

    value = data.get("device_map")
    if value is None:
        return None
    if data.get("device") is not None:
        raise ConfigError("device_map: give either device or device_map, not both")
    if isinstance(value, str) and value in AUTO_MAPS:
        return value
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, (str, int)) for k, v in value.items()):
        raise ConfigError(f"device_map: expected one of {', '.join(AUTO_MAPS)} or a mapping of "
                          "module names to devices, e.g. {model.layers.0: 0, lm_head: 1}")
    return dict(value)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    except yaml.YAMLError as err:  # its text spans lines; keep the problem and its line
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML: "
                          f"{getattr(err, 'problem', None) or str(err).splitlines()[0]}") from err
    return parse_experiment(data, str(path))
