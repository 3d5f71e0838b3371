"""code.run / code.reset: stateful code execution in Docker sandboxes that contain and stop.

One long-lived container per session runs the driver (``agent_legs/_sandbox/driver.py``) as PID 1;
the host talks to it over the container's attached stdin/stdout (length-prefixed JSON), so a warm
call costs a round trip, not a ``docker exec``. The driver is not baked into the image: a one-line
bootstrap reads it from stdin when the container starts, so the host and the kernel always speak
the same protocol version (no rebuild after an upgrade) and any image with python3 works. A pool
of pre-started containers makes a new session's first call fast. A timeout kills the container (the
work really stops) and the session's next call gets a fresh kernel.

Containment: no network, non-root user, read-only root filesystem, size-limited tmpfs ``/tmp``,
all capabilities dropped, ``no-new-privileges``, pids/memory (swap = memory)/CPU limits, an empty
environment, the workspace bind-mounted at ``/workspace`` (read-only when the policy says so), with
every path ``policy.files.deny`` matches masked, and no set-id bit left on the host after a call;
the user the sandbox runs as never takes the operator's files (ACL grants, no chown). See
``_code_fs``. ``settings.code.runtime = "runsc"`` runs the containers under gVisor.

``policy.code.network = true`` does not give the container a network: it keeps only loopback, and
gets one way out, a unix socket (bind-mounted) to its own ``EgressProxy``, which the driver exposes
inside the container as the HTTP(S) proxy ``127.0.0.1:3128``. Every destination passes the egress
guard (DNS is resolved and pinned by the proxy); code that ignores the proxy reaches nothing. This
needs a local engine (a socket cannot be mounted from a remote one): elsewhere it is refused.

The channel is untrusted: code in the kernel can write on it (its process holds the channel), so
every read is bounded (attach frames, a reply's announced length against a cap derived from
``policy.code.max_output_bytes``), each reply must echo its request's random id, every field of a
reply is type-checked and cut to the policy's caps before it reaches ``data``, and anything the kernel
wrote between calls marks it out of step. A kernel that breaks the protocol is killed and the
session's next call gets a fresh one (``data.new_kernel``). The containers log nothing (log driver
``none``): a flood on the channel cannot fill the engine's disk either.

Lifetime: a container ends with its host. The driver's PID 1 watches the attached stdin and ends the
container when it closes, which the engine does when our attach connection drops (the host closed
the kernel, or died); this covers idle, busy and pooled containers alike. ``timeout_s`` bounds the
whole call: waiting for the engine, starting a kernel and running the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import shutil
import socket
import struct
import tempfile
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..._context import ActionContext
from ..._egress import EgressGuard
from ..._egress_proxy import EgressProxy
from ..._errors import ActionError
from ..._models import ActionOutput, Artifact
from ..._policy import Policy
from ..._registry import action
from ..._sandbox import driver_source
from ..._service import Service
from . import _fs as _code_fs

log = logging.getLogger("agent_legs.code")

LABEL = "agent-legs.sandbox"
_HOST = socket.gethostname()
RUNSC_HINT = (
    "As root: bash shared/sandbox/ensure-runsc.sh (installs runsc and registers it in "
    "/etc/docker/daemon.json with runtimeArgs ['--network=none', '--host-uds=open'], then reloads dockerd), "
    "or set settings.code.runtime = 'runc'; `agent-legs doctor` checks it."
)
_UNAVAILABLE_HINT = (
    "Start the Docker engine (dockerd) or set settings.code.docker_host, then build the image with "
    "`agent-legs sandbox build`; `agent-legs doctor` checks both."
)


# PID 1 of every sandbox: reads the driver's source (a decimal length line, then the bytes) from stdin
BOOTSTRAP = "import sys; b = sys.stdin.buffer; exec(compile(b.read(int(b.readline())), 'agent-legs-driver', 'exec'))"
EGRESS_SOCKET = "/run/agent-legs-egress.sock"  # inside the container
EGRESS_PORT = 3128  # the driver's forwarder, on the container's loopback
# gVisor's user-space kernel (the Sentry) runs in the container's memory cgroup: measured ~22 MB more than
# runc for an idle kernel with numpy and pandas loaded; the code keeps policy.code.memory_mb for itself.
RUNSC_OVERHEAD_MB = 64
# ...and counts as host tasks in its pids cgroup: measured ~40 for the Sentry and ~8 per process of the code
# (ptrace platform); the container's task limit is scaled so that the code keeps policy.code.pids_limit.
RUNSC_TASKS_BASE, RUNSC_TASKS_PER_PROCESS = 64, 8
SETID_SWEEP_S = 2.0  # between calls, set-id bits are stripped this often while a session's kernel lives


@dataclass
class _SocketProxy(EgressProxy):
    """The egress proxy served on a unix socket: a networked sandbox's only way out."""

    path: str = ""

    async def start(self) -> _SocketProxy:
        self._server = await asyncio.start_unix_server(self._client, path=self.path, limit=64 * 1024)
        os.chmod(self.path, 0o666)  # noqa: S103 (the sandbox user connects; the directory above is private)
        return self

    async def aclose(self) -> None:
        await super().aclose()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _local_engine(docker_host: str | None) -> bool:
    url = docker_host or os.environ.get("DOCKER_HOST") or "unix://"
    return url.startswith(("unix://", "npipe://"))


class RunInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        description="Python code (a persistent notebook-like session: variables and imports survive "
        "between calls; the last expression's value is returned) or a bash script."
    )
    language: Literal["python", "bash"] = Field("python", description="'python' or 'bash' (runs in /workspace).")
    timeout_s: float | None = Field(
        None,
        gt=0,
        description="Time limit in seconds (capped by the policy). On timeout the kernel is killed and its variables are lost.",
    )


class ResetInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _timeout(policy: Policy, args: Any) -> float:
    limit = policy.code.timeout_s
    requested = getattr(args, "timeout_s", None)
    return min(requested, limit) if requested else limit


_FRAME_MAX = 1 << 20  # one attach frame; the engine sends at most 32 KiB
_HELLO_MAX = 64 * 1024
_CONNECT_S = 10.0  # the engine must answer its first ping within this (a silent listener otherwise holds us)
_DOCKER_TIMEOUT_S = 30.0
_CLEANUP_S = 5.0  # after a failed call, how long it waits for the engine to remove the kernel's container


def _reply_cap(max_output_bytes: int) -> int:
    """The largest reply an honest driver sends: stdout and stderr heads (<= 6 JSON bytes per byte),
    value and traceback (<= max_output_bytes characters, <= 12 JSON bytes each), up to 100 changed
    paths and figures, and a few numbers."""
    return 36 * max_output_bytes + (4 << 20)


class _ProtocolError(Exception):
    """The kernel broke the protocol (code wrote on its channel): it is replaced."""


@dataclass(eq=False)
class _Kernel:
    container: Any
    sock: socket.socket
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    buffer: bytearray = field(default_factory=bytearray)
    stderr_tail: bytearray = field(default_factory=bytearray)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dead: bool = False
    proxy: _SocketProxy | None = None
    masks: _code_fs.Masks = field(default_factory=_code_fs.Masks)  # denied paths hidden in this container

    async def _read_frame(self) -> None:
        """One frame of the attach stream (stdout and stderr multiplexed), its size checked."""
        loop = asyncio.get_running_loop()
        header = await _recv_exact(loop, self.sock, 8)
        stream, size = header[0], struct.unpack(">I", header[4:])[0]
        if stream not in (1, 2) or size > _FRAME_MAX:
            raise _ProtocolError(f"a malformed attach frame (stream {stream}, {size} bytes)")
        payload = await _recv_exact(loop, self.sock, size)
        if stream == 2:
            self.stderr_tail += payload
            del self.stderr_tail[:-4000]
        else:
            self.buffer += payload

    async def _recv_stdout(self, n: int) -> bytes:
        """``n`` bytes of the container's stdout (``n`` is checked by the caller: it bounds memory)."""
        frames = 0
        while len(self.buffer) < n:
            await self._read_frame()
            frames += 1
            if frames % 64 == 0:  # a stream of tiny frames never suspends: let the loop (and deadlines) run
                await asyncio.sleep(0)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_message(self, cap: int) -> dict[str, Any]:
        """One message; its announced length is checked against ``cap`` before anything is buffered."""
        (size,) = struct.unpack(">I", await self._recv_stdout(4))
        if size > cap:
            raise _ProtocolError(f"the kernel announced a {size}-byte message, over the {cap}-byte cap")
        raw = await self._recv_stdout(size)
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise _ProtocolError(f"the kernel sent a message that is not JSON ({type(exc).__name__})") from None
        if not isinstance(message, dict):
            raise _ProtocolError("the kernel sent a message that is not a JSON object")
        return message

    async def ensure_idle(self) -> None:
        """Before a request: nothing may be waiting on the channel (the kernel does not write
        between calls; bytes there mean code wrote on it, and the next reply would be out of step)."""
        while True:
            try:
                peek = self.sock.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                break
            if not peek:
                raise EOFError("sandbox connection closed")
            try:
                async with asyncio.timeout(2):
                    await self._read_frame()
            except TimeoutError:  # (an OSError: not to be taken for a closed connection)
                raise _ProtocolError("a partial frame waits on the channel between calls") from None
            if len(self.buffer) > 0:
                raise _ProtocolError(f"the kernel wrote {len(self.buffer)}+ bytes on its channel between calls")

    async def request(self, payload: dict[str, Any], cap: int) -> dict[str, Any]:
        """Send ``payload`` with a fresh id; the reply must echo it."""
        call_id = uuid.uuid4().hex
        data = json.dumps({**payload, "id": call_id}).encode()
        await asyncio.get_running_loop().sock_sendall(self.sock, struct.pack(">I", len(data)) + data)
        reply = await self.read_message(cap)
        if reply.get("id") != call_id:
            raise _ProtocolError("the kernel's reply does not answer this call (its id differs): the channel is out of step")
        if len(self.buffer) > 0:
            raise _ProtocolError("the kernel wrote more after its reply")
        return reply


async def _blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking Docker call in a thread; at interpreter exit (no more threads), inline."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except RuntimeError as exc:
        if "after shutdown" not in str(exc):
            raise
        return fn(*args, **kwargs)


