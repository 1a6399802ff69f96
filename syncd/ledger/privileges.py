"""The database roles of syncd and exactly what each may do, derived from the config.

Least privilege is only real when PostgreSQL enforces it. The roles:

* **owner** (`syncd_owner`): owns the ledger schema and its tables; runs `syncd migrate`.
  Nothing else runs as it.
* **runtime** (`syncd_runtime`): the daemon. Reads the captured header and line tables,
  UPDATEs only the write-back columns, reads and writes the ledger (no DELETE, no
  TRUNCATE), only INSERTs into the audit trail, only reads the approvals. It owns
  nothing, so it can neither TRUNCATE nor ALTER (disable a trigger on) any table.
* people: **readonly** (`syncd status`, reading the audit trail), **operator**
  (`syncd retry`, which moves a ledger row and writes its ERP status back; `syncd dlq`
  needs Kafka only), **approver** (`syncd approve` / `syncd reject`: INSERT into
  `approvals`, the only role that may). Group roles without LOGIN: grant them to the
  people's own logins, so the audit names a person.

`runtime_grants` is the one definition of what the daemon needs; `syncd grants` prints
it as SQL, and `check-config --live` compares the connected role with it (`live_report`),
naming the config key behind each privilege.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, text

from syncd.config import SyncdConfig

#: Ledger tables and what the daemon may do to each.
RUNTIME_LEDGER: Final[dict[str, tuple[str, ...]]] = {
    "documents": ("SELECT", "INSERT", "UPDATE"),
    "offsets": ("SELECT", "INSERT", "UPDATE"),
    "partition_leases": ("SELECT", "INSERT", "UPDATE"),
    # append-only: the trail is evidence
    "audit": ("SELECT", "INSERT"),
    # the heads of the audit chains: each append moves one forward
    "audit_chains": ("SELECT", "UPDATE"),
    # written by `syncd audit prune` (the owner) only
    "audit_checkpoints": ("SELECT",),
    # the fleet's shared provider access token (refreshed under a row lock)
    "issuer_tokens": ("SELECT", "INSERT", "UPDATE"),
    # written by the approver role only
    "approvals": ("SELECT",),
    # buyer-raised red-letter forms: discovered by the daemon, decided by `syncd red-forms`
    "buyer_red_forms": ("SELECT", "INSERT", "UPDATE"),
    # `syncd backfill` runs with the daemon's role: it records intent as the daemon does
    "backfill_runs": ("SELECT", "INSERT", "UPDATE"),
    # `syncd reconcile` (the CronJob runs with the daemon's role) appends a run; the
    # daemon exports the newest one
    "reconcile_runs": ("SELECT", "INSERT"),
    # the archive of invoice files: queued, claimed and completed by the daemon
    "invoice_files": ("SELECT", "INSERT", "UPDATE"),
    "alembic_version": ("SELECT",),
}
#: Every table privilege PostgreSQL knows (for "excess" checks).
TABLE_PRIVILEGES: Final = (
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
)


@dataclass(frozen=True, slots=True)
class RoleNames:
    owner: str = "syncd_owner"
    runtime: str = "syncd_runtime"
    readonly: str = "syncd_readonly"
    operator: str = "syncd_operator"
    approver: str = "syncd_approver"


@dataclass(frozen=True, slots=True)
class Grant:
    """One privilege on one object, and the config key that makes it necessary."""

    privilege: str
    kind: str  # "SCHEMA" | "TABLE"
    schema: str
    name: str = ""  # table name (empty for a schema)
    columns: tuple[str, ...] = ()
    because: str = ""

    @property
    def target(self) -> str:
        return self.schema if self.kind == "SCHEMA" else f"{self.schema}.{self.name}"


@dataclass(slots=True)
class RoleGrants:
    role: str
    login: bool
    purpose: str
    grants: list[Grant] = field(default_factory=list)
    member_of: list[str] = field(default_factory=list)


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.partition(".")
    return schema, name


def erp_grants(config: SyncdConfig, *, reading: bool, writing: bool) -> list[Grant]:
    """ERP privileges: SELECT on captured and line tables (`reading`), column UPDATE of
    the write-back columns plus what its WHERE reads (`writing`)."""
    out: list[Grant] = []
    schemas: dict[str, str] = {}
    for doc in config.documents.values():
        key = f"documents.{doc.name}"
        if reading:
            read_tables = [
                (doc.table, f"{key}.table"),
                (doc.lines.table, f"{key}.lines.table"),
            ]
            for where, relations in (
                ("related", doc.related),
                ("lines.related", doc.lines.related),
            ):
                for rel_name, relation in relations.items():
                    because = f"{key}.{where}.{rel_name}"
                    read_tables.append((relation.table, because))
                    if relation.through is not None:
                        read_tables.append((relation.through.table, f"{because}.through"))
            if doc.returns is not None:
                read_tables.append((doc.returns.table, f"{key}.returns.table"))
            for table, because in read_tables:
                schema, name = _split(table)
                schemas.setdefault(schema, because)
                out.append(Grant("SELECT", "TABLE", schema, name, because=because))
        if writing:
            schema, name = _split(doc.write_back_table)
            schemas.setdefault(schema, f"{key}.write_back")
            for field_name, column in doc.write_back.columns.mapped().items():
                out.append(
                    Grant(
                        "UPDATE",
                        "TABLE",
                        schema,
                        name,
                        (column,),
                        because=f"{key}.write_back.columns.{field_name}",
                    )
                )
            if doc.write_back.upsert:
                out.append(
                    Grant("INSERT", "TABLE", schema, name, because=f"{key}.write_back.upsert")
                )
            if doc.returns is not None:
                r_schema, r_name = _split(doc.returns.table)
                schemas.setdefault(r_schema, f"{key}.returns")
                for field_name, column in doc.returns.write_back.model_dump().items():
                    if column:
                        out.append(
                            Grant(
                                "UPDATE",
                                "TABLE",
                                r_schema,
                                r_name,
                                (column,),
                                because=f"{key}.returns.write_back.{field_name}",
                            )
                        )
            if not reading or not doc.writes_back_to_source:
                # UPDATE ... WHERE key = ... AND col IS DISTINCT FROM ... reads these
                cols = tuple(
                    dict.fromkeys([*doc.write_back_keys, *doc.write_back.columns.mapped().values()])
                )
                out.append(
                    Grant("SELECT", "TABLE", schema, name, cols, because=f"{key}.write_back")
                )
    red_wb = config.red_forms.write_back
    if writing and red_wb is not None:
        # one row per buyer-raised form, upserted by its key (syncd.erp.redforms)
        schema, name = _split(red_wb.table)
        because = "red_forms.write_back"
        schemas.setdefault(schema, because)
        cols = (red_wb.key_column, *red_wb.columns.mapped().values())
        out.append(Grant("SELECT", "TABLE", schema, name, cols, because=because))
        out.append(Grant("INSERT", "TABLE", schema, name, because=because))
        out.append(Grant("UPDATE", "TABLE", schema, name, cols, because=because))
    usage = [Grant("USAGE", "SCHEMA", s, because=b) for s, b in schemas.items()]
    return usage + _dedupe(out)


def _dedupe(grants: Iterable[Grant]) -> list[Grant]:
    return list(dict.fromkeys(grants))


def ledger_grants(schema: str, privileges: dict[str, tuple[str, ...]]) -> list[Grant]:
    out = [Grant("USAGE", "SCHEMA", schema, because="database.schema_name")]
    for table, privs in privileges.items():
        out += [Grant(p, "TABLE", schema, table, because="database.schema_name") for p in privs]
    return out


def runtime_grants(config: SyncdConfig) -> list[Grant]:
    """Exactly what the daemon needs."""
    return erp_grants(config, reading=True, writing=True) + ledger_grants(
        config.database.schema_name, RUNTIME_LEDGER
    )


def readonly_ledger() -> dict[str, tuple[str, ...]]:
    return {table: ("SELECT",) for table in RUNTIME_LEDGER}


def plan(config: SyncdConfig, names: RoleNames, *, people: bool) -> list[RoleGrants]:
    """Every role with its grants (the people's roles with `people`)."""
    schema = config.database.schema_name
    roles = [
        RoleGrants(names.owner, True, "owns the ledger schema; runs `syncd migrate` only"),
        RoleGrants(names.runtime, True, "the daemon (`syncd run`)", runtime_grants(config)),
    ]
    if people:
        operator_ledger = readonly_ledger() | {
            "documents": ("SELECT", "UPDATE"),
            "audit": ("SELECT", "INSERT"),
            "audit_chains": ("SELECT", "UPDATE"),
            # `syncd red-forms confirm|reject` decides a buyer's form
            "buyer_red_forms": ("SELECT", "UPDATE"),
        }
        roles += [
            RoleGrants(
                names.readonly,
                False,
                "people: `syncd status`, reading the ledger and the audit trail",
                ledger_grants(schema, readonly_ledger()),
            ),
            RoleGrants(
                names.operator,
                False,
                "people: `syncd retry` (moves a parked document, writes its ERP status), "
                "`syncd red-forms confirm|reject`; `syncd dlq` needs Kafka only",
                erp_grants(config, reading=False, writing=True)
                + ledger_grants(schema, operator_ledger),
            ),
            RoleGrants(
                names.approver,
                False,
                "people: `syncd approve` / `syncd reject` (the only role that may decide)",
                ledger_grants(schema, readonly_ledger() | {"approvals": ("SELECT", "INSERT")}),
            ),
        ]
    return roles


# --------------------------------------------------------------------------- rendering


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _target_sql(g: Grant) -> str:
    if g.kind == "SCHEMA":
        return f"SCHEMA {_q(g.schema)}"
    return f"{_q(g.schema)}.{_q(g.name)}"


def grant_statements(role: str, grants: Sequence[Grant]) -> list[str]:
    """GRANT statements for `grants`, merged per object (column grants per privilege)."""
    by_object: dict[tuple[str, str, str], list[Grant]] = {}
    for g in grants:
        by_object.setdefault((g.kind, g.schema, g.name), []).append(g)
    out: list[str] = []
    for items in by_object.values():
        whole = list(dict.fromkeys(g.privilege for g in items if not g.columns))
        if whole:
            out.append(f"GRANT {', '.join(whole)} ON {_target_sql(items[0])} TO {_q(role)};")
        column_privs: dict[str, list[str]] = {}
        for g in items:
            if g.columns and g.privilege not in whole:
                column_privs.setdefault(g.privilege, [])
                column_privs[g.privilege] += [
                    c for c in g.columns if c not in column_privs[g.privilege]
                ]
        for priv, cols in column_privs.items():
            listed = ", ".join(_q(c) for c in cols)
            out.append(f"GRANT {priv} ({listed}) ON {_target_sql(items[0])} TO {_q(role)};")
    return out


def database_name(config: SyncdConfig) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(config.database.dsn_value()).database


def render_sql(config: SyncdConfig, names: RoleNames, *, people: bool, source: str) -> str:
    """The whole script: roles (idempotent), schema, grants. Run it as a DBA after
    `syncd migrate` (the ledger tables must exist), and again after an upgrade."""
    schema = config.database.schema_name
    db = database_name(config)
    roles = plan(config, names, people=people)
    lines = [
        f"-- syncd database roles for {source} (printed by `syncd grants`).",
        "-- Run as a DBA after `syncd migrate` has created the ledger tables, and again after",
        "-- every upgrade. Log-in credentials (password, certificate) are set by you.",
        "BEGIN;",
        "",
    ]
    for r in roles:
        attrs = "LOGIN" if r.login else "NOLOGIN"
        lines.append(f"-- {r.role}: {r.purpose}")
        lines.append(
            f"DO $$ BEGIN CREATE ROLE {_q(r.role)} {attrs}; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        )
    lines.append("")
    if db:
        logins = ", ".join(_q(r.role) for r in roles)
        lines.append(f"GRANT CONNECT ON DATABASE {_q(db)} TO {logins};")
    lines += [
        f"-- the ledger schema belongs to {names.owner}; nobody else may create objects in it",
        f"CREATE SCHEMA IF NOT EXISTS {_q(schema)} AUTHORIZATION {_q(names.owner)};",
        f"ALTER SCHEMA {_q(schema)} OWNER TO {_q(names.owner)};",
        f"REVOKE ALL ON SCHEMA {_q(schema)} FROM PUBLIC;",
        "",
    ]
    for r in roles:
        if not r.grants:
            continue
        lines.append(f"-- {r.role}")
        lines += grant_statements(r.role, r.grants)
        lines.append("")
    if people:
        lines += [
            "-- people log in as themselves and are made members, e.g.:",
            f"--   CREATE ROLE alice LOGIN; GRANT {_q(names.approver)} TO alice;",
            "",
        ]
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def render_json(config: SyncdConfig, names: RoleNames, *, people: bool) -> dict[str, Any]:
    return {
        "database": database_name(config),
        "schema": config.database.schema_name,
        "roles": [
            {
                "role": r.role,
                "login": r.login,
                "purpose": r.purpose,
                "grants": [
                    {
                        "privilege": g.privilege,
                        "on": g.kind.lower(),
                        "object": g.target,
                        "columns": list(g.columns),
                        "because": g.because,
                    }
                    for g in r.grants
                ],
                "sql": grant_statements(r.role, r.grants),
            }
            for r in plan(config, names, people=people)
        ],
    }


# --------------------------------------------------------------------------- live check


@dataclass(slots=True)
class PrivilegeReport:
    """What the connected role lacks (`missing`) and may do beyond `runtime_grants`
    (`excess`); each line starts with the config key behind it."""

    role: str = ""
    missing: list[str] = field(default_factory=list)
    excess: list[str] = field(default_factory=list)
    #: what could not be checked yet (the ledger before its first `syncd migrate`)
    unchecked: list[str] = field(default_factory=list)


def _oid(conn: Connection, schema: str, name: str) -> int | None:
    """The table's oid, from the catalog (readable without USAGE on its schema, where a
    lookup by name would fail), or None when it does not exist."""
    found = conn.execute(
        text(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = :n"
        ),
        {"s": schema, "n": name},
    ).scalar()
    return None if found is None else int(found)


def _has(conn: Connection, g: Grant) -> bool:
    if g.kind == "SCHEMA":
        sql = "SELECT has_schema_privilege(:s, :p)"
        return bool(conn.execute(text(sql), {"s": g.schema, "p": g.privilege}).scalar())
    oid = _oid(conn, g.schema, g.name)
    if oid is None:
        return False
    if g.columns:
        return all(
            conn.execute(
                text("SELECT has_column_privilege(CAST(:t AS oid), :c, :p)"),
                {"t": oid, "c": c, "p": g.privilege},
            ).scalar()
            for c in g.columns
        )
    sql = "SELECT has_table_privilege(CAST(:t AS oid), :p)"
    return bool(conn.execute(text(sql), {"t": oid, "p": g.privilege}).scalar())


def _schema_exists(conn: Connection, schema: str) -> bool:
    found = conn.execute(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
    ).scalar()
    return found is not None


def _exists(conn: Connection, schema: str, name: str) -> bool:
    return _oid(conn, schema, name) is not None


def live_report(conn: Connection, config: SyncdConfig) -> PrivilegeReport:
    """Compare the connected role (`current_user`) with what the daemon needs."""
    row = conn.execute(
        text(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
    ).one()
    role, superuser, bypassrls = str(row[0]), bool(row[1]), bool(row[2])
    report = PrivilegeReport(role=role)
    if superuser:
        report.excess.append(
            f"database.dsn: role {role} is a superuser: it can TRUNCATE the audit trail and "
            "change any ERP column; run syncd as the runtime role `syncd grants` prints"
        )
        return report
    if bypassrls:
        report.excess.append(f"database.dsn: role {role} bypasses row-level security")
    needed = runtime_grants(config)
    schema = config.database.schema_name
    ledger_missing = [t for t in RUNTIME_LEDGER if not _exists(conn, schema, t)]
    for g in needed:
        if g.kind == "TABLE" and not _exists(conn, g.schema, g.name):
            continue  # the schema check reports missing tables; the ledger: not migrated
        if g.kind == "SCHEMA" and not _schema_exists(conn, g.schema):
            continue  # likewise: has_schema_privilege() would fail on it
        if not _has(conn, g):
            cols = f" ({', '.join(g.columns)})" if g.columns else ""
            report.missing.append(
                f"{g.because}: role {role} lacks {g.privilege}{cols} on {g.target} "
                "(see `syncd grants`)"
            )
    if ledger_missing:
        # Normal before the first `syncd migrate` (or `migrate_on_start`): not an error.
        report.unchecked.append(
            f"database.schema_name: ledger tables {', '.join(ledger_missing)} not found in "
            f"{schema}: privileges on them not checked (run `syncd migrate` as the owner role)"
        )
    report.excess += _excess(conn, config, role, needed)
    return report


def _excess(conn: Connection, config: SyncdConfig, role: str, needed: list[Grant]) -> list[str]:
    out: list[str] = []
    schema = config.database.schema_name
    owner = conn.execute(
        text("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = :s"), {"s": schema}
    ).scalar()
    if (
        owner is not None
        and conn.execute(
            text("SELECT pg_has_role(current_user, :o, 'USAGE')"), {"o": owner}
        ).scalar()
    ):
        out.append(
            f"database.schema_name: role {role} owns the ledger schema {schema} (as {owner}): it "
            "can TRUNCATE the audit trail or disable its append-only trigger; run migrations as "
            "the owner role and the daemon as the runtime role"
        )
    elif (
        owner is not None
        and conn.execute(text("SELECT has_schema_privilege(:s, 'CREATE')"), {"s": schema}).scalar()
    ):
        out.append(f"database.schema_name: role {role} may CREATE objects in {schema}")
    whole = {(g.schema, g.name, g.privilege) for g in needed if g.kind == "TABLE" and not g.columns}
    for table in RUNTIME_LEDGER:
        if not _exists(conn, schema, table):
            continue
        extra = [
            p
            for p in TABLE_PRIVILEGES
            if (schema, table, p) not in whole and _has(conn, Grant(p, "TABLE", schema, table))
        ]
        if extra:
            out.append(f"database.schema_name: role {role} may {', '.join(extra)} {schema}.{table}")
    for doc in config.documents.values():
        key = f"documents.{doc.name}"
        tables = {doc.table: f"{key}.table", doc.lines.table: f"{key}.lines.table"}
        tables.setdefault(doc.write_back_table, f"{key}.write_back")
        for table, because in tables.items():
            s, n = _split(table)
            if not _exists(conn, s, n):
                continue
            extra = [
                p
                for p in TABLE_PRIVILEGES
                if p not in ("SELECT", "UPDATE") and _has(conn, Grant(p, "TABLE", s, n))
            ]
            if extra:
                out.append(f"{because}: role {role} may {', '.join(extra)} {table}")
            allowed = (
                set(doc.write_back.columns.mapped().values())
                if table == doc.write_back_table
                else set()
            )
            columns = [
                str(c)
                for (c,) in conn.execute(
                    text(
                        "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS oid) "
                        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
                    ),
                    {"t": _oid(conn, s, n)},
                )
            ]
            updatable = [
                c
                for c in columns
                if c not in allowed and _has(conn, Grant("UPDATE", "TABLE", s, n, (c,)))
            ]
            if updatable:
                where = f"{key}.write_back.columns" if table == doc.write_back_table else because
                out.append(
                    f"{where}: role {role} may UPDATE {table} columns that are not written "
                    f"back: {', '.join(updatable)}"
                )
    return list(dict.fromkeys(out))


__all__ = [
    "Grant",
    "PrivilegeReport",
    "RoleGrants",
    "RoleNames",
    "live_report",
    "plan",
    "render_json",
    "render_sql",
    "runtime_grants",
]
