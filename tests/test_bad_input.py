"""Bad input is one clear ``ModelWeaveError`` line: the bad value and what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelweave.errors import ModelWeaveError


def run(*args):
    code = "from modelweave.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300)


def assert_one_error_line(result, *parts):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for part in parts:
        assert part in lines[0]


def test_store_load_unknown_unit_names_the_known_ones(tmp_path):
    from modelweave.experiments import RunStore
    from modelweave.experiments.store import DONE, UnknownUnitError

    store = RunStore(tmp_path)
    with pytest.raises(UnknownUnitError, match="known units: none"):
        store.load("nope")
    for name in ("a_unit", "b_unit"):
        (tmp_path / "units" / name).mkdir(parents=True)
        (tmp_path / "units" / name / DONE).write_text('{"method": "eval"}')
    with pytest.raises(ModelWeaveError, match=r"'nope'.*known units: a_unit, b_unit") as info:
        store.load("nope")
    assert isinstance(info.value, KeyError) and "\n" not in str(info.value)


def test_plan_unit_rejects_n_or_seq_below_one():
    from modelweave.planner import PlanError, plan_unit

    with pytest.raises(PlanError, match="n=0"):
        plan_unit("smollm2-135m", "eval", n=0, seq=8)
    with pytest.raises(PlanError, match="seq=0"):
        plan_unit("smollm2-135m", "eval", n=4, seq=0)


def test_cli_plan_rejects_n_and_seq_zero():
    # The option parser refuses it first: a usage error (exit 2) naming the option and its bound.
    result = run("plan", "--model", "llama-3-8b", "--method", "eval", "--n", "0", "--seq", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'--n'" in result.stderr and "greater than or equal to 1" in result.stderr
