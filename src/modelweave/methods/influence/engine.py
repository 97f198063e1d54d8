"""EK-FAC influence of training documents on query completions, over kronfluence.

    from modelweave.methods.influence import compute_influence, load_documents, resolve_queries
    result = compute_influence(model, load_documents("docs.jsonl"),
                               resolve_queries("facts.jsonl"), out="runs/influence")
    result.top("facts-0", k=5)

Stages (each timed; factors and scores are files keyed by a content hash of the model's
weights, the tokenised corpus and the settings, so a changed corpus of the same size never
reuses old factors, and a run interrupted after a stage resumes after it): ``covariance``,
``eigendecomposition``, ``lambda`` (EK-FAC factors), ``query gradients`` and ``scores`` (one
pass over the corpus per group of queries), then ``baseline`` (the plain gradient dot product
over the same modules, kronfluence's ``identity`` strategy) and ``cosine norms`` (the gradient
norms that turn it into the cosine baseline). The lexical baselines (BM25, IDF word overlap;
:mod:`.baselines`) need no model and are always added.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ...io import read_json, write_json
from ...models.device_map import require_resident
from ...progress import Progress
from .baselines import cosine_scores, gradient_norms, lexical_tables
from .costs import available_gb, estimate_memory, time_one_batch
from .data import (
    Document,
    InfluenceError,
    Query,
    check_queries,
    encode_documents,
    encode_queries,
)
from .modules import module_shapes, prepared_copy, resolve_modules
from .progress import StageClock, peak_memory_gb, stage_reporting
from .scores import InfluenceScores
from .settings import InfluenceSettings

FACTOR_STAGES = ("covariance", "eigendecomposition", "lambda")


@dataclass
class Plan:
    """Everything decided before the first stage runs: what is tracked, the keys, the memory
    and time estimates. :func:`plan_influence` makes one; :func:`run_influence` runs it."""

    model: object
    documents: list[Document]
    queries: list[Query]
    settings: InfluenceSettings
    modules: list[str]
    doc_ids: list[list[int]]
    query_ids: list[tuple[list[int], int]]
    order: list[int]
    keys: dict
    memory_gb: dict = field(default_factory=dict)
    estimate_s: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return sum(map(len, self.doc_ids))

    def describe(self) -> str:
        est = sum(self.estimate_s.values())
        return (f"{len(self.documents)} documents ({self.n_tokens} tokens), "
                f"{len(self.queries)} queries, {len(self.modules)} modules; estimated "
                f"{est / 60:.1f} min, peak ~{self.memory_gb.get('peak', 0):.1f} GB")


def _hash(*parts) -> str:
    h = hashlib.blake2b(digest_size=10)
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(part.detach().float().cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


#: config entries that say where or how a model was stored, not what it computes
_NOT_CONTENT = {"dtype", "torch_dtype", "transformers_version", "name_or_path", "architectures"}


def model_fingerprint(model) -> str:
    """A content hash of every parameter and buffer of the model (as float32) and of its
    config (without the entries that only say where or how it was stored)."""
    h = hashlib.blake2b(digest_size=10)
    config = {k: v for k, v in model.hf_model.config.to_dict().items()
              if not k.startswith("_") and k not in _NOT_CONTENT}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, t in [*model.hf_model.named_parameters(), *model.hf_model.named_buffers()]:
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def plan_influence(model, documents: list[Document], queries: list[Query],
                   settings: InfluenceSettings | None = None, *, calibrate: bool = True) -> Plan:
    """Check the inputs, resolve modules, tokenise, key, estimate memory and time.

    Raises:
        InfluenceError: no documents, an empty completion, an unknown module, or an estimated
            peak memory above ``settings.max_memory_gb`` (default: the memory available).
    """
    from .kron import document_rows

    settings = settings or InfluenceSettings()
    if model.tokenizer is None:
        raise InfluenceError("the model has no tokenizer; influence reads text")
    require_resident(model, "influence (per-example gradients of every weight)")
    if not documents:
        raise InfluenceError("no documents given")
    if settings.train_batch < 1 or settings.query_batch < 1:
        raise InfluenceError(f"train_batch and query_batch must be at least 1, got "
                             f"{settings.train_batch} and {settings.query_batch}")
    if settings.max_tokens < 2:
        raise InfluenceError(f"max_tokens must be at least 2 (a next-token loss needs two "
                             f"tokens), got {settings.max_tokens}")
    check_queries(queries)
    modules = resolve_modules(model, settings.modules, settings.layers)
    doc_ids = encode_documents(model, documents, settings.max_tokens)
    query_ids = encode_queries(model, queries)
    seeds = [_hash(r) for r in doc_ids]
    order = sorted(range(len(doc_ids)), key=lambda j: (len(doc_ids[j]), seeds[j]))
    fingerprint = model_fingerprint(model)
    factor_key = _hash(fingerprint, sorted(seeds), modules, settings.factor_part())
    score_key = _hash(factor_key, [seeds[j] for j in order], query_ids, settings.score_part())
    keys = {"model": fingerprint, "factors": factor_key, "scores": score_key}
    shapes = module_shapes(model, modules)
    longest = max(map(len, doc_ids))
    memory = estimate_memory(model, shapes, settings, longest, len(queries))
    limit = settings.max_memory_gb if settings.max_memory_gb is not None else available_gb()
    if memory["peak"] > limit:
        stage = max((k for k in memory if k != "peak"), key=memory.get)
        raise InfluenceError(
            f"estimated peak memory {memory['peak']:.1f} GB ({stage}) exceeds the "
            f"{limit:.1f} GB available at train batch {settings.train_batch} and "
            f"{longest}-token documents; lower the batch size or max_tokens, track fewer "
            "modules, or use a lower query rank")
    plan = Plan(model, documents, queries, settings, modules, doc_ids, query_ids, order, keys,
                memory)
    if calibrate:
        hf = prepared_copy(model, modules)
        rows = document_rows([doc_ids[j] for j in order[-settings.train_batch:]],
                             model.tokenization.pad_token_id)
        t = time_one_batch(hf, rows.collate([rows[i] for i in range(len(rows))]), modules, shapes)
        del hf
        n_batches = math.ceil(len(doc_ids) / settings.train_batch)
        n_lambda = math.ceil(min(len(doc_ids), settings.lambda_max_examples or len(doc_ids))
                             / settings.train_batch)
        dims = sum(max(i, 1) ** 3 + o ** 3 for i, o, _ in shapes.values())
        groups = 1
        # coefficients fitted on one run (SmolLM2, 113 documents, 10 layers, 1 thread):
        # the calibration batch is the longest, so a mean batch costs less than it
        plan.estimate_s = {
            "covariance": 0.6 * n_batches * t["step"],
            "eigendecomposition": 0.3 * t["eigh256"] * dims / 256 ** 3,
            "lambda": 2.2 * n_lambda * t["step"],
            "query gradients": 4.0 * len(queries) * t["step"] / settings.train_batch,
            "scores": 0.4 * groups * n_batches * t["step"],
        }
        if settings.baseline:
            plan.estimate_s["baseline"] = (0.6 * len(queries) * t["step"] / settings.train_batch
                                           + 0.4 * n_batches * t["step"])
    return plan


def _stage_file(folder: Path) -> Path:
    return folder / "modelweave_stages.json"


def _finished(folder: Path) -> dict:
    path = _stage_file(folder)
    return read_json(path, error=InfluenceError) if path.is_file() else {}


def _mark(folder: Path, stage: str, seconds: float) -> None:
    done = _finished(folder)
    done[stage] = seconds
    write_json(_stage_file(folder), done)


def run_influence(plan: Plan, out: str | Path | None = None, *, cache: str | Path | None = None,
                  progress: Progress = None,
                  log: Callable[[str], None] | None = None) -> InfluenceScores:
    """Run the stages of ``plan`` (skipping any finished before), return and (with ``out``)
    save the scores.

    Args:
        out: folder for ``scores.safetensors`` + ``influence.json``.
        cache: where factors and scores are kept (default ``OUT/cache``, else
            ``runs/influence/cache``), in folders named by their content keys.
        progress: phases :data:`~.progress.STAGES` (``"baseline "`` before the query
            gradients and scores of the gradient baseline); log: ``log(line)`` at each
            stage's end.
    """
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    from .kron import LanguageModelTask, document_rows, query_rows

    s, model = plan.settings, plan.model
    if cache is None:
        cache = Path(out) / "cache" if out else Path("runs/influence/cache")
    cache = Path(cache)
    threads_before = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    pad = model.tokenization.pad_token_id
    train = document_rows([plan.doc_ids[j] for j in plan.order], pad)
    queries = query_rows(plan.query_ids, pad)
    task = LanguageModelTask(plan.modules)
    hf = prepare_model(prepared_copy(model, plan.modules), task)
    seconds: dict[str, float] = {}
    clock = StageClock(progress)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # kronfluence's cuda.amp
            analyzer = Analyzer("ekfac", hf, task, cpu=True, disable_tqdm=False,
                                output_dir=str(cache), log_level=40)
            analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=train.collate))
            with stage_reporting(clock):
                args = (analyzer, plan, train, queries)
                rest = (seconds, clock, log, FactorArguments, ScoreArguments)
                scores = {"ekfac": _scores(*args, "ekfac", *rest)}
                if s.baseline:
                    scores["gradient"] = _scores(*args, "identity", *rest)
        inverse = [0] * len(plan.order)
        for internal, original in enumerate(plan.order):
            inverse[original] = internal
        tables = {k: v[:, inverse].float() for k, v in scores.items()}
        if s.baseline:
            start = time.perf_counter()
            tables["cosine"] = _cosine(plan, tables["gradient"])
            seconds["cosine norms"] = time.perf_counter() - start
            if log:
                log(f"cosine norms: {seconds['cosine norms']:.1f} s")
    finally:
        torch.set_num_threads(threads_before)
    tables.update(lexical_tables([q.prompt + q.completion for q in plan.queries],
                                 [d.text for d in plan.documents]))
    result = InfluenceScores(tables,
                             plan.queries, plan.documents,
                             {**asdict(s), "resolved_modules": plan.modules,
                              "n_tokens": plan.n_tokens}, plan.keys, seconds,
                             peak_memory_gb(), model.name)
    if out:
        result.save(out)
    return result


def _cosine(plan: Plan, raw: torch.Tensor) -> torch.Tensor:
    """The gradient baseline [Q, D] (original document order) divided by the full-rank norms
    of each query's completion-loss gradient and each document's loss gradient."""
    from .kron import document_rows, query_rows

    pad = plan.model.tokenization.pad_token_id
    hf = prepared_copy(plan.model, plan.modules)
    docs, queries = document_rows(plan.doc_ids, pad), query_rows(plan.query_ids, pad)
    d = gradient_norms(hf, plan.modules, docs.rows, docs.targets)
    q = gradient_norms(hf, plan.modules, queries.rows, queries.targets)
    del hf
    return cosine_scores(raw, q, d)


def _scores(analyzer, plan: Plan, train, queries, strategy: str, seconds: dict,
            clock: StageClock, log, FactorArguments, ScoreArguments) -> torch.Tensor:
    """Factors then pairwise scores for one strategy; returns [Q, D] in internal order."""
    s = plan.settings
    suffix = "" if strategy == "ekfac" else "-gradient"
    factors_name, scores_name = plan.keys["factors"] + suffix, plan.keys["scores"] + suffix
    root = Path(analyzer.output_dir)
    factors_dir = root / f"factors_{factors_name}"
    scores_dir = root / f"scores_{scores_name}"
    factor_args = FactorArguments(
        strategy=strategy, covariance_max_examples=s.covariance_max_examples,
        lambda_max_examples=s.lambda_max_examples)
    batch = dict(factors_name=factors_name, dataset=train, per_device_batch_size=s.train_batch,
                 factor_args=factor_args)
    calls = (("covariance", analyzer.fit_covariance_matrices),
             ("eigendecomposition", analyzer.perform_eigendecomposition),
             ("lambda", analyzer.fit_lambda_matrices))
    stages = FACTOR_STAGES if strategy == "ekfac" else ()
    if strategy != "ekfac" and "factors" not in _finished(factors_dir):
        analyzer.fit_all_factors(factors_name=factors_name, dataset=train,
                                 per_device_batch_size=s.train_batch, factor_args=factor_args,
                                 overwrite_output_dir=True)
        _mark(factors_dir, "factors", 0.0)
    for stage, call in calls:
        if stage not in stages:
            continue
        done = _finished(factors_dir)
        if stage in done:
            seconds[stage] = done[stage]
            if log:
                log(f"{stage}: reused from {factors_dir}")
            continue
        torch.manual_seed(s.seed)
        start = time.perf_counter()
        if stage == "eigendecomposition":
            before = torch.get_num_threads()
            torch.set_num_threads(s.eigen_threads)
            try:
                call(factors_name=factors_name, factor_args=factor_args,
                     overwrite_output_dir=True)
            finally:
                torch.set_num_threads(before)
        else:
            call(**batch, overwrite_output_dir=True)
        seconds[stage] = time.perf_counter() - start
        _mark(factors_dir, stage, seconds[stage])
        if log:
            log(f"{stage}: {seconds[stage]:.1f} s, peak memory {peak_memory_gb():.2f} GB")
    prefix = "" if strategy == "ekfac" else "baseline "
    done = _finished(scores_dir)
    if "scores" not in done:
        n_q = len(queries)
        per_batch = min(s.query_batch, n_q)
        score_args = ScoreArguments(
            damping_factor=s.damping, query_gradient_low_rank=s.query_rank,
            query_gradient_accumulation_steps=math.ceil(n_q / per_batch))
        clock.prefix = prefix
        start = time.perf_counter()
        torch.manual_seed(s.seed)
        analyzer.compute_pairwise_scores(
            scores_name=scores_name, factors_name=factors_name, query_dataset=queries,
            train_dataset=train, per_device_query_batch_size=per_batch,
            per_device_train_batch_size=s.train_batch, score_args=score_args,
            dataloader_kwargs=None, overwrite_output_dir=True)
        clock.prefix = ""
        total = time.perf_counter() - start
        split = {k: clock.seconds.get(prefix + k, 0.0) for k in ("query gradients", "scores")}
        rest = max(total - sum(split.values()), 0.0)
        split["query gradients"] += rest  # loading factors, preconditioning
        _mark(scores_dir, "scores", total)
        _mark(scores_dir, "split", split)  # type: ignore[arg-type]
        done = _finished(scores_dir)
        if log:
            log(f"{prefix}query gradients + scores: {total:.1f} s, peak memory "
                f"{peak_memory_gb():.2f} GB")
    elif log:
        log(f"{prefix}scores: reused from {scores_dir}")
    for k, v in done["split"].items():
        seconds[prefix + k] = v
    return analyzer.load_pairwise_scores(scores_name)["all_modules"].float()


def compute_influence(model, documents: list[Document], queries: list[Query],
                      settings: InfluenceSettings | None = None, *,
                      out: str | Path | None = None, cache: str | Path | None = None,
                      progress: Progress = None,
                      log: Callable[[str], None] | None = None) -> InfluenceScores:
    """:func:`plan_influence` then :func:`run_influence` (see both)."""
    plan = plan_influence(model, documents, queries, settings, calibrate=False)
    return run_influence(plan, out, cache=cache, progress=progress, log=log)
