"""The import contracts in pyproject.toml (``[tool.importlinter]``) hold: packages import only
the layers below them, and no two modules of a package import each other in a circle (imports
made only for type checking included).

Each test runs ``lint-imports`` in a subprocess on the source it is given, without the cache
(well under a second of analysis; the parse is static, nothing is imported).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "modelweave"


def _lint(src: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with ``src`` (the folder holding ``modelweave``) first on the path."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = ("import sys; from importlinter.cli import lint_imports_command; "
               "sys.exit(lint_imports_command())")
    return subprocess.run(
        [sys.executable, "-c", command, "--no-cache", str(ROOT / "pyproject.toml")],
        env=env, cwd=src, capture_output=True, text=True, timeout=120)


def test_contracts_hold():
    result = _lint(SOURCE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def _lint_with(tmp_path, line: str):
    """The contracts run on a copy of the package with ``line`` appended to tasks/base.py."""
    copy = tmp_path / "modelweave"
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    lower = copy / "tasks" / "base.py"
    lower.write_text(lower.read_text() + f"\n{line}  # noqa: E402\n")
    return _lint(tmp_path)


def test_an_upward_import_breaks_the_contract(tmp_path):
    result = _lint_with(tmp_path, "from ..circuits import Circuit")
    assert result.returncode != 0
    out = result.stdout
    assert "Packages import only the layers below them BROKEN" in out, out
    assert "modelweave.tasks is not allowed to import modelweave.circuits" in out, out
    assert "modelweave.tasks.base -> modelweave.circuits" in out, out


def test_a_circle_inside_a_package_breaks_the_contract(tmp_path):
    result = _lint_with(tmp_path, "from .batch import TaskBatch")  # tasks.batch imports base
    assert result.returncode != 0
    out = result.stdout
    assert "No import circle between the modules of a package BROKEN" in out, out
    assert "No cycles are allowed in modelweave.tasks" in out, out
