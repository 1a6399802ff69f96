#!/usr/bin/env bash
# The local CDC stack: PostgreSQL (own cluster) -> Debezium in Kafka Connect -> Kafka (KRaft).
#
#   dev/stack.sh up       install what is missing, start everything, wait until a change flows
#   dev/stack.sh down     stop exactly what `up` started (by pid files)
#   dev/stack.sh clean    down + remove all state (data, topics, connector offsets, logs)
#   dev/stack.sh status   what runs where
#
# Everything binds to 127.0.0.1 and all state lives under $SYNCD_STACK_DIR (default: .stack/ in
# the repository, git-ignored). A second `up` while everything runs is a no-op.
#
# SYNCD_STACK_SECURE=1 adds the secured transports next to the plain ones (docs/security.md,
# "Transport"): a throwaway CA ($STACK_DIR/tls, made once with openssl), a SASL_SSL listener
# (SCRAM-SHA-512 user `syncd`) on $SYNCD_KAFKA_SASL_PORT, an mTLS listener (client certificate
# required) on $SYNCD_KAFKA_MTLS_PORT, PostgreSQL with ssl=on and `hostssl`-only rules for the
# members of role `syncd_tls`, and the demo connector reading PostgreSQL with verify-full.
# The plain listener stays: the Connect worker, the change-flow probe and the plain tests use
# it (what syncd must prove is its own client side; the worker's broker link is Kafka's own).
set -Eeuo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${SYNCD_STACK_DIR:-$REPO_DIR/.stack}"
PG_PORT="${SYNCD_PG_PORT:-15432}"
KAFKA_PORT="${SYNCD_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${SYNCD_KAFKA_CONTROLLER_PORT:-19093}"
CONNECT_PORT="${SYNCD_CONNECT_PORT:-18083}"
KAFKA_SASL_PORT="${SYNCD_KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}"
KAFKA_MTLS_PORT="${SYNCD_KAFKA_MTLS_PORT:-$((KAFKA_PORT + 3))}"
SECURE="${SYNCD_STACK_SECURE:-0}"
PG_MAJOR="${SYNCD_PG_MAJOR:-15}"
DEBEZIUM_VERSION="3.6.1.Final"
CONNECTOR_FILE="${SYNCD_CONNECTOR_FILE:-$REPO_DIR/connectors/erp-demo.json}"
PYTHON="${SYNCD_PYTHON:-$REPO_DIR/.venv/bin/python}"
# Serial GC suits the small heaps. Full tiered compilation (C2): under steady load Kafka
# Connect's JSON conversion costs far less CPU than with the quick C1-only JIT.
JVM_FLAGS="${SYNCD_JVM_FLAGS:--XX:+UseSerialGC}"

LOG_DIR="$STACK_DIR/logs"
TLS_DIR="$STACK_DIR/tls"
KAFKA_STARTED=0
RUN_DIR="$STACK_DIR/run"
JVM_DIR="$STACK_DIR/jvm"
PG_BIN=""

say() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

