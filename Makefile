# edgelam — every target sets up .venv itself on a fresh machine.
# The pinned CPU build of torch is installed first, so that the project's
# `torch>=2.2` requirement is already met and pip never pulls a CUDA build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.edgelam-installed
BENCH_STAMP := $(VENV)/.edgelam-bench-installed

.PHONY: demo test test-fast bench results lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test,dev]"
	touch $(STAMP)

# the bench extra (mobile-env, the reference of ratio_vs_mobile_env): only `make bench` needs it
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgelam compare edgelam/SplitInference-v0 --quick --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(BENCH_STAMP)
	$(VENV)/bin/edgelam bench --markdown docs/benchmarks.md

results: $(STAMP)
	$(VENV)/bin/edgelam results

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
