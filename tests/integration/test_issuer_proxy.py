"""The issuer reaches the real sandbox through a real CONNECT proxy on 127.0.0.1.

syncd's own client (and the daemon) against the `syncd sandbox` subprocess, over plain
HTTP and over HTTPS (a TLS front with a throwaway CA), through `tests.connect_proxy`:
`issuer.proxy` with credentials, `HTTP_PROXY`/`HTTPS_PROXY` from the environment,
`NO_PROXY` bypassing it, and an unreachable proxy answered in one line that names the
proxy without its password.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.issuers.base import Issued, Processing, Retryable
from syncd.issuers.sandbox import SandboxIssuer
from tests import sandbox_samples as samples
from tests.connect_proxy import ConnectProxy, TlsFront
from tests.integration.daemon_harness import world
from tests.integration.sandbox_process import SandboxProcess, free_port, running_sandbox
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

USER, PASSWORD = "egress", "pr0xy-Pa55word"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    with running_sandbox(tmp_path_factory.mktemp("sandbox") / "store.db") as process:
        yield process


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy(credentials=f"{USER}:{PASSWORD}") as p:
        yield p


def _issue(client: SandboxIssuer, sandbox: SandboxProcess) -> str:
    doc = samples.invoice()
    first = client.issue(doc)
    assert isinstance(first, Processing), first
    assert isinstance(client.wait_issued(doc["serial"]), Issued)
    assert [i["serial"] for i in sandbox.issued() if i["serial"] == doc["serial"]]
    return str(doc["serial"])


def test_explicit_proxy_with_credentials_carries_every_call(
    sandbox: SandboxProcess, proxy: ConnectProxy
) -> None:
    with SandboxIssuer(sandbox.settings(proxy=proxy.url(f"{USER}:{PASSWORD}")), environ={}) as c:
        assert c.proxy is not None and c.proxy.display == proxy.url("***")
        assert PASSWORD not in repr(c)
        _issue(c, sandbox)
    target = f"127.0.0.1:{sandbox.port}"
    assert proxy.tunnels, "the proxy saw no request"
    assert {(t.target, t.credentials, t.status) for t in proxy.tunnels} == {
        (target, f"{USER}:{PASSWORD}", 200)
    }


def test_explicit_proxy_wins_over_the_environment(
    sandbox: SandboxProcess, proxy: ConnectProxy
) -> None:
    env = {"HTTP_PROXY": f"http://127.0.0.1:{free_port()}", "NO_PROXY": "127.0.0.1"}
    settings = sandbox.settings(proxy=proxy.url(f"{USER}:{PASSWORD}"))
    with SandboxIssuer(settings, environ=env) as c:
        _issue(c, sandbox)
    assert proxy.tunnels and all(t.status == 200 for t in proxy.tunnels)


def test_http_proxy_from_the_environment_and_no_proxy_bypassing_it(
    sandbox: SandboxProcess, proxy: ConnectProxy
) -> None:
    env = {"HTTP_PROXY": proxy.url(f"{USER}:{PASSWORD}")}
    with SandboxIssuer(sandbox.settings(), environ=env) as c:
        _issue(c, sandbox)
    through = len(proxy.tunnels)
    assert through >= 1 and proxy.tunnels[0].target == f"127.0.0.1:{sandbox.port}"

    for no_proxy in ("127.0.0.1", "127.0.0.0/8", f"127.0.0.1:{sandbox.port}", "*"):
        with SandboxIssuer(sandbox.settings(), environ={**env, "no_proxy": no_proxy}) as c:
            assert c.proxy is None
            _issue(c, sandbox)
    assert len(proxy.tunnels) == through, "NO_PROXY did not bypass the proxy"
    # HTTPS_PROXY is for https:// platforms only: an http:// one goes direct
    with SandboxIssuer(sandbox.settings(), environ={"HTTPS_PROXY": proxy.url()}) as c:
        assert c.proxy is None


def test_unreachable_proxy_is_one_line_naming_it_without_the_password(
    sandbox: SandboxProcess,
) -> None:
    before = len(sandbox.requests())
    port = free_port()  # nothing listens there
    settings = sandbox.settings(proxy=f"http://{USER}:{PASSWORD}@127.0.0.1:{port}")
    with SandboxIssuer(settings, environ={}) as c:
        result = c.issue(samples.invoice())
    assert isinstance(result, Retryable), result  # never reached the platform: safe to retry
    message = result.reason.message
    assert f"proxy http://***@127.0.0.1:{port} unreachable" in message, message
    assert "\n" not in message and PASSWORD not in message and USER not in message
    assert len(sandbox.requests()) == before


def test_proxy_refusing_the_credentials_is_a_connect_failure(
    sandbox: SandboxProcess, proxy: ConnectProxy
) -> None:
    settings = sandbox.settings(proxy=proxy.url(f"{USER}:wrong-password"))
    with SandboxIssuer(settings, environ={}) as c:
        result = c.issue(samples.invoice())
    assert isinstance(result, Retryable), result
    assert "refused CONNECT" in result.reason.message and "407" in result.reason.message
    assert "wrong-password" not in result.reason.message


# --------------------------------------------------------------------------- HTTPS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def https_sandbox(
    sandbox: SandboxProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """https://127.0.0.1:port in front of the sandbox, and the CA that signed it."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=syncd proxy test CA", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
             cwd=d)  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "server.pem", d / "server.key")
    front = TlsFront(sandbox.port, context).start()
    try:
        yield f"https://127.0.0.1:{front.port}", d / "ca.pem"
    finally:
        front.stop()


