#!/usr/bin/env bash
# `make test`: lint, types, then one pytest run over unit + integration tests on the real stack.
#
# The stack is brought up if needed; if this script started it (or under CI=true) it is stopped
# again on exit, whatever the outcome. pytest's "no tests collected" (exit 5) is a failure.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
# The secured listeners (SASL_SSL, mTLS, PostgreSQL TLS) come on top of the plain ones:
# tests/integration/test_tls_stack.py runs syncd through them.
export SYNCD_STACK_SECURE="${SYNCD_STACK_SECURE:-1}"

stack_was_running=0
if bash dev/stack.sh status >/dev/null 2>&1; then stack_was_running=1; fi
cleanup() {
    local rc=$?
    if [[ "${CI:-}" == "true" || $stack_was_running == 0 ]]; then
        bash dev/stack.sh down || true
    fi
    exit $rc
}
trap cleanup EXIT

LINTED=(syncd syncd_sandbox tests dev bench)
echo "== ruff check, ruff format --check"
$BIN/ruff check "${LINTED[@]}"
$BIN/ruff format --check "${LINTED[@]}"
echo "== import-linter (layers)"
$BIN/lint-imports --no-cache
echo "== mypy --strict syncd syncd_sandbox"
$BIN/mypy --strict syncd syncd_sandbox
if [[ -x dev/tools.sh ]]; then
    echo "== chart tools (helm, promtool)"
    bash dev/tools.sh
fi
echo "== local stack"
bash dev/stack.sh up
echo "== pytest"
set +e
# Coverage of the test process itself (daemon and sandbox subprocesses are not counted);
# the floor is what the suite reaches, less a margin for the machine's timing paths.
$BIN/pytest tests -q -p no:cacheprovider --cov=syncd --cov=syncd_sandbox \
    --cov-report=term:skip-covered --cov-report=term --cov-fail-under="${SYNCD_COVERAGE_FLOOR:-75}" "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
exit $rc
