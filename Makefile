# make demo | make test | make bench: each creates .venv and installs codenn (editable, with dev extras).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.codenn-installed

.PHONY: demo test test-all lint bench bench-runtime bench-search bench-search-scale bench-serving bench-faults bench-coverage experiments venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/codenn demo

# pytest exits 5 when it collects nothing: treat that as a failure, not a pass.
test: $(STAMP)
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# ruff (lint + import order) on the whole tree; mypy --strict on sdk/ (settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# every test, the slow, GPU and Ray ones included (installs the optional extra codenn[ray])
test-all: $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,ray]'
	$(PY) -m pytest -q -m ""

# bench-runtime and bench-serving: minutes; bench-search: about an hour on 2 CPU cores (exhaustive search).
bench: bench-runtime bench-search bench-serving

bench-runtime: $(STAMP)
	$(PY) benchmarks/runtime.py

bench-search: $(STAMP)
	$(PY) benchmarks/search_cost.py

# The exhaustive search in-process vs on a local Ray cluster (2 workers), then a simulated schedule:
# about 40 minutes on 2 CPU cores; ARGS="--limit 12 --epochs 1" for a short run.
bench-search-scale: $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,ray]'
	$(PY) benchmarks/search_scale.py $(ARGS)

bench-serving: $(STAMP)
	$(PY) benchmarks/serving.py

# Hostile and broken peers against real servers (fuzz, poisoning, kill, bad replies, slow drip): minutes; ARGS="--quick".
bench-faults: $(STAMP)
	$(PY) benchmarks/faults.py $(ARGS)

# The smallest model of every timm and torchvision family: split, recompose, export (docs/coverage.md).
# Under 20 minutes on 2 CPU cores; ARGS="--limit 10" or ARGS="--families timm:levit" for a subset.
bench-coverage: $(STAMP)
	$(PY) benchmarks/coverage.py $(ARGS)

# The paper's four experiments (benchmarks/paper): JSON, figures, docs/experiments.md.
experiments: $(STAMP)
	$(PY) benchmarks/paper/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info sdk/*.egg-info