def test_https_platform_through_the_proxy_tunnel(
    sandbox: SandboxProcess, proxy: ConnectProxy, https_sandbox: tuple[str, Path]
) -> None:
    url, ca = https_sandbox
    env = {"HTTPS_PROXY": proxy.url(f"{USER}:{PASSWORD}"), "HTTP_PROXY": "http://127.0.0.1:1"}
    with SandboxIssuer(sandbox.settings(base_url=url, ca_file=ca), environ=env) as c:
        assert c.proxy is not None and c.proxy.display == proxy.url("***")
        _issue(c, sandbox)
    port = url.rsplit(":", 1)[1]
    assert proxy.tunnels and {t.target for t in proxy.tunnels} == {f"127.0.0.1:{port}"}
    with SandboxIssuer(
        sandbox.settings(base_url=url, ca_file=ca), environ={**env, "NO_PROXY": ".0.0.1"}
    ) as c:
        assert c.proxy is not None  # ".0.0.1" is no domain of the IP address 127.0.0.1
    with SandboxIssuer(
        sandbox.settings(base_url=url, ca_file=ca), environ={**env, "NO_PROXY": "127.0.0.1"}
    ) as c:
        assert c.proxy is None
        _issue(c, sandbox)


# --------------------------------------------------------------------------- the daemon


def test_daemon_issues_through_the_proxy_named_by_http_proxy(
    it_erp: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ConnectProxy(credentials=f"{USER}:{PASSWORD}") as proxy, world(it_erp, tmp_path) as w:
        daemon = w.daemon()
        with monkeypatch.context() as env:  # the daemon's environment only, not this test's
            env.setenv("HTTP_PROXY", proxy.url(f"{USER}:{PASSWORD}"))
            for name in ("NO_PROXY", "no_proxy", "http_proxy"):
                env.delenv(name, raising=False)
            daemon.start()
        daemon.wait_ready()
        ids = [w.create_order() for _ in range(3)]
        w.wait_issued(ids)
        w.verdict(ids)
        assert proxy.tunnels and {t.target for t in proxy.tunnels} == {
            f"127.0.0.1:{w.sandbox.port}"
        }
        assert all(t.credentials == f"{USER}:{PASSWORD}" for t in proxy.tunnels)
        assert daemon.terminate() == 0
        log = daemon.output()
        assert f"through proxy {proxy.url('***')}" in log
        assert PASSWORD not in log
