"""Influence against baselines and leave-k-out ground truth (docs/influence.md, "Baselines and
ground truth").

    .venv/bin/python scripts/study_influence_truth.py --out runs/influence/truth

Part 1 (no model): BM25 and IDF word overlap on the study's corpus and fact queries
(``study_influence.build_corpus``, seed 0): the rank of each fact's source documents.

Part 2, per seed (the small model's initial weights, its batch order and the left-out subsets):
a small Llama (:func:`~modelweave.methods.influence.groundtruth.small_model`) trained on the
same corpus; EK-FAC, the raw and cosine gradient baselines, BM25 and IDF overlap; source
retrieval for the fact queries; ``--subsets`` retrainings each without ``--k`` random
documents (and one full retraining with another seed: the noise floor); the Spearman
correlation of measured and predicted loss changes. Everything is in ``OUT/truth.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from study_influence import answered, build_corpus  # noqa: E402

from modelweave.methods.influence import (  # noqa: E402
    InfluenceScores,
    InfluenceSettings,
    compute_influence,
)
from modelweave.methods.influence.baselines import lexical_tables  # noqa: E402
from modelweave.methods.influence.evaluate import (  # noqa: E402
    leave_out_correlation,
    retrieval,
    retrieval_line,
)
from modelweave.methods.influence.groundtruth import (  # noqa: E402
    leave_out,
    random_subsets,
    small_model,
)
from modelweave.metrics.uncertainty import across_seeds, bootstrap_stat  # noqa: E402


def lexical_part(docs, queries) -> dict:
    tables = lexical_tables([q.prompt + q.completion for q in queries], [d.text for d in docs])
    result = InfluenceScores(tables, queries, docs)
    table = retrieval(result, task="fact")
    print("lexical, study corpus:", retrieval_line(table), flush=True)
    prompt_only = InfluenceScores(lexical_tables([q.prompt for q in queries],
                                                 [d.text for d in docs]), queries, docs)
    table_p = retrieval(prompt_only, task="fact")
    print("lexical, prompt only:", retrieval_line(table_p), flush=True)
    return {"prompt_and_completion": table, "prompt_only": table_p}


def seed_part(seed: int, docs, queries, args) -> dict:
    texts = [d.text for d in docs] + [q.prompt + q.completion for q in queries]
    base = small_model(texts, seed=seed)
    subsets = random_subsets(len(docs), args.k, args.subsets, seed=seed)
    train = dict(modules="all", epochs=args.epochs, lr=args.lr, batch_size=8, seed=seed)
    start = time.process_time()
    full, lo = leave_out(base, docs, queries, subsets, noise_seeds=(1000 + seed,), **train)
    train_cpu = time.process_time() - start
    correct = answered(full, queries)
    start = time.process_time()
    settings = InfluenceSettings(modules="all", query_rank=None, train_batch=8,
                                 query_batch=len(queries), lambda_max_examples=None,
                                 threads=1, seed=seed)
    result = compute_influence(full, docs, queries, settings,
                               out=args.out / f"seed{seed}", cache=args.out / f"seed{seed}/c")
    influence_cpu = time.process_time() - start
    table = retrieval(result, task="fact", reference="bm25")
    facts = [i for i, q in enumerate(queries) if q.task == "fact"]
    procs = [i for i, q in enumerate(queries) if q.task != "fact"]
    corr_f = leave_out_correlation(result, lo.measured, subsets, queries=facts, seed=seed)
    corr_p = leave_out_correlation(result, lo.measured, subsets, queries=procs, seed=seed)
    print(f"seed {seed}: {base.name}; facts answered {sum(correct[i] for i in facts)}/"
          f"{len(facts)}; train CPU {train_cpu:.0f} s ({len(lo.seconds)} trainings), "
          f"influence CPU {influence_cpu:.0f} s", flush=True)
    print(f"  top-1: {retrieval_line(table)}", flush=True)
    print("  leave-k-out Spearman, facts: " + ", ".join(
        f"{m} {c['mean']:.2f} [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]" for m, c in corr_f.items()),
        flush=True)
    return {"model": base.name, "facts_answered": int(sum(correct[i] for i in facts)),
            "train_cpu_s": train_cpu, "influence_cpu_s": influence_cpu,
            "retrieval": table, "leave_out": lo.to_dict(),
            "leave_out_spearman": {"facts": corr_f, "procedures": corr_p},
            "abs_effect": float(np.abs(lo.measured[:, facts]).mean()),
            "abs_noise": float(np.abs(lo.noise[:, facts]).mean()),
            "seconds": result.seconds}


def pooled(per_seed: dict, methods: list[str]) -> dict:
    """Over seeds: top-1 hits pooled over (seed, query) with a bootstrap interval, the
    t-interval over the seeds' top-1 shares, and the same for the facts' Spearman."""
    out = {}
    for m in methods:
        ranks = np.concatenate([np.asarray(s["retrieval"][m]["ranks"]) for s in per_seed.values()])
        rho = np.concatenate([np.asarray(s["leave_out_spearman"]["facts"][m]["per_query"])
                              for s in per_seed.values()])
        rho = rho[np.isfinite(rho)]
        out[m] = {"top1": bootstrap_stat((ranks <= 1).astype(float)).to_dict(),
                  "top1_hits": int((ranks <= 1).sum()), "n": len(ranks),
                  "top3": bootstrap_stat((ranks <= 3).astype(float)).to_dict(),
                  "top1_seeds": across_seeds([s["retrieval"][m]["top1"]["share"]
                                              for s in per_seed.values()]).to_dict(),
                  "spearman_facts": bootstrap_stat(rho).to_dict(),
                  "spearman_facts_seeds": across_seeds(
                      [s["leave_out_spearman"]["facts"][m]["mean"]
                       for s in per_seed.values()]).to_dict()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/influence/truth"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--k", type=int, default=20, help="documents left out per retraining")
    parser.add_argument("--subsets", type=int, default=8, help="retrainings per seed")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--only", type=int, default=None,
                        help="run this one seed into OUT/seed<S>.json (seeds run in parallel)")
    parser.add_argument("--pool", action="store_true",
                        help="pool OUT/truth.json's seeds and OUT/seed*.json into truth.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    docs, queries = build_corpus(0)
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()},
                    "lexical_study_corpus": lexical_part(docs, queries), "seeds": {}}
    if args.only is not None:
        result = seed_part(args.only, docs, queries, args)
        (args.out / f"seed{args.only}.json").write_text(json.dumps(result, indent=1))
        return
    if args.pool:
        if (args.out / "truth.json").is_file():
            report["seeds"] = json.loads((args.out / "truth.json").read_text())["seeds"]
        for path in sorted(args.out.glob("seed*.json")):
            report["seeds"][path.stem.removeprefix("seed")] = json.loads(path.read_text())
        args.seeds = 0
    for seed in range(args.seeds):
        report["seeds"][seed] = seed_part(seed, docs, queries, args)
        (args.out / "truth.json").write_text(json.dumps(report, indent=1))
    methods = list(next(iter(report["seeds"].values()))["retrieval"])
    report["pooled"] = pooled(report["seeds"], methods)
    report["cpu_s"] = sum(s["train_cpu_s"] + s["influence_cpu_s"]
                          for s in report["seeds"].values())
    (args.out / "truth.json").write_text(json.dumps(report, indent=1))
    for m, p in report["pooled"].items():
        t, r = p["top1"], p["spearman_facts"]
        print(f"{m}: top-1 {p['top1_hits']}/{p['n']} [{t['ci_low']:.2f}, {t['ci_high']:.2f}]"
              f"; facts' leave-k-out Spearman {r['mean']:.2f} [{r['ci_low']:.2f}, "
              f"{r['ci_high']:.2f}]", flush=True)
    print(f"CPU {report['cpu_s']:.0f} s; {args.out / 'truth.json'}")


if __name__ == "__main__":
    main()