def _hang_up(sock: socket.socket) -> None:
    """End the attach connection now: the engine closes the container's stdin (its PID 1 then ends
    the container) and stops writing to us. ``shutdown`` first: ``close`` alone leaves the connection
    open while the HTTP response still references the socket, and an engine blocked on a full
    connection cannot even remove the container."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


async def _recv_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise EOFError("sandbox connection closed")
        buf += chunk
    return bytes(buf)


class CodeService(Service):
    """Sandbox containers: a warm pool, one kernel per session, and their cleanup."""

    async def start(self) -> None:
        self._egress_dir: str | None = None
        if self.runtime.policy.code.network and not _local_engine(self.runtime.settings.code.docker_host):
            raise ActionError(
                "unavailable",
                "policy.code.network=true needs a local Docker engine: the sandbox's only way out is a unix socket "
                "to the egress guard's proxy, which cannot be mounted into a remote engine's containers; refusing "
                "rather than giving the sandbox unguarded network",
                hint="Use a local engine, or set policy.code.network = false.",
            )
        try:
            import docker
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ActionError("unavailable", f"the docker package is missing: {exc}", hint=_UNAVAILABLE_HINT) from None
        settings = self.runtime.settings.code
        self.instance = uuid.uuid4().hex[:12]
        where = settings.docker_host or os.environ.get("DOCKER_HOST") or "the local socket"
        try:
            # a short timeout for the handshake: a listener that never answers fails this start in
            # _CONNECT_S (no thread left waiting longer), then the usual timeout for real work
            self.client = await asyncio.to_thread(
                lambda: (
                    docker.DockerClient(base_url=settings.docker_host, timeout=_CONNECT_S)
                    if settings.docker_host
                    else docker.from_env(timeout=_CONNECT_S)
                )
            )
            await asyncio.to_thread(self.client.ping)
            self.client.api.timeout = _DOCKER_TIMEOUT_S
            await asyncio.to_thread(self.client.images.get, settings.image)
        except docker.errors.ImageNotFound:
            raise ActionError(
                "unavailable", f"the sandbox image {settings.image} is not built", hint="Run `agent-legs sandbox build`."
            ) from None
        except Exception as exc:
            raise ActionError(
                "unavailable", f"cannot reach the Docker engine ({where}): {_short(exc)}", retryable=True, hint=_UNAVAILABLE_HINT
            ) from None
        await asyncio.to_thread(self._runtime_check)
        self._owner = await asyncio.to_thread(  # may walk a large workspace
            _code_fs.prepare_workspace,
            str(self.runtime.workspace_path),
            settings.uid,
            read_only=self.runtime.policy.files.read_only,
            runtime=settings.runtime,
        )
        self._mask_sources = _code_fs.MaskSources()
        self._known_denied: set[tuple[int, int, int]] = set()
        if self.runtime.policy.code.network:
            # short path (unix sockets allow ~107 bytes), private to us; only the sockets are mounted
            self._egress_dir = tempfile.mkdtemp(prefix="agent-legs-egress-")
        self.kernels: dict[str, _Kernel] = {}
        self._cleanup: set[asyncio.Task[None]] = set()
        self._creating: set[asyncio.Future[_Kernel]] = set()  # containers being made (in threads)
        self._starting: dict[str, asyncio.Future[_Kernel]] = {}
        self.pool: list[_Kernel] = []
        self._pool_task: asyncio.Task[None] | None = None
        self._reaper = asyncio.create_task(self._reap(), context=contextvars.Context())
        self._sweeper = asyncio.create_task(self._sweep_setid(), context=contextvars.Context())
        await asyncio.to_thread(self._remove_orphans)
        self._fill_pool()

    # -- containers -------------------------------------------------------------------------------
    def _runtime_check(self) -> None:
        """runsc must be registered with the engine (and let the guarded network's socket through)."""
        settings = self.runtime.settings.code
        if settings.runtime == "runc":
            return
        try:
            runtimes = self.client.info().get("Runtimes") or {}
        except Exception as exc:
            raise ActionError(
                "unavailable", f"cannot ask the Docker engine for its runtimes: {exc}", retryable=True, hint=_UNAVAILABLE_HINT
            ) from None
        if settings.runtime not in runtimes:
            raise ActionError(
                "unavailable",
                f"settings.code.runtime = {settings.runtime!r}, but the Docker engine has "
                f"no such runtime (it has: {', '.join(sorted(runtimes)) or 'none'})",
                hint=RUNSC_HINT,
            )
        args = runtimes[settings.runtime].get("runtimeArgs") or []
        if self.runtime.policy.code.network and not any(a in ("--host-uds=open", "--host-uds=all") for a in args):
            raise ActionError(
                "unavailable",
                "policy.code.network = true under gVisor needs runsc registered with "
                "runtimeArgs '--host-uds=open' (the sandbox's only way out is a host unix socket, which "
                "gVisor refuses by default); refusing rather than starting a sandbox that cannot reach "
                "its proxy",
                hint=RUNSC_HINT,
            )

    def scan(self) -> _code_fs.Scan:
        """Denied paths to mask now (and set-id bits stripped): one walk of the workspace."""
        return _code_fs.scan(
            str(self.runtime.workspace_path), self.runtime.workspace, sandbox_uid=self._owner[0], known=self._known_denied
        )

    def strip_setid(self) -> list[str]:
        """After a call: set-id bits the sandbox's user left on workspace entries, removed."""
        return _code_fs.strip_setid(str(self.runtime.workspace_path), self.runtime.workspace, sandbox_uid=self._owner[0])

    async def _sweep_setid(self) -> None:
        """While kernels live, a thread the code left running could set a set-id bit between calls:
        strip them every SETID_SWEEP_S seconds too, not only after the next call."""
        while True:
            await asyncio.sleep(SETID_SWEEP_S)
            if self.kernels:
                try:
                    await asyncio.to_thread(self.strip_setid)
                except Exception as exc:  # never let the sweep die
                    log.warning("sandbox set-id sweep failed: %s", exc)

    async def after_call(self) -> list[str]:
        """Set-id bits stripped after a call; never raises (it runs while the call's own error propagates)."""
        try:
            return await _blocking(self.strip_setid)  # type: ignore[no-any-return]
        except Exception as exc:
            log.warning("stripping set-id bits after a call failed: %s", exc)
            return []

    async def masks_current(self, kernel: _Kernel) -> list[str]:
        """Denied paths that appeared since ``kernel`` started (it cannot hide them: replace it)."""
        now = (await asyncio.to_thread(self.scan)).masks
        return [] if kernel.masks.covers(now) else kernel.masks.new_paths(now)

    def _create(self, proxy: _SocketProxy | None) -> _Kernel:
        policy = self.runtime.policy
        code = policy.code
        mode = "ro" if policy.files.read_only else "rw"
        uid, gid = self._owner
        masks = self.scan().masks  # what policy.files.deny hides from this container, for its whole life
        runtime = self.runtime.settings.code.runtime
        overhead_mb = RUNSC_OVERHEAD_MB if runtime == "runsc" else 0  # gVisor's kernel lives in the same cgroup
        mounts = _code_fs.mounts(masks, self._mask_sources)
        volumes = {str(self.runtime.workspace_path): {"bind": "/workspace", "mode": mode}}
        environment: dict[str, str] = {}  # nothing of the host's: no variable, no secret
        if proxy is not None:
            volumes[proxy.path] = {"bind": EGRESS_SOCKET, "mode": "rw"}
            url = f"http://127.0.0.1:{EGRESS_PORT}"
            environment = {
                "AGENT_LEGS_EGRESS_SOCKET": EGRESS_SOCKET,
                "AGENT_LEGS_EGRESS_PORT": str(EGRESS_PORT),
                "HTTP_PROXY": url,
                "HTTPS_PROXY": url,
                "http_proxy": url,
                "https_proxy": url,
                "ALL_PROXY": url,
                "all_proxy": url,
            }
        container = self.client.containers.create(
            self.runtime.settings.code.image,  # any version: it holds no Agent Legs code
            command=["python3", "-u", "-c", BOOTSTRAP],
            user=f"{uid}:{gid}",
            stdin_open=True,
            tty=False,
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"size={code.tmp_mb}m,mode=1777,nosuid,nodev"},  # noqa: S108 (the container's own tmpfs)
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=code.pids_limit if runtime == "runc" else RUNSC_TASKS_BASE + code.pids_limit * RUNSC_TASKS_PER_PROCESS,
            mem_limit=f"{code.memory_mb + overhead_mb}m",
            memswap_limit=f"{code.memory_mb + overhead_mb}m",
            nano_cpus=int(code.cpus * 1e9),
            environment=environment,
            hostname="sandbox",
            working_dir="/workspace",
            volumes=volumes,
            mounts=mounts,
            runtime=runtime,
            labels={LABEL: "1", f"{LABEL}.owner": f"{_HOST}:{os.getpid()}", f"{LABEL}.instance": self.instance},
            ulimits=[],
            log_config={"type": "none"},  # what the kernel writes on its channel never reaches the engine's disk
        )
        try:
            raw = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            sock: socket.socket = raw._sock  # the hijacked HTTP connection's socket
            container.start()
            source = driver_source()
            sock.sendall(b"%d\n" % len(source) + source)
            sock.setblocking(False)
        except Exception:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise
        return _Kernel(container, sock, proxy=proxy, masks=masks)

    async def _start_proxy(self) -> _SocketProxy | None:
        if self._egress_dir is None:
            return None
        path = os.path.join(self._egress_dir, f"{uuid.uuid4().hex[:12]}.sock")
        guard: EgressGuard = self.runtime.egress
        return await _SocketProxy(guard, path=path).start()

    async def _new_kernel(self) -> _Kernel:
        with self.runtime.tracer.start_as_current_span("sandbox container start") as span:
            span.set_attribute("agent_legs.code.network", self._egress_dir is not None)
            proxy = await self._start_proxy()
            creating = asyncio.ensure_future(asyncio.to_thread(self._create, proxy))
            self._creating.add(creating)
            creating.add_done_callback(self._creating.discard)
            try:
                kernel = await asyncio.shield(creating)
            except asyncio.CancelledError:
                # the caller gave up (its deadline): the container still being made is removed once it exists
                creating.add_done_callback(lambda done: self._destroy_when_created(done, proxy))
                raise
            except Exception as exc:
                if proxy is not None:
                    await proxy.aclose()
                if isinstance(exc, ActionError):
                    raise
                raise ActionError(
                    "unavailable", f"cannot start a sandbox container: {_short(exc)}", retryable=True, hint=_UNAVAILABLE_HINT
                ) from None
            try:
                async with asyncio.timeout(30):
                    hello = await kernel.read_message(_HELLO_MAX)
            except (TimeoutError, EOFError, OSError, _ProtocolError) as exc:
                detail = kernel.stderr_tail.decode(errors="replace")[-500:]
                await self._destroy(kernel)
                raise ActionError(
                    "unavailable",
                    f"the sandbox did not start ({type(exc).__name__}): {detail}",
                    retryable=True,
                    hint=_UNAVAILABLE_HINT,
                ) from None
            except BaseException:
                await asyncio.shield(self._destroy(kernel))
                raise
            if not hello.get("ready"):
                await self._destroy(kernel)
                raise ActionError("unavailable", f"unexpected sandbox greeting {hello!r}")
            return kernel

    def _destroy_when_created(self, creating: asyncio.Future[_Kernel], proxy: _SocketProxy | None) -> None:
        if not creating.cancelled() and creating.exception() is None:
            self.destroy_later(creating.result())
        elif proxy is not None:
            self._track(proxy.aclose())

    def destroy_later(self, kernel: _Kernel) -> asyncio.Task[None]:
        """Kill ``kernel`` now (its socket closes: the driver's PID 1 ends the container) and remove the
        container in the background; ``aclose`` waits for these removals."""
        kernel.dead = True
        _hang_up(kernel.sock)
        return self._track(self._remove(kernel))

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, context=contextvars.Context())
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)
        return task

    def _fill_pool(self) -> None:
        wanted = self.runtime.settings.code.pool_size
        if len(self.pool) >= wanted or (self._pool_task is not None and not self._pool_task.done()):
            return

        async def fill() -> None:
            while len(self.pool) < wanted:
                try:
                    self.pool.append(await self._new_kernel())
                except ActionError as exc:
                    log.warning("sandbox pool: %s", exc.message)
                    return

        # a fresh context: refills are background work, not steps of the action that triggered them
        self._pool_task = asyncio.create_task(fill(), context=contextvars.Context())

    async def kernel_for(self, session: str) -> tuple[_Kernel, bool]:
        """The session's kernel (and whether it is new)."""
        while True:
            kernel = self.kernels.get(session)
            if kernel is not None:
                return kernel, False
            if self.pool:  # no await between the check and the claim: two first calls cannot both claim
                kernel = self.pool.pop(0)
                self.kernels[session] = kernel
                self._fill_pool()
                return kernel, True
            starting = self._starting.get(session)
            if starting is None:
                break
            try:  # a concurrent first call is starting this session's kernel: share it
                return await asyncio.shield(starting), False
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # the starter was cancelled, not us: look again (and start one if still needed)
        future: asyncio.Future[_Kernel] = asyncio.get_running_loop().create_future()
        self._starting[session] = future
        try:
            kernel = await self._new_kernel()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._starting.pop(session, None)
        self.kernels[session] = kernel
        future.set_result(kernel)
        self._fill_pool()
        return kernel, True

    async def _destroy(self, kernel: _Kernel) -> None:
        if kernel.dead:
            return
        kernel.dead = True
        _hang_up(kernel.sock)
        await self._remove(kernel)

    async def _remove(self, kernel: _Kernel) -> None:
        if kernel.proxy is not None:
            await kernel.proxy.aclose()
        try:
            await _blocking(kernel.container.remove, force=True)  # SIGKILL, then remove
        except Exception as exc:
            log.warning("removing sandbox container %s failed: %s", kernel.container.short_id, exc)

    async def drop(self, session: str) -> None:
        kernel = self.kernels.pop(session, None)
        if kernel is not None:
            await self._destroy(kernel)

    async def discard(self, session: str, kernel: _Kernel, wait_s: float | None = None) -> None:
        """Kill ``kernel``; unmap it from ``session`` if it is still that session's kernel. With
        ``wait_s``, wait at most that long for the container's removal (a slow engine does not hold
        the call past its deadline; the removal goes on and ``aclose`` waits for it)."""
        if self.kernels.get(session) is kernel:
            del self.kernels[session]
        if wait_s is None:
            await self._destroy(kernel)
        elif not kernel.dead:
            await asyncio.wait({self.destroy_later(kernel)}, timeout=wait_s)

    async def was_oom_killed(self, kernel: _Kernel) -> bool:
        try:
            await asyncio.wait_for(asyncio.to_thread(kernel.container.reload), _CLEANUP_S)
        except Exception:
            return False
        return bool(kernel.container.attrs.get("State", {}).get("OOMKilled"))

    def _remove_orphans(self) -> None:
        """Containers left by a dead Agent Legs process on this host are removed at start."""
        # sparse: no inspect per container, so one removed meanwhile (another Legs closing a session, in
        # this process or another) cannot fail our start with a 404; labels come with the list itself.
        for c in self.client.containers.list(all=True, sparse=True, filters={"label": LABEL}):
            owner = (c.attrs.get("Labels") or {}).get(f"{LABEL}.owner", "")
            host, _, pid = owner.rpartition(":")
            if host != _HOST or not pid.isdigit():
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

    async def _reap(self) -> None:
        ttl = self.runtime.settings.code.session_ttl_s
        while True:
            await asyncio.sleep(min(max(ttl / 4, 0.05), 30.0))
            cutoff = time.monotonic() - ttl
            for session, kernel in list(self.kernels.items()):
                if kernel.last_used < cutoff and not kernel.lock.locked():
                    await self.drop(session)

    async def close_session(self, session: str) -> None:
        await self.drop(session)

    async def aclose(self) -> None:
        self._reaper.cancel()
        self._sweeper.cancel()
        if self._pool_task is not None:
            self._pool_task.cancel()
            with contextlib.suppress(BaseException):
                await self._pool_task
        # a creation abandoned by its caller removes its container once made: wait for those too
        await asyncio.gather(*self._creating, return_exceptions=True)
        await asyncio.sleep(0)
        kernels = [*self.kernels.values(), *self.pool]
        self.kernels.clear()
        self.pool.clear()
        await asyncio.gather(*(self._destroy(k) for k in kernels), *self._cleanup, return_exceptions=True)
        with contextlib.suppress(Exception):
            await _blocking(self._remove_instance_leftovers)
        with contextlib.suppress(Exception):
            self.client.close()
        if self._egress_dir is not None:
            shutil.rmtree(self._egress_dir, ignore_errors=True)
        self._mask_sources.close()

    def _remove_instance_leftovers(self) -> None:
        for c in self.client.containers.list(all=True, sparse=True, filters={"label": f"{LABEL}.instance={self.instance}"}):
            with contextlib.suppress(Exception):
                c.remove(force=True)


