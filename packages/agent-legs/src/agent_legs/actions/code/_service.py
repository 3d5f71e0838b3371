"""``CodeService``: the sandbox containers of one ``Legs``: a warm pool, one kernel per session, their
lifetime and their cleanup.

A pool of pre-started containers makes a new session's first call fast; a session's kernel lives
until ``code.reset``, the session's close, ``settings.code.session_ttl_s`` of idleness (the reaper),
or a call that kills it (timeout, protocol breach, death); ``aclose`` removes every container the
service made, including those still being created when their caller gave up.

Threat model and invariants (the code in the containers is hostile):

* **Dying with the host.** Killing a kernel hangs up its attach connection first (the driver's PID 1
  then ends the container at once, whatever the code is doing) and removes the container in the
  background (``destroy_later``; ``aclose`` waits for these). Containers of dead Agent Legs
  processes on this host are removed when a service connects to the engine (``_container.remove_orphans``:
  at its start, or, when its first kernel came from ``Legs()``, once that kernel served: ``_service_hosts``).
* **Off the first call's path.** A pool fill that handed its kernel to a session's first call starts
  the next container only after that call's end (``REFILL_GRACE_S`` later, at most ``REFILL_WAIT_S``), or
  at once when another session wants a kernel: the engine's work does not share the CPU with that call.
* **Set-id files.** The bind mount's ``nosuid`` protects only the container: after every call
  (``after_call``) and every ``SETID_SWEEP_S`` seconds while a kernel lives (a thread the code left
  running may set a bit between calls), set-id bits the sandbox's user left in the workspace are
  stripped on the host (``_fs.strip_setid``: never following a link).
* **Denied paths.** Each container's masks are fixed when it is created from a fresh scan of the
  workspace (``scan``); ``masks_current`` tells a call when denied paths appeared since, so the
  kernel is replaced before the code runs (``_kernel.claim``).
* **Several engines.** ``settings.code.docker_hosts``: each host has its own client and warm pool; a
  new session goes to the host with the fewest live sessions per weight (``_hosts.pick``). A host
  that stops answering (a kernel's connection broke and a ping fails, or the watch's ping every
  ``HOST_WATCH_S`` fails) is taken out (``_take_out``): no new session goes there, each of its
  sessions is told once (``unavailable`` naming the host, never a silent fresh kernel), and it is
  tried again after ``host_retry_s``; when it is back, the containers of the lost sessions are removed.
* **A bounded number of sessions.** At most ``settings.code.max_sessions`` kernels live at once (plus
  the warm pools); a new session waits its turn within its call's ``timeout_s`` plus
  ``policy.code.queue_timeout_s`` (``_queue``: a retryable ``timeout`` with its position when that passes
  first). Every way a kernel ends frees its place.
  At most ``START_LIMIT`` containers are created at once, and health pings run on threads of their own:
  a burst of new sessions neither starves the calls' own thread work nor makes a busy engine look dead
  (128 sessions at once: pings queued behind creations "did not answer within 10 s").
* **Network.** ``policy.code.network = true`` needs a local engine (the only way out is a unix
  socket to the container's own egress proxy, in a private directory); elsewhere the start is
  refused rather than giving the sandbox unguarded network.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from ..._egress import EgressGuard
from ..._errors import ActionError
from ..._telemetry._semconv import AGENT_LEGS_CODE_NETWORK
from . import _container, _early, _reaper
from . import _fs as _code_fs
from ._channel import HELLO_MAX, Channel, ProtocolError
from ._container import DOCKER_TIMEOUT_S, UNAVAILABLE_HINT, SocketProxy, blocking, short
from ._hosts import HOST_FIX, Host, host_specs, pick
from ._kernel import Kernel, take_or_start
from ._queue import SandboxQueue
from ._service_hosts import HOST_WATCH_S, HostCare

__all__ = ["HOST_WATCH_S", "REFILL_GRACE_S", "REFILL_WAIT_S", "SETID_SWEEP_S", "CodeService"]

log = logging.getLogger("agent_legs.code")

SETID_SWEEP_S = 2.0  # between calls, set-id bits are stripped this often while a session's kernel lives
# A kernel the pool handed to a session's first call: the next container's start waits for that call's end
# (or a new session wanting a kernel) at most this long, so that the engine's work does not share the CPU with it.
REFILL_WAIT_S = 0.5
REFILL_GRACE_S = 0.1
# Container creations run in the loop's default thread pool (min(32, CPUs + 4) threads): at most this many at once, so
# the workspace scans and set-id sweeps every call needs are never queued behind a burst of new sessions (64 at once).
START_LIMIT = max(1, min(32, (os.cpu_count() or 1) + 4) - 2)


class CodeService(HostCare):
    """Sandbox containers: a warm pool, one kernel per session, and their cleanup."""

    async def start(self) -> None:
        self._egress_dir: str | None = None
        settings = self.runtime.settings.code
        self.hosts = [Host(spec) for spec in host_specs(settings)]
        if self.runtime.policy.code.network and not all(h.spec.local for h in self.hosts):
            raise ActionError(
                "unavailable",
                "policy.code.network=true needs a local Docker engine: the sandbox's only way out is a unix socket "
                "to the egress guard's proxy, which cannot be mounted into a remote engine's containers; refusing "
                "rather than giving the sandbox unguarded network",
                hint="Use a local engine, or set policy.code.network = false.",
            )
        self._early = _early.take(self.runtime)  # the first container, asked for at Legs(): label, user, masks
        try:
            await self._start(settings)
        except BaseException:
            if self._early is not None:
                _reaper.submit(self._early.discard)
            raise

    async def _start(self, settings: Any) -> None:
        early = self._early
        self.instance = early.instance if early is not None else uuid.uuid4().hex[:12]
        self._tls_dir = tempfile.mkdtemp(prefix="agent-legs-tls-")  # 0700: PEM given as {secret:NAME}
        self._deferred = None
        if early is not None:  # (one local engine) its first kernel needs no client: connected after it served
            self.defer_connect(self.hosts[0])
            results: list[Any] = []
        else:
            results = await asyncio.gather(*(self._connect(h) for h in self.hosts), return_exceptions=True)
        if not any(h.up() for h in self.hosts):
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            first = results[0]
            if len(self.hosts) == 1 and isinstance(first, BaseException):
                raise first
            raise ActionError(
                "unavailable",
                "no Docker host of settings.code.docker_hosts answered: "
                + "; ".join(f"{h.name}: {h.reason}" for h in self.hosts),
                retryable=True,
                hint=HOST_FIX,
            )
        self._known_denied: set[tuple[int, int, int]]
        if early is not None:  # prepared at Legs() by the same calls
            self._owner, self._mask_sources, self._known_denied = early.owner, early.sources, early.known
            # the runtime's Workspace (the files layer's import, ~8 ms) made now, while the engine starts the
            # first container, not by the first call's scan of the workspace (``masks_current``) after it greets
            await asyncio.to_thread(getattr, self.runtime, "workspace")
        else:
            root, read_only = str(self.runtime.workspace_path), self.runtime.policy.files.read_only
            prepare = _code_fs.prepare_workspace  # (may walk a large workspace)
            self._owner = await asyncio.to_thread(prepare, root, settings.uid, read_only=read_only, runtime=settings.runtime)
            self._mask_sources = _code_fs.MaskSources()
            self._known_denied = set()
        if self.runtime.policy.code.network:
            # short path (unix sockets allow ~107 bytes), private to us; only the sockets are mounted
            self._egress_dir = tempfile.mkdtemp(prefix="agent-legs-egress-")
        self.kernels: dict[str, Kernel] = {}
        self.lost: dict[str, ActionError] = {}  # sessions whose kernel went down with its host: told once
        self._cleanup: set[asyncio.Task[None]] = set()
        self._creating: set[asyncio.Future[Kernel]] = set()  # containers being made (in threads)
        self._removing: set[Kernel] = set()  # killed kernels whose containers are being removed
        self._inflight = threading.Condition()  # guards _creations: creations running in threads
        self._creations = 0
        self._closing = False
        self._starting: dict[str, asyncio.Future[Kernel]] = {}  # set before any await: first calls share one
        self.admission = SandboxQueue(settings.max_sessions)  # live session kernels, bounded (a FIFO queue)
        self._starts = asyncio.Semaphore(START_LIMIT)  # container creations at once
        # pings never wait behind container creations in the shared thread pool: one thread per host of their own
        self._pings = concurrent.futures.ThreadPoolExecutor(len(self.hosts), thread_name_prefix="agent-legs-docker-ping")
        self._idle_reaper = asyncio.create_task(self._reap(), context=contextvars.Context())
        self._sweeper = asyncio.create_task(self._sweep_setid(), context=contextvars.Context())
        self._watcher = asyncio.create_task(self._watch_hosts(), context=contextvars.Context())
        for host in self.hosts:
            self._fill_pool(host)

    @property
    def pool(self) -> list[Kernel]:
        """Every host's warm kernels."""
        return [k for h in self.hosts for k in h.pool]

    # -- the workspace: denied paths and set-id bits ----------------------------------------------
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
        """Set-id bits stripped after a call; never raises (it runs while the call's own error propagates).
        A pool fill waiting for the end of a first call (``REFILL_WAIT_S``) goes on."""
        for host in self.hosts:
            host.wake.set()
        try:
            return await blocking(self.strip_setid)  # type: ignore[no-any-return]
        except Exception as exc:
            log.warning("stripping set-id bits after a call failed: %s", exc)
            return []

    async def masks_current(self, kernel: Kernel) -> list[str]:
        """Denied paths that appeared since ``kernel`` started (it cannot hide them: replace it)."""
        now = (await asyncio.to_thread(self.scan)).masks
        return [] if kernel.masks.covers(now) else kernel.masks.new_paths(now)

    # -- containers -------------------------------------------------------------------------------
    def _create(self, proxy: SocketProxy | None, host: Host) -> Kernel:
        with self._inflight:  # aclose's background removal waits for creations still running
            if self._closing:  # queued before the close, run after it: nothing is created any more
                raise ActionError("unavailable", "Agent Legs is shutting down", retryable=False)
            self._creations += 1
        try:
            return self._create_now(proxy, host)
        finally:
            with self._inflight:
                self._creations -= 1
                self._inflight.notify_all()

    def _create_now(self, proxy: SocketProxy | None, host: Host) -> Kernel:
        masks = self.scan().masks  # what policy.files.deny hides from this container, for its whole life
        body = _container.config(
            self.runtime.settings.code,
            self.runtime.policy.code,
            workspace=str(self.runtime.workspace_path),
            read_only=self.runtime.policy.files.read_only,
            owner=self._owner,
            mounts=_code_fs.mounts(masks, self._mask_sources),
            proxy=proxy,
            instance=self.instance,
        )
        container, sock = _container.create(host.client, body)
        return Kernel(container, Channel(sock), proxy=proxy, masks=masks, host=host)

    async def _start_proxy(self) -> SocketProxy | None:
        if self._egress_dir is None:
            return None
        path = os.path.join(self._egress_dir, f"{uuid.uuid4().hex[:12]}.sock")
        guard: EgressGuard = self.runtime.egress
        return await SocketProxy(guard, path=path).start()

    async def _new_kernel(self, host: Host) -> Kernel:
        with self.runtime.tracer.start_as_current_span("sandbox container start") as span:
            span.set_attribute(AGENT_LEGS_CODE_NETWORK, self._egress_dir is not None)
            proxy = await self._start_proxy()
            early, self._early = self._early, None  # the first kernel: the container asked for at Legs(), if any
            creating = asyncio.ensure_future(
                _early.adopt(self, early, host) if early is not None else self._create_bounded(proxy, host)
            )
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
                reason = await self._answers(host)
                if reason is not None:  # the engine itself is gone: take it out
                    self._take_out(host, reason)
                    raise host.error("cannot start a sandbox container") from None
                raise ActionError(
                    "unavailable", f"cannot start a sandbox container: {short(exc)}", retryable=True, hint=UNAVAILABLE_HINT
                ) from None
            try:
                async with asyncio.timeout(30):
                    hello = await kernel.channel.read_message(HELLO_MAX)
            except (TimeoutError, EOFError, OSError, ProtocolError) as exc:
                detail = kernel.channel.stderr_tail.decode(errors="replace")[-500:]
                await self._destroy(kernel)
                raise ActionError(
                    "unavailable",
                    f"the sandbox did not start ({type(exc).__name__}): {detail}",
                    retryable=True,
                    hint=UNAVAILABLE_HINT,
                ) from None
            except BaseException:
                await asyncio.shield(self._destroy(kernel))
                raise
            if not hello.get("ready"):
                await self._destroy(kernel)
                raise ActionError("unavailable", f"unexpected sandbox greeting {hello!r}")
            return kernel

    async def _create_bounded(self, proxy: SocketProxy | None, host: Host) -> Kernel:
        await self._connected(host)  # (a host whose first kernel came from Legs() connects now)
        async with self._starts:
            return await asyncio.to_thread(self._create, proxy, host)

    def _destroy_when_created(self, creating: asyncio.Future[Kernel], proxy: SocketProxy | None) -> None:
        if not creating.cancelled() and creating.exception() is None:
            self.destroy_later(creating.result())
        elif proxy is not None:
            self._track(proxy.aclose())

    def destroy_later(self, kernel: Kernel) -> asyncio.Task[None]:
        """Kill ``kernel`` now (its socket closes: the driver's PID 1 ends the container) and remove the
        container in the background; ``aclose`` waits for these removals."""
        self.admission.free(kernel)
        kernel.dead = True
        kernel.channel.hang_up()
        return self._track(self._remove(kernel))

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, context=contextvars.Context())
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)
        return task

    # -- the pool and the sessions' kernels -------------------------------------------------------
    def _fill_pool(self, host: Host) -> None:
        wanted = self.runtime.settings.code.pool_size
        if not host.up() or len(host.pool) >= wanted or (host.pool_task is not None and not host.pool_task.done()):
            return

        async def fill() -> None:
            try:
                while len(host.pool) < wanted and host.up():
                    try:
                        kernel = await self._new_kernel(host)
                    except ActionError as exc:
                        log.warning("sandbox pool (%s): %s", host.name, exc.message)
                        return
                    if not host.up():  # taken out while this one started
                        self._abandon(kernel)
                        continue
                    promised, host.promised = host.promised, None
                    if promised is not None and not promised.done():
                        host.wake.clear()
                        host.wanted.clear()
                        promised.set_result(kernel)  # a first call waits for the kernel this start makes
                        await self._after_first_call(host)
                    else:
                        host.pool.append(kernel)
                    try:
                        await self._connected(host)  # a deferred connection: made now, off the first call's path
                    except ActionError as exc:
                        log.warning("sandbox pool (%s): %s", host.name, exc.message)
                        return
            finally:
                if host.promised is not None and not host.promised.done():
                    host.promised.set_result(None)  # no kernel for it: it starts its own
                host.promised = None

        # a fresh context: refills are background work, not steps of the action that triggered them
        host.pool_task = asyncio.create_task(fill(), context=contextvars.Context())

    @staticmethod
    async def _after_first_call(host: Host) -> None:
        """(A pool fill, after handing its kernel to a first call.) Until that call's end (``after_call``)
        and ``REFILL_GRACE_S`` more (its result logged and returned), at most ``REFILL_WAIT_S``; at once
        when a new session wants a kernel (``kernel_for``): the next container's start, and a deferred
        connection's SDK import (``_service_hosts``), then do not share the two cores with that call."""
        waits = [asyncio.ensure_future(host.wake.wait()), asyncio.ensure_future(host.wanted.wait())]
        try:
            await asyncio.wait(waits, timeout=REFILL_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
            if not host.wanted.is_set():
                await asyncio.wait(waits[1:], timeout=REFILL_GRACE_S)
        finally:
            for w in waits:
                w.cancel()

    @staticmethod
    def _pool_filling(host: Host) -> bool:
        return host.pool_task is not None and not host.pool_task.done()

    async def _place(self) -> Host:
        """The host for a new session (fewest live sessions per weight); when none is in service, each
        is tried again now (a call waits on the engines, as with one engine); ``unavailable`` if none answers."""
        for h in self.hosts:
            h.sessions = h.pending + sum(1 for k in self.kernels.values() if k.host is h)
        host = pick(self.hosts)
        errors: list[ActionError] = []
        if host is None:
            for h in self.hosts:
                try:
                    await self._revive(h)
                except ActionError as exc:
                    errors.append(exc)
            host = pick(self.hosts)
        if host is None:
            if len(self.hosts) == 1 and self.hosts[0].client is None and errors:
                raise errors[-1]  # never connected (a deferred connection): its own error, as a failed start's
            raise ActionError(
                "unavailable",
                "no Docker host is in service: " + "; ".join(f"{h.name}: {h.reason}" for h in self.hosts),
                retryable=True,
                hint=HOST_FIX,
            )
        return host

    async def kernel_for(self, session: str, deadline: float | None = None) -> tuple[Kernel, bool]:
        """The session's kernel (and whether it is new); a session whose kernel went down with its
        host is told so once (``unavailable``, naming the host), then placed anew. A session without a
        kernel first waits for a place (``settings.code.max_sessions``, until ``deadline``: ``_queue``)."""
        while True:
            kernel = self.kernels.get(session)
            if kernel is not None:
                return kernel, False
            lost = self.lost.pop(session, None)
            if lost is not None:
                raise lost
            starting = self._starting.get(session)
            if starting is None:
                break
            try:  # a concurrent first call is admitting or starting this session's kernel: share it
                return await asyncio.shield(starting), False
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # the starter was cancelled, not us: look again (and start one if still needed)
        future: asyncio.Future[Kernel] = asyncio.get_running_loop().create_future()
        self._starting[session] = future  # set before any await: concurrent first calls share one kernel
        try:
            await self.admission.admit(deadline)
            for h in self.hosts:  # a pool fill waiting for a first call's end starts the next kernel now
                h.wanted.set()
            try:
                kernel = await take_or_start(self)
            except BaseException:
                self.admission.release()
                raise
            self.admission.hold(kernel)
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
        return kernel, True

    async def _destroy(self, kernel: Kernel) -> None:
        self.admission.free(kernel)
        if kernel.dead:
            return
        kernel.dead = True
        kernel.channel.hang_up()
        await self._remove(kernel)

    async def _remove(self, kernel: Kernel) -> None:
        self._removing.add(kernel)  # (aclose hands it to the background removal if this one is cut short)
        try:
            if kernel.proxy is not None:
                await kernel.proxy.aclose()
            await blocking(_reaper.remove, kernel.container)  # SIGKILL, then remove (a failure is logged)
        finally:
            self._removing.discard(kernel)

    async def drop(self, session: str) -> None:
        kernel = self.kernels.pop(session, None)
        if kernel is not None:
            await self._destroy(kernel)

    async def discard(self, session: str, kernel: Kernel, wait_s: float | None = None) -> None:
        """Kill ``kernel``; unmap it from ``session`` if it is still that session's kernel. With
        ``wait_s``, wait at most that long for the container's removal (a slow engine does not hold
        the call past its deadline; the removal goes on and ``aclose`` waits for it)."""
        if self.kernels.get(session) is kernel:
            del self.kernels[session]
        if wait_s is None:
            await self._destroy(kernel)
        elif not kernel.dead:
            await asyncio.wait({self.destroy_later(kernel)}, timeout=wait_s)

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
        """Kill every kernel now and remove the containers in the background (``_reaper``): closing
        does not wait for the engine. The process's exit waits for those removals."""
        with self._inflight:
            self._closing = True
        if self._early is not None:  # never taken as a kernel: its container is removed once started
            early, self._early = self._early, None
            _reaper.submit(lambda: early.discard(sources=False))  # (the sources are ours: closed below)
        self._idle_reaper.cancel()
        self._sweeper.cancel()
        self._watcher.cancel()
        for host in self.hosts:
            if host.pool_task is not None:
                host.pool_task.cancel()
        kernels = [*self.kernels.values(), *self.pool, *self._removing]
        self.kernels.clear()
        for host in self.hosts:
            host.pool.clear()
        for kernel in kernels:  # PID 1 of each container ends it as soon as its stdin closes
            kernel.dead = True
            kernel.channel.hang_up()
        proxies = [k.proxy.aclose() for k in kernels if k.proxy is not None]
        await asyncio.gather(*proxies, return_exceptions=True)
        for task in self._cleanup:  # their removals are redone below; a proxy still open is closed here
            task.cancel()
        hosts = [(h, h.up(), [k.container for k in kernels if k.host is h]) for h in self.hosts]
        _reaper.submit(lambda: self._remove_all(hosts))

    def _remove_all(self, hosts: list[tuple[Host, bool, list[Any]]]) -> None:
        """(A worker thread of ``_reaper``.) Every container this service made removed: its kernels',
        then, once creations still running have finished, whatever else carries its instance label;
        then the clients closed and the private directories removed."""
        with self._inflight:  # (a deferred connection counts: its client is on the host after it)
            self._inflight.wait_for(lambda: self._creations == 0, timeout=DOCKER_TIMEOUT_S)
        for host, up, containers in hosts:
            client = host.client
            if up:  # a host out of service is not waited for (its containers die with its engine)
                for container in containers:  # (the first kernel's, from Legs(), needs no client)
                    _reaper.remove(container)
                if client is not None:
                    with contextlib.suppress(Exception):
                        _container.remove_instance(client, self.instance)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._pings.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._tls_dir, ignore_errors=True)
        if self._egress_dir is not None:
            shutil.rmtree(self._egress_dir, ignore_errors=True)
        self._mask_sources.close()
