"""Where archived invoice files live: a directory (a mounted volume) or the ledger's database.

Invariant: an archive name never holds a partial file. A directory archive writes each
download to `.partial/<name>.part` (the same name for the same file, so a retry after
a crash overwrites the leftover instead of adding one), fsyncs it, renames it onto its
final name `<yyyy>/<mm>/<invoice number>.<format>` (atomic on one file system) and
fsyncs the directory; only then does the caller record the file DONE. A crash before
the rename leaves only a `.part` file, which the next attempt replaces and `sweep`
removes; a crash after it leaves a whole file that the next attempt rewrites with the
same bytes. The database archive keeps the bytes in `invoice_files.content`, written in
the same transaction that records the file DONE.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from syncd.errors import FileArchiveError

__all__ = ["DirectoryArchive", "Stored", "TooLargeError", "safe_name"]

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")
PARTIAL_DIR: Final = ".partial"


class TooLargeError(FileArchiveError, ValueError):
    """The file is larger than the configured limit."""


@dataclass(frozen=True, slots=True)
class Stored:
    sha256: str
    size: int
    location: str | None  # the path relative to the archive root; None: in the database
    content: bytes | None  # the bytes, for the database archive


def safe_name(invoice_no: str, fmt: str) -> str:
    """`<invoice number>.<format>` with anything but letters, digits, . _ - replaced."""
    name = _UNSAFE.sub("_", invoice_no).lstrip(".") or "_"
    return f"{name}.{fmt}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryArchive:
    """Files under `root`, one per (invoice number, format)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def relative(self, invoice_no: str, fmt: str, issued_at: datetime | None) -> str:
        when = (issued_at or datetime.now(UTC)).astimezone(UTC)
        return f"{when:%Y}/{when:%m}/{safe_name(invoice_no, fmt)}"

    def partial(self, invoice_no: str, fmt: str) -> Path:
        return self.root / PARTIAL_DIR / (safe_name(invoice_no, fmt) + ".part")

    def store(
        self,
        invoice_no: str,
        fmt: str,
        issued_at: datetime | None,
        chunks: Iterable[bytes],
        *,
        max_bytes: int,
    ) -> Stored:
        """Write `chunks` durably under the file's final name; the partial file is removed
        on any failure."""
        relative = self.relative(invoice_no, fmt, issued_at)
        final = self.root / relative
        tmp = self.partial(invoice_no, fmt)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb", buffering=0) as out:  # each chunk on disk as it comes
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLargeError(f"larger than {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(final.parent)
        return Stored(digest.hexdigest(), size, relative, None)

    def read(self, location: str) -> bytes:
        path = (self.root / location).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"location {location!r} is outside the archive")
        return path.read_bytes()

    def sweep(self, older_than_seconds: float) -> int:
        """Remove partial files older than this (left by a crashed download). Returns how
        many were removed."""
        folder = self.root / PARTIAL_DIR
        if not folder.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in folder.glob("*.part"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed


def store_in_memory(chunks: Iterable[bytes], *, max_bytes: int) -> Stored:
    """The database archive: the whole file, hashed, for `invoice_files.content`."""
    digest = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise TooLargeError(f"larger than {max_bytes} bytes")
        digest.update(chunk)
        parts.append(chunk)
    return Stored(digest.hexdigest(), size, None, b"".join(parts))
