#!/usr/bin/env bash
# Tryton, a packaged ERP on PostgreSQL, on the local stack: the first schema syncd serves that
# was not designed for syncd (docs/packaged-erp.md).
#
#   dev/tryton.sh install   the Tryton server, its accounting modules and proteus, into their own
#                           virtualenv (cached; a rerun with the same pins does nothing)
#   dev/tryton.sh prepare   install + the initialised database as a pg_dump file in the cache:
#                           built once (trytond-admin --all + a Chinese company through proteus,
#                           dev/tryton_setup.py) on a private, throwaway PostgreSQL cluster, so
#                           it needs no stack and nothing the tests do to the stack disturbs it
#   dev/tryton.sh setup     prepare + restore the database `tryton` on the stack's PostgreSQL
#                           from that file (seconds); a second run keeps what is there
#   dev/tryton.sh reset     drop the database `tryton` (and its replication slot), then setup
#   dev/tryton.sh python    print the Tryton virtualenv's python (for scripts driving proteus)
#   dev/tryton.sh config    print the trytond.conf path
#
# The virtualenv never shares a package with syncd's .venv: Tryton pins its own versions of
# things syncd also uses, and syncd must never import Tryton. Default place:
# ~/.cache/syncd-tools/tryton-<series> (SYNCD_TRYTON_VENV overrides). The database file:
# ~/.cache/syncd-tools/tryton-<series>-db/<key>.dump (SYNCD_TRYTON_DB_CACHE overrides), the key
# hashing the installed versions, the recipe, dev/tryton_setup.py, PostgreSQL's major version
# and the year (the fiscal year the setup creates). PostgreSQL is the stack's (SYNCD_PG_PORT);
# run `dev/stack.sh up` before setup.
set -Eeuo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${SYNCD_STACK_DIR:-$REPO_DIR/.stack}"
PG_PORT="${SYNCD_PG_PORT:-15432}"
DB_NAME="${SYNCD_TRYTON_DB:-tryton}"
SERIES="8.2"
# The server and the modules a Chinese company's sales invoicing needs; pip resolves the rest
# (country, currency, party, company, product, account, account_product) from these.
PACKAGES=(
    "trytond[postgresql]>=${SERIES},<8.3"
    "trytond-account-invoice>=${SERIES},<8.3"
    "proteus>=${SERIES},<8.3"
    # trytond 8 talks to PostgreSQL through psycopg 3; the binary wheel needs no compiler
    # or libpq headers.
    "psycopg[binary,pool]>=3.2"
)
# Bump when the recipe changes, so cached virtualenvs are rebuilt.
RECIPE="3"
VENV="${SYNCD_TRYTON_VENV:-${HOME}/.cache/syncd-tools/tryton-${SERIES}}"
DB_CACHE="${SYNCD_TRYTON_DB_CACHE:-${HOME}/.cache/syncd-tools/tryton-${SERIES}-db}"
CONF="$STACK_DIR/tryton/trytond.conf"
BASE_PYTHON="${SYNCD_TRYTON_BASE_PYTHON:-python3}"
PG_BIN=""

say() { printf '[tryton] %s\n' "$*"; }
die() { printf '[tryton] ERROR: %s\n' "$*" >&2; exit 1; }

stamp_value() { printf '%s\n' "$RECIPE" "${PACKAGES[@]}"; }

