"""Sharing the machine: thread counts from affinity and cgroup quotas, the passive wait
policy, and the CLI's --threads."""

import os
import subprocess
import sys

import pytest
import torch

from modelweave.errors import ModelWeaveError
from modelweave.runtime import available_cores, configure_threads


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("max 100000", None), ("150000 100000", 2), ("50000 100000", 1), ("100000 100000", 1)])
def test_available_cores_follow_affinity_and_quota(tmp_path, cpu_max, expected):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    affinity = len(os.sched_getaffinity(0))
    got = available_cores(tmp_path)
    assert got == (affinity if expected is None else min(affinity, expected))


def test_cgroup_v1_quota_and_no_cgroup(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert available_cores(tmp_path) == 1
    assert available_cores(tmp_path / "missing") == len(os.sched_getaffinity(0))


def test_configure_threads_sets_torch_and_rejects_zero():
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ModelWeaveError, match="at least 1"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_importing_modelweave_first_makes_torch_threads_wait_passively():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, modelweave, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=120)
    assert first.stdout.strip() == "PASSIVE", first.stderr
    code = "import os, torch, modelweave; print(os.environ.get('OMP_WAIT_POLICY'))"
    late = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert late.stdout.strip() == "None"  # too late to matter: left alone
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, timeout=120)
    assert chosen.stdout.strip() == "ACTIVE"


def test_cli_threads_option():
    code = ("import torch; from modelweave.cli import app; "
            "app(['--threads', '1', 'tasks'], standalone_mode=False); "
            "print('threads', torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("threads 1")
    bad = subprocess.run([sys.executable, "-c", "from modelweave.cli import main; main()",
                          "--threads", "0", "tasks"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "at least 1" in bad.stderr and "Traceback" not in bad.stderr
