"""The contract of an experiment method kind, and the registry the rest of the system loops over.

An experiment method (``eval``, ``patch``, ``discover``, ...) is one :class:`MethodKind`
subclass in one module of this package, registered with :func:`register`. Config validation,
unit expansion, the runner, :class:`~modelweave.experiments.RunStore` (``load``,
``to_dataframe``) and the HTML report only ask the registry; none of them names a method.

Adding a method
---------------
Create ``src/modelweave/experiments/methods/<name>.py`` (the package imports every module in
it, so nothing else changes) along these lines::

    from __future__ import annotations

    from ...io import read_json, write_json
    from .base import MethodKind, register, unit_batch


    @register
    class Toy(MethodKind):
        # -- the config: `- toy: {size: 3, mode: fast}` ------------------------------------
        name = "toy"                                   # the key in an experiment's `methods:`
        params = {"size": None,                        # allowed parameters: None = any value,
                  "mode": ("fast", "slow")}            # a tuple = the closed set of values
        per_model = False                              # True: one unit per model, not per task
        id_params = ("mode",)                          # params named in the unit id

        # -- the report: one section per method kind -----------------------------------------
        title = "Toy results"                          # the section heading (default: name)
        section = "toy"                                # the section's HTML id (default: name)
        noun = "toy"                                   # "No toy units in this run."
        order = 100                                    # sections and listings sort by this

        def run(self, model, unit, experiment, folder, progress=None) -> dict:
            # Compute on the loaded model; write data files (never figures) into `folder`
            # (empty, this unit's own); return a small JSON-ready summary (in done.json).
            value = len(unit_batch(model, unit, experiment))   # the task, n prompts, seed
            write_json(folder / "toy.json", {"value": value})
            return {"value": value}

        def load(self, folder, record):
            # The unit's result as a Python object, read from its files, no model needed.
            return read_json(folder / "toy.json")

        def report_section(self, units, ctx) -> str:   # optional (default: a summary table)
            from ...report.blocks import table
            return table(["task", "value"], [[r["task"], r["summary"]["value"]]
                                             for _, r in units])

Optional overrides: :meth:`MethodKind.draw` (the unit's figures, drawn from its saved files by
the report page and the command line, never by ``run``), :meth:`MethodKind.plan` (the memory
model the planner uses for a unit: a :class:`~modelweave.planner.PlanSpec`),
:meth:`MethodKind.summary_row` (the dataframe's columns for a unit, default: the summary's
scalar values), :meth:`MethodKind.headline` (the CLI's one-line result),
:meth:`MethodKind.headline_keys` (the numbers shown as ``mean [low, high]`` over seeds),
:meth:`MethodKind.components` (the set a unit found, whose stability over seeds is reported),
:meth:`MethodKind.command_output` (the CLI's ``--json`` object), :meth:`MethodKind.check_params`
(validation beyond closed value sets) and :meth:`MethodKind.label` (the unit id suffix).

Every kind runs for K seeds of prompts (``seeds: K``, ``--seeds K``) without code of its own:
:mod:`modelweave.experiments.seeds` calls ``run`` once per seed.

A unit runs the same way from an experiment file (the runner: ``run`` in a worker, ``draw``
when the report page is rendered) and from a single-method command (``modelweave patch``:
flags -> :class:`Unit` + :class:`RunSettings` -> ``check_params`` -> ``run`` into ``--out`` ->
``draw`` -> ``headline``; :mod:`modelweave.cli.method_run`).

Keep the module's top-level imports light (``json``, ``pathlib``, this module): import torch,
pandas, plotly and the analysis code inside the methods, so that ``modelweave --help`` and
config validation stay fast. Report sections render HTML with the helpers of
:mod:`modelweave.report.blocks` (``table``, ``figure``, ``escape``); escape every text that
comes from prompts, tokens or files, and prefix plotly ``div`` ids with the method's name
(``ctx`` gives a run's other results: ``ctx.units(name)``, ``ctx.load(unit_id)``).

A method registered from elsewhere (a test, a plug-in) works the same way while it is
registered: :func:`register` it before the experiment is parsed, :func:`unregister` it after.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from ...errors import ModelWeaveError
from ...progress import Progress

if TYPE_CHECKING:
    from ...models import Model
    from ...planner import PlanSpec
    from ...tasks import TaskBatch


class ConfigError(ModelWeaveError):
    """An experiment file that cannot be run as written (raise it from ``check_params``)."""


class UnknownMethodError(ConfigError, KeyError):
    """A method name that no registered method kind has."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one plain line.
        return str(self.args[0]) if self.args else ""


