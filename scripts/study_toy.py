"""The toy-model study of docs/toy_models.md: analyse finished ``train-toy`` runs and print the
numbers the doc quotes.

    # train (see docs/toy_models.md for the exact commands and their times), then:
    .venv/bin/python scripts/study_toy.py --grok runs/toy/grok --induction runs/toy/induction2h \
        --out runs/toy/study

For the grokking run: the step where train accuracy first reached 1.0, the first step with
test accuracy >= 0.99, the key frequencies and their share of the embedding, the neurons'
share of variance on them, and the progress measures at every checkpoint. For the induction
run: accuracy on the repeated half, and the previous-token and induction heads by head roles,
K-composition and EAP-IG. Everything is written to ``--out`` (JSON + HTML figures).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def grokking(run_dir: Path, out: Path) -> dict:
    from modelweave.models import load_model
    from modelweave.report.toy import save_grokking
    from modelweave.toy.fourier import analyse_grokking
    from modelweave.toy.series import find_checkpoints
    from modelweave.toy.train import load_run

    run = load_run(run_dir)
    hist = run.history
    first_fit = next((h["step"] for h in hist if h["train_acc"] >= 1.0), None)
    first_gen = next((h["step"] for h in hist if h["test_acc"] >= 0.99), None)
    start = time.perf_counter()
    analysis = analyse_grokking(load_model(run.out / "final", device="cpu"),
                                [(s, load_model(p, device="cpu"))
                                 for s, p in find_checkpoints(run.out)])
    data = {"run": str(run.out), **analysis.to_dict(), "history": hist}
    files = save_grokking(data, out / "grokking")
    (out / "grokking" / "grokking.json").write_text(json.dumps(data, indent=1))
    return {"config": run.config.to_dict(), "train_seconds": run.seconds,
            "steps": hist[-1]["step"], "first_train_acc_1": first_fit,
            "first_test_acc_0.99": first_gen, "final": hist[-1],
            "key_frequencies": analysis.key_frequencies,
            "key_share_of_embedding": sum(analysis.embedding_spectrum[k]
                                          for k in analysis.key_frequencies),
            "neuron_key_share": analysis.neuron_key_share,
            "progress": [p.to_dict() for p in analysis.progress],
            "analysis_seconds": time.perf_counter() - start, "files": [str(f) for f in files]}


def induction(run_dir: Path, out: Path) -> dict:
    from modelweave.models import load_model
    from modelweave.report.toy import save_composition
    from modelweave.toy.composition import composition_scores
    from modelweave.toy.induction import induction_circuit
    from modelweave.toy.train import load_run

    run = load_run(run_dir)
    model = load_model(run.out / "final", device="cpu")
    start = time.perf_counter()
    found = induction_circuit(model, n=64)
    comp = composition_scores(model)
    files = save_composition(comp.to_dict(), out / "induction")
    (out / "induction" / "induction.json").write_text(json.dumps(found.to_dict(), indent=1))
    ev = found.evidence
    return {"config": run.config.to_dict(), "train_seconds": run.seconds,
            "final": run.history[-1], "task_accuracy": found.accuracy, "agree": found.agree,
            "previous_token": found.previous_token, "induction": found.induction,
            "head_roles": {k: v for k, v in ev["head_roles"].items() if k != "scores"},
            "k_composition": ev["k_composition"],
            "eap_ig": {k: v for k, v in ev["eap_ig"].items() if not isinstance(v, list)},
            "top_k_composition": comp.top("k", 4),
            "analysis_seconds": time.perf_counter() - start, "files": [str(f) for f in files]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grok", type=Path, help="a modular-addition train-toy run")
    parser.add_argument("--induction", type=Path, help="an induction train-toy run (2 layers)")
    parser.add_argument("--out", type=Path, default=Path("runs/toy/study"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.grok:
        results["grokking"] = grokking(args.grok, args.out)
    if args.induction:
        results["induction"] = induction(args.induction, args.out)
    (args.out / "study.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
