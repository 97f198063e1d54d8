"""The steering study of docs/steering.md on the embedded model, SmolLM2-135M-Instruct
(dequantised from Q4_1).

    python scripts/study_steering.py fv --out runs/steering        # FVs, seeds 0 1 2, nulls
    python scripts/study_steering.py steer --out runs/steering     # steering + ablation, nulls
    python scripts/study_steering.py tables --out runs/steering    # the doc's tables (no model)
    python scripts/study_steering.py bench --out runs/steering     # head effects: engine vs naive
    python scripts/study_steering.py figures --out runs/steering   # figures from saved results

Every number comes per seed (``--seeds``, default 0 1 2) with its bootstrap interval over
prompts, and beside its matched null: random-head FVs and equal-norm random vectors for the
FV, equal-norm random vectors for steering, random directions for the ablation. The seeds
re-draw the ICL word split, the prompts and the nulls (FV), and the subset of contrastive
pairs the vector is fitted on and the nulls (steering); ``tables`` aggregates them with a
t-interval over seeds (:func:`modelweave.metrics.uncertainty.across_seeds`).
Single-threaded by default (``--threads``): the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

TASKS = ["antonym", "capitalize", "country-capital", "present-past"]

# contrastive sentiment pairs: the same sentence with a positive and a negative judgement
PAIRS = [
    ("I loved this movie, it was wonderful.", "I hated this movie, it was terrible."),
    ("The food was delicious and the staff were kind.",
     "The food was disgusting and the staff were rude."),
    ("What a beautiful day, I feel great.", "What an awful day, I feel miserable."),
    ("This book is brilliant and inspiring.", "This book is boring and depressing."),
    ("My new job is fantastic.", "My new job is horrible."),
    ("The concert was amazing.", "The concert was dreadful."),
    ("I am so happy with my purchase.", "I am so unhappy with my purchase."),
    ("The hotel was clean and comfortable.", "The hotel was dirty and uncomfortable."),
    ("Our trip was a joy from start to finish.", "Our trip was a disaster from start to finish."),
    ("She gave an excellent performance.", "She gave a pathetic performance."),
    ("The weather is lovely today.", "The weather is nasty today."),
    ("I really enjoyed the game.", "I really disliked the game."),
    ("The service was perfect.", "The service was appalling."),
    ("He is a good and generous friend.", "He is a bad and selfish friend."),
    ("This is the best pizza in town.", "This is the worst pizza in town."),
    ("The garden looks gorgeous.", "The garden looks ugly."),
]
PROMPTS = ["I think the movie was", "My weekend was", "The restaurant we went to was",
           "Today at work I felt", "The new phone is", "Our neighbours are", "The book I read",
           "Yesterday's match was", "The city looks", "My teacher said that the class was",
           "The weather this morning", "Honestly, the service", "The party last night was",
           "This song is", "The trip to the beach", "My opinion of the hotel is",
           "The coffee here", "Last summer was", "The new teacher", "Dinner tonight was"]
POSITIVE = {"good", "great", "amazing", "wonderful", "love", "loved", "lovely", "happy",
            "beautiful", "excellent", "fantastic", "best", "enjoy", "enjoyed", "perfect",
            "brilliant", "delicious", "nice", "fun", "awesome", "glad", "joy", "kind",
            "incredible", "exciting", "pleasant", "gorgeous", "inspiring", "favorite",
            "favourite", "delightful", "comfortable", "friendly", "positive", "successful",
            "excited", "thrilled", "proud", "magical", "cheerful"}
NEGATIVE = {"bad", "terrible", "awful", "hate", "hated", "horrible", "sad", "worst", "boring",
            "poor", "disappointing", "disappointed", "ugly", "rude", "dirty", "miserable",
            "disgusting", "dreadful", "nasty", "pathetic", "unhappy", "annoying", "angry",
            "disaster", "depressing", "negative", "painful", "frustrating", "tired"}
SENTIMENT_REVIEWS = [
    ("I loved every minute of it.", "positive"), ("It was a complete waste of time.", "negative"),
    ("The best meal I have had in years.", "positive"), ("The staff were rude to us.", "negative"),
    ("Wonderful acting and a great story.", "positive"), ("Boring and far too long.", "negative"),
    ("I would happily go again.", "positive"), ("I want my money back.", "negative"),
    ("Everything was perfect.", "positive"), ("The room was dirty and cold.", "negative"),
    ("A delightful little film.", "positive"), ("Terrible sound and awful seats.", "negative"),
    ("My kids had so much fun.", "positive"), ("I regret buying this.", "negative"),
    ("Friendly people and a lovely view.", "positive"), ("It broke after one day.", "negative"),
]


def stage_fv(model, out: Path, args) -> dict:
    """Per seed: the FV pipeline on the train word pairs, held-out accuracy at the FV layer on
    the test pairs, beside random-head FVs and equal-norm random vectors."""
    from modelweave.methods.steering.fv_eval import run_function_vectors

    results = {}
    for seed in args.seeds:
        start = time.time()
        run = run_function_vectors(
            model, TASKS, n_clean=args.n_clean, n_corrupt=args.n_corrupt, n_eval=args.n_eval,
            top_k=args.top_k, layers=[args.fv_layer], fv_layer=args.fv_layer,
            effect_layers=list(range(args.first_effect_layer, model.cfg.n_layers)), seed=seed,
            null_draws=args.null_draws)
        run.settings["seconds"] = round(time.time() - start, 1)
        run.save(out / f"fv_seed{seed}")
        results[seed] = {"heads": run.heads, "headline": run.headline(),
                         "seconds": run.settings["seconds"]}
        print(json.dumps({"seed": seed, "heads": run.heads,
                          "seconds": run.settings["seconds"]}), flush=True)
    (out / "fv_seeds.json").write_text(json.dumps(results, indent=1))
    return results


def _review_score(model, kind: str):
    """Per review: the logit(' positive') - logit(' negative') gap signed by the label
    (``gap``) or whether it is right (``right``)."""
    ids_pos = model.to_tokens(" positive", prepend_bos=False)[0, 0].item()
    ids_neg = model.to_tokens(" negative", prepend_bos=False)[0, 0].item()
    prompts = [f"Review: {r}\nSentiment:" for r, _ in SENTIMENT_REVIEWS]
    sign = torch.tensor([1.0 if lab == "positive" else -1.0 for _, lab in SENTIMENT_REVIEWS])

    def score() -> torch.Tensor:
        tokens, mask = model.encode(prompts)
        logits = model.forward(tokens, attention_mask=mask)
        last = logits[torch.arange(len(prompts)), mask.sum(-1) - 1].float()
        gap = (last[:, ids_pos] - last[:, ids_neg]) * sign
        return gap if kind == "gap" else (gap > 0).float()

    return score


def stage_steer(model, out: Path, args) -> dict:
    """Per seed: the mean-difference vector of a random ``--fit-pairs`` of the 16 pairs at
    ``--steer-layer``; steering at +scale / -scale against equal-norm random vectors, and
    ablating its direction against random directions."""
    import random

    from modelweave.methods.steering.controls import (
        ablation_null,
        check_disjoint_prompts,
        steering_null,
        word_hits,
    )
    from modelweave.methods.steering.vectors import contrastive_vectors

    pos, neg = [p for p, _ in PAIRS], [n for _, n in PAIRS]
    reviews = [r for r, _ in SENTIMENT_REVIEWS]
    check_disjoint_prompts(PROMPTS + reviews, pos, neg)  # evaluation texts are not pair texts
    scale, layer, results = args.scale, args.steer_layer, {}
    for seed in args.seeds:
        start = time.time()
        chosen = sorted(random.Random(seed).sample(range(len(PAIRS)), args.fit_pairs))
        vec = contrastive_vectors(model, [pos[i] for i in chosen], [neg[i] for i in chosen],
                                  layers=layer).at(layer)
        texts: list = []
        plus = steering_null(model, vec, word_hits(model, PROMPTS, sorted(POSITIVE),
                                                   args.max_new_tokens, texts),
                             layer=layer, scale=scale, n_draws=args.steer_draws, seed=seed)
        minus_texts: list = []
        hits_pos = word_hits(model, PROMPTS, sorted(POSITIVE), args.max_new_tokens,
                             minus_texts)
        minus = steering_null(model, vec, lambda hits=hits_pos: [1.0 - h for h in hits()],
                              layer=layer, scale=-scale, n_draws=args.steer_draws, seed=seed)
        neg_words = _negative_words(minus_texts)
        gap = ablation_null(model, vec, _review_score(model, "gap"), n_draws=args.null_draws,
                            seed=seed)
        right = ablation_null(model, vec, _review_score(model, "right"),
                              n_draws=args.null_draws, seed=seed)
        results[seed] = {"pairs": chosen, "norm": float(vec.norm()),
                         "plus": plus.to_dict(), "minus": minus.to_dict(),
                         "minus_negative_words": neg_words,
                         "ablate_gap": gap.to_dict(), "ablate_right": right.to_dict(),
                         "samples": {"unsteered": texts[0][:4], "steered": texts[1][:4]},
                         "seconds": round(time.time() - start, 1)}
        print(json.dumps({"seed": seed, "plus": plus.effect, "minus": minus.effect,
                          "ablate_gap": gap.effect, "seconds": results[seed]["seconds"]}),
              flush=True)
    (out / "steer_seeds.json").write_text(json.dumps(results, indent=1))
    return results


def _negative_words(texts: list[list[str]]) -> dict:
    """From the continuations of a steering_null run (unsteered, steered, then each null
    draw): the share with a negative word, its change with the vector (bootstrap interval)
    and beside the null draws' changes."""
    from modelweave.metrics.nulls import compare
    from modelweave.metrics.uncertainty import bootstrap_stat

    hits = [[float(bool(words(t) & NEGATIVE)) for t in run] for run in texts]
    base = torch.tensor(hits[0])
    agg = bootstrap_stat(torch.tensor(hits[1]) - base)
    nulls = [float((torch.tensor(h) - base).mean()) for h in hits[2:]]
    return {"base": hits[0], "treated": hits[1], "effect": agg.mean,
            "effect_ci": [agg.ci_low, agg.ci_high],
            "effect_null": compare(agg.mean, nulls, null="equal-norm random vector").to_dict()}


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:'\"()").lower() for w in text.split()}


