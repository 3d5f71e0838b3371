"""Memory and CPU of the processes and containers an Agent Legs run involves (Linux /proc, cgroups)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from agent_legs_testing._procs import comm
from agent_legs_testing._procs import descendants as _descendants

_TICK = os.sysconf("SC_CLK_TCK")
DOCKER_DAEMONS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")


def descendants(root: int) -> list[int]:
    return sorted(_descendants(root))


def chromium_kind(pid: int) -> str:
    """What a Chromium process is: ``browser``, ``renderer``, ``gpu-process``, ``zygote``, or a utility's service
    (``NetworkService``, ``StorageService``...), from its command line (``--type=``, ``--utility-sub-type=``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return "gone"
    kind = "browser"
    for arg in argv:
        if arg.startswith("--type="):
            kind = arg.split("=", 1)[1]
        elif arg.startswith("--utility-sub-type="):
            return arg.split("=", 1)[1].rsplit(".", 1)[-1]
    return kind


def pids_named(names: tuple[str, ...]) -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and comm(int(e.name)) in names]


def pss_kb(pids: list[int]) -> int:
    """Proportional set size: shared pages (Chromium's renderers share a lot) counted once overall."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
    return total


def rss_kb(pid: int | None = None) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads) and of its children that ended and
    were waited for (Chromium's renderers of closed tabs, reaped by the zygote, still count)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / _TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICK, sum(values) / _TICK


def _cgroup_file(container_id: str, controller: str, name_v1: str, name_v2: str) -> Path | None:
    for p in (
        Path(f"/sys/fs/cgroup/{controller}/docker/{container_id}/{name_v1}"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/{name_v2}"),
        Path(f"/sys/fs/cgroup/docker/{container_id}/{name_v2}"),
    ):
        if p.exists():
            return p
    return None


def container_memory_kb(container_id: str) -> int | None:
    """cgroup memory use minus inactive page cache (what ``docker stats`` shows), from the cgroup files."""
    usage = _cgroup_file(container_id, "memory", "memory.usage_in_bytes", "memory.current")
    stat = _cgroup_file(container_id, "memory", "memory.stat", "memory.stat")
    if usage is None:
        return None
    try:
        used = int(usage.read_text())
        inactive = 0
        if stat is not None:
            for line in stat.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key in ("total_inactive_file", "inactive_file"):
                    inactive = int(value)
                    break
        return (used - inactive) // 1024
    except (OSError, ValueError):
        return None


def container_cpu_s(container_id: str) -> float | None:
    v1 = _cgroup_file(container_id, "cpuacct", "cpuacct.usage", "cpu.stat")
    if v1 is None:
        return None
    try:
        text = v1.read_text()
        if v1.name == "cpuacct.usage":
            return int(text) / 1e9
        for line in text.splitlines():
            if line.startswith("usage_usec"):
                return int(line.split()[1]) / 1e6
    except (OSError, ValueError):
        return None
    return None


def snapshot_cpu(groups: dict[str, list[int]], containers: list[str]) -> dict[str, dict[Any, float]]:
    out: dict[str, dict[Any, float]] = {name: {pid: cpu_s(pid) for pid in pids} for name, pids in groups.items()}
    out["sandbox containers"] = {cid: container_cpu_s(cid) or 0.0 for cid in containers}
    return out


def cpu_delta(before: dict[str, dict[Any, float]], after: dict[str, dict[Any, float]]) -> dict[str, float]:
    """CPU seconds per group between two snapshots (a process born in between counts whole)."""
    return {name: round(sum(v - before.get(name, {}).get(k, 0.0) for k, v in now.items()), 2) for name, now in after.items()}