find_pg_bin() {
    local candidate
    for candidate in /usr/lib/postgresql/*/bin; do
        if [[ -x "$candidate/initdb" && -x "$candidate/pg_dump" ]]; then
            PG_BIN="$candidate"
            return 0
        fi
    done
    die "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin: run dev/stack.sh up once"
}

# One writer at a time for the shared caches (several checkouts share ~/.cache).
with_lock() {  # $1 = lock file, then the command
    local lock="$1"
    shift
    mkdir -p "$(dirname "$lock")"
    exec 9>"$lock"
    flock 9
    "$@"
    exec 9>&-
}

install_unlocked() {
    local stamp="$VENV/.syncd-stamp"
    if [[ -x "$VENV/bin/trytond-admin" && -f "$stamp" && "$(cat "$stamp")" == "$(stamp_value)" ]]; then
        return 0
    fi
    say "installing Tryton ${SERIES} into $VENV (first run only)..."
    local started=$SECONDS
    # An existing virtualenv is upgraded in place (pip keeps what already fits the pins).
    [[ -x "$VENV/bin/python" ]] || "$BASE_PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PACKAGES[@]}" \
        || die "pip could not install Tryton into $VENV"
    stamp_value >"$stamp"
    say "installed in $((SECONDS - started)) s"
}

install() { with_lock "$VENV.lock" install_unlocked; }

write_conf() {  # $1 = conf path, $2 = port, $3 = attachments dir
    mkdir -p "$(dirname "$1")"
    printf '%s\n' "# Written by dev/tryton.sh: Tryton on a local PostgreSQL (loopback, trust)." \
        "[database]" "uri = postgresql://postgres@127.0.0.1:${2}/" "path = ${3}" >"$1"
}

# The database file's name: everything the initialised database depends on.
dump_key() {
    find_pg_bin
    {
        stamp_value
        "$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | sort
        sha256sum <"$REPO_DIR/dev/tryton_setup.py"
        basename "$(dirname "$PG_BIN")" # PostgreSQL major version (pg_dump/pg_restore)
        date -u +%Y                     # the fiscal year dev/tryton_setup.py creates
    } | sha256sum | cut -c1-16
}

dump_file() { printf '%s/%s.dump\n' "$DB_CACHE" "$(dump_key)"; }

# Build the initialised database on a private cluster (fsync off: it is thrown away) and keep
# it as a custom-format pg_dump file. The stack is not involved: `make test` runs this in the
# background while its tests stop and restart the stack's PostgreSQL.
build_dump() {  # $1 = dump file
    local dump="$1" dir port log started=$SECONDS
    find_pg_bin
    dir="$(mktemp -d /var/tmp/syncd-tryton-build.XXXXXX)"
    chown postgres "$dir"
    port="$("$BASE_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    log="$dir/trytond-admin.log"
    # shellcheck disable=SC2064
    trap "(cd / && runuser -u postgres -- '$PG_BIN/pg_ctl' -D '$dir/data' -m immediate stop >/dev/null 2>&1); rm -rf '$dir'" EXIT
    trap 'exit 143' TERM INT HUP  # so that the EXIT trap stops the cluster when interrupted
    say "building the Tryton database on a private PostgreSQL (127.0.0.1:$port, first run only)..."
    (cd / && runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust \
        -E UTF8 --locale=C.UTF-8 >/dev/null) || die "initdb of the build cluster failed"
    (cd / && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/data/postgres.log" \
        -w -t 60 -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null) \
        || die "the build cluster did not start"
    local conf="$dir/trytond.conf"
    write_conf "$conf" "$port" "$dir/attachments"
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c "CREATE DATABASE ${DB_NAME}"
    say "creating Tryton's schema (trytond-admin --all)..."
    TRYTONPASSFILE=<(printf 'admin\n') "$VENV/bin/trytond-admin" -c "$conf" -d "$DB_NAME" \
        --all --activate-dependencies -u account_invoice --email admin@example.invalid \
        >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "trytond-admin failed"; }
    say "schema in $((SECONDS - started)) s; setting up the company (dev/tryton_setup.py)..."
    "$VENV/bin/python" "$REPO_DIR/dev/tryton_setup.py" --config "$conf" --database "$DB_NAME"
    mkdir -p "$DB_CACHE"
    "$PG_BIN/pg_dump" -h 127.0.0.1 -p "$port" -U postgres -Fc -f "$dump.tmp" "$DB_NAME" \
        || die "pg_dump of the build cluster failed"
    mv "$dump.tmp" "$dump"
    # Files of other versions, recipes or years are no use any more.
    find "$DB_CACHE" -name '*.dump' ! -path "$dump" -delete
    say "database built and cached in $((SECONDS - started)) s: $dump"
}

prepare_unlocked() {
    local dump
    dump="$(dump_file)"
    [[ -s "$dump" ]] || (build_dump "$dump")
}

prepare() {
    install
    with_lock "$DB_CACHE.lock" prepare_unlocked
}

psql_pg() { (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"); }

db_exists() {
    psql_pg -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '${DB_NAME}'" | grep -q 1
}

setup() {
    prepare
    find_pg_bin
    write_conf "$CONF" "$PG_PORT" "$STACK_DIR/tryton/attachments"
    (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null \
        || die "no PostgreSQL on 127.0.0.1:$PG_PORT: run dev/stack.sh up first"
    local started=$SECONDS ready
    if db_exists; then
        ready="$(psql_pg -d "$DB_NAME" -tAc "SELECT to_regclass('public.company_company') IS NOT NULL AND EXISTS (SELECT 1 FROM company_company)")"
        if [[ "$ready" == "t" ]]; then
            say "database ${DB_NAME} is there: kept as it is"
            return 0
        fi
        # a restore cut short, or a database from before the cache: start again
        psql_pg -d postgres -c "DROP DATABASE ${DB_NAME} WITH (FORCE)"
    fi
    local dump
    dump="$(dump_file)"
    psql_pg -d postgres -c "CREATE DATABASE ${DB_NAME}"
    "$PG_BIN/pg_restore" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB_NAME" --no-owner \
        --exit-on-error "$dump" || die "pg_restore of $dump into ${DB_NAME} failed"
    say "ready in $((SECONDS - started)) s: database ${DB_NAME} on 127.0.0.1:${PG_PORT} (from $dump)"
}

reset() {
    if db_exists; then
        psql_pg -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '${DB_NAME}' AND NOT active" >/dev/null
        psql_pg -d postgres -c "DROP DATABASE ${DB_NAME} WITH (FORCE)"
    fi
    setup
}

case "${1:-setup}" in
    install) install ;;
    prepare) prepare ;;
    setup) setup ;;
    reset) reset ;;
    python) install >&2; printf '%s\n' "$VENV/bin/python" ;;
    config) write_conf "$CONF" "$PG_PORT" "$STACK_DIR/tryton/attachments"; printf '%s\n' "$CONF" ;;
    *) die "usage: dev/tryton.sh install|prepare|setup|reset|python|config" ;;
esac
