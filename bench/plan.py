"""The planner's predicted peak memory against the measured peak RSS, per model size.

Random-weight Llama-shaped models are built from the planner's presets (SmolLM2-135M,
SmolLM2-360M and, with ``--full``, Llama-3.2-1B shapes; no download) in float32 and bfloat16,
8 prompts of 32 tokens (EAP-IG: batch 8, 3 steps). Each row runs one
method in a fresh process: exact head patching (``patch_sweep``, grid ``heads``, layer 0
only: the deepest suffix passes, so the sweep's memory peak at a fraction of its time) or EAP-IG
scoring (``edge_attribution``) on random prompts whose clean and corrupted versions differ
from position 1 on. As the CLI does, glibc keeps freed memory (``runtime.keep_freed_memory``),
set once the model is built; the peak RSS (``VmHWM``) is reset (``/proc/self/clear_refs``)
just before the method runs. Columns:

- ``pred_method`` / ``meas_method``: the method's own peak (the planner's activations +
  caches + gradients) against ``VmHWM`` minus the RSS the model left;
- ``pred_total`` / ``meas_total``: runtime + weights + method against ``VmHWM`` itself;
- ``pred_s`` / ``meas_s``: seconds at the default CPU throughput against the run's.

    .venv/bin/python bench/plan.py            # 135M and 360M shapes, ~5 minutes on 2 cores
    .venv/bin/python bench/plan.py --full     # and the 1B shape, ~10 minutes

Last line: ``worst_method_ratio=<r> worst_total_ratio=<r> within_20pct=<k>/<rows>
runtime_rss=<bytes>``; a ratio is predicted / measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SIZES = ("smollm2-135m", "smollm2-360m", "llama-3.2-1b")
DTYPES = ("float32", "bfloat16")
METHODS = ("patch", "eap-ig")


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _batch(n: int, seq: int, vocab: int):
    """Random prompts; the corrupted ones differ from position 1 on."""
    import torch

    from modelweave.tasks.base import Example
    from modelweave.tasks.batch import TaskBatch

    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, vocab, (n, seq), generator=gen)
    corrupt = clean.clone()
    corrupt[:, 1:] = torch.randint(0, vocab, (n, seq - 1), generator=gen)
    lengths = torch.full((n,), seq)
    answer = torch.randint(0, vocab, (n,), generator=gen)
    wrong = (answer + 1) % vocab
    return TaskBatch(task="random", clean=clean, corrupt=corrupt,
                     mask=torch.ones(n, seq, dtype=torch.long), lengths=lengths,
                     answer_ids=answer[:, None], wrong_ids=wrong[:, None],
                     answer_tokens=[[[int(a)]] for a in answer],
                     wrong_tokens=[[[int(w)]] for w in wrong],
                     positions={"END": lengths - 1},
                     examples=[Example("c", "x", [" a"], [" w"]) for _ in range(n)])


def measure(size: str, dtype: str, method: str, n: int, seq: int, batch_size: int,
            steps: int) -> dict:
    """One row, in this process (run it in a fresh one)."""
    import ctypes
    import gc

    import torch
    from transformers import AutoModelForCausalLM

    from modelweave.circuits import edge_attribution
    from modelweave.methods import patch_sweep
    from modelweave.models import Model
    from modelweave.planner.presets import preset_config
    from modelweave.runtime import configure_threads, keep_freed_memory

    configure_threads()
    runtime = _status()["VmRSS"]
    config = preset_config(size)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).eval()
    model = Model(hf, None, name=size)
    batch = _batch(n, seq, config.vocab_size)
    gc.collect()
    keep_freed_memory()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = _status()["VmRSS"]
    start = time.perf_counter()
    if method == "patch":
        patch_sweep(model, batch, "heads", layers=[0])
    else:
        edge_attribution(model, batch, method="eap-ig", steps=steps, batch_size=batch_size)
    seconds = time.perf_counter() - start
    return {"runtime": runtime, "before": before, "hwm": _status()["VmHWM"],
            "seconds": seconds}


def predict(size: str, dtype: str, method: str, n: int, seq: int, batch_size: int,
            steps: int):
    from modelweave.planner import plan_unit

    params = ({"grid": "heads", "layers": [0]} if method == "patch" else
              {"batch_size": batch_size, "steps": steps, "scoring_only": True})
    return plan_unit(size, method, params, n, seq, dtype, memory_bytes=10**13, device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="add the Llama-3.2-1B shape")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES[:2]))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--one", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        size, dtype, method, *numbers = args.one
        print(json.dumps(measure(size, dtype, method, *map(int, numbers))))
        return
    n, seq, batch_size, steps = 8, 32, 8, 3
    if args.full and args.sizes == list(SIZES[:2]):
        args.sizes = list(SIZES)
    header = ("model", "dtype", "method", "n", "seq", "pred_method", "meas_method", "ratio",
              "pred_total", "meas_total", "ratio", "pred_s", "meas_s")
    print("\t".join(header), flush=True)
    worst_m = worst_t = 1.0
    good = rows = 0
    runtime = 0
    for size in args.sizes:
        for dtype in args.dtypes:
            for method in args.methods:
                numbers = [n, seq, batch_size, steps]
                out = subprocess.run([sys.executable, __file__, "--one", size, dtype, method,
                                      *map(str, numbers)], capture_output=True, text=True)
                if out.returncode:
                    print(f"{size} {dtype} {method}: failed\n{out.stderr[-2000:]}")
                    continue
                got = json.loads(out.stdout.strip().splitlines()[-1])
                plan = predict(size, dtype, method, *numbers)
                b = plan.breakdown
                pred_m = b["activations"] + b["caches"] + b["gradients"]
                meas_m = got["hwm"] - got["before"]
                pred_t, meas_t = plan.peak_bytes, got["hwm"]
                rm, rt = pred_m / meas_m, pred_t / meas_t
                worst_m = rm if abs(rm - 1) >= abs(worst_m - 1) else worst_m
                worst_t = rt if abs(rt - 1) >= abs(worst_t - 1) else worst_t
                good += abs(rm - 1) <= 0.2 and abs(rt - 1) <= 0.2
                rows += 1
                runtime = got["runtime"]
                print("\t".join(map(str, (size, dtype, method, n, seq,
                                          f"{pred_m / 1e6:.0f}MB", f"{meas_m / 1e6:.0f}MB",
                                          f"{rm:.2f}", f"{pred_t / 1e6:.0f}MB",
                                          f"{meas_t / 1e6:.0f}MB", f"{rt:.2f}",
                                          f"{plan.seconds:.1f}", f"{got['seconds']:.1f}"))),
                      flush=True)
    print(f"worst_method_ratio={worst_m:.2f} worst_total_ratio={worst_t:.2f} "
          f"within_20pct={good}/{rows} runtime_rss={runtime}")


if __name__ == "__main__":
    main()
