"""Build the API reference (a static pdoc site) from the docstrings: ``make docs``.

    .venv/bin/python scripts/api_docs.py [--out site/api]

Every module under ``modelweave`` is imported and rendered (pdoc alone would skip submodules
that a package's ``__all__`` does not name). Docstrings are reStructuredText: ``:func:`x```,
``:class:`.graph``` and backticked ``modelweave.x.y`` names become links. ``tests/test_docs.py``
builds the site into a temporary folder and checks that every such reference resolves.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import warnings
from pathlib import Path


def module_names(package: str = "modelweave") -> list[str]:
    """Every module and subpackage of ``package`` (imported on the way), sorted."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        names.append(info.name)
    return sorted(names)


def build(out: str | Path, package: str = "modelweave", *,
          show_source: bool = True) -> list[Path]:
    """Render every module of ``package`` into ``out``; returns the HTML files written."""
    import pdoc
    import pdoc.render

    out = Path(out)
    pdoc.render.configure(docformat="restructuredtext", search=True, show_source=show_source,
                          footer_text=f"{package} API reference")
    with warnings.catch_warnings():  # pdoc also walks the submodules a package names itself
        warnings.filterwarnings("ignore", message=".*has already been added")
        pdoc.pdoc(*module_names(package), output_directory=out)
    return sorted(out.rglob("*.html"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="site/api", help="output folder (default: site/api)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pages = build(args.out)
    print(f"{len(pages)} pages in {time.perf_counter() - start:.1f} s: "
          f"{Path(args.out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
