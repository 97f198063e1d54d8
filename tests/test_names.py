"""The names and defaults of the patching and discovery calls are defined once
(:mod:`modelweave.names`): the library, the method kinds and the command line read them, and the
command line's help needs no torch."""

from __future__ import annotations

import inspect
import subprocess
import sys

from modelweave import names
from modelweave.circuits import discovery, objective
from modelweave.experiments.methods import get_method
from modelweave.methods import grids, patching


def test_the_library_reads_the_names():
    assert grids.GRIDS is names.GRIDS and grids.DIRECTIONS is names.DIRECTIONS
    assert patching.METHODS is names.PATCH_METHODS and patching.ALIASES is names.PATCH_ALIASES
    assert discovery.METHODS is names.DISCOVERY_METHODS
    assert objective.GRADIENT_METRICS is names.GRADIENT_METRICS
    assert set(names.GRADIENT_METRICS) <= set(objective.NAMES)
    defaults = {k: p.default for k, p in inspect.signature(patching.patch).parameters.items()}
    assert (defaults["grid"], defaults["method"], defaults["direction"], defaults["k"]) == (
        "heads", "exact", "denoising", 20)
    assert inspect.signature(discovery.discover).parameters["method"].default == "eap-ig"


def test_the_kinds_offer_the_names():
    patch, discover = get_method("patch").params, get_method("discover").params
    assert patch["direction"] == names.DIRECTIONS and patch["grid"][0] == names.PATCH_GRID
    assert discover["metric"] == names.GRADIENT_METRICS
    assert discover["intervention"] == names.INTERVENTIONS


def test_the_command_line_imports_no_torch():
    code = "import sys, modelweave.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
