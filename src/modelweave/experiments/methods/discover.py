"""``discover``: circuit discovery (EAP, EAP-IG, exact, ACDC, pruning, path patching)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...io import load_bundle, write_json
from ...names import DEFAULT_METHOD, DISCOVERY_METHODS, GRADIENT_METRICS, INTERVENTIONS
from .base import MethodKind, Progress, ReportContext, Settings, Unit, register, unit_batch

if TYPE_CHECKING:
    from ...circuits import Circuit
    from ...models import Model
    from ...planner import PlanSpec
    from ...tasks import TaskBatch


#: discovery methods with a memory model of their own (their gradient passes, then the curve)
_MEMORY_KINDS = {"eap": "eap", "eap-ig": "eap-ig"}


@register
class Discover(MethodKind):
    """``- discover: {method: eap-ig, target: 0.9, ...}``: writes ``circuit.json``, its MIB
    file, ``summary.json`` (the discovery's numbers) and the attention patterns of its top
    heads (``patterns.safetensors`` + ``patterns.json``); :meth:`draw` makes its graph
    (``circuit.html``/``.svg``) and faithfulness curve. The methods are
    :data:`modelweave.circuits.METHODS`."""

    name = "discover"
    id_params = ("method",)
    title, section, noun, order = "Circuits", "circuits", "circuit", 30

    @property
    def params(self) -> dict[str, tuple | None]:  # the names of the library call's
        return {"method": DISCOVERY_METHODS, "target": None, "metric": GRADIENT_METRICS,
                "steps": None, "threshold": None, "intervention": INTERVENTIONS,
                "batch_size": None, "resamples": None, "null_draws": None}

    def run(self, model: Model, unit: Unit, experiment: Settings, folder: Path,
            progress: Progress = None) -> dict:
        from ...circuits import discover, to_mib

        batch = unit_batch(model, unit, experiment)
        found = discover(model, batch, **unit.params, progress=progress)  # absent: defaults
        circuit = found.circuit
        circuit.save(folder / "circuit.json")
        write_json(folder / "circuit.mib.json", to_mib(circuit, model.cfg.d_model))
        write_json(folder / "summary.json", found.summary(), indent=1)
        write_json(folder / "uncertainty.json", found.uncertainty, indent=None)
        heads = save_top_patterns(model, batch, circuit, folder)
        return {**found.summary(), "n": len(batch), "nodes": circuit.nodes, "top_heads": heads}

    def draw(self, folder: Path, record: dict) -> list[Path]:
        """The circuit's graph (``circuit.html``, ``circuit.svg``) and faithfulness curve
        (``faithfulness.png``/``.html``)."""
        from ...report.circuit_graph import save_circuit_graph
        from ...report.curves import save_faithfulness_curve

        circuit = self.load(folder, record)
        files = [save_circuit_graph(circuit, folder / "circuit.html"),
                 save_circuit_graph(circuit, folder / "circuit.svg")]
        title = (f"{circuit.method} on {circuit.task}, {circuit.model}: CPR "
                 f"{circuit.curve['cpr']:.3f}, CMD {circuit.curve['cmd']:.3f}")
        return files + save_faithfulness_curve(circuit.curve, title, folder / "faithfulness")

    def command_output(self, record: dict, files: list[Path]) -> dict:
        """The discovery's numbers with the task, the model's name and ``files``."""
        summary = {k: v for k, v in record["summary"].items() if k not in ("nodes", "top_heads")}
        model = (record.get("run") or {}).get("model", record["model"])
        return {**summary, "task": record["task"], "model": model,
                "files": [str(f) for f in files]}

    def plan(self, params: dict) -> PlanSpec:
        """A discovery method with a memory model of its own (EAP, EAP-IG: their gradient
        passes, then the faithfulness curve) follows it; every other one is planned as the
        faithfulness evaluator's patched passes."""
        from ...planner import PlanError, PlanSpec

        method = params.get("method", DEFAULT_METHOD)
        if method not in DISCOVERY_METHODS:
            raise PlanError(f"unknown method {self.name!r} with method {method!r}; methods: "
                            f"{', '.join(DISCOVERY_METHODS)}")
        from ...circuits.nulls import NULL_DRAWS

        label = f"{self.name}/{method}"
        draws = params.get("null_draws", NULL_DRAWS)
        null = (f"; matched null: {draws} random circuits, one circuit evaluation each (the "
                f"curve has 20), not in the estimate" if draws else "")
        if method in _MEMORY_KINDS:
            kept = ("per-prompt edge scores for the stability: at most 256 MiB of host memory"
                    if params.get("resamples", 1) else "")
            return PlanSpec.of(_MEMORY_KINDS[method], label=label,
                               note="; ".join(x for x in (kept, null.lstrip("; ")) if x))
        return PlanSpec.of("faithfulness", label=label,
                           note=f"{method}: planned as patched passes like the faithfulness "
                                f"evaluator's{null}")

    def load(self, folder: Path, record: dict) -> Circuit:
        from ...circuits import Circuit

        return Circuit.load(folder / "circuit.json")

    def headline(self, summary: dict) -> str:
        if not isinstance(summary.get("faithfulness"), int | float):
            return super().headline(summary)
        return (f"faithfulness {with_ci(summary, 'faithfulness')}, {summary['n_edges']} edges, "
                f"CPR {with_ci(summary, 'cpr')}")

    def components(self, folder: Path, record: dict) -> list[str] | None:
        """The circuit's edges (MIB names, ``a0.h1->m2``), best score first."""
        return [name for name, _ in self.load(folder, record).edges()]

    def report_section(self, units: list[tuple[str, dict]], ctx: ReportContext) -> str:
        """Per circuit: its sizes and scores, graph, faithfulness curve, the role scores of
        its top heads (when the run has ``heads`` results) and their attention patterns."""
        from ...report.blocks import escape, figure, table
        from ...report.circuit_graph import circuit_svg
        from ...report.curves import curve_figure
        from ...report.figures import heatmap_figure

        roles = _roles(ctx)
        parts = []
        for i, (uid, r) in enumerate(units):
            folder = ctx.folder(uid)
            s = r["summary"]
            circuit = self.load(folder, r)
            parts.append(f"<h3>{escape(r['task'])}: {escape(s['method'])}</h3><p>"
                         f"{s['n_edges']} of {s['n_edges_total']} edges, {s['n_nodes']} nodes, "
                         f"faithfulness {with_ci(s, 'faithfulness')} (target {s['target']}); "
                         f"CPR {with_ci(s, 'cpr')}, CMD {with_ci(s, 'cmd')} (95% intervals "
                         f"over the {r.get('summary', {}).get('n', '')} prompts)"
                         f"{null_text(s)}{stability_text(s)}</p>")
            parts.append(circuit_svg(circuit, max_edges=150))
            parts.append(figure(curve_figure(circuit.curve,
                                             escape(f"{r['task']}: faithfulness")), f"curve-{i}"))
            heads = s.get("top_heads", [])
            if heads and roles is not None:
                names = [c for c in next(iter(roles.values()))._fields if c not in
                         ("Index", "layer", "head")]
                rows = [[h, *[getattr(roles[h[1:].replace(".h", ".")], c) for c in names]]
                        for h in heads if h[1:].replace(".h", ".") in roles]
                parts.append("<p>Role scores of the circuit's top heads:</p>"
                             + table(["head", *names], rows))
            if (folder / "patterns.json").exists():
                meta, patterns = load_bundle(folder / "patterns")
                parts.append(f'<p>Example prompt: <span class="prompt">'
                             f'{escape(meta["prompt"])}</span></p>')
                tokens = [f"{j}:{escape(t)}" for j, t in enumerate(meta["tokens"])]
                for j, head in enumerate(meta["heads"]):
                    parts.append(figure(heatmap_figure(patterns[head], tokens, tokens, "query",
                                                       "key", f"attention pattern of {head}",
                                                       center=False), f"pattern-{i}-{j}"))
        return "".join(parts)


def with_ci(summary: dict, key: str) -> str:
    """``x [low, high]`` of a summary's number (``x`` alone without its ``x_ci``)."""
    ci = summary.get(f"{key}_ci")
    text = f"{summary[key]:.3f}"
    return text if not ci else f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]"


