#!/usr/bin/env bash
# Tryton, a packaged ERP on PostgreSQL, on the local stack: the first schema syncd serves that
# was not designed for syncd (docs/packaged-erp.md).
#
#   dev/tryton.sh install   the Tryton server, its accounting modules and proteus, into their own
#                           virtualenv (cached; a rerun with the same pins does nothing)
#   dev/tryton.sh setup     install + create the database `tryton` on the stack's PostgreSQL
#                           (trytond-admin --all) + a Chinese company through proteus
#                           (dev/tryton_setup.py); a second run keeps what is there
#   dev/tryton.sh reset     drop the database `tryton` (and its replication slot), then setup
#   dev/tryton.sh python    print the Tryton virtualenv's python (for scripts driving proteus)
#   dev/tryton.sh config    print the trytond.conf path
#
# The virtualenv never shares a package with syncd's .venv: Tryton pins its own versions of
# things syncd also uses, and syncd must never import Tryton. Default place:
# ~/.cache/syncd-tools/tryton-<series> (SYNCD_TRYTON_VENV overrides). PostgreSQL is the stack's
# (SYNCD_PG_PORT); run `dev/stack.sh up` first.
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
CONF="$STACK_DIR/tryton/trytond.conf"
BASE_PYTHON="${SYNCD_TRYTON_BASE_PYTHON:-python3}"

say() { printf '[tryton] %s\n' "$*"; }
die() { printf '[tryton] ERROR: %s\n' "$*" >&2; exit 1; }

stamp_value() { printf '%s\n' "$RECIPE" "${PACKAGES[@]}"; }

install() {
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

write_conf() {
    mkdir -p "$(dirname "$CONF")"
    cat >"$CONF" <<EOF
# Written by dev/tryton.sh: Tryton on the local stack's PostgreSQL (loopback, trust).
[database]
uri = postgresql://postgres@127.0.0.1:${PG_PORT}/
path = ${STACK_DIR}/tryton/attachments
EOF
}

psql_pg() { (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"); }

db_exists() {
    psql_pg -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '${DB_NAME}'" | grep -q 1
}

setup() {
    install
    write_conf
    (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null \
        || die "no PostgreSQL on 127.0.0.1:$PG_PORT: run dev/stack.sh up first"
    local started=$SECONDS
    if ! db_exists; then
        psql_pg -d postgres -c "CREATE DATABASE ${DB_NAME}"
    fi
    if [[ "$(psql_pg -d "$DB_NAME" -tAc "SELECT to_regclass('public.account_invoice') IS NOT NULL")" != "t" ]]; then
        say "creating Tryton's schema in database ${DB_NAME} (trytond-admin --all)..."
        mkdir -p "$STACK_DIR/logs"
        TRYTONPASSFILE=<(printf 'admin\n') "$VENV/bin/trytond-admin" -c "$CONF" -d "$DB_NAME" \
            --all --activate-dependencies -u account_invoice --email admin@example.invalid \
            >"$STACK_DIR/logs/tryton-admin.log" 2>&1 \
            || { tail -n 30 "$STACK_DIR/logs/tryton-admin.log" >&2; die "trytond-admin failed"; }
    fi
    say "setting up the company (dev/tryton_setup.py)..."
    "$VENV/bin/python" "$REPO_DIR/dev/tryton_setup.py" --config "$CONF" --database "$DB_NAME"
    say "ready in $((SECONDS - started)) s: database ${DB_NAME} on 127.0.0.1:${PG_PORT}"
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
    setup) setup ;;
    reset) reset ;;
    python) install >&2; printf '%s\n' "$VENV/bin/python" ;;
    config) write_conf; printf '%s\n' "$CONF" ;;
    *) die "usage: dev/tryton.sh install|setup|reset|python|config" ;;
esac
