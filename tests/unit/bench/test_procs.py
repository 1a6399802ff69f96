"""bench/procs.py: CPU of process trees and listening sockets, read from a fake /proc."""

from __future__ import annotations

import os
from pathlib import Path

from bench import procs


def _stat(pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    # fields 3.. of /proc/<pid>/stat; the name holds a space and a ')' like real ones can
    rest = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime), str(cutime), str(cstime)]
    return f"{pid} (odd) name) " + " ".join(rest + ["0"] * 10)


def _fake_proc(tmp_path: Path, rows: list[tuple[int, int, int, int, int, int]]) -> Path:
    for pid, ppid, ut, st, cut, cst in rows:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(_stat(pid, ppid, ut, st, cut, cst))
    (tmp_path / "self").mkdir()  # not a pid: skipped
    return tmp_path


def test_stat_parses_past_a_name_with_parentheses() -> None:
    stat = procs.Stat.parse(42, _stat(42, 7, 100, 20, 3, 4))
    assert (stat.pid, stat.ppid, stat.own, stat.children) == (42, 7, 120, 7)


def test_a_tree_counts_live_descendants_and_reaped_children(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path,
        [
            (10, 1, 100, 50, 30, 0),  # postmaster: its reaped backends used 30
            (11, 10, 7, 3, 0, 0),  # a backend
            (12, 11, 1, 1, 0, 0),  # a grandchild
            (20, 1, 1000, 0, 0, 0),  # unrelated
        ],
    )
    stats = procs.read_stats(proc)
    assert procs.tree_ticks(stats, 10) == 150 + 30 + 10 + 2
    assert procs.tree_ticks(stats, 10, tree=False) == 150
    assert procs.tree_ticks(stats, 99) == 0  # gone


def test_per_document_ms_is_the_difference_over_documents() -> None:
    out = procs.per_document_ms({"a": 1.0, "b": 2.0}, {"a": 1.5, "b": 2.0}, 100)
    assert out == {"a": 5.0, "b": 0.0}
    assert procs.per_document_ms({}, {"a": 1.0}, 0) == {"a": 1000.0}


def test_listening_inodes_reads_only_listeners_on_the_port(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue ...  uid  timeout inode\n"
    (tmp_path / "net" / "tcp").write_text(
        header
        + "   0: 0100007F:6B78 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 111 1\n"
        + "   1: 0100007F:6B78 0100007F:9C40 01 00000000:00000000 00:00000000 00000000 0 0 222 1\n"
        + "   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 333 1\n"
    )
    assert procs.listening_inodes(0x6B78, tmp_path) == {"111"}
    assert procs.listening_inodes(1, tmp_path) == set()


def test_stack_pids_prefers_live_pid_files(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "kafka.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "run" / "connect.pid").write_text("999999999\n")  # stale
    found = procs.stack_pids(tmp_path, {})
    assert found == {"kafka_broker": os.getpid()}
