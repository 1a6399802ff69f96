"""Downloading an issued invoice's file (PDF, OFD, XML) from the link the platform gave.

Links carry a short-lived token (`?token=...`), so they are fetched fresh from the
platform right before a download and never logged or put into an error whole: errors
name the host and path only. The body is streamed in chunks to the caller (the archive
writes and hashes as it goes), so a large file never sits in memory twice.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx

from syncd.errors import FileArchiveError

__all__ = ["FileDownloadError", "download", "link_for_humans"]


class FileDownloadError(FileArchiveError):
    """The file could not be downloaded this time (HTTP error status, connection lost)."""


def link_for_humans(url: str) -> str:
    """Scheme, host and path of a file link: never its query (the token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"


@contextmanager
def download(
    url: str, *, timeout: float, ssl_context: ssl.SSLContext | None = None
) -> Iterator[Iterator[bytes]]:
    """The body of `url` as chunks; `FileDownloadError` for a non-200 answer, a broken
    connection (while connecting or while reading), or a download that takes longer than
    `timeout` seconds in all (so a claim on the file outlives every download)."""
    shown = link_for_humans(url)
    deadline = time.monotonic() + timeout
    verify: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
    try:
        with (
            httpx.Client(timeout=timeout, verify=verify, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise FileDownloadError(f"{shown} answered HTTP {response.status_code}")

            def chunks() -> Iterator[bytes]:
                try:
                    for chunk in response.iter_bytes():
                        if time.monotonic() > deadline:
                            raise FileDownloadError(f"{shown}: slower than {timeout:g} s")
                        yield chunk
                except httpx.HTTPError as exc:
                    raise FileDownloadError(f"{shown}: {type(exc).__name__}") from None

            yield chunks()
    except httpx.HTTPError as exc:
        raise FileDownloadError(f"{shown}: {type(exc).__name__}") from None
