#!/usr/bin/env bash
# `make demo`: local stack + sandbox e-invoice platform + syncd daemon + demo orders.
#
#   dev/demo.sh            bring everything up (idempotent), then push $DEMO_ORDERS orders through
#   make stack-down        stops the stack, the sandbox and the daemon (pid files in .stack/run)
#
# Knobs (environment):
#   DEMO_ORDERS            orders to generate (default 200); DEMO_ARGS: more `syncd demo generate` flags
#   DEMO_RETURN_RATIO      share of orders returned in part: partial red invoices (default 0.05)
#   DEMO_REISSUE_RATIO     share of orders cancelled and confirmed again: re-issues (default 0.05)
#   SYNCD_DEMO_CONFIG      syncd config (default config/demo.yaml)
#   SYNCD_SANDBOX_PORT     sandbox port (default: the port of the config's issuer.base_url)
#   SYNCD_METRICS_PORT     daemon metrics/health port (default: metrics.port of the config)
#   SYNCD_STACK_DIR        state, pid files and logs (default .stack/, shared with dev/stack.sh)
#   SYNCD_DEMO_SKIP_STACK  1: do not run `dev/stack.sh up` (the stack is managed elsewhere)
#   SYNCD_DEMO_DIALECT     sandbox (default) or nuonuo: the platform speaks Nuonuo's protocol
#                          and the daemon uses issuer.provider nuonuo (sandbox port 18701)
# The two port knobs also override the config for the daemon and the generator
# (SYNCD_ISSUER__BASE_URL, SYNCD_METRICS__PORT), so everything agrees on them.
set -Eeuo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${SYNCD_STACK_DIR:-$REPO_DIR/.stack}"
CONFIG="${SYNCD_DEMO_CONFIG:-$REPO_DIR/config/demo.yaml}"
ORDERS="${DEMO_ORDERS:-200}"
BIN="$REPO_DIR/.venv/bin"
SYNCD="$BIN/syncd"
RUN_DIR="$STACK_DIR/run"
LOG_DIR="$STACK_DIR/logs"

say() { printf '[demo] %s\n' "$*"; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }

[[ -x "$SYNCD" ]] || die "$SYNCD not found: run 'make install' first"
[[ -f "$CONFIG" ]] || die "config $CONFIG not found"
export SYNCD_STACK_DIR="$STACK_DIR"
DIALECT="${SYNCD_DEMO_DIALECT:-sandbox}"
case "$DIALECT" in
    sandbox) SANDBOX_ARGS=(); SANDBOX_NAME=sandbox ;;
    nuonuo)
        # The same demo against the Nuonuo dialect: the daemon's issuer becomes provider
        # nuonuo for the config's seller, on its own port and store.
        SELLER_TAX_ID="$("$BIN/python" -c 'import sys; from syncd.config import load_config; print(load_config(sys.argv[1]).seller.tax_id)' "$CONFIG")" \
            || die "config $CONFIG does not load: run $SYNCD check-config -c $CONFIG"
        export SYNCD_ISSUER__PROVIDER=nuonuo SYNCD_ISSUER__SELLER_TAX_ID="$SELLER_TAX_ID"
        SYNCD_SANDBOX_PORT="${SYNCD_SANDBOX_PORT:-18701}"
        SANDBOX_ARGS=(--dialect nuonuo); SANDBOX_NAME=sandbox-nuonuo ;;
    *) die "SYNCD_DEMO_DIALECT must be sandbox or nuonuo, not '$DIALECT'" ;;
esac
if [[ -n "${SYNCD_SANDBOX_PORT:-}" ]]; then
    export SYNCD_ISSUER__BASE_URL="http://127.0.0.1:$SYNCD_SANDBOX_PORT"
fi
if [[ -n "${SYNCD_METRICS_PORT:-}" ]]; then
    export SYNCD_METRICS__PORT="$SYNCD_METRICS_PORT"
fi

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_http() {  # $1 = url, $2 = seconds, $3 = pid file of the process that should answer
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        pid_alive "$3" || return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

stop_pid() {  # $1 = pid file; TERM, wait for the drain, then KILL
    local file="$1" pid
    pid_alive "$file" || { rm -f "$file"; return 0; }
    pid="$(cat "$file")"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 40))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.3; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$file"
}

# The ports and URLs the config resolves to (after the overrides above).
read -r SANDBOX_URL METRICS_HOST METRICS_PORT < <("$BIN/python" - "$CONFIG" <<'EOF'
import sys
from syncd.config import load_config
c = load_config(sys.argv[1])
host = c.metrics.host if c.metrics.host not in ("0.0.0.0", "::") else "127.0.0.1"
print(c.issuer.base_url.rstrip("/"), host, c.metrics.port)
EOF
) || die "config $CONFIG does not load: run $SYNCD check-config -c $CONFIG"
SANDBOX_PORT="${SYNCD_SANDBOX_PORT:-${SANDBOX_URL##*:}}"

