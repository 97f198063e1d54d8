"""Cold and warm load time of the embedded model.

Cold: dequantise the GGUF into an empty cache and load. Warm: load from that cache.
Both in this process, after imports; the warm load is also timed in a new process with the
imports (torch, transformers) included. Goal: warm <= 3 s.

    .venv/bin/python bench/load.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

FRESH = ("import time; t = time.perf_counter(); from modelweave import load_model; "
         "load_model('smollm2-135m'); print(time.perf_counter() - t)")


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MODELWEAVE_CACHE"] = cache
        import torch
        from transformers.utils import logging as hf_logging

        from modelweave import load_model

        hf_logging.disable_progress_bar()
        torch.set_num_threads(os.cpu_count() or 1)
        start = time.perf_counter()
        cold_model = load_model("smollm2-135m")
        cold = time.perf_counter() - start
        del cold_model
        warm_times = []
        for _ in range(3):
            start = time.perf_counter()
            model = load_model("smollm2-135m")
            warm_times.append(time.perf_counter() - start)
        warm = min(warm_times)
        tokens = model.to_tokens(["When Mary and John went to the store, John gave a drink"] * 32)
        model(tokens)
        start = time.perf_counter()
        model(tokens)
        forward = time.perf_counter() - start
        fresh = float(subprocess.run([sys.executable, "-c", FRESH], capture_output=True,
                                     text=True, check=True).stdout.split()[-1])
    print(f"cold load (dequantise + cache + load): {cold:.2f} s")
    print(f"warm load (from cache), best of 3:    {warm:.2f} s  (all: "
          f"{', '.join(f'{t:.2f}' for t in warm_times)})")
    print(f"warm load in a new process, imports included: {fresh:.2f} s")
    print(f"forward 32 x {tokens.shape[1]} tokens:             {forward:.2f} s")
    print(f"cold_s={cold:.2f} warm_s={warm:.2f} warm_new_process_s={fresh:.2f} "
          f"warm_goal_met={warm <= 3.0}")


if __name__ == "__main__":
    main()
