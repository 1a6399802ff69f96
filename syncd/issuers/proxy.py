"""Which HTTP proxy, if any, the issuer connection goes through.

Corporate egress often allows the platform only through a proxy. The rules are httpx's
`trust_env` ones (and curl's), so an operator's environment means the same to syncd as to
the tools they test it with:

* an explicit `issuer.proxy` wins over the environment (and over `NO_PROXY`);
* otherwise `HTTPS_PROXY` for an https:// platform, `HTTP_PROXY` for http://, then
  `ALL_PROXY`; the lower-case names win over the upper-case ones;
* `NO_PROXY` (comma-separated) bypasses the proxy for `*`, a host name and its
  subdomains (`example.com`, `.example.com`), an IP address or a CIDR network; an entry
  with a port bypasses only that port.

A proxy URL may carry credentials (`http://user:password@proxy:3128`): they are a secret.
`Proxy.display` is the only form of the URL that text may quote (userinfo masked); the
credentials only leave in the `Proxy-Authorization` header of the CONNECT request.

Pure: the environment comes in as a mapping.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from syncd.config.settings import check_proxy_url, mask_url_userinfo


@dataclass(frozen=True, slots=True)
class Proxy:
    """One parsed proxy: where to connect, what to authenticate with, how to name it."""

    host: str
    port: int
    display: str  # the URL with its userinfo masked: the only form text may quote
    authorization: str | None = field(default=None, repr=False)  # a Proxy-Authorization value

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """Raises ValueError (never quoting the credentials) for a URL syncd cannot use."""
        url = check_proxy_url(url.strip())
        parts = urlsplit(url)
        assert parts.hostname is not None  # checked above
        authorization = None
        if parts.username is not None or parts.password is not None:
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return cls(parts.hostname, parts.port or 80, mask_url_userinfo(url), authorization)


def _env(env: Mapping[str, str], name: str) -> str | None:
    """`name` from the environment, the lower-case spelling first; empty counts as unset."""
    for key in (name.lower(), name.upper()):
        value = env.get(key)
        if value and value.strip():
            return value.strip()
    return None


def bypassed(host: str, port: int, no_proxy: str | None) -> bool:
    """True when `NO_PROXY` says `host:port` is reached directly."""
    if not no_proxy:
        return False
    host = host.strip("[]").lower().rstrip(".")
    address = _address(host)
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        entry = entry.strip("[]").rstrip(".")
        if address is not None:  # an IP address matches itself or a network, never a suffix
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        domain = entry.lstrip("*").lstrip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host:port` -> (host, port); a bare IPv6 address or CIDR keeps its colons."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


def environment_proxy(
    scheme: str, host: str, port: int, env: Mapping[str, str]
) -> tuple[str, str] | None:
    """(variable, proxy URL) the environment names for `scheme://host:port`, or None
    (direct)."""
    for name in (f"{scheme}_proxy", "all_proxy"):
        for key in (name, name.upper()):
            url = (env.get(key) or "").strip()
            if url:
                return None if bypassed(host, port, _env(env, "no_proxy")) else (key, url)
    return None


def resolve_proxy(
    explicit: str | None, scheme: str, host: str, port: int, env: Mapping[str, str]
) -> Proxy | None:
    """The proxy for the platform at `scheme://host:port`: `explicit` (issuer.proxy) when
    set, else what the environment says. Raises ValueError naming where an unusable proxy
    URL came from."""
    source, url = (
        ("issuer.proxy", explicit)
        if explicit
        else (environment_proxy(scheme, host, port, env) or ("", ""))
    )
    if not url:
        return None
    try:
        return Proxy.parse(url)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


__all__ = [
    "Proxy",
    "bypassed",
    "environment_proxy",
    "resolve_proxy",
]
