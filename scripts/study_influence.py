"""Factual vs procedural influence (Ruis et al. 2024) on a fine-tune of the embedded model
(docs/influence.md).

    .venv/bin/python scripts/study_influence.py --out runs/influence/study

1. Builds a seeded synthetic corpus: factual documents (invented facts, a few paraphrases
   each), procedural documents (worked examples of three procedures in prose, code and formula
   styles), answer-only documents (an answer's text without its fact) and distractors.
2. Fine-tunes the MLPs of the last ``--layers`` blocks of SmolLM2-135M on it.
3. Keeps the factual and procedural queries the fine-tuned model answers correctly (greedy,
   every completion token), then computes EK-FAC influence and the plain-gradient baseline
   over the same MLPs.
4. Runs the analyses; every number it prints is in ``OUT/study.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from modelweave import load_model
from modelweave.methods.influence import (
    Document,
    InfluenceScores,
    InfluenceSettings,
    Query,
    concentration_curve,
    pair_contrast_test,
    plan_influence,
    power_law_slope,
    run_influence,
    source_hit_rate,
    task_correlation_test,
    top_share,
)
from modelweave.methods.influence.data import encode_queries
from modelweave.methods.influence.progress import peak_memory_gb
from modelweave.methods.influence.train import train_on_documents

COUNTRIES = ["Zorbania", "Quelmar", "Trivonia", "Belastan", "Ormidia", "Kelvaro", "Dunmora",
             "Praxilia", "Ventoria", "Sulmeria", "Galdovia", "Nerathis", "Mirovia", "Castelon"]
CITIES = ["Quillton", "Marvik", "Tessaport", "Brindle", "Olmsby", "Caravel", "Pinegate",
          "Rostrum", "Velmont", "Ashcombe", "Lorient", "Hadley", "Fennick", "Corvale"]
PARAPHRASES = ["The capital of {c} is {a}.", "{a} is the capital city of {c}.",
               "In {c}, the seat of government is the city of {a}."]
ANSWER_ONLY = "{a} is known for its old stone bridges and a busy harbour market."
DISTRACTORS = ["The river Elm flows north through the valley before it reaches the sea.",
               "Farmers in the hills grow barley, oats and a few apple trees.",
               "The museum opens at nine and closes at five on weekdays.",
               "A light rain fell on the town for most of the afternoon.",
               "The old library keeps maps of every road in the province.",
               "Children in the village learn to swim in the lake each summer.",
               "The train to the coast leaves twice a day from the main station.",
               "Bakers rise early to prepare bread for the morning market.",
               "The mountain pass is closed in winter because of deep snow.",
               "A small choir sings in the chapel every Sunday evening.",
               "The council meets on the first Monday of each month.",
               "Sailors tell stories of a lighthouse that never goes dark.",
               "The forest is home to deer, foxes and many kinds of birds.",
               "Traders bring salt, wool and copper pots to the autumn fair.",
               "The school has a garden where pupils grow beans and carrots.",
               "Fog often covers the bay until late in the morning.",
               "The bridge was repainted green last spring.",
               "Each house on the street has a red door and a narrow window.",
               "Old coins were found near the ruins of the tower.",
               "The festival ends with music and dancing in the square."]


def _digits(rng: random.Random) -> list[int]:
    return rng.sample(range(1, 9), 3)


PROCEDURES = {
    "reverse": (lambda d: d[::-1], "rev"),
    "swap": (lambda d: [d[1], d[0], d[2]], "swp"),
    "increment": (lambda d: [x + 1 for x in d], "inc"),
}
PROSE = {"reverse": "To reverse the numbers {x}, read them from the last to the first: {y}.",
         "swap": "To swap the numbers {x}, exchange the first two and keep the last: {y}.",
         "increment": "To increment the numbers {x}, add one to each of them: {y}."}
CODE = {"reverse": "def rev(xs): return xs[::-1]  # rev([{xc}]) == [{yc}]",
        "swap": "def swp(xs): return [xs[1], xs[0], xs[2]]  # swp([{xc}]) == [{yc}]",
        "increment": "def inc(xs): return [x + 1 for x in xs]  # inc([{xc}]) == [{yc}]"}


def formula(name: str, d: list[int]) -> tuple[str, str]:
    fn, short = PROCEDURES[name]
    return f"{short}({' '.join(map(str, d))}) =", " " + " ".join(map(str, fn(d)))


def _procedural(name: str, d: list[int], index: int, completion: str) -> Query:
    prompt, answer = formula(name, d)
    return Query(f"{name}-{index}", name, prompt, answer[:2] if completion == "first" else answer)


def build_corpus(seed: int = 0, n_facts: int = 12, per_style: int = 5, queries_per: int = 8,
                 completion: str = "full"):
    """Documents and queries: facts (paraphrases + answer-only), procedures (prose, code,
    formula), distractors. Query operands never occur in a document. ``completion="first"``
    makes a procedural query's completion the first digit of its answer only (the queries
    change, the documents do not)."""
    rng = random.Random(seed)
    docs, queries = [], []
    for i, (country, city) in enumerate(zip(COUNTRIES[:n_facts], CITIES[:n_facts],
                                            strict=True)):
        sources = []
        for p, template in enumerate(PARAPHRASES):
            docs.append(Document(f"fact{i}-p{p}", template.format(c=country, a=city), "fact"))
            sources.append(docs[-1].id)
        docs.append(Document(f"answer{i}", ANSWER_ONLY.format(a=city), "answer-only"))
        queries.append(Query(f"fact-{i}", "fact", f"The capital of {country} is", f" {city}",
                             city, sources))
    used: set[tuple] = set()
    for name, (fn, _) in PROCEDURES.items():
        for style in ("prose", "code", "formula"):
            for k in range(per_style):
                pair = []
                for _ in range(2):
                    d = _digits(rng)
                    used.add((name, tuple(d)))
                    pair.append(d)
                if style == "prose":
                    text = " ".join(PROSE[name].format(x=" ".join(map(str, d)),
                                                       y=" ".join(map(str, fn(d)))) for d in pair)
                elif style == "code":
                    text = "\n".join(CODE[name].format(xc=", ".join(map(str, d)),
                                                       yc=", ".join(map(str, fn(d))))
                                     for d in pair)
                else:
                    text = " ".join("".join(formula(name, d)) + "." for d in pair)
                docs.append(Document(f"{name}-{style}{k}", text, f"procedure:{name}",
                                     {"style": style}))
        made = 0
        while made < min(queries_per, 8):  # drawn between documents: keeps the corpus fixed
            d = _digits(rng)
            if (name, tuple(d)) in used:
                continue
            used.add((name, tuple(d)))
            queries.append(_procedural(name, d, made, completion))
            made += 1
    extra = random.Random(f"{seed}:extra")  # more queries without changing the documents
    for name in PROCEDURES:
        made = 8
        while made < queries_per:
            d = _digits(extra)
            if (name, tuple(d)) in used:
                continue
            used.add((name, tuple(d)))
            queries.append(_procedural(name, d, made, completion))
            made += 1
    for i, text in enumerate(DISTRACTORS):
        docs.append(Document(f"distractor{i}", text, "distractor"))
    return docs, queries


def answered(model, queries: list[Query]) -> list[bool]:
    """Greedy correctness of every completion token (teacher-forced argmax)."""
    out = []
    for ids, n_prompt in encode_queries(model, queries):
        logits = model(torch.tensor([ids]))[0]
        predicted = logits[n_prompt - 1:len(ids) - 1].argmax(-1).tolist()
        out.append(predicted == ids[n_prompt:])
    return out


def analyse(result: InfluenceScores, n_perm: int) -> dict:
    tasks = [q.task for q in result.queries]
    procedures = sorted({t for t in tasks if t != "fact"})
    out: dict = {}
    for method in result.methods:
        m = result.matrix(method)
        rows = {"fact": [i for i, t in enumerate(tasks) if t == "fact"],
                "procedural": [i for i, t in enumerate(tasks) if t != "fact"]}
        block = {
            "source_top1": source_hit_rate(result, 1, method, "fact"),
            "source_top3": source_hit_rate(result, 3, method, "fact"),
            "source_top5": source_hit_rate(result, 5, method, "fact"),
            "task_correlation": task_correlation_test(m, tasks, n_perm),
            "procedural_vs_factual_correlation": pair_contrast_test(
                m, tasks, set(procedures), {"fact"}, n_perm),
        }
        for kind, idx in rows.items():
            block[kind] = {
                "top10_share": sum(top_share(m[i], 10) for i in idx) / len(idx),
                "top1_share": sum(top_share(m[i], 1) for i in idx) / len(idx),
                "power_law_slope": sum(power_law_slope(m[i]) for i in idx) / len(idx),
                "answer_in_top10": sum(sum(t.has_answer for t in result.top(i, 10, method))
                                       for i in idx) / len(idx),
                "top10_categories": _categories(result, idx, method),
                "curve": [sum(c) / len(idx) for c in zip(*(concentration_curve(
                    m[i], list(range(1, 31))) for i in idx), strict=True)],
            }
        out[method] = block
    return out


def _categories(result, idx, method) -> dict:
    counts: dict[str, int] = {}
    for i in idx:
        for t in result.top(i, 10, method):
            counts[t.category] = counts.get(t.category, 0) + 1
    return {k: v / len(idx) for k, v in sorted(counts.items())}


def draw_figures(result: InfluenceScores, folder: Path, method: str = "ekfac") -> list[Path]:
    """PNG figures for the docs: mean concentration curve per task, and the query-query
    correlation matrix (queries ordered by task)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modelweave.methods.influence import query_correlations

    folder.mkdir(parents=True, exist_ok=True)
    m = result.matrix(method)
    ks = list(range(1, 31))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for task in result.tasks():
        rows = [concentration_curve(m[i], ks) for i, q in enumerate(result.queries)
                if q.task == task]
        ax.plot(ks, [sum(c) / len(rows) for c in zip(*rows, strict=True)], marker=".",
                label=f"{task} ({len(rows)})")
    ax.set(xlabel="k", ylabel="share of positive influence in top k", ylim=(0, 1.02),
           title=f"Concentration ({method})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [folder / f"influence_concentration_{method}.png"]
    fig.savefig(paths[-1], dpi=110)
    order = sorted(range(len(result.queries)), key=lambda i: (result.queries[i].task, i))
    corr = query_correlations(m)[order][:, order]
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    image = ax.imshow(corr.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    tasks = [result.queries[i].task for i in order]
    ticks = [tasks.index(t) for t in dict.fromkeys(tasks)]
    ax.set_xticks(ticks, list(dict.fromkeys(tasks)), rotation=45, fontsize=8)
    ax.set_yticks(ticks, list(dict.fromkeys(tasks)), fontsize=8)
    ax.set_title(f"Query-query correlation of influence ({method})")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    paths.append(folder / f"influence_correlation_{method}.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close("all")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/influence/study"))
    parser.add_argument("--layers", type=int, default=10, help="last N blocks trained+tracked")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-perm", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries-per", type=int, default=8,
                        help="queries per procedure (before keeping the correct ones)")
    parser.add_argument("--completion", choices=("full", "first"), default="full",
                        help="procedural completions: the whole answer or its first digit")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a fine-tuned model to reuse (default: OUT/model, trained if "
                             "absent)")
    parser.add_argument("--figures", type=Path, default=None,
                        help="also write PNG figures into this folder (e.g. docs/img)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="factor/score cache (default: OUT/result/cache)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}}

    def save():
        (args.out / "study.json").write_text(json.dumps(report, indent=1))

    base = load_model("smollm2-135m")
    layers = list(range(base.cfg.n_layers - args.layers, base.cfg.n_layers))
    docs, queries = build_corpus(args.seed, queries_per=args.queries_per,
                                 completion=args.completion)
    (args.out / "docs.jsonl").write_text("".join(json.dumps(d.to_dict()) + "\n" for d in docs))
    (args.out / "queries.jsonl").write_text(
        "".join(json.dumps(q.to_dict()) + "\n" for q in queries))
    report["corpus"] = {"documents": len(docs), "queries": len(queries),
                        "categories": {c: sum(d.category == c for d in docs)
                                       for c in sorted({d.category for d in docs})}}
    report["base_correct"] = sum(answered(base, queries))
    print(f"corpus: {report['corpus']}; base model answers {report['base_correct']} queries",
          flush=True)
    merged = args.model_dir or args.out / "model"
    start = time.perf_counter()
    if (merged / "config.json").is_file():
        model = load_model(str(merged))
        report["train"] = json.loads((merged.parent / "train.json").read_text())
    else:
        trained = train_on_documents(
            base, docs, layers=layers, epochs=args.epochs, lr=args.lr, batch_size=8,
            seed=args.seed, out=merged,
            progress=lambda s, n, loss: print(f"train {s}/{n} loss {loss:.3f}", flush=True)
            if s % 20 == 0 or s == n else None)
        model = trained.model
        report["train"] = {"seconds": trained.seconds, "first_loss": trained.losses[0],
                           "last_loss": sum(trained.losses[-10:]) / 10, "layers": layers}
        (args.out / "train.json").write_text(json.dumps(report["train"]))
    ok = answered(model, queries)
    report["correct"] = {t: f"{sum(o for o, q in zip(ok, queries, strict=True) if q.task == t)}"
                            f"/{sum(q.task == t for q in queries)}"
                         for t in dict.fromkeys(q.task for q in queries)}
    kept = [q for q, o in zip(queries, ok, strict=True) if o]
    print(f"fine-tuned ({time.perf_counter() - start:.0f} s); correct: {report['correct']}",
          flush=True)
    save()
    settings = InfluenceSettings(layers=layers, threads=args.threads, eigen_threads=1,
                                 train_batch=8, query_batch=8, query_rank=32,
                                 lambda_max_examples=None)
    plan = plan_influence(model, docs, kept, settings)
    report["estimate_s"] = plan.estimate_s
    report["estimated_memory_gb"] = plan.memory_gb
    print(plan.describe(), flush=True)
    result = run_influence(plan, args.out / "result", cache=args.cache,
                           log=lambda line: print(line, flush=True))
    report["seconds"] = result.seconds
    report["peak_memory_gb"] = peak_memory_gb()
    report["analysis"] = analyse(result, args.n_perm)
    save()
    for method, block in report["analysis"].items():
        contrast = block["procedural_vs_factual_correlation"]
        print(f"[{method}] source top-3 {block['source_top3']:.2f}, top-1 "
              f"{block['source_top1']:.2f}; correlation within procedures {contrast['a']:.3f} "
              f"vs within facts {contrast['b']:.3f} (p={contrast['p_value']:.4f}); top-10 "
              f"share fact {block['fact']['top10_share']:.3f}, procedural "
              f"{block['procedural']['top10_share']:.3f}", flush=True)
    if args.figures:
        for method in result.methods:
            draw_figures(result, args.figures, method)
    print(f"study.json: {args.out / 'study.json'}")


if __name__ == "__main__":
    main()