def _fmt(agg) -> str:
    return f"{agg.mean:.2f} [{agg.ci_low:.2f}, {agg.ci_high:.2f}]"


def stage_tables(out: Path) -> None:
    """The doc's tables: per task and setting, the mean over seeds with its t-interval, the
    per-seed bootstrap intervals, and the nulls (mean over seeds, largest p)."""
    from modelweave.methods.steering.fv_eval import FVRun
    from modelweave.metrics.nulls import compare
    from modelweave.metrics.uncertainty import across_seeds, bootstrap_stat

    fv, runs = {}, {}  # from the saved runs, so seeds run in separate processes join up
    for folder in sorted(f for f in out.glob("fv_seed*") if f.is_dir()):
        run = FVRun.load(folder)
        seed = folder.name.removeprefix("fv_seed")
        runs[seed] = run
        fv[seed] = {"heads": run.heads, "headline": run.headline()}
        for setting in ("zero_shot", "shuffled"):  # the mean over tasks beside its null:
            done = [t for t in run.tasks if t.hits]  # the same head sets for every task
            for kind, key in (("random_heads", ""), ("random_vector", "_vector")):
                obs = sum(np.mean(t.hits[setting]["fv"]) for t in done) / len(done)
                null = np.mean([t.null_accuracy[setting][kind] for t in done], axis=0)
                fv[seed][f"mean_{setting}_fv_null{key}"] = compare(obs, null).to_dict()
    seeds = sorted(fv)
    print("FV heads per seed: " + "; ".join(
        f"{s}: " + ", ".join(f"a{L}.h{h}" for L, h in fv[s]["heads"]) for s in seeds))
    if len(seeds) >= 2:
        from modelweave.metrics.uncertainty import stability

        st = stability([[f"a{L}.h{h}" for L, h in fv[s]["heads"]] for s in seeds])
        print(f"head-set stability over seeds: Jaccard {_fmt(st.jaccard)}; stable core "
              f"(all seeds >= 90%): {', '.join(st.core)}")
    tasks = [r["task"] for r in fv[seeds[0]]["headline"]]
    for setting in ("zero_shot", "shuffled"):
        print(f"\n{setting}: task | none | +FV | random-head FV (p per seed) | equal-norm "
              "vector (p) | layer mean | per-seed FV intervals")
        for task in tasks + ["mean"]:
            def values(key, sub=None, task=task):
                vals = []
                for s in seeds:
                    rows = [r for r in fv[s]["headline"] if task in (r["task"], "mean")
                            and key in r]
                    got = [r[key][sub] if sub else r[key] for r in rows]
                    vals.append(sum(got) / len(got))
                return vals

            none = across_seeds(values(f"{setting}_none"))
            fvv = across_seeds(values(f"{setting}_fv"))
            rh = across_seeds(values(f"{setting}_fv_null", "null_mean"))
            rv = across_seeds(values(f"{setting}_fv_null_vector", "null_mean"))
            lm = across_seeds(values(f"{setting}_layer_mean"))
            if task == "mean":
                ps, pv = ([f"{fv[s][f'mean_{setting}_fv_null{k}']['p_value']:.2g}"
                           for s in seeds] for k in ("", "_vector"))
            else:
                ps = [f"{p:.2g}" for p in values(f"{setting}_fv_null", "p_value")]
                pv = [f"{p:.2g}" for p in values(f"{setting}_fv_null_vector", "p_value")]
            cis = ("" if task == "mean" else " ".join(
                f"[{r[f'{setting}_fv_ci'][0]:.2f},{r[f'{setting}_fv_ci'][1]:.2f}]"
                for s in seeds for r in fv[s]["headline"] if r["task"] == task))
            print(f"| {task} | {_fmt(none)} | {_fmt(fvv)} | {_fmt(rh)} ({', '.join(ps)}) | "
                  f"{_fmt(rv)} ({', '.join(pv)}) | {_fmt(lm)} | {cis} |")
    ceil = {t: across_seeds([next(r["ceiling_10shot"] for r in fv[s]["headline"]
                                  if r["task"] == t) for s in seeds]) for t in tasks}
    print("\nceiling (10-shot, held-out words): " + "; ".join(
        f"{t} {_fmt(a)}" for t, a in ceil.items()))
    print("n_correct/n_corrupt/n_eval per seed: " + "; ".join(
        f"{r['task']} s{s}: {r['n_correct']}/{r['n_corrupt']}/{r['n_eval']}"
        for s in seeds for r in fv[s]["headline"]))
    path = out / "steer_seeds.json"
    if not path.exists():
        return
    st = json.loads(path.read_text())
    seeds = sorted(st)
    print("\nsteering / ablation: measure | effect over seeds | per-seed effect [bootstrap] "
          "| null mean | p per seed")
    for key in ("plus", "minus", "minus_negative_words", "ablate_gap", "ablate_right"):
        eff = across_seeds([st[s][key]["effect"] for s in seeds])
        null = across_seeds([st[s][key]["effect_null"]["null_mean"] for s in seeds])
        per = " ".join(f"{st[s][key]['effect']:.2f} [{st[s][key]['effect_ci'][0]:.2f}, "
                       f"{st[s][key]['effect_ci'][1]:.2f}]" for s in seeds)
        base = bootstrap_stat(st[seeds[0]][key]["base"])  # fixed prompts, greedy: one base
        treated = across_seeds([np.mean(st[s][key]["treated"]) for s in seeds])
        ps = ", ".join(f"{st[s][key]['effect_null']['p_value']:.2g}" for s in seeds)
        print(f"| {key} | base {_fmt(base)} | treated {_fmt(treated)} | {_fmt(eff)} | {per} | "
              f"{_fmt(null)} | {ps} |")
    print("norms: " + ", ".join(f"{st[s]['norm']:.2f}" for s in seeds))


