"""The report in headless Chromium: no JavaScript errors, every section, prompts as text."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from modelweave.experiments import RunStore, parse_experiment, run_experiment
from modelweave.experiments.page import SECTIONS, build_report

from tiny import save_tiny_model

HOSTILE = "<script>window.mwPwned = 1; console.error('injected')</script>"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("MODELWEAVE_NO_BROWSER"):
            pytest.skip("MODELWEAVE_NO_BROWSER is set")
        pytest.fail("headless Chromium is needed: `make browser` installs Debian's chromium")
    return found


def dump_dom(path) -> str:
    """The page's DOM after its scripts ran."""
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--virtual-time-budget=15000", "--dump-dom", path.resolve().as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    model = save_tiny_model(root / "model")
    task = root / "hostile.yaml"
    task.write_text(yaml.safe_dump({
        "name": "hostile", "template": HOSTILE + " When {A} and {B} met, {B} gave it to",
        "slots": {"A": ["Mary", "Anna", "Lisa"], "B": ["John", "Paul", "Mark"]},
        "answer": " {A}", "wrong": [" {B}"], "corrupt": ["A"]}))
    spec = parse_experiment({"name": "browser <b>test</b>", "model": str(model),
                             "tasks": [str(task), "seq_digits"], "n": 6,
                             "methods": [{"eval": {"n": 8}}, {"patch": {"grid": "heads"}},
                                         {"discover": {"method": "eap-ig", "target": 0.5}},
                                         "lens", "heads"]})
    outcome = run_experiment(spec, root / "run")
    assert outcome.report == root / "run" / "report.html"
    return root / "run"


def test_report_renders_without_errors_and_escapes_prompts(run_dir):
    html = (run_dir / "report.html").read_text()
    # self-contained: nothing loaded from elsewhere
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", html)
    assert HOSTILE not in html and "&lt;script&gt;window.mwPwned" in html
    dom = dump_dom(run_dir / "report.html")
    start = dom.index('id="mw-errors"')
    assert dom[start: dom.index("</div>", start)].endswith("hidden=\"\">"), "JavaScript errors"
    for section in SECTIONS:
        assert f'<section id="{section}"' in dom
    assert dom.count("js-plotly-plot") >= 6  # heatmaps, curves, lens, patterns drawn
    assert "&lt;script&gt;window.mwPwned" in dom  # the prompt shows as text
    assert "browser &lt;b&gt;test&lt;/b&gt;" in dom


def test_report_command_rerenders_from_stored_results(run_dir):
    (run_dir / "report.html").unlink()
    code = "from modelweave.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", code, "report", str(run_dir)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("report.html")
    assert (run_dir / "report.html").exists()
    assert len(RunStore(run_dir).records()) == 9
    bad = subprocess.run([sys.executable, "-c", code, "report", str(run_dir / "units")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "not a run directory" in bad.stderr


def test_build_report_is_idempotent(run_dir):
    first = build_report(run_dir).read_text()
    assert build_report(run_dir).read_text() == first
