"""The first sandbox container of a ``Legs``, asked of the engine before the rest of ``Legs()`` is built.

``docker start`` takes 200 to 400 ms on a small machine. Whatever Agent Legs does before it asks for
the start is on the first ``code.run``'s path; whatever it does after overlaps with it. So when
``Legs()`` prestarts the sandbox (``settings.code.prestart``) on the one local engine, it asks for
the first container first thing (``EarlyStart.launch``), over the engine's unix socket with the
standard library alone: importing the Docker SDK (requests, urllib3: about 100 ms of CPU), the rest
of ``Legs()`` (telemetry, the runtime) and the code service's own start (its client, the orphans of
dead processes) then run while the engine starts the container. The service takes it as the first
kernel it would have started (``CodeService._new_kernel``) and reads the driver's greeting from it
as from any other; the kernel keeps this module's ``RawContainer`` (no SDK), so the service connects
its Docker client only after that kernel served its first call (``_service_hosts``).

Invariants:

* **The same container.** The create body is ``_body.config``, the one definition both paths
  send, as the user ``_fs.prepare_workspace`` picks and with the masks of the denied paths found by
  a scan of the workspace made now (``_fs.scan``, as for every kernel; ``_kernel.claim`` checks them
  again before each call, this one's first included).
* **Only where it is as safe.** One local engine on a unix socket (no TLS to speak), no network for
  the sandbox (its egress proxy lives on the runtime's loop), runc (runsc needs the engine's runtime
  check first), a warm pool wanted. Anywhere else the service starts its kernels as before.
* **Nothing left behind.** The container is recorded by ``_reaper`` as soon as the engine made it
  (the process's exit removes it if nothing else did); one the service never takes (``Legs()``
  failed after the launch, the service did not start, the ``Legs`` was closed first) is removed by
  ``cancel``, which waits for the start to finish first.
* **Failures are the service's to report.** A failed early start is only logged; the service then
  starts its kernel the usual way, which reports any error as data.

Threat model: as ``_container``'s. This module talks only to the operator's engine and reads none of
what the sandbox writes (the service reads the greeting through the bounded ``Channel``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._errors import ActionError
from . import _fs as _code_fs
from . import _reaper
from ._body import CONNECT_S, DOCKER_TIMEOUT_S, config
from ._hosts import host_specs
from ._sandbox import driver_payload

if TYPE_CHECKING:
    from ..._policy import Policy
    from ..._settings import Settings
    from ._hosts import Host
    from ._kernel import Kernel
    from ._service import CodeService

__all__ = ["EarlyStart", "EngineError", "NotFound", "RawContainer", "adopt", "engine_socket", "exchange", "hand_over", "take"]

log = logging.getLogger("agent_legs.code")

_HEADERS_MAX = 64 * 1024
_handed: weakref.WeakKeyDictionary[Any, EarlyStart] = weakref.WeakKeyDictionary()  # a Runtime -> its early start
_handed_lock = threading.Lock()


class EngineError(Exception):
    """The engine refused a request (or the connection failed)."""


class NotFound(EngineError):
    """404: no such container (``_reaper.remove`` counts it as removed)."""


def engine_socket(code: Any) -> str | None:
    """The unix socket of the one local engine ``settings.code`` names; None for any other setup."""
    specs = host_specs(code)
    if len(specs) != 1 or specs[0].tls is not None:
        return None
    url = specs[0].url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not url.startswith("unix://") or len(url) <= len("unix://"):
        return None
    return url[len("unix://") :]


def _read_until_close(sock: socket.socket, buf: bytes) -> bytes:
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk


def _dechunk(data: bytes) -> bytes:
    out, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def exchange(
    path: str,
    method: str,
    target: str,
    body: dict[str, Any] | None = None,
    *,
    upgrade: bool = False,
    timeout_s: float = DOCKER_TIMEOUT_S,
) -> tuple[int, bytes, socket.socket | None, bytes]:
    """One HTTP/1.1 request to the engine at the unix socket ``path`` (blocking, each socket operation
    bounded by ``timeout_s``): (status, body, and for an ``upgrade`` the engine accepted, the hijacked
    socket and the bytes already read past the reply's head)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(path)
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {target} HTTP/1.1\r\nHost: docker\r\nContent-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += "Connection: Upgrade\r\nUpgrade: tcp\r\n" if upgrade else "Connection: close\r\n"
        sock.sendall(head.encode() + b"\r\n" + data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise EngineError("the engine closed the connection before its reply")
            buf += chunk
            if len(buf) > _HEADERS_MAX:
                raise EngineError("the engine's reply head is too long")
        raw_head, _, rest = buf.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if upgrade and status in (101, 200):  # (an engine that does not upgrade hijacks the connection as is)
            return status, b"", sock, rest
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(rest) < size:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            reply = rest[:size]
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            reply = _dechunk(_read_until_close(sock, rest))
        else:
            reply = _read_until_close(sock, rest)
    except BaseException:
        sock.close()
        raise
    sock.close()
    return status, reply, None, b""


def _message(status: int, reply: bytes) -> str:
    try:
        return f"{status}: {json.loads(reply)['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{status}: {reply[:300]!r}"


@dataclass
class RawContainer:
    """A container known by its id on the engine at ``path``: the first kernel's, for its whole life (the
    service connects its Docker client only after that kernel served: ``_service_hosts``). What the
    service and ``_reaper`` use of the SDK's ``Container``: ``id``, ``short_id``, ``remove``, ``reload``/``attrs``."""

    id: str
    path: str
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def reload(self) -> None:
        """``attrs`` from the engine's inspect (``_kernel.oom_killed`` reads the state)."""
        status, reply, _, _ = exchange(self.path, "GET", f"/containers/{self.id}/json")
        if status == 404:
            raise NotFound(_message(status, reply))
        if status >= 400:
            raise EngineError(_message(status, reply))
        self.attrs = json.loads(reply)

    def remove(self, *, force: bool = True) -> None:
        status, reply, _, _ = exchange(self.path, "DELETE", f"/containers/{self.id}?force={'1' if force else '0'}")
        if status == 404:
            raise NotFound(_message(status, reply))
        if status >= 400:
            raise EngineError(_message(status, reply))


class EarlyStart:
    """One container being started on the local engine for a ``Legs`` whose service is not built yet."""

    def __init__(self, path: str, workspace: Path, state_dir: Path, policy: Policy, settings: Settings) -> None:
        from ..files._paths import ConfinedTree

        code = settings.code
        self.path = path
        self.instance = uuid.uuid4().hex[:12]  # the service's label: its close removes what carries it
        root = str(workspace)
        self.owner = _code_fs.prepare_workspace(root, code.uid, read_only=policy.files.read_only, runtime=code.runtime)
        self.known: set[tuple[int, int, int]] = set()  # identities of denied files (the service keeps them)
        ws = ConfinedTree(workspace, policy.files, state_dir)
        self.masks = _code_fs.scan(root, ws, sandbox_uid=self.owner[0], known=self.known).masks
        self.sources = _code_fs.MaskSources()
        try:
            self._body = config(
                code,
                policy.code,
                workspace=root,
                read_only=policy.files.read_only,
                owner=self.owner,
                mounts=_code_fs.mounts(self.masks, self.sources),
                proxy=None,
                instance=self.instance,
            )
        except BaseException:
            self.sources.close()
            raise
        self.container: RawContainer | None = None
        self._sock: socket.socket | None = None
        self._head = b""
        self._lock = threading.Lock()
        self._owned = False  # taken by the service, or cancelled: whoever set it cleans up
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-legs-early-sandbox", daemon=True)

    @classmethod
    def launch(cls, workspace: Path, state_dir: Path, policy: Policy, settings: Settings) -> EarlyStart | None:
        """Ask the engine for the first container now, if this setup allows it (None otherwise)."""
        code = settings.code
        path = engine_socket(code)
        if path is None or policy.code.network or code.runtime != "runc" or code.pool_size < 1:
            return None
        try:
            early = cls(path, workspace, state_dir, policy, settings)
        except Exception as exc:  # the service's own start reports it (an ActionError as data)
            log.debug("early sandbox start skipped: %s", exc)
            return None
        early._thread.start()
        threading.Thread(target=driver_payload, name="agent-legs-driver-compile", daemon=True).start()  # meanwhile
        return early

    def _run(self) -> None:
        sock: socket.socket | None = None
        try:
            # a silent listener fails this in CONNECT_S, as the SDK's first ping does (the exit waits for it)
            status, reply, _, _ = exchange(self.path, "POST", "/containers/create", self._body, timeout_s=CONNECT_S)
            if status != 201:
                raise EngineError(_message(status, reply))
            self.container = RawContainer(json.loads(reply)["Id"], self.path)
            _reaper.track(self.container)  # ours until removed: the exit removes it if nothing else did
            status, reply, sock, self._head = exchange(
                self.path, "POST", f"/containers/{self.container.id}/attach?stdin=1&stdout=1&stderr=1&stream=1", upgrade=True
            )
            if sock is None:
                raise EngineError(_message(status, reply))
            status, reply, _, _ = exchange(self.path, "POST", f"/containers/{self.container.id}/start")
            if status not in (204, 304):
                raise EngineError(_message(status, reply))
            sock.sendall(driver_payload())
            sock.setblocking(False)
            self._sock = sock
        except Exception as exc:
            log.debug("early sandbox start failed (the service starts its own): %s", exc)
            if sock is not None:
                sock.close()
            if self.container is not None:
                _reaper.remove(self.container)
                self.container = None
        finally:
            self._done.set()

    def take(self) -> EarlyStart | None:
        """The service takes it (None: cancelled first)."""
        with self._lock:
            if self._owned:
                return None
            self._owned = True
        return self

    def wait(self) -> tuple[RawContainer, socket.socket, bytes] | None:
        """(The service, in a thread.) Once the start is done: the container, its attach socket (the
        driver's source sent) and bytes already read from it; None if it failed."""
        self._done.wait()
        if self.container is None or self._sock is None:
            return None
        return self.container, self._sock, self._head

    def cancel(self) -> None:
        """(``Legs``.) Unless the service took it: once its start is done, its container is removed (in
        the background)."""
        with self._lock:
            if self._owned:
                return
            self._owned = True
        _reaper.submit(self.discard)

    def discard(self, *, sources: bool = True) -> None:
        """(Blocking; whoever owns it.) Wait for the start, then remove the container (and the masks'
        sources, unless the service holds them as its own)."""
        self._done.wait()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        if self.container is not None:
            _reaper.remove(self.container)
        if sources:
            self.sources.close()


def hand_over(runtime: Any, early: EarlyStart) -> None:
    """``Legs()``: the early start of ``runtime``'s code service."""
    with _handed_lock:
        _handed[runtime] = early


def take(runtime: Any) -> EarlyStart | None:
    """(The code service's start.) ``runtime``'s early start, once (None when there is none, or it was cancelled)."""
    with _handed_lock:
        early = _handed.pop(runtime, None)
    return early.take() if early is not None else None


async def adopt(svc: CodeService, early: EarlyStart, host: Host) -> Kernel:
    """(``CodeService._new_kernel``.) The container ``Legs()`` asked for as a kernel of ``host``; if its
    start failed, one started now the usual way. The service's close waits for this as for any creation."""
    from ._channel import Channel  # (imported here: Legs() imports this module before the code family)
    from ._container import blocking
    from ._kernel import Kernel

    with svc._inflight:
        svc._creations += 1
    try:
        try:
            started = await blocking(early.wait)
        except BaseException:  # cancelled while the engine starts it (the service closed): removed once started
            _reaper.submit(lambda: early.discard(sources=False))  # (the masks' sources are the service's)
            raise
        if started is None:
            return await svc._create_bounded(None, host)
        container, sock, head = started  # (no Docker client needed: it is removed over the same socket)
        with svc._inflight:
            closing = svc._closing
        if closing:  # closed while it started: not a kernel any more
            with contextlib.suppress(OSError):
                sock.close()
            await blocking(_reaper.remove, container)
            raise ActionError("unavailable", "Agent Legs is shutting down", retryable=False)
        return Kernel(container, Channel(sock, raw_head=bytearray(head)), masks=early.masks, host=host)
    finally:
        with svc._inflight:
            svc._creations -= 1
            svc._inflight.notify_all()
