"""Evaluate every built-in task on a model and print a Markdown table.

    .venv/bin/python scripts/task_table.py --model smollm2-135m --n 64 --seed 0
"""

from __future__ import annotations

import argparse
import time

from modelweave import load_model
from modelweave.metrics import evaluate
from modelweave.tasks import list_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = load_model(args.model)
    print("| task | metric | accuracy (95% CI) | logit diff clean (95% CI) | logit diff corrupt "
          "| default metric | kept | dropped |")
    print("|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for task in list_tasks():
        r = evaluate(model, task, n=args.n, seed=args.seed)
        print(f"| {r.task} | {r.metric} | {r.accuracy} | {r.logit_diff} | "
              f"{r.logit_diff_corrupt.mean:.2f} | {r.metric_value.mean:.3f} | {r.n} | "
              f"{sum(r.dropped.values())} |")
    print(f"\n{len(list_tasks())} tasks in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
