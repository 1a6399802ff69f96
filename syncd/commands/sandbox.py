"""`syncd sandbox`: run the sandbox e-invoice platform (docs/sandbox.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

HELP = "run the sandbox e-invoice platform (signed, async, durable, faults on demand)"

# Documented development defaults (docs/sandbox.md, config/demo.yaml). Not secrets:
# they only ever open a local test platform.
DEV_APP_KEY: Final = "syncd-dev-key"
DEV_APP_SECRET: Final = "syncd-dev-secret-do-not-use-in-production"  # noqa: S105


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=18700, help="listen port (default 18700)")
    parser.add_argument(
        "--store",
        type=Path,
        required=True,
        help="SQLite file holding every request and invoice (created if absent)",
    )
    parser.add_argument(
        "--app-key", default=DEV_APP_KEY, help=f"the accepted app key (default {DEV_APP_KEY!r})"
    )
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--app-secret",
        default=None,
        help="the app secret (default: the documented development secret)",
    )
    secret.add_argument(
        "--app-secret-file",
        type=Path,
        default=None,
        help="read the app secret from this file (trailing newline ignored)",
    )
    parser.add_argument(
        "--issue-delay",
        type=float,
        default=1.0,
        help="seconds between acceptance and issuance (default 1.0)",
    )
    parser.add_argument(
        "--red-form-ttl",
        type=float,
        default=72 * 3600.0,
        help="seconds an unconfirmed red-letter form lives (default 72 h)",
    )
    parser.add_argument(
        "--red-within-days",
        type=int,
        default=None,
        metavar="DAYS",
        help="refuse red-letter forms later than DAYS after the blue invoice's issue date "
        "(default: no deadline)",
    )
    parser.add_argument(
        "--red-max-per-invoice",
        type=int,
        default=None,
        metavar="N",
        help="refuse more than N live red-letter forms against one blue invoice "
        "(default: no limit)",
    )
    parser.add_argument(
        "--dialect",
        choices=("idempotent", "refuse-duplicates", "nuonuo"),
        default="idempotent",
        help="how a repeated serial is answered (default idempotent); nuonuo: speak "
        "Nuonuo's open-platform protocol instead (docs/sandbox.md)",
    )
    parser.add_argument(
        "--token-limit",
        type=int,
        default=50,
        help="nuonuo: token fetches allowed per app per 30 days (default 50)",
    )
    parser.add_argument(
        "--token-ttl",
        type=float,
        default=86400.0,
        help="nuonuo: seconds an access token lives (default 86400)",
    )
    parser.add_argument(
        "--faults",
        default=None,
        metavar="JSON",
        help="initial fault settings, same JSON as POST /_sandbox/faults",
    )
    parser.add_argument(
        "--strict", action="store_true", help="disable the unsigned /_sandbox/* control plane"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed the fault dice")
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (chain); needs --tls-key",
    )
    parser.add_argument(
        "--tls-key", type=Path, default=None, metavar="FILE", help="PEM key of --tls-cert"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="a longer request body is refused with 413 (default 4 MiB)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=15.0,
        help="seconds a connection may take to deliver a request before it is closed "
        "(idle or slow clients; default 15)",
    )


#: What to run when the sandbox's server stack is not installed (the production image).
INSTALL_HINT: Final = (
    "syncd sandbox: the sandbox platform is not installed here ({missing} is missing); "
    "install it with: pip install 'syncd[sandbox]'"
)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 - checked here, used by _serve

        import syncd_sandbox.app  # noqa: F401 - its server stack (starlette) with it
    except ModuleNotFoundError as exc:
        print(INSTALL_HINT.format(missing=exc.name), file=sys.stderr)
        return 2
    from pydantic import ValidationError

    from syncd_sandbox.app import SandboxApp, SandboxConfig, parse_faults
    from syncd_sandbox.store import Store

    if args.app_secret_file is not None:
        try:
            secret = args.app_secret_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            print(f"syncd sandbox: cannot read --app-secret-file: {exc}", file=sys.stderr)
            return 2
        shown = f"(read from {args.app_secret_file})"
    elif args.app_secret is not None:
        secret, shown = args.app_secret, "(given on the command line)"
    else:
        secret, shown = DEV_APP_SECRET, DEV_APP_SECRET
    if not secret:
        print("syncd sandbox: the app secret is empty", file=sys.stderr)
        return 2
    tls_problem = _tls_problem(args.tls_cert, args.tls_key)
    if tls_problem:
        print(f"syncd sandbox: {tls_problem}", file=sys.stderr)
        return 2
    if args.max_body_bytes < 1024 or args.request_timeout <= 0:
        print(
            "syncd sandbox: --max-body-bytes must be >= 1024 and --request-timeout > 0",
            file=sys.stderr,
        )
        return 2
    try:
        faults = parse_faults(args.faults or "{}")
    except (ValueError, ValidationError) as exc:
        print(f"syncd sandbox: invalid --faults: {exc}", file=sys.stderr)
        return 2

    if (args.red_within_days is not None and args.red_within_days < 0) or (
        args.red_max_per_invoice is not None and args.red_max_per_invoice < 1
    ):
        print(
            "syncd sandbox: --red-within-days must be >= 0 and --red-max-per-invoice >= 1",
            file=sys.stderr,
        )
        return 2
    from syncd_sandbox.rules import RedFormLimits

    red_limits = RedFormLimits(args.red_within_days, args.red_max_per_invoice)

    if args.dialect == "nuonuo":
        from syncd_sandbox.nuonuo.app import NuonuoApp, NuonuoConfig
        from syncd_sandbox.nuonuo.store import NuonuoStore

        nuonuo_store = NuonuoStore(args.store)
        nuonuo = NuonuoApp(
            nuonuo_store,
            NuonuoConfig(
                credentials={args.app_key: secret},
                issue_delay=max(args.issue_delay, 0.0),
                red_form_ttl=args.red_form_ttl,
                token_ttl=args.token_ttl,
                token_limit=args.token_limit,
                strict=args.strict,
                faults=faults,
                seed=args.seed,
                red_limits=red_limits,
            ),
        )
        print(
            f"syncd sandbox (nuonuo) on http://{args.host}:{args.port}  store={args.store}\n"
            f"  app key:    {args.app_key}\n  app secret: {shown}\n"
            f"  issue_delay={args.issue_delay}s token_limit={args.token_limit}/30d "
            f"control_plane={'off' if args.strict else 'on'} faults={faults.model_dump_json()}",
            flush=True,
        )
        try:
            return _serve(nuonuo, args)
        finally:
            nuonuo_store.close()

    store = Store(args.store)
    config = SandboxConfig(
        credentials={args.app_key: secret},
        issue_delay=max(args.issue_delay, 0.0),
        red_form_ttl=args.red_form_ttl,
        dialect=args.dialect,
        strict=args.strict,
        faults=faults,
        seed=args.seed,
        max_body_bytes=args.max_body_bytes,
        red_limits=red_limits,
    )
    app = SandboxApp(store, config)
    scheme = "https" if args.tls_cert is not None else "http"
    print(
        f"syncd sandbox on {scheme}://{args.host}:{args.port}  store={args.store}\n"
        f"  app key:    {args.app_key}\n  app secret: {shown}\n"
        f"  dialect={args.dialect} issue_delay={config.issue_delay}s "
        f"control_plane={'off' if args.strict else 'on'} faults={faults.model_dump_json()}",
        flush=True,
    )
    try:
        return _serve(app, args)
    finally:
        store.close()


def _serve(app: Callable[..., Any], args: argparse.Namespace) -> int:
    import uvicorn

    from syncd_sandbox.app import quiet_deliberate_drops
    from syncd_sandbox.http_protocol import OneWriteHttpToolsProtocol

    quiet_deliberate_drops()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=False,
            # one socket write per reply, and a bound on slow or idle clients (its docstring)
            http=OneWriteHttpToolsProtocol.with_request_timeout(args.request_timeout),
            timeout_keep_alive=max(1, int(min(args.request_timeout, 5))),
            ssl_certfile=str(args.tls_cert) if args.tls_cert is not None else None,
            ssl_keyfile=str(args.tls_key) if args.tls_key is not None else None,
            lifespan="on",
            timeout_graceful_shutdown=2,
            proxy_headers=False,
            server_header=False,
        )
    )
    server.run()
    return 0


def _tls_problem(cert: Path | None, key: Path | None) -> str | None:
    """Why the TLS flags cannot work (checked before the server starts, one line)."""
    if (cert is None) != (key is None):
        return "--tls-cert and --tls-key go together"
    if cert is None or key is None:
        return None
    import ssl

    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            return f"{flag} {path}: not a readable file"
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        return f"--tls-cert/--tls-key: not a matching PEM certificate and key ({exc.reason})"
    return None
