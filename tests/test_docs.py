"""The documentation builds and its references resolve.

- The API reference (``make docs``, pdoc): every module under ``modelweave`` imports and renders.
- Every cross-reference in a docstring resolves: reStructuredText roles (``:func:`x```,
  ``:class:`.graph```, ``:meth:`Circuit.save```) and backticked ``modelweave.x.y`` names, looked
  up the way pdoc links them (relative to the module, its class, then its parent packages).
- Every relative link in README.md and docs/**/*.md points to a file that exists.

Needs pdoc (the ``dev`` extra). About 10 s of CPU, mostly importing torch and transformers.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "modelweave"

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const|any):`([^`]+)`")
# ``modelweave.x.y`` or `modelweave.x.y` (a dotted name alone between backticks)
DOTTED = re.compile(r"(?<![\w`])``?(modelweave(?:\.\w+)+)(?:\(\))?``?(?![\w`])")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)


def _api_docs():
    spec = importlib.util.spec_from_file_location("api_docs", ROOT / "scripts" / "api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lookup(dotted: str) -> bool:
    """Whether ``a.b.c`` names an importable module or an attribute of one (dataclass fields
    and annotated class attributes count)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if hasattr(obj, name):
                obj = getattr(obj, name)
            elif name in getattr(obj, "__dataclass_fields__", {}) or name in getattr(
                    obj, "__annotations__", {}):
                obj = None  # a field: nothing below it to look up
            else:
                return False
        return True
    return False


def _resolves(target: str, module: str, qualname: str | None) -> bool:
    target = target.strip().lstrip("~!").removesuffix("()")
    if "<" in target:  # "text <target>"
        target = target[target.index("<") + 1:].rstrip(">").strip()
    parents = module.split(".")
    scopes = [".".join(parents[:i]) for i in range(len(parents), 0, -1)]
    if target.startswith("."):
        return any(_lookup(scope + target) for scope in scopes)
    candidates = [target]
    if qualname:  # a method's docstring may name its class's members
        owner = qualname.split(".")[0]
        candidates.append(f"{module}.{owner}.{target}")
    candidates += [f"{scope}.{target}" for scope in scopes]
    return any(_lookup(c) for c in candidates)


def _docstrings(module):
    """(qualname or None, docstring) of the module and everything it defines."""
    yield None, inspect.getdoc(module) or ""
    seen = set()

    def members(owner, prefix):
        for name, value in list(vars(owner).items()):  # lookups may import more
            value = value.fget if isinstance(value, property) else value
            value = getattr(value, "__func__", value)  # staticmethod, classmethod
            if id(value) in seen or getattr(value, "__module__", None) != module.__name__:
                continue
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            seen.add(id(value))
            yield f"{prefix}{name}", value.__doc__ or ""
            if inspect.isclass(value):
                yield from members(value, f"{prefix}{name}.")

    yield from members(module, "")


@pytest.fixture(scope="module")
def api_docs():
    return _api_docs()


def test_api_reference_builds(tmp_path, api_docs):
    names = api_docs.module_names(PACKAGE)  # imports every module: an ImportError fails here
    assert len(names) > 50
    pages = api_docs.build(tmp_path, PACKAGE, show_source=False)
    rendered = {p.relative_to(tmp_path).with_suffix("").as_posix().replace("/", ".")
                for p in pages}
    missing = [n for n in names if n not in rendered]
    assert not missing, f"modules without a page: {missing}"
    assert (tmp_path / "index.html").exists()
    page = (tmp_path / "modelweave" / "circuits.html").read_text()
    assert 'href="circuits/graph.html"' in page  # a role (:mod:`.graph`) became a link


def test_docstring_references_resolve(api_docs):
    broken = []
    for name in api_docs.module_names(PACKAGE):
        module = importlib.import_module(name)
        for qualname, doc in _docstrings(module):
            targets = [m.group(1) for m in ROLE.finditer(doc)]
            targets += [m.group(1) for m in DOTTED.finditer(doc)]
            for target in targets:
                if not _resolves(target, name, qualname):
                    where = f"{name}.{qualname}" if qualname else name
                    broken.append(f"{where}: {target}")
    assert not broken, "unresolved docstring references:\n" + "\n".join(sorted(set(broken)))


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_markdown_links_point_to_files():
    broken = []
    for md in _markdown_files():
        text = md.read_text()
        text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code blocks hold no links
        targets = [m.group(1) for m in LINK.finditer(text)]
        targets += [m.group(1) for m in REF_DEF.finditer(text)]
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http:, mailto:, an anchor in the same page
            path = target.split("#")[0].split("?")[0]
            if not (md.parent / path).exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_checks_catch_what_they_look_for(tmp_path):
    assert _resolves(".graph", "modelweave.circuits", None)
    assert _resolves("Circuit.save", "modelweave.circuits.discovery", "Discovery")
    assert _resolves("modelweave.tasks.batch.materialize", "modelweave", None)
    assert not _resolves("modelweave.tasks.batch.materialise", "modelweave", None)
    assert not _resolves(".no_such_module", "modelweave.circuits", None)
    assert [m.group(1) for m in DOTTED.finditer("see ``modelweave.metrics`` and `x`")] == [
        "modelweave.metrics"]
    assert [m.group(1) for m in LINK.finditer("[a](docs/x.md#y) ![b](img/c.png) [c](http://e)")
            ] == ["docs/x.md#y", "img/c.png", "http://e"]
