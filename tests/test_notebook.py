"""Result objects display themselves in Jupyter (the report's figures, offline, no JavaScript
errors), and the example notebooks run."""

from pathlib import Path

import pytest

from modelweave import Model
from modelweave.analysis.compare import overlap
from modelweave.circuits import discover
from modelweave.methods import patch_sweep
from modelweave.methods.lens import logit_lens
from modelweave.metrics import evaluate
from modelweave.report.html import _ERRORS
from modelweave.report.notebook import DISPLAYS, register
from modelweave.tasks import make_batch
from test_report_browser import dump_dom
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model

ERRORS = _ERRORS  # the report's JavaScript error catcher


@pytest.fixture(scope="module")
def results():
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("gpt2", vocab_size=len(tok)), tok, name="tiny <gpt2>")
    batch = make_batch(model, "ioi", n=6, same_length=True)
    found = discover(model, batch, "eap-ig", target=0.5, steps=2)
    other = discover(model, batch, "eap", target=0.5)
    return {"TaskBatch": batch, "EvalResult": evaluate(model, "ioi", n=6),
            "PatchingResult": patch_sweep(model, batch, "heads"),
            "LensResult": logit_lens(model, batch), "Circuit": found.circuit,
            "Discovery": found, "Overlap": overlap(found.circuit, other.circuit)}


def test_every_result_type_displays_as_html_in_a_shell(results, tmp_path):
    from IPython.core.interactiveshell import InteractiveShell

    from modelweave.report import notebook

    notebook._PLOTLY_SENT = False  # as in a fresh kernel
    shell = InteractiveShell.instance()
    assert register(shell)
    assert {cls for _, cls in DISPLAYS} == set(results)
    parts = []
    for name, obj in results.items():
        data, _ = shell.display_formatter.format(obj)
        assert "text/html" in data, name
        parts.append(data["text/html"])
    page = "<html><head><meta charset='utf-8'></head><body>" + ERRORS + "".join(parts)
    page += "</body></html>"
    assert "tiny &lt;gpt2&gt;" in page and "tiny <gpt2>" not in page  # names are escaped
    assert page.count("* plotly.js v") == 1  # the library is inlined once, reused after
    path = tmp_path / "displays.html"
    path.write_text(page)
    dom = dump_dom(path)
    start = dom.index('id="mw-errors"')
    assert dom[start: dom.index("</div>", start)].endswith('hidden="">'), "JavaScript errors"
    assert dom.count("js-plotly-plot") >= 3  # patching, lens, faithfulness curve drawn
    assert "<svg" in dom  # the circuit graph


def test_bad_input_in_a_notebook_is_one_line(results, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    register(shell)
    shell.user_ns["batch"] = results["TaskBatch"]
    shell.user_ns["model"] = Model(tiny_hf_model("gpt2"))
    for cell, kind, hint in (
            ("model.run_with_cache(batch.clean, ['blocks.0.attn.hook_zz'])", "SiteError",
             "sites are blocks.L."),
            ("from modelweave.tasks import make_batch; make_batch(model, 'no_such_task')",
             "TaskError", "no_such_task")):
        outcome = shell.run_cell(cell)
        shown = capsys.readouterr()
        text = shown.out + shown.err
        assert outcome.error_in_exec is not None and type(outcome.error_in_exec).__name__ == kind
        assert hint in text and "Traceback" not in text and "torch" not in text


NOTEBOOKS = sorted((Path(__file__).parent.parent / "examples" / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.xdist_group("smollm")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_example_notebooks_run(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    html = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
            if "text/html" in o.get("data", {})]
    assert html, "no result displayed itself"
    errors = [o for cell in nb.cells if cell.cell_type == "code"
              for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
