# Two commands do everything on a fresh machine:
#   make demo   - install, then run Sluice in front of a throwaway PostgreSQL
#   make test   - install (system packages too), then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The hot path compiled with mypyc (see src/sluice/_compiled.py); rebuilt
# when any source changes, since compiled code may take in other modules' constants.
COMPILED := $(VENV)/.compiled
SOURCES  := $(shell find src/sluice -name '*.py')

.PHONY: demo run test check lint typecheck bench compile system-deps lock clean

$(STAMP): pyproject.toml constraints.txt setup.py src/sluice/protocols/postgres/_speedups.c src/sluice/masking/_hits.c src/sluice/policy/_sqlkey.c src/sluice/recording/_seal.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(COMPILED): $(STAMP) $(SOURCES) scripts/compile_hot_path.py
	$(BIN)/python scripts/compile_hot_path.py
	touch $(COMPILED)

compile: $(COMPILED)

system-deps:
	PYTHON=$(PYTHON) scripts/install-system-deps.sh

demo: system-deps $(COMPILED)
	$(BIN)/sluice demo

run: $(COMPILED)
	$(BIN)/sluice serve

test: system-deps $(COMPILED)
	$(BIN)/pytest $(PYTEST_ARGS)
	$(MAKE) check

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

bench: system-deps $(COMPILED)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Re-pin every dependency after changing pyproject.toml.
lock:
	rm -rf /tmp/sluice-lock && $(PYTHON) -m venv /tmp/sluice-lock
	/tmp/sluice-lock/bin/pip install --quiet -e '.[dev]'
	/tmp/sluice-lock/bin/pip freeze --exclude-editable | grep -v '^sluice' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build
	find src -name '*.so' -delete