def null_text(summary: dict) -> str:
    """The matched null in words, or ``""``."""
    null = summary.get("faithfulness_null")
    if not null:
        return ""
    return (f"; matched null (random circuits with the same edge count per sender type and "
            f"layer, receiver type and layer; {null['draws']} draws): faithfulness "
            f"{null['null_mean']:.3f} [{null['null_low']:.3f}, {null['null_high']:.3f}], "
            f"p = {null['p_value']:.3g}")


def stability_text(summary: dict) -> str:
    """The within-seed edge stability in words, or ``""``."""
    if summary.get("stable_core_size") is None or not summary.get("jaccard_ci"):
        return ""
    low, high = summary["jaccard_ci"]
    return (f"; over prompt resamples, a re-chosen circuit's Jaccard to this one is "
            f"{summary['jaccard']:.3f} [{low:.3f}, {high:.3f}] and {summary['stable_core_size']}"
            f" edges are in at least 90% of the resampled circuits (stable core)")


def _roles(ctx: ReportContext) -> dict | None:
    """``"layer.head"`` -> its row of role scores, from the run's first ``heads`` unit."""
    units = ctx.units("heads")
    if not units:
        return None
    frame = ctx.load(units[0][0])
    return {f"{int(r.layer)}.{int(r.head)}": r for r in frame.itertuples()}


def save_top_patterns(model: Model, batch: TaskBatch, circuit: Circuit, folder: Path,
                      k: int = 3) -> list[str]:
    """Attention patterns of the circuit's ``k`` highest-scoring heads on the first prompt
    (``patterns.safetensors`` + ``patterns.json`` with the tokens); returns the heads."""
    from ._patterns import save_patterns

    scores = circuit.node_scores()
    heads = sorted((n for n in circuit.nodes if n.startswith("a")), key=lambda n: -scores[n])[:k]
    pairs = [tuple(int(x) for x in n[1:].split(".h")) for n in heads]
    return save_patterns(model, batch, pairs, folder, f"the circuit's top-{k} heads")