def stage_bench(model, out: Path, args) -> dict:
    """Head effects of 3 layers (27 heads) on 6 shuffled present-past prompts: through the
    engine (suffix runs of the last token, a layer's heads in one pass) vs one full forward per
    head, side by side; the two must agree."""
    from modelweave.methods.steering.fv import correct_rows, head_effects, last_token_acts
    from modelweave.tasks import make_batch

    batch = make_batch(model, "icl_present_past", n=12, seed=0)
    acts = last_token_acts(model, batch)
    keep = correct_rows(acts, batch).nonzero()[:, 0][:6]
    z, sub, layers = acts.select(keep).z.mean(0), batch.select(keep), [14, 18, 20]
    start = time.time()
    fast = head_effects(model, sub, z, layers=layers)
    t_fast = time.time() - start
    rows, last = torch.arange(len(sub)), sub.lengths - 1

    def prob(logits: torch.Tensor) -> float:
        return logits[rows, last].float().softmax(-1)[rows, sub.answers].mean().item()

    start = time.time()
    base = prob(model(sub.corrupt, attention_mask=sub.mask))
    naive = torch.zeros(len(layers), model.cfg.n_heads)
    for i, layer in enumerate(layers):
        for h in range(model.cfg.n_heads):
            def patch(x, _hook, layer=layer, h=h):
                x = x.clone()
                x[rows, last, h] = z[layer, h]
                return x

            naive[i, h] = prob(model.run_with_hooks(sub.corrupt, [(
                f"blocks.{layer}.attn.hook_z", patch)], attention_mask=sub.mask)) - base
    t_naive = time.time() - start
    result = {"prompts": len(sub), "heads": len(layers) * model.cfg.n_heads,
              "engine_s": round(t_fast, 1), "naive_s": round(t_naive, 1),
              "ratio": round(t_naive / t_fast, 1),
              "max_abs_diff": float((fast[layers] - naive).abs().max())}
    (out / "bench_aie.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


def stage_figures(out: Path) -> None:
    from modelweave.methods.steering.fv_eval import FVRun
    from modelweave.report.steering import save_fv_figures

    run = FVRun.load(out / "fv_seed0")
    for path in save_fv_figures(run, out / "figures"):
        print(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["fv", "steer", "tables", "bench", "figures", "all"])
    parser.add_argument("--out", type=Path, default=Path("runs/steering"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-clean", type=int, default=12)
    parser.add_argument("--n-corrupt", type=int, default=6)
    parser.add_argument("--n-eval", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--fv-layer", type=int, default=15)
    parser.add_argument("--first-effect-layer", type=int, default=10)
    parser.add_argument("--null-draws", type=int, default=20)
    parser.add_argument("--steer-draws", type=int, default=10)
    parser.add_argument("--steer-layer", type=int, default=6)
    parser.add_argument("--scale", type=float, default=8.0)
    parser.add_argument("--fit-pairs", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "figures":
        stage_figures(args.out)
        return
    if args.stage == "tables":
        stage_tables(args.out)
        return
    from modelweave import load_model

    model = load_model("smollm2-135m")
    if args.stage in ("fv", "all"):
        stage_fv(model, args.out, args)
    if args.stage in ("steer", "all"):
        stage_steer(model, args.out, args)
    if args.stage == "bench":
        stage_bench(model, args.out, args)
    if args.stage == "all":
        stage_tables(args.out)


if __name__ == "__main__":
    main()
