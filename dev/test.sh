#!/usr/bin/env bash
# `make test`: lint, types, then one pytest run over unit + integration tests on the real stack.
#
# The stack is brought up if needed; if this script started it (or under CI=true) it is stopped
# again on exit, whatever the outcome. pytest's "no tests collected" (exit 5) is a failure.
#
# Tryton (tests/integration/test_tryton.py, a packaged ERP end to end) needs its own virtualenv
# and an initialised database, both cached under ~/.cache/syncd-tools (dev/tryton.sh). On a
# clean machine building them takes minutes, so `dev/tryton.sh prepare` runs in the background
# (on a private PostgreSQL, untouched by the tests that restart the stack's) while the rest of
# the suite runs; the Tryton tests run last. SYNCD_TRYTON=0 skips them explicitly.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
# The secured listeners (SASL_SSL, mTLS, PostgreSQL TLS) come on top of the plain ones:
# tests/integration/test_tls_stack.py runs syncd through them.
export SYNCD_STACK_SECURE="${SYNCD_STACK_SECURE:-1}"

stack_was_running=0
if bash dev/stack.sh status >/dev/null 2>&1; then stack_was_running=1; fi
tryton_pid=""
cleanup() {
    local rc=$?
    if [[ -n "$tryton_pid" ]] && kill -0 "$tryton_pid" 2>/dev/null; then
        kill -TERM -- "-$tryton_pid" 2>/dev/null || true
        wait "$tryton_pid" 2>/dev/null || true
    fi
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
TRYTON_TEST=tests/integration/test_tryton.py
TRYTON_LOG="${SYNCD_STACK_DIR:-.stack}/logs/tryton-prepare.log"
if [[ "${SYNCD_TRYTON:-1}" != 0 ]]; then
    mkdir -p "$(dirname "$TRYTON_LOG")"
    echo "== Tryton virtualenv + database, in the background (log: $TRYTON_LOG)"
    tryton_started=$SECONDS
    # its own process group, so that an early exit stops all of it (trytond-admin included)
    setsid bash dev/tryton.sh prepare >"$TRYTON_LOG" 2>&1 </dev/null &
    tryton_pid=$!
fi
echo "== pytest"
set +e
# Coverage of the test process itself (daemon and sandbox subprocesses are not counted);
# the floor is what the suite reaches, less a margin for the machine's timing paths.
$BIN/pytest tests -q -p no:cacheprovider --cov=syncd --cov=syncd_sandbox \
    --cov-report=term:skip-covered --cov-report=term --cov-fail-under="${SYNCD_COVERAGE_FLOOR:-75}" \
    --ignore="$TRYTON_TEST" "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
    echo "pytest collected no tests: failing on purpose" >&2
    exit 1
fi
if [[ -n "$tryton_pid" ]]; then
    echo "== Tryton end to end ($TRYTON_TEST)"
    if ! wait "$tryton_pid"; then
        tryton_pid=""
        echo "ERROR: the Tryton setup (dev/tryton.sh prepare) failed; its log: $TRYTON_LOG" >&2
        tail -n 20 "$TRYTON_LOG" >&2 || true
        exit 1
    fi
    tryton_pid=""
    echo "Tryton ready $((SECONDS - tryton_started)) s after its start (log: $TRYTON_LOG)"
    set +e
    SYNCD_TRYTON=1 $BIN/pytest "$TRYTON_TEST" -q -p no:cacheprovider "$@"
    tryton_rc=$?
    set -e
    # Arguments that select other tests only (-k ...) leave nothing here: not a failure.
    if [[ $tryton_rc == 5 && $# -gt 0 ]]; then tryton_rc=0; fi
    if [[ $tryton_rc != 0 && $rc == 0 ]]; then rc=$tryton_rc; fi
fi
exit $rc
