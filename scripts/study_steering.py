"""The steering study of docs/steering.md on the embedded model (SmolLM2-135M-Instruct).

    python scripts/study_steering.py fv --out runs/steering        # function vectors
    python scripts/study_steering.py heldout --out runs/steering   # the FVs on fresh prompts
    python scripts/study_steering.py steer --out runs/steering     # sentiment steering + ablation
    python scripts/study_steering.py bench --out runs/steering     # head effects: engine vs naive
    python scripts/study_steering.py figures --out runs/steering   # figures from saved results

Every stage writes JSON (and tensors) into --out and prints the numbers docs/steering.md
quotes, with the seconds each stage took. Single-threaded by default (``--threads``): the
machine is shared.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

TASKS = ["antonym", "capitalize", "country-capital", "english-french", "next-item",
         "present-past", "singular-plural"]

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


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:'\"()").lower() for w in text.split()}


def share(texts: list[str], lexicon: set[str]) -> float:
    """Share of texts that contain at least one word of ``lexicon``."""
    return sum(bool(words(t) & lexicon) for t in texts) / len(texts)


def stage_fv(model, out: Path, args) -> dict:
    from modelweave.methods.steering.fv_eval import run_function_vectors

    start = time.time()
    layers = sorted({*range(0, model.cfg.n_layers, 3), model.cfg.n_layers // 3})

    def say(msg: str) -> None:
        print(f"[{time.time() - start:7.1f}s] {msg}", flush=True)

    run = run_function_vectors(model, TASKS, n_clean=args.n_clean, n_corrupt=args.n_corrupt,
                               n_eval=args.n_eval, top_k=args.top_k, layers=layers, seed=0,
                               progress=say)
    run.settings["seconds"] = round(time.time() - start, 1)
    run.save(out / "fv")
    print(json.dumps({"heads": run.heads, "headline": run.headline(),
                      "seconds": run.settings["seconds"]}, indent=1))
    return run.settings


def _sentiment_logit_gap(model, ids_pos: int, ids_neg: int) -> tuple[float, float]:
    """Accuracy and mean logit(' positive') - logit(' negative') (signed by the label) on the
    review-classification prompts."""
    prompts = [f"Review: {r}\nSentiment:" for r, _ in SENTIMENT_REVIEWS]
    tokens, mask = model.encode(prompts)
    logits = model.forward(tokens, attention_mask=mask)
    last = logits[torch.arange(len(prompts)), mask.sum(-1) - 1]
    gap = last[:, ids_pos] - last[:, ids_neg]
    sign = torch.tensor([1.0 if lab == "positive" else -1.0 for _, lab in SENTIMENT_REVIEWS])
    return float(((gap * sign) > 0).float().mean()), float((gap * sign).mean())


def stage_steer(model, out: Path, args) -> dict:
    from modelweave.methods.steering.ablation import ablate_direction
    from modelweave.methods.steering.vectors import contrastive_vectors

    start = time.time()
    pos, neg = [p for p, _ in PAIRS], [n for _, n in PAIRS]
    sv = contrastive_vectors(model, pos, neg, layers=list(range(model.cfg.n_layers)))
    sv.save(out / "sentiment_vectors")
    layer = args.steer_layer
    vec = sv.at(layer)
    result: dict = {"layer": layer, "norm": float(vec.norm()), "n_pairs": len(PAIRS),
                    "prompts": len(PROMPTS), "max_new_tokens": args.max_new_tokens}
    runs = {}
    for scale in args.scales:
        if scale == 0:
            gen = model.generate(PROMPTS, args.max_new_tokens)
        else:
            with model.steer(vec, layer=layer, scale=scale, positions=None):
                gen = model.generate(PROMPTS, args.max_new_tokens)
        runs[scale] = gen.texts
        result[f"scale {scale:+g}"] = {"positive": share(gen.texts, POSITIVE),
                                       "negative": share(gen.texts, NEGATIVE)}
        print(f"[{time.time() - start:6.1f}s] scale {scale:+g}: {result[f'scale {scale:+g}']}",
              flush=True)
    result["samples"] = {f"{s:+g}": runs[s][:6] for s in runs}
    # directional ablation of the (read-at-layer) direction: sentiment classification
    ids_pos = model.to_tokens(" positive", prepend_bos=False)[0, 0].item()
    ids_neg = model.to_tokens(" negative", prepend_bos=False)[0, 0].item()
    result["classify_plain"] = _sentiment_logit_gap(model, ids_pos, ids_neg)
    with ablate_direction(model, vec):
        result["classify_ablated"] = _sentiment_logit_gap(model, ids_pos, ids_neg)
        gen = model.generate([f"{p} wonderful and" for p in PROMPTS[:10]], args.max_new_tokens)
        result["positive_context_ablated"] = share(gen.texts, POSITIVE)
    gen = model.generate([f"{p} wonderful and" for p in PROMPTS[:10]], args.max_new_tokens)
    result["positive_context_plain"] = share(gen.texts, POSITIVE)
    rand = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with ablate_direction(model, rand):
        result["classify_random_ablated"] = _sentiment_logit_gap(model, ids_pos, ids_neg)
    # ablation cancels steering: generation with +scale under ablation of the direction
    top = max(args.scales)
    with model.steer(vec, layer=layer, scale=top), ablate_direction(model, vec):
        gen = model.generate(PROMPTS, args.max_new_tokens)
    result["steer_then_ablate"] = {"positive": share(gen.texts, POSITIVE),
                                   "negative": share(gen.texts, NEGATIVE)}
    result["seconds"] = round(time.time() - start, 1)
    (out / "steer.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return result


def stage_heldout(model, out: Path, args) -> dict:
    """The saved FVs at ``--heldout-layer`` on fresh prompts (seed 2), against no vector and
    the layer mean of fresh clean prompts; the clean 10-shot accuracy is the ceiling."""
    from modelweave.methods.steering.fv import correct_rows, last_token_acts
    from modelweave.methods.steering.fv_eval import FVRun, addition_accuracy
    from modelweave.tasks import make_batch
    from modelweave.tasks.icl import icl_task_name

    start = time.time()
    run = FVRun.load(out / "fv")
    layer, rows = args.heldout_layer, []
    for t in run.tasks:
        if t.vector is None:
            continue
        name = icl_task_name(t.task)
        few = make_batch(model, name, n=args.n_eval, seed=2)
        zero = make_batch(model, name, n=args.n_eval, seed=2, shots=0)
        acts = last_token_acts(model, few)
        mean = acts.resid[:, layer].mean(0)
        row = {"task": t.task, "ceiling_10shot": correct_rows(acts, few).float().mean().item()}
        for setting, b, which in (("zero_shot", zero, "clean"), ("shuffled", few, "corrupt")):
            acc = addition_accuracy(model, b, {"none": None, "fv": t.vector, "layer_mean": mean},
                                    [layer], which)
            row.update({f"{setting}_{k}": v[0] for k, v in acc.items()})
        rows.append(row)
        print(f"[{time.time() - start:6.1f}s] {row}", flush=True)
    result = {"layer": layer, "n_eval": args.n_eval, "seed": 2, "tasks": rows,
              "seconds": round(time.time() - start, 1)}
    (out / "fv_heldout.json").write_text(json.dumps(result, indent=1))
    return result


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

    run = FVRun.load(out / "fv")
    for path in save_fv_figures(run, out / "figures"):
        print(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["fv", "heldout", "steer", "bench", "figures", "all"])
    parser.add_argument("--out", type=Path, default=Path("runs/steering"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-clean", type=int, default=30)
    parser.add_argument("--n-corrupt", type=int, default=8)
    parser.add_argument("--n-eval", type=int, default=24)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--heldout-layer", type=int, default=15)
    parser.add_argument("--steer-layer", type=int, default=6)
    parser.add_argument("--scales", type=float, nargs="+", default=[0, 4, 8, -8])
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "figures":
        stage_figures(args.out)
        return
    from modelweave import load_model

    model = load_model("smollm2-135m")
    if args.stage in ("fv", "all"):
        stage_fv(model, args.out, args)
    if args.stage in ("heldout", "all"):
        stage_heldout(model, args.out, args)
    if args.stage in ("steer", "all"):
        stage_steer(model, args.out, args)
    if args.stage == "bench":
        stage_bench(model, args.out, args)
    if args.stage == "all":
        stage_figures(args.out)


if __name__ == "__main__":
    main()
