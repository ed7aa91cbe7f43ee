# edgelam — every target sets up .venv itself on a fresh machine.
# The pinned CPU build of torch is installed first, so that the project's
# `torch>=2.2` requirement is already met and pip never pulls a CUDA build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.edgelam-installed
BENCH_STAMP := $(VENV)/.edgelam-bench-installed
MUTATION_STAMP := $(VENV)/.edgelam-mutation-installed
DOCS_STAMP := $(VENV)/.edgelam-docs-installed
# targets of tests/mutation.py to run (names in its TARGETS; empty: all of them, many hours on 2 cores)
MUTATION_TARGETS ?=
# mutants per target to sample (seeded, uniformly; empty: every mutant) and the sample's seed
MUTATION_SAMPLE ?=
MUTATION_SEED ?= 0
# a second environment with the `ray` extra (Ray Tune, RLlib), which pins gymnasium 1.2.x
RAY_VENV  ?= .venv-ray
RAY_PY    := $(RAY_VENV)/bin/python
RAY_STAMP := $(RAY_VENV)/.edgelam-installed

.PHONY: demo test test-fast test-ray bench results mutation docs figures lint setup setup-ray clean

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

# the mutation extra (cosmic-ray): only `make mutation` needs it
$(MUTATION_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[mutation]"
	touch $(MUTATION_STAMP)

# the docs extra (mkdocs-material, mkdocstrings): only `make docs` needs it
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

setup-ray: $(RAY_STAMP)

$(RAY_STAMP): pyproject.toml
	test -x $(RAY_PY) || $(PYTHON) -m venv $(RAY_VENV)
	$(RAY_PY) -m pip install --quiet --upgrade pip
	$(RAY_PY) -m pip install --quiet $(TORCH)
	$(RAY_PY) -m pip install --quiet -e ".[test,ray]"
	touch $(RAY_STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgelam compare edgelam/SplitInference-v0 --scenario congested_edge --quick --out runs/demo-congested_edge

# the default environment (newest gymnasium), then the ray one (gymnasium 1.2.x)
test: $(STAMP)
	$(PY) -m pytest -q
	$(MAKE) test-ray

# on a local 2-CPU Ray instance: Tune sweeps, RLlib PPO; and the env conformance suite on gymnasium 1.2.x
test-ray: $(RAY_STAMP)
	$(RAY_PY) -m pytest -q tests/test_conformance.py tests/ray

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(BENCH_STAMP)
	$(VENV)/bin/edgelam bench --markdown docs/benchmarks.md

results: $(STAMP)
	$(VENV)/bin/edgelam results

# mutation testing of envs/core, the dynamics modules and baselines/ on a copy of HEAD (docs/testing.md);
# not part of `make test` or CI: e.g. make mutation MUTATION_TARGETS="core.queues split_inference.dynamics"
mutation: $(MUTATION_STAMP)
	$(PY) -m tests.mutation $(if $(MUTATION_TARGETS),--only $(MUTATION_TARGETS)) \
		$(if $(MUTATION_SAMPLE),--sample $(MUTATION_SAMPLE) --seed $(MUTATION_SEED)) --work .mutation --json .mutation/results.json

# the env pages and the CLI page are generated from the code (edgelam.agents.docs_site, also the
# mkdocs hook), then the site is built into site/ with every warning an error
docs: $(DOCS_STAMP)
	$(PY) -m edgelam.agents.docs_site
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# one rgb_array frame and one plot-episode figure per env id under docs/figures/ (fixed seed and policy rule)
figures: $(STAMP)
	$(PY) -m edgelam.agents.docs_figures

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(RAY_VENV) runs .mutation .pytest_cache .ruff_cache site build/docs-api
