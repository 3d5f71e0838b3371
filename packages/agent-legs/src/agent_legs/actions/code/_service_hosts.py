"""The code service's engines: connecting to them, their health, taking one out and back in.

``HostCare`` is the part of ``CodeService`` (``_service``) that talks to the engines themselves
rather than to containers: the connection (the Docker SDK's client, its ping, the image check, the
orphans of dead processes removed), the watch's pings, a host taken out and revived.

**The deferred connection** (``defer_connect``). When ``Legs()`` asked the one local engine for the
first container itself (``_early``), that container is the first kernel without the SDK: its
start, attach and removal speak the engine's API over the unix socket (``_early.RawContainer``).
The service then connects (the SDK's import, about 100 ms of CPU; the ping; the image check; the
orphan sweep) only when something needs the client: after the first kernel served its first call
(``_service``'s pool fill), for the next container, or for a health ping, so that none of it runs
on the two cores while the engine starts the first container and while the first call runs.
Invariants kept:

* **A missing image or an engine that does not answer** still fails the first ``code.run`` with the
  connection's own error (``unavailable``, "not built", the build hint): the early start failed, so
  the first kernel is made the usual way, which connects first (``_place`` raises the connection's
  error while the host never connected).
* **Orphans of dead processes are still removed**, by the same ``remove_orphans``, at the deferred
  connection (before any container of this service is made with the SDK); this process's own
  containers carry its live pid and are never taken for orphans.
* **Nothing left behind.** The connection runs in a thread counted as a creation: ``aclose``'s
  removal waits for it and closes the client it made (a service closed meanwhile closes it at once).

Threat model: as ``_container``'s (the engine is the operator's; nothing here reads what a sandbox wrote).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..._errors import ActionError
from ..._service import Service
from . import _container
from ._container import CONNECT_S, short
from ._hosts import HOST_FIX, Host
from ._kernel import IDLE_LOST, Kernel
from ._queue import SandboxQueue

__all__ = ["HOST_WATCH_S", "HostCare"]

log = logging.getLogger("agent_legs.code")

HOST_WATCH_S = 5.0  # hosts in use are pinged this often; those taken out are retried (host_retry_s) on this beat


class HostCare(Service):
    """The engines of a ``CodeService``: connecting, health, taking out and back in."""

    # (set by CodeService._start)
    hosts: list[Host]
    kernels: dict[str, Kernel]
    lost: dict[str, ActionError]
    admission: SandboxQueue
    instance: str
    _tls_dir: str
    _pings: concurrent.futures.ThreadPoolExecutor
    _inflight: threading.Condition
    _creations: int
    _closing: bool
    _deferred: asyncio.Future[None] | None  # the deferred connection, once asked for
    _track: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
    _fill_pool: Callable[[Host], None]

    def defer_connect(self, host: Host) -> None:
        """``host`` counts as up before it is connected: its first kernel needs no client (``_early``)."""
        host.down, host.reason, host.provisional = False, "", True

    def _open(self, host: Host) -> Any:
        """Connect to ``host`` (blocking): the engine answers, has the image and the runtime; our
        orphans there are removed. ``ActionError`` (naming the host) otherwise."""
        settings = self.runtime.settings.code
        client = _container.connect(host.spec, settings.image, self.runtime.secrets, self._tls_dir)
        try:
            _container.check_runtime(client, settings.runtime, network=self.runtime.policy.code.network)
            _container.remove_orphans(client)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                client.close()
            if isinstance(exc, ActionError):
                raise
            raise ActionError(
                "unavailable", f"the Docker engine ({host.name}) failed: {short(exc)}", retryable=True, hint=HOST_FIX
            ) from None
        return client

    async def _connect(self, host: Host) -> None:
        try:
            client = await asyncio.to_thread(self._open, host)
        except ActionError as exc:
            host.fail(exc.message, self.runtime.settings.code.host_retry_s)
            raise
        host.client, host.down, host.reason, host.provisional = client, False, "", False

    async def _connected(self, host: Host) -> None:
        """``host``'s client, connected now if its connection was deferred (``defer_connect``); the
        connection's ``ActionError`` otherwise (the host is then out: ``_place`` tries it again)."""
        if not host.provisional:
            return
        if self._deferred is None:
            self._deferred = asyncio.ensure_future(self._connect_deferred(host))
        await asyncio.shield(self._deferred)

    async def _connect_deferred(self, host: Host) -> None:
        try:
            await asyncio.to_thread(self._open_deferred, host)
        except ActionError as exc:
            self._deferred = None  # (the next _connected of a host still provisional tries again)
            if host.provisional:
                host.provisional = False
                host.fail(exc.message, self.runtime.settings.code.host_retry_s)
            raise
        host.down, host.reason, host.provisional = False, "", False

    def _open_deferred(self, host: Host) -> None:
        """(A thread.) ``_open``, counted as a creation: ``aclose``'s removal waits for it, then finds the
        client on ``host`` (or, closed meanwhile, the client is closed here)."""
        with self._inflight:
            if self._closing:
                raise ActionError("unavailable", "Agent Legs is shutting down", retryable=False)
            self._creations += 1
        try:
            client = self._open(host)
            with self._inflight:
                if not self._closing:
                    host.client = client
                    return
            with contextlib.suppress(Exception):
                client.close()
            raise ActionError("unavailable", "Agent Legs is shutting down", retryable=False)
        finally:
            with self._inflight:
                self._creations -= 1
                self._inflight.notify_all()

    async def _answers(self, host: Host) -> str | None:
        """None when ``host`` answers a ping within CONNECT_S, else why not (a deferred connection is made first)."""
        try:
            await self._connected(host)
        except ActionError as exc:
            return exc.message
        if host.client is None:
            return host.reason
        try:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.run_in_executor(self._pings, host.client.ping), CONNECT_S)
        except TimeoutError:
            return f"it did not answer a ping within {CONNECT_S:g} s"
        except Exception as exc:
            return f"it does not answer: {_container.tls_reason(exc)}"
        return None

    def _take_out(self, host: Host, reason: str) -> None:
        """``host`` failed: no new session goes there until it answers again; its sessions are told once."""
        if host.down:
            return
        host.fail(reason, self.runtime.settings.code.host_retry_s)
        log.warning("sandbox host %s taken out: %s", host.name, reason)
        for session, kernel in list(self.kernels.items()):
            if kernel.host is host:
                del self.kernels[session]
                self.lost[session] = host.error(IDLE_LOST)
                self._abandon(kernel)
        for kernel in host.pool:
            self._abandon(kernel)
        host.pool.clear()
        if host.pool_task is not None:
            host.pool_task.cancel()

    def _abandon(self, kernel: Kernel) -> None:
        """A kernel of a host that is gone: hung up (its container is removed when the host is back)."""
        self.admission.free(kernel)
        kernel.dead = True
        kernel.channel.hang_up()
        if kernel.proxy is not None:
            self._track(kernel.proxy.aclose())

    async def host_failed(self, session: str, kernel: Kernel, what: str) -> ActionError | None:
        """After ``kernel``'s connection broke: if its host does not answer either, take the host out
        and return the error for this call (``what`` happened, naming the host); else None."""
        host: Host | None = kernel.host
        if host is None:
            return None
        reason = await self._answers(host) if not host.down else host.reason
        if reason is None:
            return None
        self._take_out(host, reason)
        self.lost.pop(session, None)  # told now, by this call
        if self.kernels.get(session) is kernel:
            del self.kernels[session]
        self._abandon(kernel)
        return host.error(what)

    async def _revive(self, host: Host) -> None:
        """Connect to a host taken out again; when it answers, the containers of the sessions lost with
        it are removed and it takes sessions (and fills its pool) again. ``ActionError`` otherwise."""
        old = host.client
        await self._connect(host)
        log.warning("sandbox host %s is in service again", host.name)
        if old is not None and old is not host.client:
            with contextlib.suppress(Exception):
                old.close()
        await asyncio.to_thread(_container.remove_instance, host.client, self.instance)
        self._fill_pool(host)

    async def _watch_hosts(self) -> None:
        """Ping the hosts in use (a dead one is taken out before a call finds it); retry those taken out."""
        retry_s = self.runtime.settings.code.host_retry_s
        while True:
            await asyncio.sleep(min(HOST_WATCH_S, retry_s))
            for host in self.hosts:
                try:
                    if host.down and time.monotonic() >= host.retry_at:
                        with contextlib.suppress(ActionError):
                            await self._revive(host)
                    elif host.up() and (host.pool or any(k.host is host for k in self.kernels.values())):
                        reason = await self._answers(host)
                        if reason is not None:
                            self._take_out(host, reason)
                except Exception as exc:  # never let the watch die
                    log.warning("sandbox host watch (%s): %s", host.name, exc)
