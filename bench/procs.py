"""CPU time of the stack's processes, read from /proc, for a cost per document.

Wall-clock rates on a shared 2-core machine drift by up to 3x between runs; CPU seconds
spent per document by each process do not depend on who else shares the cores, so they
say where a document's cost goes and what the machine could reach at best. Each process
is measured as a tree (utime + stime of every live process under it, plus what its
reaped children used, cutime + cstime): PostgreSQL's work happens in its backends
(including the walsender that feeds Debezium), which come and go.

The stack's processes are found from `dev/stack.sh`'s pid files (`$SYNCD_STACK_DIR/run`,
PostgreSQL's `postmaster.pid`), else from the process listening on the component's port
(a stack started elsewhere, e.g. by CI, on the same host).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
#: the names of the measured processes, in the order the report shows them
STACK_NAMES = ("kafka_broker", "kafka_connect", "postgresql")
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


@dataclass(frozen=True, slots=True)
class Stat:
    """The fields of /proc/<pid>/stat this module needs (clock ticks)."""

    pid: int
    ppid: int
    own: int  # utime + stime
    children: int  # cutime + cstime: reaped children

    @classmethod
    def parse(cls, pid: int, text: str) -> Stat:
        # the command name (field 2) is in parentheses and may hold spaces or ')'
        rest = text.rsplit(")", 1)[1].split()
        # rest[0] is field 3 (state); utime is field 14, i.e. rest[11]
        return cls(
            pid=pid,
            ppid=int(rest[1]),
            own=int(rest[11]) + int(rest[12]),
            children=int(rest[13]) + int(rest[14]),
        )


def read_stats(proc: Path = PROC) -> dict[int, Stat]:
    """Every process visible now (processes that vanish while being read are skipped)."""
    stats: dict[int, Stat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = Stat.parse(int(entry.name), (entry / "stat").read_text())
        except (OSError, IndexError, ValueError):
            continue
    return stats


def tree_ticks(stats: Mapping[int, Stat], root: int, *, tree: bool = True) -> int:
    """CPU ticks of `root` (and, with `tree`, of all its live descendants and of the
    children they reaped). 0 when `root` is gone."""
    if root not in stats:
        return 0
    if not tree:
        return stats[root].own
    kids: dict[int, list[int]] = {}
    for s in stats.values():
        kids.setdefault(s.ppid, []).append(s.pid)
    total = 0
    todo = [root]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats[pid].own + stats[pid].children
        todo.extend(kids.get(pid, ()))
    return total


def cpu_seconds(processes: Mapping[str, tuple[int, bool]], proc: Path = PROC) -> dict[str, float]:
    """name -> CPU seconds so far, for name -> (pid, measure as a tree)."""
    stats = read_stats(proc)
    hz = os.sysconf("SC_CLK_TCK")
    return {name: tree_ticks(stats, pid, tree=tree) / hz for name, (pid, tree) in processes.items()}


def per_document_ms(
    before: Mapping[str, float], after: Mapping[str, float], documents: int
) -> dict[str, float]:
    """CPU milliseconds per document of each process between two readings."""
    n = max(1, documents)
    return {name: 1000 * (after[name] - before.get(name, 0.0)) / n for name in after}


# --------------------------------------------------------------------------- finding them


def _alive(pid: int) -> bool:
    return (PROC / str(pid)).is_dir()


def _pid_file(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return pid if _alive(pid) else None


def listening_inodes(port: int, proc: Path = PROC) -> set[str]:
    """Socket inodes listening on `port` (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == _LISTEN
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes


def listener_pid(port: int, proc: Path = PROC) -> int | None:
    """The lowest pid holding a socket that listens on `port` (a forking server's parent),
    or None (nothing listens, or its /proc/<pid>/fd is not readable)."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port, proc)}
    if not wanted:
        return None
    found: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    found.append(int(entry.name))
                    break
        except OSError:
            continue
    return min(found) if found else None


def stack_pids(stack_dir: Path, ports: Mapping[str, int]) -> dict[str, int]:
    """STACK_NAMES -> pid of each component found (missing ones are left out).

    `ports`: the component name -> its listening port, for the fallback."""
    files = {
        "kafka_broker": stack_dir / "run" / "kafka.pid",
        "kafka_connect": stack_dir / "run" / "connect.pid",
        "postgresql": stack_dir / "pg" / "data" / "postmaster.pid",
    }
    out: dict[str, int] = {}
    for name in STACK_NAMES:
        pid = _pid_file(files[name])
        if pid is None and name in ports:
            pid = listener_pid(ports[name])
        if pid is not None:
            out[name] = pid
    return out
