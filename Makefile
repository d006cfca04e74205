# Two commands for a fresh machine: `make demo` and `make test` (both create .venv when missing).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench lock clean-state help

help:
	@echo "make demo   - set up .venv, then run the pipeline for SPY with the demo profile"
	@echo "make test   - set up .venv, then run the whole test suite (what CI runs)"
	@echo "make bench  - run the benchmarks (env steps/s, wrapper vs plain SAC, smoke wall time)"

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 2; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m trainer.demo

# Test files run on TEST_WORKERS pytest-xdist workers (3 on 2 cores: many tests wait on a subprocess or
# a server, and a third worker fills those gaps), one file per worker at a time (its module and
# session fixtures built once there), slow files first (tests/conftest.py orders them).
TEST_WORKERS ?= 3

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q --durations=30 \
	  -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "not slow and not integration"

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/env_steps.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/wrapper_overhead.py

lock: $(STAMP)
	( echo "# The whole stack, pinned: Python 3.11, CPU torch from the local wheel (torch==2.13.0 resolves to 2.13.0+cpu here)."; \
	  echo "# Regenerate with: make lock   (after changing pyproject.toml or the tools below)"; \
	  $(BIN)/pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' ) > requirements.lock
	$(BIN)/python docker/gen_requirements.py
	$(BIN)/python docker/gen_gpu_lock.py

clean-state:
	rm -rf state
