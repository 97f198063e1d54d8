"""Process-level settings for fast CPU runs that share the machine gracefully.

Threads. Torch's CPU thread pool (OpenMP) spins while it waits for work: two CPU-bound
processes each running as many threads as the machine has cores slow each other ~5x. So the
thread count follows the cores this process may really use (:func:`available_cores`: its CPU
affinity, bounded by a cgroup CPU quota), and the pool waits passively
(``OMP_WAIT_POLICY=PASSIVE``, which must be set before torch is first imported: importing
``modelweave`` does it unless the variable is set or torch is already loaded).
:func:`configure_threads` applies both; the CLI calls it (``--threads`` overrides).

Memory.
Circuit methods allocate and free tensors of hundreds of MB many times per second. glibc
serves blocks that large with ``mmap`` and gives them back on ``free``, so every reuse pays
page faults again (on a 2-core machine this made EAP-IG ~35% slower than its bare passes).
:func:`keep_freed_memory` makes glibc keep freed memory for reuse instead; the process's
resident memory then stays at its peak. The CLI calls it; library users may.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
from pathlib import Path

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_applied = False


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and not to return freed memory to the OS.

    Returns:
        True when applied (Linux with glibc), False elsewhere (a no-op).
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_THRESHOLD, 1 << 30),  # glibc's maximum: blocks below 1 GiB come from the heap
        (_M_TRIM_THRESHOLD, 2**31 - 1),
        (_M_TOP_PAD, 256 << 20),
    ))
    _applied = ok
    return ok


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity, bounded by a cgroup CPU quota (rounded
    up), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for torch's thread pool if torch is not loaded yet and
    the user has not chosen a policy. Returns whether the pool will wait passively."""
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def configure_threads(threads: int | None = None) -> int:
    """Give torch ``threads`` intra-op threads (default: :func:`available_cores`); returns the
    number set. A count above the available cores is allowed (the user asked) but not chosen."""
    import torch

    if threads is not None and threads < 1:
        from .errors import ModelWeaveError

        raise ModelWeaveError(f"--threads must be at least 1, got {threads}")
    count = threads or available_cores()
    torch.set_num_threads(count)
    return count