@action(
    "code.run",
    description="""Run Python (default) or bash in this session's sandbox: a persistent kernel, like a
    notebook (variables and imports survive between calls). Returns stdout, stderr, the value of the
    last expression, and the traceback if the code raised. The workspace is at /workspace (bash runs
    there); files written there and matplotlib figures come back as artifacts. No network access
    unless the policy allows it (then only through the HTTP(S) proxy set in the environment).
    numpy, pandas, scipy and matplotlib are installed. Processes a call starts end with the call.""",
    timeout=lambda policy, args: _timeout(policy, args) + 15.0,  # room to kill and clean up
)
async def code_run(ctx: ActionContext, args: RunInput) -> ActionOutput:
    limit_s = _timeout(ctx.policy, args)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s  # the whole call: engine, kernel start, replacements, the code
    max_bytes = ctx.policy.code.max_output_bytes
    memory_mb = ctx.policy.code.memory_mb
    try:
        async with asyncio.timeout_at(deadline):
            svc = await ctx.service(CodeService)
    except TimeoutError:
        where = ctx.settings.code.docker_host or os.environ.get("DOCKER_HOST") or "the local socket"
        raise ActionError(
            "unavailable",
            f"the Docker engine ({where}) did not answer within this call's {limit_s:g} s timeout; nothing ran",
            retryable=True,
            hint=_UNAVAILABLE_HINT,
        ) from None
    appeared: list[str] = []  # denied paths the session's kernel could not hide: it was replaced
    kernel, fresh, replaced = await _claim(svc, ctx.session, deadline, limit_s, appeared)
    setid_removed: list[str] = []
    try:
        kernel.last_used = time.monotonic()
        with ctx.tracer.start_as_current_span("sandbox exec") as span:
            span.set_attribute("agent_legs.code.language", args.language)
            span.set_attribute("agent_legs.code.container", kernel.container.short_id)
            span.set_attribute("agent_legs.code.new_kernel", fresh)
            try:
                async with asyncio.timeout_at(deadline):
                    raw = await kernel.request(
                        {"code": args.code, "language": args.language, "max_output_bytes": max_bytes}, _reply_cap(max_bytes)
                    )
                reply = _clean_reply(raw, max_bytes)
            except TimeoutError:
                await svc.discard(ctx.session, kernel, _CLEANUP_S)
                raise ActionError(
                    "timeout",
                    f"the code ran until this call's {limit_s:g} s timeout and was killed; "
                    "it may have done part of its work (files it wrote may have changed), and this "
                    "session's variables and imports were lost (the next call starts a fresh kernel)",
                    retryable=False,
                    hint="Check what the code already did, then make it faster or split "
                    "the work into several calls (state persists between calls).",
                ) from None
            except asyncio.CancelledError:
                await asyncio.shield(svc.discard(ctx.session, kernel))  # the caller gave up: the work stops too
                raise
            except _ProtocolError as exc:
                await svc.discard(ctx.session, kernel, _CLEANUP_S)
                log.warning("sandbox %s broke the protocol: %s", kernel.container.short_id, exc)
                raise ActionError(
                    "failed",
                    f"the sandbox kernel broke its reply protocol ({exc}); code wrote on "
                    "the kernel's own channel. The kernel was killed: the code may have run in part "
                    "(check the workspace before running it again), this session's variables were "
                    "lost, and the next call starts a fresh kernel",
                    retryable=False,
                    hint="Print results to stdout; never write to the kernel's inherited file descriptors or /proc/1/fd.",
                ) from None
            except (EOFError, OSError):
                oom = await svc.was_oom_killed(kernel)
                await svc.discard(ctx.session, kernel, _CLEANUP_S)
                if oom:
                    raise ActionError(
                        "failed",
                        f"the code exceeded the memory limit of {memory_mb} MB "
                        "(policy.code.memory_mb) and the kernel was killed; the code may have run in "
                        "part (check the workspace before running it again) and its state was lost",
                        hint="Use less memory (process data in chunks).",
                    ) from None
                raise ActionError(
                    "failed",
                    "the sandbox kernel died during the call (its container stopped or was "
                    "killed); the code may have run in part (check the workspace before running it "
                    "again), its state was lost and the next call starts a fresh kernel",
                    retryable=False,
                ) from None
        kernel.last_used = time.monotonic()
    finally:
        kernel.lock.release()
        # no set-id file may reach the host (the bind mount's nosuid protects only the container)
        setid_removed = await asyncio.shield(svc.after_call())
    if "driver_error" in reply:
        await svc.discard(ctx.session, kernel, _CLEANUP_S)
        raise ActionError(
            "failed",
            f"the sandbox driver failed ({reply['driver_error']}); the code may have run in "
            "part (check the workspace before running it again); the kernel was replaced",
            retryable=False,
        )
    if kernel.proxy is not None:  # what the egress guard refused during this call
        reply["network_denied"] = [{"url": d.url, "rule": d.rule, "message": d.message} for d in kernel.proxy.take_denied()[:50]]
    # The streams and the value may be heads of longer text (the driver's cut): scrubbed here, before
    # anything else cuts them, so a secret straddling the driver's cut leaves no prefix behind.
    for key, cut in (
        ("stdout", int(reply.get("stdout_bytes") or 0) > max_bytes),
        ("stderr", int(reply.get("stderr_bytes") or 0) > max_bytes),
        ("value", bool(reply.get("value_truncated"))),
    ):
        if isinstance(reply.get(key), str):
            reply[key] = ctx.redactor.text(reply[key], cut=cut)
    artifacts = _artifacts(ctx, reply)
    reply["denied_appeared"], reply["setid_removed"] = appeared[:50], setid_removed[:50]
    output = _render(reply, args.language, max_bytes, artifacts, fresh)
    if replaced:
        output = f"[{replaced}]\n{output}"
    data: dict[str, Any] = {k: reply.get(k) for k in ("stdout", "stderr", "value", "error", "exit_code", "duration_ms")}
    for stream in ("stdout", "stderr"):  # the full size, and whether the text above is only its head
        size = reply[f"{stream}_bytes"]
        data[f"{stream}_bytes"] = size
        data[f"{stream}_truncated"] = size > max_bytes
    data["value_truncated"] = reply["value_truncated"]
    data["figures"] = reply["figures"]
    data["killed_processes"] = reply["killed_processes"]
    if "network_denied" in reply:
        data["network_denied"] = reply["network_denied"]
    data["new_kernel"] = fresh
    if replaced:
        data["kernel_replaced"] = replaced
    if appeared:  # why this call has a new kernel: paths to hide appeared since the old one started
        data["denied_paths_appeared"] = appeared[:50]
    data["setid_removed"] = setid_removed[:50]
    if reply["oom_killed"]:
        # a child process (not the kernel) hit the limit: the kernel lives on, but the work did not finish
        raise ActionError(
            "failed",
            f"a process was killed for exceeding the memory limit of {memory_mb} MB "
            "(policy.code.memory_mb); the session's kernel and variables are kept\n" + output[:2000],
            hint="Use less memory (process data in chunks).",
            data=data,
        )
    return ActionOutput(output=output, data=data, artifacts=artifacts)