# 1. the stack ---------------------------------------------------------------------------------
if [[ "${SYNCD_DEMO_SKIP_STACK:-0}" != 1 ]]; then
    bash "$REPO_DIR/dev/stack.sh" up
fi
mkdir -p "$RUN_DIR" "$LOG_DIR" "$STACK_DIR/sandbox"

# 2. the sandbox platform (kept running between demos: it holds the issued invoices) ------------
if pid_alive "$RUN_DIR/$SANDBOX_NAME.pid"; then
    say "sandbox ($DIALECT) already running (pid $(cat "$RUN_DIR/$SANDBOX_NAME.pid")) on $SANDBOX_URL"
elif curl -fsS -o /dev/null "http://127.0.0.1:$SANDBOX_PORT/health" 2>/dev/null; then
    say "a sandbox not started by this script answers on 127.0.0.1:$SANDBOX_PORT; using it"
else
    say "starting the sandbox e-invoice platform ($DIALECT) on 127.0.0.1:$SANDBOX_PORT"
    nohup "$SYNCD" sandbox --port "$SANDBOX_PORT" --store "$STACK_DIR/sandbox/$SANDBOX_NAME.db" \
        "${SANDBOX_ARGS[@]}" >>"$LOG_DIR/$SANDBOX_NAME.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/$SANDBOX_NAME.pid"
    wait_http "http://127.0.0.1:$SANDBOX_PORT/health" 30 "$RUN_DIR/$SANDBOX_NAME.pid" || {
        tail -n 30 "$LOG_DIR/$SANDBOX_NAME.log" >&2; die "the sandbox did not come up (log: $LOG_DIR/$SANDBOX_NAME.log)"; }
fi

# 3. the ledger schema -------------------------------------------------------------------------
"$SYNCD" migrate -c "$CONFIG"

# 3b. the config's topics: Debezium creates a topic at a table's first change, and a daemon
# subscribed before that notices it only minutes later (the return table changes only once
# the demo runs), so the missing ones are created up front.
"$BIN/python" - "$CONFIG" <<'PY' || die "could not create the config's topics"
import sys
from confluent_kafka.admin import AdminClient, NewTopic
from syncd.config import load_config
from syncd.kafka.client import operator_config
config = load_config(sys.argv[1])
admin = AdminClient(operator_config(config.kafka, client_id="syncd-demo", timeout=10))
existing = admin.list_topics(timeout=10).topics
wanted = [t for t in config.topics() if t not in existing]
for topic, future in admin.create_topics([NewTopic(t, 1, 1) for t in wanted]).items() if wanted else ():
    try:
        future.result(30)
        print(f"[demo] created topic {topic}")
    except Exception as exc:  # created meanwhile by the connector: fine
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
PY

# 4. the daemon (restarted: the config may have changed) ----------------------------------------
if pid_alive "$RUN_DIR/syncd.pid"; then
    say "restarting the syncd daemon (pid $(cat "$RUN_DIR/syncd.pid"))"
    stop_pid "$RUN_DIR/syncd.pid"
fi
if (exec 3<>"/dev/tcp/$METRICS_HOST/$METRICS_PORT") 2>/dev/null; then
    die "port $METRICS_PORT is in use by a process this script did not start (another syncd?); stop it or set SYNCD_METRICS_PORT"
fi
say "starting the syncd daemon (metrics and health on http://$METRICS_HOST:$METRICS_PORT)"
nohup "$SYNCD" run -c "$CONFIG" >>"$LOG_DIR/syncd.log" 2>&1 </dev/null &
echo $! >"$RUN_DIR/syncd.pid"
wait_http "http://$METRICS_HOST:$METRICS_PORT/readyz" 120 "$RUN_DIR/syncd.pid" || {
    tail -n 30 "$LOG_DIR/syncd.log" >&2; die "the daemon did not become ready (log: $LOG_DIR/syncd.log)"; }
say "daemon ready"

# 5. the demo load -------------------------------------------------------------------------------
rc=0
# shellcheck disable=SC2086  # DEMO_ARGS is a list of flags on purpose
"$SYNCD" demo generate -c "$CONFIG" --orders "$ORDERS" \
    --return-ratio "${DEMO_RETURN_RATIO:-0.05}" --reissue-ratio "${DEMO_REISSUE_RATIO:-0.05}" \
    ${DEMO_ARGS:-} || rc=$?

cat <<EOF

[demo] what runs where:
  sandbox platform  $SANDBOX_URL ($DIALECT)  (audit: $SANDBOX_URL/_sandbox/invoices)   log: $LOG_DIR/$SANDBOX_NAME.log
  syncd daemon      pid $(cat "$RUN_DIR/syncd.pid")   metrics: http://$METRICS_HOST:$METRICS_PORT/metrics   log: $LOG_DIR/syncd.log
  operator view     $SYNCD status -c $CONFIG
  more orders       DEMO_ORDERS=50 make demo   (or: $SYNCD demo generate -c $CONFIG --orders 50)
  stop everything   make stack-down   (stack, sandbox and daemon)
EOF
exit "$rc"