fail_with_log() {  # $1 = component, $2 = log file
    printf '[stack] ERROR: %s failed to start. Last lines of %s:\n' "$1" "$2" >&2
    tail -n 30 "$2" >&2 2>/dev/null || true
    printf '[stack] Read the whole log: %s\n' "$2" >&2
    exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() {  # $1 = pid file
    [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # $1 = seconds, $2 = description, rest = command
    local deadline=$((SECONDS + $1)) what="$2"; shift 2
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
    return 0
}

# --------------------------------------------------------------------------- TLS material
secure() { [[ "$SECURE" == "1" ]]; }

make_tls() {
    # A throwaway CA, one server certificate (127.0.0.1 and localhost) for the broker and
    # PostgreSQL, one client certificate, the SCRAM password. Made once, kept with the state.
    [[ -f "$TLS_DIR/.complete" ]] && return 0
    command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
    say "making a throwaway CA and certificates in $TLS_DIR"
    rm -rf "$TLS_DIR"; mkdir -p "$TLS_DIR"; chmod 755 "$TLS_DIR"
    local log="$LOG_DIR/tls.log"
    (
        cd "$TLS_DIR"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
            -subj "/CN=syncd local stack CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        sign() {  # $1 = name, $2 = subject, $3 = extensions
            openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
            printf '%s\n' "$3" "basicConstraints=critical,CA:FALSE" \
                "keyUsage=critical,digitalSignature,keyEncipherment" \
                "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >"$1.ext"
            openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
                -out "$1.pem" -extfile "$1.ext"
            rm -f "$1.csr" "$1.ext"
        }
        sign server "/CN=localhost" $'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth'
        sign client "/CN=syncd-client" "extendedKeyUsage=clientAuth"
        cat server.key server.pem >kafka-keystore.pem  # Kafka's PEM key store: key + chain
        openssl rand -hex 24 >scram-syncd.password
        chmod 600 ./*.key kafka-keystore.pem scram-syncd.password
        chmod 644 ca.pem server.pem client.pem
    ) >"$log" 2>&1 || fail_with_log "openssl (TLS material)" "$log"
    touch "$TLS_DIR/.complete"
}

# --------------------------------------------------------------------------- PostgreSQL
find_pg_bin() {
    local candidate
    for candidate in "/usr/lib/postgresql/$PG_MAJOR/bin" /usr/lib/postgresql/*/bin; do
        if [[ -x "$candidate/initdb" && -x "$candidate/postgres" ]]; then
            PG_BIN="$candidate"
            return 0
        fi
    done
    return 1
}

install_postgres() {
    find_pg_bin && return 0
    say "installing PostgreSQL from Debian packages (postgresql)..."
    export DEBIAN_FRONTEND=noninteractive
    # Debian's package may start its own cluster on 5432; we never touch it.
    apt-get update -qq >/dev/null
    apt-get install -y -qq postgresql postgresql-contrib >/dev/null
    find_pg_bin || die "PostgreSQL binaries not found after install (looked in /usr/lib/postgresql/*/bin)"
}

pg_dir() {
    # The server runs as the `postgres` system user (initdb/postgres refuse root), which needs to
    # reach its data directory. When the checkout sits somewhere that user cannot traverse (e.g.
    # under /root), the data lives in /var/tmp and $STACK_DIR/pg is a symlink to it.
    local dir="$STACK_DIR/pg"
    if [[ -L "$dir" || -d "$dir" ]]; then
        # Always the real path: the postgres user may not traverse the checkout to a symlink.
        readlink -f "$dir"; return
    fi
    mkdir -p "$STACK_DIR"
    local probe="$STACK_DIR/.pg-probe"
    mkdir -p "$probe"; chown postgres "$probe"
    if runuser -u postgres -- test -w "$probe"; then
        rmdir "$probe"; mkdir -p "$dir"
    else
        rmdir "$probe"
        local outside
        outside="/var/tmp/syncd-stack-$(printf '%s' "$STACK_DIR" | sha1sum | cut -c1-12)/pg"
        # Left by an earlier checkout at this path whose stack directory (Kafka's log, the
        # connectors' offsets) is gone: its ERP rows would be snapshotted into a fresh Kafka.
        if [[ -d "$outside" ]]; then
            local pid_file="$outside/data/postmaster.pid"
            if [[ -f "$pid_file" ]] && kill -0 "$(head -1 "$pid_file")" 2>/dev/null; then
                echo "[stack] $outside belongs to a PostgreSQL that is still running (pid $(head -1 "$pid_file")); stop it first" >&2
                exit 1
            fi
            rm -rf "$outside"
        fi
        mkdir -p "$outside"; chown postgres "$(dirname "$outside")" "$outside"
        ln -s "$outside" "$dir"
    fi
    readlink -f "$dir"
}

pg_running() {
    local dir; dir="$(pg_dir)"
    [[ -f "$dir/data/postmaster.pid" ]] && (cd / && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1)
}

# As `postgres`, from / (the checkout may not be readable by that user: feed files on stdin).
psql_erp() { (cd / && runuser -u postgres -- "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"); }

start_postgres() {
    install_postgres
    local dir; dir="$(pg_dir)"
    if pg_running; then
        say "PostgreSQL already running on 127.0.0.1:$PG_PORT"
    else
        if [[ ! -f "$dir/data/PG_VERSION" ]]; then
            say "creating a dedicated PostgreSQL cluster in $dir/data"
            mkdir -p "$dir/data" "$dir/run"
            chown -R postgres "$dir"
            chmod 700 "$dir/data"
            (cd / && runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust \
                -E UTF8 --locale=C.UTF-8) >"$LOG_DIR/initdb.log" 2>&1 || fail_with_log "initdb" "$LOG_DIR/initdb.log"
            cat >>"$dir/data/postgresql.conf" <<EOF
# --- syncd local stack ---
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/run'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
max_connections = 200
shared_buffers = 256MB
timezone = 'UTC'
log_timezone = 'UTC'
EOF
            cat >"$dir/data/pg_hba.conf" <<EOF
# syncd local development stack: trust on loopback only.
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
host    replication  all   127.0.0.1/32   trust
EOF
        fi
        port_open "$PG_PORT" && die "port $PG_PORT is taken by another process; set SYNCD_PG_PORT or stop it"
        mkdir -p "$dir/run"; chown postgres "$dir/run"
        # The server writes its log as `postgres`, next to its data; logs/ links to it.
        touch "$dir/postgres.log"; chown postgres "$dir/postgres.log"
        ln -sfn "$dir/postgres.log" "$LOG_DIR/postgres.log"
        say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
        (cd / && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null) \
            || fail_with_log "PostgreSQL" "$LOG_DIR/postgres.log"
    fi
    wait_for 30 "postgres" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || fail_with_log "PostgreSQL" "$LOG_DIR/postgres.log"
    if ! psql_erp -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'erp'" | grep -q 1; then
        psql_erp -d postgres -c "CREATE DATABASE erp"
    fi
    psql_erp -d erp <"$REPO_DIR/config/demo/erp.sql" >/dev/null 2>>"$LOG_DIR/erp-schema.log" \
        || fail_with_log "loading config/demo/erp.sql" "$LOG_DIR/erp-schema.log"
    if secure; then secure_postgres; fi
}

secure_postgres() {
    # ssl=on with the stack's server certificate; members of `syncd_tls` may log in only over
    # TLS and with a password (the plain `trust` lines stay for the tooling and the plain tests).
    local data; data="$(pg_dir)/data"
    cmp -s "$TLS_DIR/server.pem" "$data/server.crt" || install -o postgres -m 600 "$TLS_DIR/server.pem" "$data/server.crt"
    cmp -s "$TLS_DIR/server.key" "$data/server.key" || install -o postgres -m 600 "$TLS_DIR/server.key" "$data/server.key"
    cat >"$data/pg_hba.conf" <<EOF
# syncd local development stack: trust on loopback, except for the TLS roles (SYNCD_STACK_SECURE).
local     all          all                        trust
hostssl   all          +syncd_tls  127.0.0.1/32   scram-sha-256
host      all          +syncd_tls  127.0.0.1/32   reject
host      all          all         127.0.0.1/32   trust
host      replication  all         127.0.0.1/32   trust
EOF
    psql_erp -d postgres >/dev/null 2>>"$LOG_DIR/pg-tls.log" <<'EOF' || fail_with_log "PostgreSQL TLS settings" "$LOG_DIR/pg-tls.log"
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = 'server.crt';
ALTER SYSTEM SET ssl_key_file = 'server.key';
SELECT pg_reload_conf();
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'syncd_tls') THEN
        CREATE ROLE syncd_tls NOLOGIN;
    END IF;
END $$;
EOF
    ssl_on() { [[ "$(psql_erp -d postgres -tAc 'SHOW ssl')" == "on" ]]; }
    wait_for 15 "postgres ssl" ssl_on || fail_with_log "PostgreSQL ssl=on (see the server log)" "$LOG_DIR/postgres.log"
}

stop_postgres() {
    find_pg_bin || return 0
    [[ -e "$STACK_DIR/pg" ]] || return 0
    if pg_running; then
        say "stopping PostgreSQL"
        (cd / && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$(pg_dir)/data" -m fast -w -t 60 stop >/dev/null) || true
    fi
}

# --------------------------------------------------------------------------- JVM parts
prepare_jvm() {
    command -v java >/dev/null || die "java not found: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
    command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven)"
    local stamp="$JVM_DIR/.resolved-$(sha1sum "$REPO_DIR/dev/jvm/pom.xml" | cut -c1-12)-$DEBEZIUM_VERSION"
    if [[ -f "$stamp" ]]; then
        return 0
    fi
    say "resolving Kafka, Kafka Connect and Debezium $DEBEZIUM_VERSION from Maven Central (cached in ~/.m2)..."
    rm -rf "$JVM_DIR"; mkdir -p "$JVM_DIR/lib" "$JVM_DIR/plugins"
    mvn -q -B -f "$REPO_DIR/dev/jvm/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$JVM_DIR/lib" -DincludeScope=runtime >"$LOG_DIR/maven.log" 2>&1 \
        || fail_with_log "Maven (Kafka jars)" "$LOG_DIR/maven.log"
    mvn -q -B -f "$REPO_DIR/dev/jvm/pom.xml" dependency:copy \
        -Dartifact="io.debezium:debezium-connector-postgres:$DEBEZIUM_VERSION:tar.gz:plugin" \
        -DoutputDirectory="$JVM_DIR" >>"$LOG_DIR/maven.log" 2>&1 \
        || fail_with_log "Maven (Debezium plugin)" "$LOG_DIR/maven.log"
    tar -xzf "$JVM_DIR/debezium-connector-postgres-$DEBEZIUM_VERSION-plugin.tar.gz" -C "$JVM_DIR/plugins"
    rm -f "$JVM_DIR/debezium-connector-postgres-$DEBEZIUM_VERSION-plugin.tar.gz"
    touch "$stamp"
}

jvm_classpath() { printf '%s/lib/*' "$JVM_DIR"; }

render() {  # $1 = template, $2 = output
    local listeners="" protocols=""
    if secure; then
        listeners=",SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT,SSL://127.0.0.1:$KAFKA_MTLS_PORT"
        protocols=",SASL_SSL:SASL_SSL,SSL:SSL"
    fi
    sed -e "s#@STACK_DIR@#$STACK_DIR#g" -e "s#@KAFKA_PORT@#$KAFKA_PORT#g" \
        -e "s#@KAFKA_CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" -e "s#@CONNECT_PORT@#$CONNECT_PORT#g" \
        -e "s#@SECURE_LISTENERS@#$listeners#g" -e "s#@SECURE_PROTOCOLS@#$protocols#g" \
        "$1" >"$2"
    if secure && [[ "$1" == *server.properties.in ]]; then
        sed -e "s#@TLS_DIR@#$TLS_DIR#g" "$REPO_DIR/dev/conf/server-secure.properties.in" >>"$2"
    fi
}

start_java() {  # $1 = name, $2 = heap, rest = main class + args; pid in $RUN_DIR/$1.pid
    local name="$1" heap="$2"; shift 2
    # shellcheck disable=SC2086  # SYNCD_JVM_FLAGS is a list of flags
    nohup java "-Xmx$heap" $JVM_FLAGS -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$REPO_DIR/dev/conf/log4j2.properties" \
        -Dsyncd.log.file="$LOG_DIR/$name.log" \
        -cp "$(jvm_classpath)" "$@" >"$LOG_DIR/$name.out" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/$name.pid"
}

kafka_ready() {
    "$PYTHON" - "$KAFKA_PORT" <<'EOF' >/dev/null 2>&1
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"}).list_topics(timeout=3)
sys.exit(0 if md.brokers else 1)
EOF
}

create_scram_user() {
    # The SCRAM-SHA-512 credential of user `syncd` (the Admin API kafka-configs uses; an upsert,
    # so a changed password file or a cluster formatted before the secured mode both work).
    "$PYTHON" - "$KAFKA_PORT" "$TLS_DIR/scram-syncd.password" <<'EOF' >>"$LOG_DIR/kafka-scram.log" 2>&1
import sys
from confluent_kafka.admin import (
    AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion,
)
password = open(sys.argv[2], encoding="utf-8").read().strip().encode()
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"})
info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
upsert = UserScramCredentialUpsertion("syncd", info, password)
for future in admin.alter_user_scram_credentials([upsert]).values():
    future.result(30)
EOF
}

start_kafka() {
    if pid_alive "$RUN_DIR/kafka.pid"; then
        local wanted="$STACK_DIR/kafka/server.properties.next"
        render "$REPO_DIR/dev/conf/server.properties.in" "$wanted"
        if ! cmp -s "$wanted" "$STACK_DIR/kafka/server.properties"; then
            # Another mode (SYNCD_STACK_SECURE) than the running broker's: restart it.
            say "restarting Kafka (its listeners change)"
            stop_pidfile kafka
        fi
        rm -f "$wanted"
    fi
    if pid_alive "$RUN_DIR/kafka.pid"; then
        # Ours and running (maybe still starting): wait for it rather than start another.
        wait_for 120 "kafka" kafka_ready || fail_with_log "Kafka" "$LOG_DIR/kafka.log"
        say "Kafka already running on 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process; set SYNCD_KAFKA_PORT or stop it"
    mkdir -p "$STACK_DIR/kafka/data"
    render "$REPO_DIR/dev/conf/server.properties.in" "$STACK_DIR/kafka/server.properties"
    if [[ ! -f "$STACK_DIR/kafka/data/meta.properties" ]]; then
        local cluster_id
        cluster_id="$(java -cp "$(jvm_classpath)" -Dlog4j2.configurationFile="$REPO_DIR/dev/conf/log4j2.properties" \
            -Dsyncd.log.file="$LOG_DIR/kafka-format.log" kafka.tools.StorageTool random-uuid)"
        java -cp "$(jvm_classpath)" -Dlog4j2.configurationFile="$REPO_DIR/dev/conf/log4j2.properties" \
            -Dsyncd.log.file="$LOG_DIR/kafka-format.log" kafka.tools.StorageTool format --standalone \
            -t "$cluster_id" -c "$STACK_DIR/kafka/server.properties" >>"$LOG_DIR/kafka-format.log" 2>&1 \
            || fail_with_log "Kafka storage format" "$LOG_DIR/kafka-format.log"
    fi
    say "starting Kafka (KRaft) on 127.0.0.1:$KAFKA_PORT"
    KAFKA_STARTED=1
    start_java kafka 768m kafka.Kafka "$STACK_DIR/kafka/server.properties"
    wait_for 120 "kafka" kafka_ready || fail_with_log "Kafka" "$LOG_DIR/kafka.log"
}

secure_kafka() {
    wait_for 60 "SCRAM user" create_scram_user || fail_with_log "Kafka SCRAM user" "$LOG_DIR/kafka-scram.log"
    port_open "$KAFKA_SASL_PORT" || fail_with_log "Kafka SASL_SSL listener" "$LOG_DIR/kafka.log"
    port_open "$KAFKA_MTLS_PORT" || fail_with_log "Kafka mTLS listener" "$LOG_DIR/kafka.log"
}

connect_ready() {
    curl -fsS "http://127.0.0.1:$CONNECT_PORT/connector-plugins" 2>/dev/null | grep -q PostgresConnector
}

start_connect() {
    if pid_alive "$RUN_DIR/connect.pid" && ((KAFKA_STARTED)); then
        # The broker was (re)started under a running worker: its internal clients may be
        # wedged on timeouts, so restart the worker too (connectors resume from offsets).
        say "restarting Kafka Connect (the broker was restarted under it)"
        stop_pidfile connect
    fi
    if pid_alive "$RUN_DIR/connect.pid"; then
        wait_for 180 "connect" connect_ready || fail_with_log "Kafka Connect" "$LOG_DIR/connect.log"
        say "Kafka Connect already running on http://127.0.0.1:$CONNECT_PORT"
        return 0
    fi
    port_open "$CONNECT_PORT" && die "port $CONNECT_PORT is taken by another process; set SYNCD_CONNECT_PORT or stop it"
    mkdir -p "$STACK_DIR/connect"
    render "$REPO_DIR/dev/conf/connect-worker.properties.in" "$STACK_DIR/connect/worker.properties"
    say "starting Kafka Connect (distributed, Debezium $DEBEZIUM_VERSION) on http://127.0.0.1:$CONNECT_PORT"
    start_java connect 1g org.apache.kafka.connect.cli.ConnectDistributed "$STACK_DIR/connect/worker.properties"
    wait_for 180 "connect" connect_ready || fail_with_log "Kafka Connect" "$LOG_DIR/connect.log"
}

register_connector() {
    local name body
    name="$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$CONNECTOR_FILE")"
    # The committed connector file targets the default ports; follow SYNCD_PG_PORT if it differs.
    body="$("$PYTHON" -c '
import json, sys
config = json.load(open(sys.argv[1]))["config"]
config["database.port"] = sys.argv[2]
if sys.argv[3]:  # secured mode: read PostgreSQL over TLS, verifying its certificate and name
    config.update({"database.sslmode": "verify-full", "database.sslrootcert": sys.argv[3]})
print(json.dumps(config))' "$CONNECTOR_FILE" "$PG_PORT" "$(secure && printf '%s' "$TLS_DIR/ca.pem")")"
    put_config() {
        curl -fsS -X PUT -H 'Content-Type: application/json' --data "$body" \
            "http://127.0.0.1:$CONNECT_PORT/connectors/$name/config" >"$LOG_DIR/connector-register.json" 2>&1
    }
    # A worker that was just (re)started answers its REST API before its herder has read the
    # config topic: until then a PUT fails (500 "Request timed out", 503, 409 rebalancing).
    wait_for 180 "connector registration" put_config \
        || fail_with_log "connector registration ($name)" "$LOG_DIR/connector-register.json"
    connector_running() {
        curl -fsS "http://127.0.0.1:$CONNECT_PORT/connectors/$name/status" 2>/dev/null | "$PYTHON" -c '
import json, sys
try:
    s = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
ok = s["connector"]["state"] == "RUNNING" and s["tasks"] and all(t["state"] == "RUNNING" for t in s["tasks"])
failed = s["connector"]["state"] == "FAILED" or any(t["state"] == "FAILED" for t in s["tasks"])
sys.exit(0 if ok else (3 if failed else 1))'
        local rc=${PIPESTATUS[1]}
        if ((rc == 3)); then
            # e.g. the broker was still starting when the task first ran: restart it.
            curl -fsS -X POST "http://127.0.0.1:$CONNECT_PORT/connectors/$name/restart?includeTasks=true&onlyFailed=true" \
                >/dev/null 2>&1 || true
        fi
        return $rc
    }
    if ! wait_for 90 "connector" connector_running; then
        curl -sS "http://127.0.0.1:$CONNECT_PORT/connectors/$name/status" >>"$LOG_DIR/connector-register.json" 2>&1 || true
        fail_with_log "Debezium connector $name (status and trace in connector-register.json; worker log connect.log)" \
            "$LOG_DIR/connector-register.json"
    fi
    say "connector $name RUNNING"
}

