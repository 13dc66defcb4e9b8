# Two commands do everything on a fresh machine:
#   make demo   - install, then run Sluice in front of a throwaway PostgreSQL
#   make test   - install (system packages too), then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo run test check lint typecheck bench system-deps lock clean

$(STAMP): pyproject.toml constraints.txt setup.py src/sluice/protocols/postgres/_speedups.c src/sluice/masking/_hits.c src/sluice/policy/_sqlkey.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

system-deps:
	PYTHON=$(PYTHON) scripts/install-system-deps.sh

demo: system-deps $(STAMP)
	$(BIN)/sluice demo

run: $(STAMP)
	$(BIN)/sluice serve

test: system-deps $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)
	$(MAKE) check

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: system-deps $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Re-pin every dependency after changing pyproject.toml.
lock:
	rm -rf /tmp/sluice-lock && $(PYTHON) -m venv /tmp/sluice-lock
	/tmp/sluice-lock/bin/pip install --quiet -e '.[dev]'
	/tmp/sluice-lock/bin/pip freeze --exclude-editable | grep -v '^sluice' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