class RegistrationError(ConfigError, ValueError):
    """A method kind whose name or report section id is malformed or taken."""


@dataclass(frozen=True)
class Unit:
    """One piece of work: a method with its parameters on one model and (usually) one task."""

    model: str
    task: str | None
    method: str
    params: dict = field(default_factory=dict, hash=False)
    #: seeds of prompts the unit runs (``seeds: K``, :mod:`modelweave.experiments.seeds`)
    seeds: int = 1

    @property
    def id(self) -> str:
        """A file-system-safe name, unique within an experiment: model, task (``all`` for a
        per-model method), the method with its kind's naming parameters, and ``seedsK`` for
        a unit of K > 1 seeds (``m__ioi__eval``, ``m__ioi__eval__seeds3``)."""
        kind = _REGISTRY.get(self.method)
        label = kind.label(self.params) if kind else ""
        parts = [self.model, self.task or "all", self.method + (f"-{label}" if label else "")]
        parts += [f"seeds{self.seeds}"] if self.seeds != 1 else []
        return "__".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p) for p in parts)


class Settings(Protocol):
    """What a unit reads from the run it belongs to: an
    :class:`~modelweave.experiments.Experiment`, or :class:`RunSettings` for one command."""

    n: int          #: prompts per task
    seed: int       #: the seed of prompts (and of a method's own sampling)
    tasks: tuple    #: the run's tasks (a method that spans tasks reads them)


@dataclass(frozen=True)
class RunSettings:
    """:class:`Settings` of a unit run on its own (a single-method command, a notebook)."""

    n: int = 32
    seed: int = 0
    tasks: tuple = ()


