"""Sharing the machine: EAP-IG on the embedded model alone and beside one competing CPU-bound
torch process, before and after ModelWeave's thread settings.

- before: torch's defaults (as many threads as cores, OpenMP's default wait policy, which
  spins), for both the measured run and the competitor;
- after: what ``import modelweave`` (before torch) and the CLI do (threads = the cores this
  process may use, ``OMP_WAIT_POLICY=PASSIVE``), for both.

Each configuration runs in fresh processes (the wait policy is read when torch loads). The
competitor multiplies 1024 x 1024 matrices in a loop. The slowdown is contended / alone time of
the same EAP-IG scoring (IOI, 8 prompts, 3 steps), measured side by side in one run.

    .venv/bin/python bench/contention.py            # ~3-4 min on 2 idle cores
    .venv/bin/python bench/contention.py --prompts 16 --steps 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CONFIGS = {"before": {"OMP_WAIT_POLICY": None}, "after": {"OMP_WAIT_POLICY": "PASSIVE"}}


def worker(prompts: int, steps: int) -> None:
    """One timed EAP-IG scoring; prints the seconds."""
    if os.environ.get("MW_BENCH_CONFIG") == "before":
        import torch  # noqa: F401  (loaded first: modelweave leaves OpenMP's defaults alone)
    import modelweave  # noqa: F401
    from modelweave import load_model
    from modelweave.circuits import edge_attribution
    from modelweave.runtime import configure_threads
    from modelweave.tasks import make_batch

    if os.environ.get("MW_BENCH_CONFIG") == "after":
        configure_threads()
    model = load_model("smollm2-135m")
    batch = make_batch(model, "ioi", n=prompts, seed=0, same_length=True)
    edge_attribution(model, batch.select(list(range(2))), method="eap-ig", steps=1)  # warm-up
    start = time.perf_counter()
    edge_attribution(model, batch, method="eap-ig", steps=steps)
    print(f"{time.perf_counter() - start:.3f}")


def hog() -> None:
    """A CPU-bound torch loop until killed."""
    import torch

    a = torch.randn(1024, 1024)
    while True:
        a = torch.tanh(a @ a)


def _env(config: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["MW_BENCH_CONFIG"] = config
    if CONFIGS[config]["OMP_WAIT_POLICY"]:
        env["OMP_WAIT_POLICY"] = CONFIGS[config]["OMP_WAIT_POLICY"]
    return env


def _timed(config: str, prompts: int, steps: int) -> float:
    done = subprocess.run([sys.executable, __file__, "--worker", "--prompts", str(prompts),
                           "--steps", str(steps)], capture_output=True, text=True,
                          env=_env(config), check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hog", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.prompts, args.steps)
    if args.hog:
        return hog()
    ratios = {}
    for config in CONFIGS:
        alone = _timed(config, args.prompts, args.steps)
        competitor = subprocess.Popen([sys.executable, __file__, "--hog"], env=_env(config))
        try:
            time.sleep(3)  # let it start
            contended = _timed(config, args.prompts, args.steps)
        finally:
            competitor.kill()
            competitor.wait()
        ratios[config] = contended / alone
        print(f"{config}: alone {alone:.1f} s, beside a competitor {contended:.1f} s, "
              f"slowdown {ratios[config]:.2f}x", flush=True)
    print(f"before={ratios['before']:.2f} after={ratios['after']:.2f}")


if __name__ == "__main__":
    main()
