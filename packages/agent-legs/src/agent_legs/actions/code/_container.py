"""What a sandbox container is: the engine connection, the container's containment, and its cleanup.

Each container runs the driver (``_sandbox/driver.py``) as PID 1. The driver is not baked into the
image: a one-line bootstrap (``BOOTSTRAP``) reads it from stdin when the container starts, so the
host and the kernel always speak the same protocol version (no rebuild after an upgrade) and any
image with python3 works.

Threat model: the code in the container is the attacker's (a fully prompt-injected model).

* **Escapes.** No network (``network_mode="none"``), a non-root user, a read-only root filesystem,
  a size-limited ``nosuid,nodev`` tmpfs ``/tmp``, all capabilities dropped, ``no-new-privileges``,
  pids/memory (swap = memory)/CPU limits, an empty environment (nothing of the host's: no variable,
  no secret), the workspace bind-mounted at ``/workspace`` (read-only when the policy says so).
  ``settings.code.runtime = "runsc"`` runs the container under gVisor (``check_runtime`` refuses a
  runtime the engine does not have); gVisor's own kernel lives in the container's cgroups, so the
  limits are raised by its measured overhead and the code keeps what the policy grants.
* **Denied paths** (``policy.files.deny``) are masked by the ``mounts`` the caller passes (``_fs``);
  set-id files the code makes are stripped on the host by the service (``_fs.strip_setid``).
* **Flooding.** The containers log nothing (log driver ``none``): a flood on the channel cannot fill
  the engine's disk; the channel's reads are bounded on the host (``_channel``).
* **Network.** ``policy.code.network = true`` keeps only loopback and bind-mounts one unix socket to
  the container's own ``EgressProxy`` (``SocketProxy``), which the driver exposes inside as the
  HTTP(S) proxy ``127.0.0.1:3128``; every destination passes the egress guard. A socket cannot be
  mounted from a remote engine (``local_engine``): there it is refused.
* **Dying with the host.** PID 1 watches the attached stdin and ends the container when it closes,
  which the engine does when the attach connection drops (the host closed the kernel, or died).
  Containers carry the owner's ``host:pid`` (``LABEL``): ``remove_orphans`` removes those of dead
  owners on this host, ``remove_instance`` whatever one service left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._egress_proxy import EgressProxy
from ..._errors import ActionError
from . import _reaper
from ._body import (
    BOOTSTRAP,
    CONNECT_S,
    DOCKER_TIMEOUT_S,
    EGRESS_PORT,
    EGRESS_SOCKET,
    HOST,
    LABEL,
    RUNSC_OVERHEAD_MB,
    RUNSC_TASKS_BASE,
    RUNSC_TASKS_PER_PROCESS,
    config,
)
from ._hosts import HOST_FIX, HostSpec, negotiate, open_client
from ._sandbox import driver_payload

if TYPE_CHECKING:
    from ..._secrets import Secrets

__all__ = [
    "BOOTSTRAP",
    "CLEANUP_S",
    "CONNECT_S",
    "DOCKER_TIMEOUT_S",
    "EGRESS_PORT",
    "EGRESS_SOCKET",
    "HOST",
    "LABEL",
    "RUNSC_HINT",
    "RUNSC_OVERHEAD_MB",
    "RUNSC_TASKS_BASE",
    "RUNSC_TASKS_PER_PROCESS",
    "UNAVAILABLE_HINT",
    "SocketProxy",
    "blocking",
    "check_runtime",
    "config",
    "connect",
    "create",
    "local_engine",
    "remove_instance",
    "remove_orphans",
    "short",
    "tls_reason",
]

RUNSC_HINT = (
    "As root: bash shared/sandbox/ensure-runsc.sh (installs runsc and registers it in "
    "/etc/docker/daemon.json with runtimeArgs ['--network=none', '--host-uds=open'], then reloads dockerd), "
    "or set settings.code.runtime = 'runc'; `agent-legs doctor` checks it."
)
UNAVAILABLE_HINT = (
    "Start the Docker engine (dockerd) or set settings.code.docker_host, then build the image with "
    "`agent-legs sandbox build`; `agent-legs doctor` checks both."
)

CLEANUP_S = 5.0  # after a failed call, how long it waits for the engine to remove the kernel's container


@dataclass
class SocketProxy(EgressProxy):
    """The egress proxy served on a unix socket: a networked sandbox's only way out."""

    path: str = ""

    async def start(self) -> SocketProxy:
        self._server = await asyncio.start_unix_server(self._client, path=self.path, limit=64 * 1024)
        os.chmod(self.path, 0o666)  # noqa: S103 (the sandbox user connects; the directory above is private)
        return self

    async def aclose(self) -> None:
        await super().aclose()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def local_engine(docker_host: str | None) -> bool:
    url = docker_host or os.environ.get("DOCKER_HOST") or "unix://"
    return url.startswith(("unix://", "npipe://"))


async def blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking Docker call in a thread; at interpreter exit (no more threads), inline."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except RuntimeError as exc:
        if "after shutdown" not in str(exc):
            raise
        return fn(*args, **kwargs)


