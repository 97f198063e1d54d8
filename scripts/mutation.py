"""Planted-bug (mutation) testing: apply each curated bug to a copy of the tree, run the tests
named for it, and report which bugs the suite kills.

A mutant is one realistic bug written as an exact text substitution in `tests/mutants/*.toml`
(one file per module group)::

    [[mutant]]
    id = "planner-eap-sender"                       # unique
    file = "src/modelweave/planner/memory.py"
    find = "senders * d_model"                      # must occur exactly once (or set `nth`)
    replace = "senders * d_model // 4"
    kind = "dropped-term"                           # one of KINDS below
    why = "the planner under-counts the EAP sender activations"
    tests = ["tests/test_planner.py"]               # pytest node ids or paths
    equivalent = ""                                 # a reason, if no test can tell it apart

Each mutant runs in its own copy of the repository (`src`, `tests`, docs, examples; never the
working tree), with `PYTHONPATH` pointing at the copy, so an editable install is not touched.
The unmutated test selections run first: a selection that fails without a bug makes its mutants
`baseline-fails`, not kills. A mutant is *killed* when pytest fails (exit 1), errors during
collection (exit 2-4, counted as killed and marked), or runs past `--timeout`.

    python scripts/mutation.py                      # every mutant
    python scripts/mutation.py --group planner      # tests/mutants/planner.toml only
    python scripts/mutation.py --id planner-eap-sender --id steering-scale
    python scripts/mutation.py --tests-ref a30aeb5  # the "before": tests as they were at a commit
    python scripts/mutation.py --jobs 2 --json mutation.json

The last line is `key=value` (mutants, killed, survived, equivalent, kill_rate). The exit status
is 1 when a mutant that is not marked equivalent survives (with `--strict`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "tests" / "mutants"
COPIED = ("src", "tests", "docs", "examples", "pyproject.toml", "README.md", "scripts", "bench")
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", "*.pyc")
KINDS = frozenset({
    "dropped-term", "sign", "swapped-args", "flag-ignored", "cache-key", "control-ignored",
    "off-by-one", "wrong-constant", "wrong-reduction", "validation-removed", "wrong-branch",
    "state-leak",
})


class SpecError(ValueError):
    """A mutant file that cannot be used, with the file and mutant named in one line."""


@dataclass(frozen=True)
class Mutant:
    """One planted bug: replace the `nth` occurrence (0-based) of `find` in `file`."""

    id: str
    group: str
    file: str
    find: str
    replace: str
    kind: str
    why: str
    tests: tuple[str, ...]
    equivalent: str = ""
    nth: int = 0

    def apply(self, text: str) -> str:
        """The mutated text; `SpecError` when `find` does not occur as the spec says."""
        count = text.count(self.find)
        if count == 0:
            raise SpecError(f"mutant {self.id}: its text is not in {self.file}")
        if self.nth == 0 and count > 1:
            raise SpecError(f"mutant {self.id}: its text occurs {count} times in {self.file}; "
                            "make it unique or set nth")
        if self.nth >= count:
            raise SpecError(f"mutant {self.id}: nth={self.nth} but the text occurs {count} times")
        start = -1
        for _ in range(self.nth + 1):
            start = text.index(self.find, start + 1)
        return text[:start] + self.replace + text[start + len(self.find):]


@dataclass
class Outcome:
    """What happened to one mutant."""

    id: str
    group: str
    kind: str
    status: str  # killed | survived | equivalent | baseline-fails | timeout | error
    seconds: float
    why: str
    equivalent: str = ""
    detail: str = ""
    tests: list[str] = field(default_factory=list)


def load_specs(folder: Path = SPECS) -> list[Mutant]:
    """Every mutant in `folder/*.toml`, validated (unique ids, known kinds, files and tests)."""
    mutants: list[Mutant] = []
    for path in sorted(folder.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        for entry in data.get("mutant", []):
            where = f"{path.name}: mutant {entry.get('id', '?')}"
            missing = {"id", "file", "find", "replace", "why", "tests", "kind"} - set(entry)
            if missing:
                raise SpecError(f"{where}: missing {', '.join(sorted(missing))}")
            unknown = set(entry) - {"id", "file", "find", "replace", "why", "tests", "kind",
                                    "equivalent", "nth"}
            if unknown:
                raise SpecError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
            if entry["kind"] not in KINDS:
                raise SpecError(f"{where}: kind {entry['kind']!r} is not one of {sorted(KINDS)}")
            if entry["find"] == entry["replace"]:
                raise SpecError(f"{where}: replace equals find")
            if not entry["tests"]:
                raise SpecError(f"{where}: no tests named")
            mutants.append(Mutant(
                id=entry["id"], group=path.stem, file=entry["file"], find=entry["find"],
                replace=entry["replace"], kind=entry["kind"], why=entry["why"],
                tests=tuple(entry["tests"]), equivalent=entry.get("equivalent", ""),
                nth=int(entry.get("nth", 0))))
    ids = [m.id for m in mutants]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise SpecError(f"duplicate mutant ids: {', '.join(dupes)}")
    return mutants


def check_spec(mutant: Mutant, root: Path = ROOT) -> None:
    """Raise `SpecError` unless the mutant applies to `root` and names test files that exist."""
    target = root / mutant.file
    if not target.is_file():
        raise SpecError(f"mutant {mutant.id}: no file {mutant.file}")
    mutant.apply(target.read_text())
    for test in mutant.tests:
        path = test.split("::", 1)[0]
        if not (root / path).exists():
            raise SpecError(f"mutant {mutant.id}: no test path {path}")


def make_copy(dest: Path, tests_ref: str | None) -> Path:
    """A copy of the repository's code, tests and docs under `dest`; tests from `tests_ref`."""
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=IGNORED)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    if tests_ref:
        shutil.rmtree(dest / "tests")
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", tests_ref, "tests"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        # the spec files are today's, so a "before" run applies today's mutants
        shutil.rmtree(dest / "tests" / "mutants", ignore_errors=True)
        shutil.copytree(SPECS, dest / "tests" / "mutants")
    return dest


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, float, str]:
    """(pytest exit status or -1 on timeout, seconds, last lines of output) in `copy`."""
    env = dict(os.environ, PYTHONPATH=str(copy / "src"), PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           "--no-header", "-o", "addopts=", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - start, "timeout"
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    return done.returncode, time.perf_counter() - start, tail


def run_mutant(mutant: Mutant, copy: Path, timeout: float) -> Outcome:
    """Plant the bug in `copy`, run its tests, put the file back."""
    target = copy / mutant.file
    original = target.read_text()
    target.write_text(mutant.apply(original))
    try:
        code, seconds, tail = run_tests(copy, mutant.tests, timeout)
    finally:
        target.write_text(original)
    if code == 0:
        status = "equivalent" if mutant.equivalent else "survived"
    elif code == -1:
        status = "timeout"
    elif code == 1:
        status = "killed"
    else:
        status = "error"
    return Outcome(mutant.id, mutant.group, mutant.kind, status, round(seconds, 1), mutant.why,
                   mutant.equivalent, tail if status != "killed" else "", list(mutant.tests))


def summarise(outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
    """Per group and overall: counts and the kill rate over the mutants that count."""
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.group, []).append(o)
    groups["all"] = outcomes
    table = {}
    for name, items in groups.items():
        dead = sum(o.status in ("killed", "error", "timeout") for o in items)
        alive = sum(o.status == "survived" for o in items)
        counted = dead + alive
        table[name] = {"mutants": len(items), "killed": dead, "survived": alive,
                       "crashed": sum(o.status in ("error", "timeout") for o in items),
                       "equivalent": sum(o.status == "equivalent" for o in items),
                       "baseline_fails": sum(o.status == "baseline-fails" for o in items),
                       "kill_rate": round(dead / counted, 3) if counted else float("nan")}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", action="append", help="a spec file's stem (repeatable)")
    parser.add_argument("--id", action="append", dest="ids", help="one mutant (repeatable)")
    parser.add_argument("--tests-ref", help="take tests/ from this git commit (the 'before')")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (copies)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a mutant survives")
    args = parser.parse_args(argv)
    try:
        mutants = load_specs()
        for m in mutants:
            check_spec(m)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.group:
        mutants = [m for m in mutants if m.group in set(args.group)]
    if args.ids:
        unknown = set(args.ids) - {m.id for m in mutants}
        if unknown:
            print(f"error: unknown mutant ids {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.id in set(args.ids)]
    if not mutants:
        print("error: no mutants selected", file=sys.stderr)
        return 2
    jobs = max(1, min(args.jobs, len(mutants)))
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        copies = [make_copy(Path(tmp) / f"copy{i}", args.tests_ref) for i in range(jobs)]
        selections = sorted({m.tests for m in mutants})
        print(f"{len(mutants)} mutants, {len(selections)} test selections, {jobs} job(s)",
              flush=True)
        with ThreadPoolExecutor(jobs) as pool:
            base = dict(zip(selections, pool.map(
                lambda i_s: run_tests(copies[i_s[0] % jobs], i_s[1], args.timeout),
                enumerate(selections)), strict=True))
        broken = {s for s, (code, _, _) in base.items() if code != 0}
        for s in broken:
            print(f"baseline fails: {' '.join(s)}: {base[s][2]}", flush=True)
        todo = [m for m in mutants if m.tests not in broken]
        outcomes = [Outcome(m.id, m.group, m.kind, "baseline-fails", 0.0, m.why, m.equivalent,
                            base[m.tests][2], list(m.tests)) for m in mutants if m not in todo]

        def one(i_m: tuple[int, Mutant]) -> Outcome:
            out = run_mutant(i_m[1], copies[i_m[0] % jobs], args.timeout)
            print(f"{out.status:>14}  {out.id}  ({out.seconds:.0f} s)", flush=True)
            return out

        # with jobs > 1 each copy must be used by one thread at a time: chunk by copy
        chunks = [[(i, m) for i, m in enumerate(todo) if i % jobs == j] for j in range(jobs)]
        with ThreadPoolExecutor(jobs) as pool:
            for result in pool.map(lambda chunk: [one(x) for x in chunk], chunks):
                outcomes.extend(result)
    table = summarise(outcomes)
    # "crashed": killed by a collection error or a timeout, not a failing assertion; check
    # those by hand (an environment broken mid-run looks the same)
    print("\n| group | mutants | killed | of which crashed | survived | equivalent | kill rate |")
    print("|---|---|---|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['mutants']} | {row['killed']} | {row['crashed']} | "
              f"{row['survived']} | {row['equivalent']} | {row['kill_rate']} |")
    for o in outcomes:
        if o.status in ("survived", "equivalent", "baseline-fails"):
            reason = o.equivalent or o.detail.splitlines()[-1:] or [""]
            print(f"- {o.status}: {o.id} ({o.kind}): {o.why}"
                  + (f" — {reason if isinstance(reason, str) else reason[0]}" if reason else ""))
    if args.json:
        args.json.write_text(json.dumps({"summary": table,
                                         "outcomes": [asdict(o) for o in outcomes]}, indent=1))
    total = table["all"]
    print(" ".join(f"{k}={v}" for k, v in total.items()))
    return 1 if args.strict and total["survived"] else 0


if __name__ == "__main__":
    sys.exit(main())
