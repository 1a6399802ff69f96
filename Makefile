# syncd developer entry points. The two that matter on a fresh machine:
#   make demo   -- local stack + sandbox + daemon + demo orders (the main job)
#   make test   -- everything needed, then lint, types, unit and integration tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lock lint typecheck unit integration test demo bench stack-up stack-up-secure stack-down stack-clean stack-status chart-test chart-readme clean tryton demo-tryton

install: $(STAMP)

# From the lock (requirements/dev.txt, every file hash-checked), then syncd itself without
# dependencies: CI and every developer get the same versions. `make lock` refreshes it.
$(STAMP): pyproject.toml requirements/dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

# Re-resolves requirements/runtime.txt (the image) and requirements/dev.txt (CI) from
# pyproject.toml's ranges; LOCK_ARGS=--upgrade moves every pin to the newest allowed.
# Needs no `make install` (that installs from the lock, which may be the stale part).
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/pip-compile || $(BIN)/python -m pip install -q 'pip-tools>=7.4'
	bash dev/lock.sh $(LOCK_ARGS)

# The same checks as .pre-commit-config.yaml: lint, format, layers (import-linter).
LINTED := syncd syncd_sandbox tests dev bench
lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy --strict syncd syncd_sandbox
	$(BIN)/mypy tests bench dev

unit: install
	$(BIN)/pytest tests/unit -q

integration: install stack-up
	$(BIN)/pytest tests/integration -q -m integration

test: install
	bash dev/test.sh

chart-test: install
	bash dev/tools.sh
	$(BIN)/pytest tests/chart -q

# Regenerates helm/syncd/README.md from values.yaml's comments (chart-test checks it is current).
chart-readme: install
	$(BIN)/python dev/chart_readme.py

stack-up: install
	bash dev/stack.sh up

# The same stack plus the secured transports (also: make stack-up SYNCD_STACK_SECURE=1):
# SASL_SSL + mTLS listeners, PostgreSQL TLS, a throwaway CA in .stack/tls (docs/security.md).
stack-up-secure: install
	SYNCD_STACK_SECURE=1 bash dev/stack.sh up

stack-down:
	bash dev/stack.sh down

stack-clean:
	bash dev/stack.sh clean

stack-status:
	bash dev/stack.sh status

demo: install
	if [ "$${SYNCD_DEMO_ERP:-}" = tryton ]; then bash dev/tryton_demo.sh; else bash dev/demo.sh; fi

# syncd against Tryton 8.2 (docs/packaged-erp.md): post, cancel, credit; ends with `result: OK`.
demo-tryton: install
	bash dev/tryton_demo.sh

# Tryton (a packaged ERP) in its own virtualenv, database `tryton` on the stack's PostgreSQL
# with a Chinese company (docs/packaged-erp.md).
tryton: stack-up
	bash dev/tryton.sh setup

# Never part of `make test` (tests/integration/test_bench_smoke.py runs a tiny version).
bench: install stack-up
	bash dev/bench.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist build
