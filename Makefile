# make demo: a local repository in a temporary folder, end to end.
# make test: lint, types, layers, unit tests, and end-to-end tests against the built wheel.
PYTHON ?= python3
VENV := .venv
E2E := .venv-e2e
BIN := $(VENV)/bin
PACKAGES := chunker crypto repo cli

.PHONY: venv demo test lint unit e2e wheel clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	@set -e; \
	work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; \
	export HUTCH_PASSWORD=demo-password HUTCH_CACHE_DIR="$$work/cache"; \
	hutch="$(CURDIR)/$(BIN)/hutch -r $$work/repo"; \
	mkdir -p "$$work/data/docs"; \
	cp -r $(CURDIR)/docs/. "$$work/data/docs/"; \
	seq 1 200000 > "$$work/data/numbers.txt"; \
	echo "== init"; $$hutch init; \
	echo "== first backup"; $$hutch backup "$$work/data"; \
	echo "second version" >> "$$work/data/numbers.txt"; \
	echo "== second, incremental backup"; $$hutch backup "$$work/data"; \
	echo "== snapshots"; $$hutch snapshots; \
	echo "== restore one file"; \
	$$hutch restore latest --target "$$work/restored" --include "$$work/data/numbers.txt"; \
	cmp "$$work/data/numbers.txt" "$$work/restored$$work/data/numbers.txt"; \
	echo "restored file matches the original"; \
	echo "== check"; $$hutch check; \
	echo "demo finished"

lint: venv
	$(BIN)/ruff check $(PACKAGES) tests
	$(BIN)/ruff format --check $(PACKAGES) tests
	$(BIN)/mypy --strict $(PACKAGES)
	$(BIN)/lint-imports

wheel: venv
	rm -rf dist build
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .

# The end-to-end tests drive the hutch command installed from the wheel into a clean
# environment: a wheel that only works from the source tree fails here.
$(E2E)/bin/hutch: wheel
	rm -rf $(E2E)
	$(PYTHON) -m venv $(E2E)
	$(E2E)/bin/pip install --quiet dist/hutch-*.whl

unit: venv
	$(BIN)/pytest -q tests --ignore=tests/e2e

e2e: $(E2E)/bin/hutch
	HUTCH_BIN=$(CURDIR)/$(E2E)/bin/hutch $(BIN)/pytest -q tests/e2e

test: lint $(E2E)/bin/hutch
	HUTCH_BIN=$(CURDIR)/$(E2E)/bin/hutch $(BIN)/pytest -q tests

clean:
	rm -rf $(VENV) $(E2E) dist build *.egg-info