def short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def connect(spec: HostSpec, image: str, secrets: Secrets, directory: str) -> Any:
    """A Docker client for ``spec`` that answered its ping and has ``image`` (blocking); ``unavailable``
    naming the engine otherwise."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ActionError("unavailable", f"the docker package is missing: {exc}", hint=UNAVAILABLE_HINT) from None
    where = f"{spec.name}, {spec.url}" if spec.listed and spec.name != spec.url else spec.name
    hint = HOST_FIX if spec.listed else UNAVAILABLE_HINT
    try:
        # a short timeout for the handshake: a listener that never answers fails this start in
        # CONNECT_S (no thread left waiting longer), then the usual timeout for real work
        client = open_client(spec, secrets, directory, CONNECT_S)
        negotiate(client)  # the ping: the engine answers, and says its API version
        client.api.timeout = DOCKER_TIMEOUT_S
        client.images.get(image)
    except ActionError:
        raise
    except docker.errors.ImageNotFound:
        raise ActionError(
            "unavailable",
            f"the sandbox image {image} is not built on the Docker engine ({where})",
            hint="Run `agent-legs sandbox build` (with DOCKER_HOST set to that engine for a remote one).",
        ) from None
    except Exception as exc:
        raise ActionError(
            "unavailable", f"cannot reach the Docker engine ({where}): {tls_reason(exc)}", retryable=True, hint=hint
        ) from None
    return client


def tls_reason(exc: BaseException) -> str:
    """The failure, with what a TLS refusal means said plainly."""
    text = short(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "the engine's certificate is not signed by tls_ca (or does not name the URL's host): " + text
    if any(
        s in text for s in ("certificate required", "bad certificate", "unknown ca", "CERTIFICATE_REQUIRED", "BAD_CERTIFICATE")
    ):
        return "the engine refused our client certificate (tls_cert/tls_key not signed by the CA it trusts): " + text
    return text


def check_runtime(client: Any, runtime: str, *, network: bool) -> None:
    """runsc must be registered with the engine (and let the guarded network's socket through)."""
    if runtime == "runc":
        return
    try:
        runtimes = client.info().get("Runtimes") or {}
    except Exception as exc:
        raise ActionError(
            "unavailable", f"cannot ask the Docker engine for its runtimes: {exc}", retryable=True, hint=UNAVAILABLE_HINT
        ) from None
    if runtime not in runtimes:
        raise ActionError(
            "unavailable",
            f"settings.code.runtime = {runtime!r}, but the Docker engine has "
            f"no such runtime (it has: {', '.join(sorted(runtimes)) or 'none'})",
            hint=RUNSC_HINT,
        )
    args = runtimes[runtime].get("runtimeArgs") or []
    if network and not any(a in ("--host-uds=open", "--host-uds=all") for a in args):
        raise ActionError(
            "unavailable",
            "policy.code.network = true under gVisor needs runsc registered with "
            "runtimeArgs '--host-uds=open' (the sandbox's only way out is a host unix socket, which "
            "gVisor refuses by default); refusing rather than starting a sandbox that cannot reach "
            "its proxy",
            hint=RUNSC_HINT,
        )


def create(client: Any, body: dict[str, Any]) -> tuple[Any, socket.socket]:
    """Create (``body``: ``config``'s) and start one container (blocking): (the container, its attach socket,
    non-blocking). The driver's source has been sent on the socket; the caller reads the driver's greeting."""
    created = client.api.create_container_from_config(body)
    container = client.containers.prepare_model({"Id": created["Id"]})  # (no inspect: the id is all we use)
    _reaper.track(container)  # ours until removed: the process's exit removes it if nothing else did
    try:
        raw = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        # the hijacked HTTP connection's socket (over TLS, docker-py hands the SSLSocket itself)
        sock: socket.socket = raw if isinstance(raw, ssl.SSLSocket) else raw._sock
        container.start()
        sock.sendall(driver_payload())
        sock.setblocking(False)
    except Exception:
        _reaper.remove(container)
        raise
    return container, sock


def remove_orphans(client: Any) -> None:
    """Containers left by a dead Agent Legs process on this host are removed (blocking)."""
    # sparse: no inspect per container, so one removed meanwhile (another Legs closing a session, in
    # this process or another) cannot fail our start with a 404; labels come with the list itself.
    for c in client.containers.list(all=True, sparse=True, filters={"label": LABEL}):
        owner = (c.attrs.get("Labels") or {}).get(f"{LABEL}.owner", "")
        host, _, pid = owner.rpartition(":")
        if host != HOST or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            alive = True  # the owner (this process included: another Legs in it) still runs
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            with contextlib.suppress(Exception):
                c.remove(force=True)


def remove_instance(client: Any, instance: str) -> None:
    """Every container one service (``instance``) made, whatever state it is in (blocking)."""
    for c in client.containers.list(all=True, sparse=True, filters={"label": f"{LABEL}.instance={instance}"}):
        _reaper.remove(c)