class MethodKind(ABC):
    """One experiment method: its parameters, how it runs a unit, loads, summarises and
    reports its results. Subclass it in one module and decorate the class with
    :func:`register` (see this module's docstring for the whole contract)."""

    #: the method's key in an experiment file's ``methods:`` list
    name: ClassVar[str]
    #: allowed parameters -> None (any value) or the tuple of allowed values
    params: ClassVar[dict[str, tuple | None]] = {}
    #: True: one unit per model (its task is None), not one per task
    per_model: ClassVar[bool] = False
    #: parameters whose values name the unit (``model__task__patch-heads``)
    id_params: ClassVar[tuple[str, ...]] = ()
    #: the report section's heading, HTML id and noun ("No <noun> units in this run.")
    title: ClassVar[str] = ""
    section: ClassVar[str] = ""
    noun: ClassVar[str] = ""
    #: report sections and error listings sort by this (then by name)
    order: ClassVar[int] = 100

    # -- running and loading (required) ----------------------------------------------------
    @abstractmethod
    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        """Compute ``unit`` on the loaded ``model``, write its data files into ``folder``
        (empty, the unit's own; no figures: :meth:`draw` makes those) and return a small
        JSON-ready summary (numbers a dataframe or the report shows without reading the
        files). ``experiment`` gives the run's ``n``, ``seed`` and ``tasks``."""

    @abstractmethod
    def load(self, folder: Path, record: dict) -> Any:
        """The finished unit's result as a Python object, read from ``folder``; ``record`` is
        its ``done.json`` (model, task, method, params, seconds, summary)."""

    def draw(self, folder: Path, record: dict) -> list[Path]:
        """Write the unit's figures into ``folder`` from its saved files only (no model) and
        return their paths; ``record`` is as for :meth:`load`. Called by the command line and
        by the report page (which notes what was drawn in ``figures.json`` and draws again
        only when one of those files is missing), never by :meth:`run`. Default: none."""
        return []

    def plan(self, params: dict) -> PlanSpec | None:
        """How the planner models a unit with ``params``: a
        :class:`~modelweave.planner.PlanSpec` (memory kind, batch parameter and default,
        note, label), or None when it cannot (the unit then runs unplanned). Raise
        :class:`~modelweave.planner.PlanError` for a parameter it cannot plan."""
        return None

    def components(self, folder: Path, record: dict) -> list[str] | None:
        """The set a unit discovered (edges, nodes, neurons, heads), read from its saved
        files in ``folder``; ``record`` is as for :meth:`load` (plus ``seed``). With K seeds
        (:mod:`modelweave.experiments.seeds`) its stability over the seeds (inclusion
        frequency, Jaccard, stable core) is computed from these sets. Default: None (the kind
        finds no set)."""
        return None

    # -- config ------------------------------------------------------------------------------
    def check_params(self, params: dict, where: str) -> dict:
        """Validate a config entry's parameters (without ``tasks``, which the config checks)
        and return them (normalised, if a kind wants); raise :class:`ConfigError` naming
        ``where`` (the field in an experiment file; empty for a command's flags). The default
        checks names against :attr:`params` and values against its closed sets."""
        for key, value in params.items():
            if key not in self.params:
                raise ConfigError(f"{where}.{key}: unknown parameter; allowed: "
                                  f"{', '.join(self.params) or 'none'}")
            allowed = self.params[key]
            if allowed is not None and value not in allowed:
                raise not_allowed(where, key, value, allowed)
        return dict(params)

    def label(self, params: dict) -> str:
        """The unit id's suffix after the method name: the :attr:`id_params` values that are
        set, in the order of their names, joined by ``-``."""
        return "-".join(str(v) for k, v in sorted(params.items())
                        if k in self.id_params and v is not None)

    # -- results -----------------------------------------------------------------------------
    def summary_row(self, record: dict) -> dict:
        """The dataframe columns of one finished unit (after unit, model, task, method,
        seconds): by default the summary's scalar values (the first seed's), and for a unit
        of K > 1 seeds ``seeds`` (K) and ``x_seeds_mean``/``_low``/``_high`` per headline
        number ``x``."""
        from ._seeded import seed_columns

        return {**scalar_summary(record["summary"]), **seed_columns(self, record["summary"])}

    def headline(self, summary: dict) -> str:
        """The one line the command line prints after the unit finished."""
        return ", ".join(k for k in summary)[:60]

    def headline_keys(self, summary: dict) -> list[str]:
        """The summary's headline numbers (shown as ``mean [low, high]`` over seeds): by
        default every number ``x`` with its interval ``x_ci`` beside it."""
        return [k for k, v in summary.items() if f"{k}_ci" in summary
                and isinstance(v, int | float) and not isinstance(v, bool)]

    def command_output(self, record: dict, files: list[Path]) -> dict:
        """The JSON object a single-method command prints with ``--json``: by default the
        summary plus ``files`` (every file the unit wrote, figures included)."""
        return {**record["summary"], "files": [str(f) for f in files]}

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """The HTML body of this method's report section (under its ``<h2>`` title), given
        its finished units as ``(unit id, record)`` (at least one; with none, the report
        writes the "No ... units" note). By default a table of the summary rows; a unit of
        K > 1 seeds shows its numbers as ``mean [low, high]`` over the seeds, with K and the
        stability of its :meth:`components` (Jaccard, stable core) when it has them."""
        from ._seeded import seeded_table

        return seeded_table(self, units)

    # -- helpers -----------------------------------------------------------------------------
    @property
    def section_id(self) -> str:
        return self.section or self.name

    @property
    def section_title(self) -> str:
        return self.title or self.name

    @property
    def empty_note(self) -> str:
        return f"No {self.noun or self.name} units in this run."

    def __repr__(self) -> str:
        return f"<method kind {self.name!r}>"


class _Folders(Protocol):
    def folder(self, unit_id: str) -> Path: ...