async def _claim(
    svc: CodeService, session: str, deadline: float, limit_s: float, appeared: list[str]
) -> tuple[_Kernel, bool, str]:
    """The session's kernel, locked for this call: (kernel, fresh, why an earlier one was replaced).

    A kernel found dead or out of step before anything is sent to it is replaced here (nothing of
    this call ran yet), and so is one whose masks cannot hide denied paths that appeared since it
    started (``appeared`` collects them); starting and waiting count against the call's deadline."""
    replaced = ""
    mask_replacements = 0
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                kernel, fresh = await svc.kernel_for(session)
                await kernel.lock.acquire()
                try:
                    if not kernel.dead:
                        await kernel.ensure_idle()
                        new_denied = await svc.masks_current(kernel)
                        if not new_denied:
                            return kernel, fresh or bool(replaced) or bool(appeared), replaced
                        # its masks were fixed when it started: a new kernel hides them all
                        appeared[:] = sorted({*appeared, *new_denied})
                        mask_replacements += 1
                        if mask_replacements > 5:
                            raise ActionError(
                                "failed",
                                "denied paths keep appearing in the workspace while the sandbox starts "
                                "(policy.files.deny); the code was not run",
                                retryable=True,
                                rule="policy.files.deny",
                            )
                        svc.destroy_later(kernel)
                        if svc.kernels.get(session) is kernel:
                            del svc.kernels[session]
                except (EOFError, OSError, _ProtocolError) as exc:
                    replaced = (
                        "the session's kernel had stopped since the last call (its state was lost); a fresh one was started"
                        if not isinstance(exc, _ProtocolError)
                        else f"the session's kernel was out of step ({exc}) and was replaced; its state was lost"
                    )
                    svc.destroy_later(kernel)
                    if svc.kernels.get(session) is kernel:
                        del svc.kernels[session]
                except BaseException:
                    kernel.lock.release()
                    raise
                kernel.lock.release()  # killed (timeout, reset) while this call waited for it: take a fresh one
    except TimeoutError:
        raise ActionError(
            "timeout",
            f"no sandbox kernel was ready within this call's {limit_s:g} s timeout "
            "(starting a container, or waiting for this session's running call); nothing ran",
            retryable=True,
            hint="Retry, or allow a larger timeout_s.",
        ) from None


