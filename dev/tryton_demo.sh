#!/usr/bin/env bash
# `make demo-tryton` (or SYNCD_DEMO_ERP=tryton make demo): syncd against Tryton, a packaged ERP.
#
# Local stack + Tryton (dev/tryton.sh) + sandbox platform + the Debezium connector for Tryton's
# invoice table + `syncd run -c config/tryton.yaml`; then Tryton's own workflow through proteus
# (dev/tryton_invoices.py): post invoices, cancel one, credit one through Tryton's credit wizard
# (the posted credit note becomes a red invoice referencing the credited invoice); ends with the
# exactly-once summary read from Tryton's tables, the side table and the sandbox
# (dev/tryton_summary.py).
#
# Knobs: DEMO_INVOICES (default 6), DEMO_KILL9=1 (kill -9 the daemon after posting, restart), SYNCD_SANDBOX_PORT (default 18700), SYNCD_METRICS_PORT
# (default 9465), and the stack's SYNCD_PG_PORT / SYNCD_KAFKA_PORT / SYNCD_CONNECT_PORT.
# `make stack-down` stops everything (pid files in .stack/run).
set -Eeuo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${SYNCD_STACK_DIR:-$REPO_DIR/.stack}"
CONFIG="$REPO_DIR/config/tryton.yaml"
INVOICES="${DEMO_INVOICES:-6}"
SYNCD="$REPO_DIR/.venv/bin/syncd"
RUN_DIR="$STACK_DIR/run"
LOG_DIR="$STACK_DIR/logs"
SANDBOX_PORT="${SYNCD_SANDBOX_PORT:-18700}"
METRICS_PORT="${SYNCD_METRICS_PORT:-9465}"
CONNECT_PORT="${SYNCD_CONNECT_PORT:-18083}"

say() { printf '[tryton-demo] %s\n' "$*"; }
die() { printf '[tryton-demo] ERROR: %s\n' "$*" >&2; exit 1; }
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_http() {  # $1 = url, $2 = seconds, $3 = pid file
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        pid_alive "$3" || return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

[[ -x "$SYNCD" ]] || die "$SYNCD not found: run 'make install' first"
export SYNCD_STACK_DIR="$STACK_DIR"
# The config names the default ports; the stack's knobs override them for every command.
export SYNCD_DATABASE__DSN="postgresql+psycopg://postgres@127.0.0.1:${SYNCD_PG_PORT:-15432}/tryton"
export SYNCD_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:${SYNCD_KAFKA_PORT:-19092}"
export SYNCD_ISSUER__BASE_URL="http://127.0.0.1:$SANDBOX_PORT"
export SYNCD_METRICS__PORT="$METRICS_PORT"

# 1. stack and Tryton ----------------------------------------------------------------------------
bash "$REPO_DIR/dev/stack.sh" up
bash "$REPO_DIR/dev/tryton.sh" setup
TRYTON_PY="$(bash "$REPO_DIR/dev/tryton.sh" python)"
TRYTON_CONF="$(bash "$REPO_DIR/dev/tryton.sh" config)"
mkdir -p "$RUN_DIR" "$LOG_DIR" "$STACK_DIR/sandbox"

# 2. the sandbox platform (shared with `make demo`) ----------------------------------------------
if ! curl -fsS -o /dev/null "http://127.0.0.1:$SANDBOX_PORT/health" 2>/dev/null; then
    say "starting the sandbox e-invoice platform on 127.0.0.1:$SANDBOX_PORT"
    nohup "$SYNCD" sandbox --port "$SANDBOX_PORT" --store "$STACK_DIR/sandbox/sandbox.db" \
        >>"$LOG_DIR/sandbox.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/sandbox-$SANDBOX_PORT.pid"
    wait_http "http://127.0.0.1:$SANDBOX_PORT/health" 30 "$RUN_DIR/sandbox-$SANDBOX_PORT.pid" \
        || die "the sandbox did not come up (log: $LOG_DIR/sandbox.log)"
fi

# 3. ledger + side table, the connector -----------------------------------------------------------
"$SYNCD" migrate -c "$CONFIG"
body="$("$SYNCD" connectors render -c "$CONFIG")"
name="$(printf '%s' "$body" | "$REPO_DIR/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["name"])')"
printf '%s' "$body" | "$REPO_DIR/.venv/bin/python" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["config"]))' \
    | curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/json' --data @- \
        "http://127.0.0.1:$CONNECT_PORT/connectors/$name/config" \
    || die "Kafka Connect refused the connector (log: $LOG_DIR/connect.log)"
say "connector $name registered"

# 4. the daemon ----------------------------------------------------------------------------------
start_daemon() {
    nohup "$SYNCD" run -c "$CONFIG" >>"$LOG_DIR/syncd-tryton.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/syncd-tryton.pid"
    wait_http "http://127.0.0.1:$METRICS_PORT/readyz" 120 "$RUN_DIR/syncd-tryton.pid" \
        || die "the daemon did not become ready (log: $LOG_DIR/syncd-tryton.log)"
    say "daemon ready (log: $LOG_DIR/syncd-tryton.log)"
}
if pid_alive "$RUN_DIR/syncd-tryton.pid"; then
    kill -TERM "$(cat "$RUN_DIR/syncd-tryton.pid")" 2>/dev/null || true
    sleep 3
fi
start_daemon

# 5. Tryton's workflow through proteus -------------------------------------------------------------
tryton() { "$TRYTON_PY" "$REPO_DIR/dev/tryton_invoices.py" --config "$TRYTON_CONF" --database tryton "$@"; }
ids() { "$REPO_DIR/.venv/bin/python" -c 'import json,sys; print(",".join(str(json.loads(l)["id"]) for l in sys.stdin if l.strip()))'; }
say "posting $INVOICES invoices in Tryton"
posted="$(tryton post --customer 0 --line "Laptop computer:1" --line "IT consulting:2" \
    --line "Freight transport:1" --note "Delivered to dock 4" --count "$INVOICES" | ids)"
IFS=, read -r -a list <<<"$posted"
cancelled="${list[0]}"
credited="${list[1]:-}"
if [[ "${DEMO_KILL9:-0}" == 1 ]]; then  # a crash mid-run: nothing lost, nothing doubled
    say "kill -9 of the daemon (pid $(cat "$RUN_DIR/syncd-tryton.pid")), then a restart"
    kill -KILL "$(cat "$RUN_DIR/syncd-tryton.pid")" 2>/dev/null || true
    start_daemon
fi
say "cancelling invoice $cancelled, crediting invoice ${credited:-none}"
tryton cancel "$cancelled" >/dev/null
[[ -n "$credited" ]] && tryton credit "$credited" >/dev/null

# 6. the summary --------------------------------------------------------------------------------
"$REPO_DIR/.venv/bin/python" "$REPO_DIR/dev/tryton_summary.py" -c "$CONFIG" \
    --sandbox "http://127.0.0.1:$SANDBOX_PORT" --posted "$posted" --cancelled "$cancelled" \
    --credited "$credited"
