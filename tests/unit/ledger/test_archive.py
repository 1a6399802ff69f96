"""The directory archive: a final name only ever holds a whole file; a failed download
leaves nothing behind; the same file is always written under the same name."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.ledger.archive import DirectoryArchive, TooLargeError, safe_name, store_in_memory

AT = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def pieces(*parts: bytes, fail_after: int | None = None) -> Iterator[bytes]:
    for i, part in enumerate(parts):
        if fail_after is not None and i == fail_after:
            raise ConnectionError("lost")
        yield part


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_store_renames_a_whole_file_into_place(tmp_path: Path) -> None:
    archive = DirectoryArchive(tmp_path)
    stored = archive.store("2631", "pdf", AT, pieces(b"%PDF-", b"body"), max_bytes=100)
    assert stored.location == "2026/11/2631.pdf"
    assert (tmp_path / stored.location).read_bytes() == b"%PDF-body"
    assert stored.sha256 == hashlib.sha256(b"%PDF-body").hexdigest() and stored.size == 9
    assert files(tmp_path) == ["2026/11/2631.pdf"]
    again = archive.store("2631", "pdf", AT, pieces(b"%PDF-body"), max_bytes=100)
    assert again == stored and files(tmp_path) == ["2026/11/2631.pdf"]


def test_a_broken_or_too_large_download_leaves_nothing(tmp_path: Path) -> None:
    archive = DirectoryArchive(tmp_path)
    with pytest.raises(ConnectionError):
        archive.store("2631", "pdf", AT, pieces(b"a", b"b", fail_after=1), max_bytes=100)
    with pytest.raises(TooLargeError):
        archive.store("2631", "xml", AT, pieces(b"x" * 60, b"x" * 60), max_bytes=100)
    assert files(tmp_path) == []
    with pytest.raises(TooLargeError):
        store_in_memory(pieces(b"x" * 101), max_bytes=100)


def test_names_stay_inside_the_archive(tmp_path: Path) -> None:
    assert safe_name("../../etc/passwd", "pdf") == "_.._etc_passwd.pdf"
    archive = DirectoryArchive(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        archive.read("../outside.pdf")


def test_sweep_removes_only_old_partial_files(tmp_path: Path) -> None:
    archive = DirectoryArchive(tmp_path)
    leftover = archive.partial("2631", "pdf")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    assert archive.sweep(3600) == 0 and leftover.exists()
    an_hour_ago = time.time() - 3601
    os.utime(leftover, (an_hour_ago, an_hour_ago))
    assert archive.sweep(3600) == 1 and not leftover.exists()
