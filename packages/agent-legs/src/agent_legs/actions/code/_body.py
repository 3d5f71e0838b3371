"""The engine's create body of one sandbox container (``config``) and the constants it names.

Standard library only, so that ``Legs()`` can build the body of its first container and send it
(``_early``) before anything heavy is imported: ``_container`` (the Docker SDK's side, the egress
proxy) re-exports every name here, and both paths send what ``config`` returns, so the first
container and every later one are the same.

Invariants: every containment option of ``_container``'s docstring is in the body (no network, a
non-root user, a read-only root, the ``/tmp`` tmpfs, all capabilities dropped, ``no-new-privileges``,
pids/memory/CPU limits, an empty environment, no log driver);
``test_the_create_body_is_what_docker_py_sends_for_the_same_options`` checks it field by field.
Threat model: as ``_container``'s (the code in the container is the attacker's).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._container import SocketProxy
    from ._policy import CodePolicy
    from ._settings import CodeSettings

__all__ = [
    "BOOTSTRAP",
    "CONNECT_S",
    "DOCKER_TIMEOUT_S",
    "EGRESS_PORT",
    "EGRESS_SOCKET",
    "HOST",
    "LABEL",
    "RUNSC_OVERHEAD_MB",
    "RUNSC_TASKS_BASE",
    "RUNSC_TASKS_PER_PROCESS",
    "config",
]

LABEL = "agent-legs.sandbox"
HOST = socket.gethostname()
# PID 1 of every sandbox: reads _sandbox.driver_payload from stdin and runs the driver compiled by the host
# when its own bytecode magic is the host's, else compiles the source (marshal is built in: no file can shadow it)
BOOTSTRAP = (
    "import sys, marshal; b = sys.stdin.buffer; m, n = b.readline().split(); c = b.read(int(n)); "
    "s = b.read(int(b.readline())); e = sys.modules.get('_frozen_importlib_external'); "
    "exec(marshal.loads(c) if m == getattr(e, 'MAGIC_NUMBER', b'').hex().encode() else compile(s, 'agent-legs-driver', 'exec'))"
)
EGRESS_SOCKET = "/run/agent-legs-egress.sock"  # inside the container
EGRESS_PORT = 3128  # the driver's forwarder, on the container's loopback
# gVisor's user-space kernel (the Sentry) runs in the container's memory cgroup: measured ~22 MB more than
# runc for an idle kernel with numpy and pandas loaded; the code keeps policy.code.memory_mb for itself.
RUNSC_OVERHEAD_MB = 64
# ...and counts as host tasks in its pids cgroup: measured ~40 for the Sentry and ~8 per process of the code
# (ptrace platform); the container's task limit is scaled so that the code keeps policy.code.pids_limit.
RUNSC_TASKS_BASE, RUNSC_TASKS_PER_PROCESS = 64, 8

CONNECT_S = 10.0  # the engine must answer its first ping within this (a silent listener otherwise holds us)
DOCKER_TIMEOUT_S = 30.0


def config(
    settings: CodeSettings,
    code: CodePolicy,
    *,
    workspace: str,
    read_only: bool,
    owner: tuple[int, int],
    mounts: list[dict[str, Any]],
    proxy: SocketProxy | None,
    instance: str,
) -> dict[str, Any]:
    """The engine's ``POST /containers/create`` body of one sandbox: every containment option of
    ``_container``'s docstring. The one definition: ``create`` (docker-py) and ``_early`` (the engine's socket)
    both send it, so the first container and every later one are the same."""
    uid, gid = owner
    runtime = settings.runtime
    overhead_mb = RUNSC_OVERHEAD_MB if runtime == "runsc" else 0  # gVisor's kernel lives in the same cgroup
    memory = (code.memory_mb + overhead_mb) * 1024 * 1024
    env: list[str] = []  # nothing of the host's: no variable, no secret
    binds = [f"{workspace}:/workspace:{'ro' if read_only else 'rw'}"]
    if proxy is not None:
        binds.append(f"{proxy.path}:{EGRESS_SOCKET}:rw")
        url = f"http://127.0.0.1:{EGRESS_PORT}"
        env = [
            f"AGENT_LEGS_EGRESS_SOCKET={EGRESS_SOCKET}",
            f"AGENT_LEGS_EGRESS_PORT={EGRESS_PORT}",
            *(f"{name}={url}" for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")),
        ]
    return {
        "Image": settings.image,  # any version: it holds no Agent Legs code
        "Cmd": ["python3", "-u", "-c", BOOTSTRAP],
        "User": f"{uid}:{gid}",
        "Hostname": "sandbox",
        "WorkingDir": "/workspace",
        "Env": env,
        "Labels": {LABEL: "1", f"{LABEL}.owner": f"{HOST}:{os.getpid()}", f"{LABEL}.instance": instance},
        # stdin attached and closed by the engine when the attach connection drops: PID 1 then ends the container
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "OpenStdin": True,
        "StdinOnce": True,
        "Tty": False,
        "NetworkDisabled": False,
        "Volumes": {"/workspace": {}} if proxy is None else {"/workspace": {}, EGRESS_SOCKET: {}},
        "HostConfig": {
            "NetworkMode": "none",
            "ReadonlyRootfs": True,
            "Tmpfs": {"/tmp": f"size={code.tmp_mb}m,mode=1777,nosuid,nodev"},  # noqa: S108 (the container's own tmpfs)
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "PidsLimit": code.pids_limit if runtime == "runc" else RUNSC_TASKS_BASE + code.pids_limit * RUNSC_TASKS_PER_PROCESS,
            "Memory": memory,
            "MemorySwap": memory,
            "NanoCpus": int(code.cpus * 1e9),
            "Binds": binds,
            "Mounts": mounts,
            "Runtime": runtime,
            "Ulimits": [],
            "LogConfig": {"Type": "none", "Config": {}},  # what the kernel writes never reaches the engine's disk
        },
    }