def _clean_reply(raw: dict[str, Any], limit: int) -> dict[str, Any]:
    """The reply's fields, type-checked and cut to the policy's caps (the kernel's code could forge them)."""

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _ProtocolError(f"the reply's {key!r} is not text")
        return value[:limit]

    def count(key: str) -> int:
        value = raw.get(key, 0)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _ProtocolError(f"the reply's {key!r} is not a count")
        return value

    def names(key: str) -> list[str]:
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _ProtocolError(f"the reply's {key!r} is not a list of names")
        return [v[:4096] for v in value[:100]]

    if "driver_error" in raw:
        return {"driver_error": str(raw["driver_error"])[:2000]}
    exit_code = raw.get("exit_code")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise _ProtocolError("the reply's 'exit_code' is not an integer")
    duration = raw.get("duration_ms")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)):
        raise _ProtocolError("the reply's 'duration_ms' is not a number")
    value, error = text("value"), text("error")
    return {
        "stdout": text("stdout") or "",
        "stderr": text("stderr") or "",
        "value": value,
        "error": error,
        "stdout_bytes": count("stdout_bytes"),
        "stderr_bytes": count("stderr_bytes"),
        "value_truncated": bool(raw.get("value_truncated")) or (value is not None and len(raw["value"]) > limit),
        "exit_code": exit_code,
        "duration_ms": duration,
        "figures": names("figures"),
        "changed": names("changed"),
        "killed_processes": count("killed_processes"),
        "oom_killed": raw.get("oom_killed") is True,
    }