probe_change_flow() {
    # Proves the whole path: a committed row change shows up as a Debezium event in Kafka.
    local started=$SECONDS
    "$PYTHON" "$REPO_DIR/dev/probe_flow.py" --pg-port "$PG_PORT" --kafka-port "$KAFKA_PORT" \
        >"$LOG_DIR/probe.log" 2>&1 || fail_with_log "change-event probe" "$LOG_DIR/probe.log"
    say "change events flow: $(tail -n 1 "$LOG_DIR/probe.log") (probe took $((SECONDS - started)) s)"
}

stop_pidfile() {  # $1 = name
    local file="$RUN_DIR/$1.pid"
    [[ -f "$file" ]] || return 0
    local pid; pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping $1 (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.3; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

cmd_up() {
    local t0=$SECONDS
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    [[ -x "$PYTHON" ]] || die "$PYTHON not found: run 'make install' first"
    if secure; then make_tls; fi
    start_postgres
    prepare_jvm
    start_kafka
    if secure; then secure_kafka; fi
    start_connect
    register_connector
    probe_change_flow
    say "stack up in $((SECONDS - t0)) s"
    cmd_status
}

cmd_down() {
    stop_pidfile connect
    stop_pidfile kafka
    stop_postgres
    # Processes started by `make demo` (sandbox, daemon) register their pid files here too.
    local f
    for f in "$RUN_DIR"/*.pid; do
        [[ -e "$f" ]] || continue
        stop_pidfile "$(basename "$f" .pid)"
    done
    say "stack stopped"
}

cmd_clean() {
    cmd_down
    if [[ -L "$STACK_DIR/pg" ]]; then
        local outside; outside="$(readlink -f "$STACK_DIR/pg")"
        rm -rf "$outside"
        rmdir "$(dirname "$outside")" 2>/dev/null || true
    fi
    # Keep the resolved jars (they are a cache, not state) unless asked.
    find "$STACK_DIR" -mindepth 1 -maxdepth 1 ! -name jvm -exec rm -rf {} + 2>/dev/null || true
    if [[ "${1:-}" == "--all" ]]; then rm -rf "$STACK_DIR"; fi
    say "stack state removed ($STACK_DIR)"
}

cmd_status() {
    local rc=0
    find_pg_bin || true
    if [[ -n "$PG_BIN" ]] && [[ -e "$STACK_DIR/pg" ]] && pg_running; then
        say "PostgreSQL     up    postgresql://postgres@127.0.0.1:$PG_PORT/erp   log: $LOG_DIR/postgres.log"
    else
        say "PostgreSQL     down"; rc=1
    fi
    if pid_alive "$RUN_DIR/kafka.pid"; then
        say "Kafka          up    127.0.0.1:$KAFKA_PORT (KRaft controller :$KAFKA_CONTROLLER_PORT)   log: $LOG_DIR/kafka.log"
        if grep -q '^listeners=.*SASL_SSL' "$STACK_DIR/kafka/server.properties" 2>/dev/null; then
            say "  secured      SASL_SSL 127.0.0.1:$KAFKA_SASL_PORT (SCRAM-SHA-512 user syncd), mTLS 127.0.0.1:$KAFKA_MTLS_PORT, CA $TLS_DIR/ca.pem"
        fi
    else
        say "Kafka          down"; rc=1
    fi
    if pid_alive "$RUN_DIR/connect.pid"; then
        say "Kafka Connect  up    http://127.0.0.1:$CONNECT_PORT   log: $LOG_DIR/connect.log"
    else
        say "Kafka Connect  down"; rc=1
    fi
    local f name
    for f in "$RUN_DIR"/*.pid; do
        [[ -e "$f" ]] || continue
        name="$(basename "$f" .pid)"
        case "$name" in kafka|connect) continue ;; esac
        if pid_alive "$f"; then say "$(printf '%-14s' "$name") up    pid $(cat "$f")   log: $LOG_DIR/$name.log"; fi
    done
    say "state: $STACK_DIR"
    return $rc
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    clean) shift; cmd_clean "$@" ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|clean [--all]|status" >&2; exit 2 ;;
esac