@dataclass
class ReportContext:
    """What a report section may read besides its own units: the whole run (``store`` is the
    run's :class:`~modelweave.experiments.RunStore`)."""

    store: _Folders
    manifest: dict
    records: dict[str, dict] = field(default_factory=dict)

    def units(self, method: str) -> list[tuple[str, dict]]:
        """``(unit id, record)`` of every finished unit of ``method``, in unit-id order."""
        return [(uid, r) for uid, r in self.records.items() if r["method"] == method]

    def folder(self, unit_id: str) -> Path:
        return self.store.folder(unit_id)

    def load(self, unit_id: str) -> Any:
        """A unit's result through its method kind's :meth:`MethodKind.load`."""
        record = self.records[unit_id]
        return get_method(record["method"]).load(self.folder(unit_id), record)


def not_allowed(where: str, key: str, value: Any, allowed: tuple) -> ConfigError:
    """The error for a value outside its closed set: ``where.key: 'x' is not one of a, b`` in
    an experiment file, ``unknown key 'x'; keys: a, b`` for a command's flag (``where`` empty)."""
    names = ", ".join(map(str, allowed))
    if not where:
        return ConfigError(f"unknown {key} {value!r}; {key}s: {names}")
    return ConfigError(f"{where}.{key}: {value!r} is not one of {names}")


def scalar_summary(summary: dict) -> dict:
    """The summary's values that fit a dataframe cell (numbers, strings, booleans, None)."""
    return {k: v for k, v in summary.items()
            if isinstance(v, int | float | str | bool) or v is None}


def unit_batch(model: Model, unit: Unit, experiment: Settings,
               same_length: bool = True) -> TaskBatch:
    """The unit's task materialised for ``model``: ``experiment.n`` prompts, its seed, less
    the prompts a fine-tune of this toolkit was trained on (its recorded
    ``training_data.jsonl``; counted in ``batch.dropped``)."""
    from ...models.finetune import without_training
    from ...tasks import make_batch

    batch = make_batch(model, unit.task, n=experiment.n, seed=experiment.seed,
                       same_length=same_length)
    return without_training(model, batch)


# -- the registry ------------------------------------------------------------------------------
_REGISTRY: dict[str, MethodKind] = {}
K = TypeVar("K", bound="type[MethodKind] | MethodKind")


def register(kind: K) -> K:
    """Register a :class:`MethodKind` subclass (as a class decorator) or instance; returns
    it unchanged. A name or section id that is malformed or already taken is a
    :class:`RegistrationError` (a ``ValueError``)."""
    instance = kind() if isinstance(kind, type) else kind
    name = getattr(instance, "name", "")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise RegistrationError(f"method kind {kind!r}: name must be lower-case letters, "
                                f"digits and _, got {name!r}")
    if name in _REGISTRY:
        raise RegistrationError(f"method kind {name!r} is registered already; pick another "
                                "name")
    section = instance.section_id
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", section):
        raise RegistrationError(f"method kind {name!r}: report section id must be letters, "
                                f"digits, _ and -, got {section!r}")
    clash = [k.name for k in _REGISTRY.values() if k.section_id == section]
    if clash or section == "overview":
        raise RegistrationError(f"method kind {name!r}: report section id {section!r} is "
                                "taken; pick another")
    _REGISTRY[name] = instance
    return kind


def unregister(name: str) -> None:
    """Remove a registered method kind (tests, plug-ins); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def methods() -> list[MethodKind]:
    """Every registered method kind, in report order."""
    return sorted(_REGISTRY.values(), key=lambda k: (k.order, k.name))


def get_method(name: str) -> MethodKind:
    """The method kind registered as ``name``; an :class:`UnknownMethodError` (a ``KeyError``)
    naming the allowed ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        allowed = ", ".join(k.name for k in methods())
        raise UnknownMethodError(f"unknown method {name!r}; allowed: {allowed}") from None


V = TypeVar("V")


class RegistryView(Mapping[str, V]):
    """A read-only, always current mapping ``method name -> pick(kind)`` over the registry
    (``METHOD_PARAMS``, ``METHODS``, ``HANDLERS``), in report order."""

    def __init__(self, pick: Callable[[MethodKind], V]):
        self._pick = pick

    def __getitem__(self, name: str) -> V:
        return self._pick(get_method(name))

    def __iter__(self) -> Iterator[str]:
        return iter([k.name for k in methods()])

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


#: name -> registered :class:`MethodKind` (live)
METHODS: Mapping[str, MethodKind] = RegistryView(lambda kind: kind)
