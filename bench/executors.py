"""The Ray executor's overhead: the same experiment run by ``modelweave run`` sequentially and
with ``--executor ray`` (a local Ray started by the command, one worker with every core), side
by side, each in a fresh process and a fresh run directory, alternating, ``--repeats`` times.

The overhead is the Ray run's wall time over the sequential one's, medians, minus 1. Wall time
is the whole command: Python start, Ray start (Ray only), model loading, units, report.

    .venv/bin/python bench/executors.py                     # quickstart, 1 repeat: ~4 min
    .venv/bin/python bench/executors.py --repeats 3
    .venv/bin/python bench/executors.py --experiment examples/full.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(experiment: Path, out: Path, executor: str) -> tuple[float, dict]:
    """Seconds of one ``modelweave run ... --json`` and its JSON summary."""
    command = [sys.executable, "-c", "from modelweave.cli import main; main()", "run",
               str(experiment), "--out", str(out),
               "--executor", executor, "--no-live-report", "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{executor} run failed:\n{done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=Path, default=ROOT / "examples/quickstart.yaml")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"sequential": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for executor in times:
                out = Path(tmp) / f"{executor}-{repeat}"
                seconds, summary = timed_run(args.experiment, out, executor)
                times[executor].append(seconds)
                print(f"{executor:10s} repeat {repeat}: {seconds:6.1f} s, "
                      f"{len(summary['computed'])} units", flush=True)
    seq, ray = statistics.median(times["sequential"]), statistics.median(times["ray"])
    print(f"experiment={args.experiment.name} sequential_s={seq:.1f} ray_s={ray:.1f} "
          f"overhead={ray / seq - 1:.3f} repeats={args.repeats}")


if __name__ == "__main__":
    main()