def _artifacts(ctx: ActionContext, reply: dict[str, Any]) -> list[Artifact]:
    out: list[Artifact] = []
    for path in [*reply.get("changed", [])][:100]:
        try:
            out.append(ctx.workspace.artifact(path))
        except ActionError:
            continue  # denied names (e.g. .env) are not advertised
    return out


def _render(reply: dict[str, Any], language: str, limit: int, artifacts: list[Artifact], fresh: bool) -> str:
    parts: list[str] = []
    if fresh:
        parts.append("[new kernel started]")
    for stream in ("stdout", "stderr"):
        text = reply.get(stream) or ""
        total = reply.get(f"{stream}_bytes", 0)
        if text:
            parts.append(f"[{stream}]\n{text.rstrip()}")
        if total > limit:
            parts.append(f"[{stream} truncated: {total} bytes, limit {limit} (policy.code.max_output_bytes)]")
    if reply.get("value") is not None:
        parts.append(f"[value]\n{reply['value']}")
        if reply.get("value_truncated"):
            parts.append(f"[value truncated to {limit} characters (policy.code.max_output_bytes)]")
    if reply.get("error"):
        parts.append(f"[error]\n{reply['error'].rstrip()}")
    if language == "bash":
        parts.append(f"[exit code {reply.get('exit_code')}]")
    for denial in reply.get("network_denied", []):
        parts.append(f"[network denied: {denial['url']} ({denial['message']}; rule: {denial['rule']})]")
    if reply.get("denied_appeared"):
        parts.append(
            f"[the kernel was replaced (its state was lost) to hide paths that appeared and match "
            f"policy.files.deny: {', '.join(reply['denied_appeared'])}]"
        )
    if reply.get("setid_removed"):
        parts.append(f"[setuid/setgid bits removed (never allowed in the workspace): {', '.join(reply['setid_removed'])}]")
    if reply.get("killed_processes"):
        parts.append(f"[{reply['killed_processes']} leftover process(es) stopped: a call's processes end with it]")
    if artifacts:
        parts.append("[files]\n" + "\n".join(f"{a.path} ({a.mime_type}, {a.size} bytes)" for a in artifacts))
    body = [p for p in parts if p != "[new kernel started]"]
    return "\n".join(parts) if body else "\n".join([*parts, "(no output)"])


@action(
    "code.reset",
    description="Discard this session's sandbox kernel (variables, imports, processes); the next code_run starts fresh.",
)
async def code_reset(ctx: ActionContext, args: ResetInput) -> ActionOutput:
    svc = await ctx.service(CodeService)
    existed = ctx.session in svc.kernels
    await svc.drop(ctx.session)
    return ActionOutput(
        output="Kernel reset: the next code_run starts a fresh session."
        if existed
        else "No kernel was running for this session; the next code_run starts a fresh one.",
        data={"had_kernel": existed},
    )
