"""The cost of K seeds of one unit against K separate one-seed runs, side by side in one process.

Shared: load the model once, then ``experiments.seeds.run_seeds`` runs the unit for K seeds on
it (what an experiment's ``seeds: K`` or a command's ``--seeds K`` does). Separate: K times
``load_model`` afresh and run one seed (what a user running the command K times, with
``--seed s``, pays, minus Python's start). Also timed: one seed with its load (the cost of a
single run), so ``k_over_one`` is what K seeds cost relative to one. The first load (warming
the file cache) is not counted. Median of ``--repeats`` rounds, alternating the order; wall
and CPU seconds of this process (CPU time is the steadier one on a shared machine).

    .venv/bin/python bench/seeds.py                          # eval on ioi, K=3: ~1 min
    .venv/bin/python bench/seeds.py --method patch --n 8 --repeats 1

Last line: ``k=3 shared_s=... separate_s=... ratio=... ratio_cpu=... one_s=... k_over_one=...
load_s=...`` (ratio = shared / separate, wall time; below 1 means sharing the load saves time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="eval", help="eval, patch, lens, ...")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from modelweave import load_model
    from modelweave.experiments.methods import RunSettings, Unit, get_method
    from modelweave.experiments.seeds import run_seeds
    from modelweave.runtime import configure_threads

    hf_logging.disable_progress_bar()
    configure_threads(None)
    kind = get_method(args.method)
    params = kind.check_params({}, "")
    settings = RunSettings(n=args.n, seed=0, tasks=(args.task,))
    load_model(args.model)  # warm the file cache; not counted
    scratch = Path(tempfile.mkdtemp(prefix="bench-seeds-"))

    def folder() -> Path:
        return Path(tempfile.mkdtemp(dir=scratch))

    def shared() -> None:
        model = load_model(args.model)
        run_seeds(kind, model, Unit(args.model, args.task, kind.name, params, args.k),
                  settings, folder())

    def separate(k: int) -> None:
        for i in range(k):
            model = load_model(args.model)
            run_seeds(kind, model, Unit(args.model, args.task, kind.name, params),
                      RunSettings(n=args.n, seed=i, tasks=(args.task,)), folder())
            del model

    times: dict[str, list[float]] = {"shared": [], "separate": [], "one": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    for r in range(args.repeats):
        ways = [("shared", shared), ("separate", lambda: separate(args.k)),
                ("one", lambda: separate(1))]
        for name, way in ways if r % 2 == 0 else ways[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            way()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    start = time.perf_counter()
    load_model(args.model)
    load_s = time.perf_counter() - start
    print(f"{args.method} on {args.task}, n={args.n}, {args.model}, torch threads "
          f"{torch.get_num_threads()} of {os.cpu_count()} cores, median of {args.repeats}")
    for name, what in (("one", "one seed (load + run)"),
                       ("shared", f"{args.k} seeds, model loaded once"),
                       ("separate", f"{args.k} separate runs, {args.k} loads")):
        print(f"{what:<34} wall {med[name]:7.2f} s   CPU {med_cpu[name]:7.2f} s")
    print(f"{'one load alone':<34} wall {load_s:7.2f} s")
    print(f"k={args.k} shared_s={med['shared']:.2f} separate_s={med['separate']:.2f} "
          f"ratio={med['shared'] / med['separate']:.2f} "
          f"ratio_cpu={med_cpu['shared'] / med_cpu['separate']:.2f} one_s={med['one']:.2f} "
          f"k_over_one={med['shared'] / med['one']:.2f} load_s={load_s:.2f}")


if __name__ == "__main__":
    main()
