"""The grokking study of docs/toy_models.md on leak-free splits: K training seeds, intervals,
nulls.

    .venv/bin/python scripts/study_grokking.py --runs runs/toy/g59f5/seed{0,1,2} \
        --ordered runs/toy/g59f5/ordered0 --shuffled runs/toy/g59f5/shuffled0 \
        --out runs/toy/study_grok

Per run (``train-toy`` folders, unordered split): the progress measures at every checkpoint
(means over pairs with 95% bootstrap intervals over unordered pairs), the first step with test
accuracy >= 0.99, the key frequencies, the key shares. Across runs: the mean of each headline
number with a Student-t interval over seeds (``across_seeds``). Nulls: the embedding's and the
neurons' top-|K| share in 20 untrained models of the same config, and in the shuffled-label run
(a model that could only memorise). The ordered-split run gives test accuracy on pairs whose
swap was trained separately from the swap-free pairs. Everything goes to ``--out/study.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def analyse(run_dir: Path, resamples: int, until: int | None = None,
            cache: Path | None = None) -> dict:
    """One run's analysis; with ``until`` the checkpoint of that step is the final model and
    later checkpoints are ignored (the schedule is constant after warm-up, so this is the run
    that stopped there)."""
    from modelweave.models import load_model
    from modelweave.toy.fourier import analyse_grokking
    from modelweave.toy.grokking_stats import headline
    from modelweave.toy.series import find_checkpoints
    from modelweave.toy.train import load_run

    key = cache / f"run-{run_dir.name}-{until}-{resamples}.json" if cache else None
    if key and key.is_file():
        return json.loads(key.read_text())
    run = load_run(run_dir)
    found = [(s, p) for s, p in find_checkpoints(run.out) if until is None or s <= until]
    final = load_model(found[-1][1], device="cpu")
    ckpts = ((s, load_model(p, device="cpu")) for s, p in found)
    analysis = analyse_grokking(final, ckpts, n_resamples=resamples).to_dict()
    hist = [h for h in run.history if h["step"] <= found[-1][0]]
    grok = next((h["step"] for h in hist if h["test_acc"] >= 0.99), None)
    grok95 = next((h["step"] for h in hist if h["test_acc"] >= 0.95), None)
    result = {"run": str(run.out), "config": run.config.to_dict(), "final_step": found[-1][0],
            "train_seconds": hist[-1]["seconds"],
            "first_test_acc_0.99": grok, "first_test_acc_0.95": grok95, "history": hist,
            "analysis": analysis,
            "headline": headline(analysis)}
    if key:
        key.write_text(json.dumps(result))
    return result


def at_steps(runs: list[dict], steps: list[int], measure: str) -> dict:
    """``measure`` at each checkpoint step, per run (with its pair interval) and across runs."""
    from modelweave.metrics.uncertainty import across_seeds

    out = {}
    for step in steps:
        points = [next((p for p in r["analysis"]["progress"] if p["step"] == step), None)
                  for r in runs]
        if any(p is None or p.get(measure) is None for p in points):
            continue
        out[str(step)] = {"per_run": [[p[measure], *p.get(f"{measure}_ci", [])]
                                      for p in points],
                          "across": across_seeds([p[measure] for p in points]).to_dict()}
    return out


def main() -> None:
    from modelweave.metrics.nulls import compare
    from modelweave.toy.grokking_stats import across_runs, random_init_null, top_keys, top_share
    from modelweave.toy.train import load_run

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--ordered", type=Path)
    parser.add_argument("--shuffled", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/toy/study_grok"))
    parser.add_argument("--resamples", type=int, default=500)
    parser.add_argument("--until", type=int, help="analyse the seed runs up to this step")
    parser.add_argument("--ordered-until", type=int, help="the same for --ordered")
    parser.add_argument("--null-draws", type=int, default=20)
    parser.add_argument("--steps", type=int, nargs="+",
                        default=[50, 100, 200, 300, 400, 500, 600, 700, 800, 1000, 1500])
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    runs = [analyse(r, args.resamples, args.until, args.out) for r in args.runs]
    heads = [r["headline"] for r in runs]
    result = {"runs": [{k: v for k, v in r.items() if k not in ("history", "analysis")}
                       for r in runs],
              "across_seeds": across_runs(heads),
              "first_test_acc_0.99": [r["first_test_acc_0.99"] for r in runs],
              "first_test_acc_0.95": [r["first_test_acc_0.95"] for r in runs],
              "test_acc_at": at_steps(runs, args.steps, "test_acc"),
              "restricted_loss_at": at_steps(runs, args.steps, "restricted_loss"),
              "excluded_loss_at": at_steps(runs, args.steps, "excluded_loss")}
    # nulls for the key shares, per run: untrained models of the same config with their own
    # top-|K| frequencies (|K| = that run's number of key frequencies), and the shuffled-label
    # model's top-|K| shares
    config = load_run(args.runs[0]).config
    nulls, per_k = [], {}
    shuffled = None
    if args.shuffled:
        from modelweave.models import load_model
        from modelweave.toy.fourier import embedding_spectrum, neuron_key_share, neuron_spectrum
        from modelweave.toy.series import find_checkpoints

        last = find_checkpoints(args.shuffled)[-1]
        shuffled = load_model(last[1], device="cpu")
        s_spec, s_neurons = embedding_spectrum(shuffled), neuron_spectrum(shuffled)
        hist = [h for h in load_run(args.shuffled).history if h["step"] <= last[0]][-1]
        result["shuffled_run"] = {"step": last[0], "train_acc": hist["train_acc"],
                                  "test_acc": hist["test_acc"]}
    for run, h in zip(runs, heads, strict=True):
        k = len(h["key_frequencies"])
        if k not in per_k:
            per_k[k] = random_init_null(config, k, args.null_draws)
        entry = {"run": run["run"], "n_keys": k}
        for name in ("key_share", "neuron_key_share"):
            entry[name] = h[name]
            entry[f"{name}_random_init"] = compare(h[name], per_k[k][name],
                                                   null="untrained, top-|K|").to_dict()
        if shuffled is not None:
            share, ci = neuron_key_share(s_neurons, top_keys(s_spec, k), args.resamples)
            entry["key_share_shuffled"] = top_share(s_spec, k)
            entry["neuron_key_share_shuffled"] = [share, *(ci or [])]
        nulls.append(entry)
    result["nulls"] = nulls
    if args.ordered:
        ordered = analyse(args.ordered, args.resamples, args.ordered_until, args.out)
        result["ordered"] = {
            "first_test_acc_0.99": ordered["first_test_acc_0.99"],
            "first_test_acc_0.95": ordered["first_test_acc_0.95"],
            **{m: at_steps([ordered], args.steps, m)
               for m in ("test_acc", "swap_free_acc", "swap_trained_acc")}}
    result["analysis_seconds"] = time.perf_counter() - began
    (args.out / "study.json").write_text(json.dumps(result, indent=1))
    for r in runs:
        name = Path(r["run"]).name
        (args.out / f"{name}.json").write_text(json.dumps(r["analysis"], indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
