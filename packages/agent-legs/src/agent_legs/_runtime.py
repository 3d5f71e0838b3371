"""The runtime: one event loop in a background thread that owns every executor.

Sync and async callers both submit coroutines here, so Playwright, Docker and SMTP clients live
in exactly one loop whatever the caller does (no "sync API inside an asyncio loop" failures).
It also owns the shared resources actions reach through ``ActionContext``, and the session table
(``_sessions.SessionTable``: touched from callers' threads, reaped on the loop, one lock).
Where a call's coroutine runs (this loop, or the caller's own for inline actions) is decided by
``_dispatch.Dispatcher`` alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import ActionError, ClosedError
from ._extras import extra_of_module
from ._policy import Policy, PolicyEngine
from ._secrets import Redactor, Secrets
from ._service import Service
from ._sessions import SessionTable
from ._settings import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from ._egress import EgressGuard, Resolver
    from ._state import StateStore
    from .actions.files._workspace import Workspace

__all__ = ["Runtime"]

log = logging.getLogger("agent_legs")
T = TypeVar("T")
S = TypeVar("S", bound=Service)


class Runtime:
    def __init__(
        self,
        *,
        workspace_path: Path,
        state_dir: Path,
        policy: Policy,
        settings: Settings,
        secrets: Secrets,
        redactor: Redactor,
        tracer: Tracer,
        resolver: Resolver | None = None,
        state: StateStore | None = None,
    ) -> None:
        self.workspace_path = workspace_path
        self.state_dir = state_dir
        self.policy = policy
        self.engine = PolicyEngine(policy)
        self.settings = settings
        self.secrets = secrets
        self.redactor = redactor
        self.tracer = tracer
        self.resolver = resolver
        if state is None:
            from ._state import open_store

            state = open_store(state_dir, settings, secrets)
        self.state: StateStore = state
        self._background: set[concurrent.futures.Future[Any]] = set()
        self._services: dict[type[Service], Service] = {}
        self._starting: dict[type[Service], asyncio.Future[Service]] = {}
        self.sessions = SessionTable()  # last use, and registry beats, per session (any thread)
        self._closed = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="agent-legs-runtime", daemon=True)
        self._thread.start()
        self._reaper = self.submit(self._reap_idle_sessions())

    # -- the loop ----------------------------------------------------------------------------
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._closed and not self.loop.is_running():
            coro.close()
            raise ClosedError("this Legs instance is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    # -- shared resources ----------------------------------------------------------------------
    @cached_property
    def workspace(self) -> Workspace:
        from .actions.files._workspace import Workspace

        workspace = Workspace(self.workspace_path, self.policy.files, self.state_dir)
        self.sweep = workspace.start_sweep()  # temp files of interrupted writes (a killed process)
        return workspace

    @cached_property
    def egress(self) -> EgressGuard:
        from ._egress import EgressGuard

        return EgressGuard(self.policy.network, resolver=self.resolver)

    async def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the runtime loop (the state store's connections belong to it)."""
        if self.in_loop_thread:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    async def service(self, cls: type[S]) -> S:
        """The shared instance of ``cls``, started once (concurrent first callers wait for it)."""
        svc = self._services.get(cls)
        if svc is not None:
            return svc  # type: ignore[return-value]
        if not self.in_loop_thread:
            raise RuntimeError(f"{cls.__name__} is only reachable from the runtime loop: do not mark its action inline")
        if self._closed:
            raise ActionError("unavailable", "Agent Legs is shutting down")
        pending = self._starting.get(cls)
        if pending is None:
            pending = self._starting[cls] = self.loop.create_future()
            try:
                try:
                    instance = cls(self)
                    await instance.start()
                except ImportError as exc:  # an extra installed but broken (or a module of it missing)
                    extra = extra_of_module(exc.name)
                    if extra is None:
                        raise
                    raise ActionError(
                        "unavailable",
                        f"{cls.__name__} cannot start: {exc}",
                        hint=f"Not fixable by the model: tell the user to run `{extra.hint}`.",
                    ) from exc
            except BaseException as exc:
                del self._starting[cls]
                pending.set_exception(exc)
                pending.exception()  # mark retrieved: the caller re-raises it
                raise
            self._services[cls] = instance
            del self._starting[cls]
            pending.set_result(instance)
            return instance
        return await asyncio.shield(pending)  # type: ignore[arg-type]

    def prestart(self, cls: type[Service]) -> None:
        """Start ``cls`` in the background now (a first call then finds it started, or joins its
        start); a failure is only logged: the first call that needs it starts it again and reports."""

        async def start() -> None:
            try:
                await self.service(cls)
            except Exception as exc:
                log.debug("prestarting %s failed (the first call retries): %s", cls.__name__, exc)

        future = self.submit(start())
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    # -- sessions ------------------------------------------------------------------------------
    def touch_session(self, session: str) -> None:
        """Note a call of ``session`` (from any thread: inline calls run on the caller's)."""
        # The session registry learns that this worker holds the session (then at most every 30 s):
        # best effort, in the background; a store that is down never fails the call. One reading of
        # the loop's clock for both, under one lock (``touch_due``).
        now = self.loop.time()
        if self._closed:
            self.sessions.touch(session, now)
        elif self.sessions.touch_due(session, now, _REGISTRY_BEAT_S):
            future = asyncio.run_coroutine_threadsafe(self._register(session), self.loop)
            self._background.add(future)
            future.add_done_callback(self._background.discard)

    async def _register(self, session: str) -> None:
        from ._state import worker_id

        try:
            await self.state.register_session(session, worker_id(), stale_s=max(self.settings.session_ttl_s, 120.0))
        except Exception as exc:
            self.sessions.unregister(session)  # try again at the next call
            log.warning("session registry: cannot register session %r: %s", session, exc)

    async def close_session(self, session: str) -> None:
        self.sessions.forget(session)
        await self._release_session(session)

    async def _release_session(self, session: str) -> None:
        """Release ``session`` in the registry and in every service (it is already out of the table)."""
        if self.sessions.unregister(session):
            from ._state import worker_id

            try:
                await self.state.release_session(session, worker_id())
            except Exception as exc:
                log.warning("session registry: cannot release session %r: %s", session, exc)
        for svc in list(self._services.values()):
            try:
                await svc.close_session(session)
            except Exception:  # one backend failing must not keep the others' resources
                log.exception("closing session %r in %s failed", session, type(svc).__name__)

    async def _reap_idle_sessions(self) -> None:
        ttl = self.settings.session_ttl_s
        while True:
            await asyncio.sleep(min(max(ttl / 4, 0.05), 30.0))
            cutoff = self.loop.time() - ttl
            for session in self.sessions.idle(cutoff):
                # Closing one session awaits; a session used meanwhile is no longer idle and stays.
                if self.sessions.take_if_idle(session, cutoff):
                    await self._release_session(session)

    # -- shutdown ------------------------------------------------------------------------------
    async def _aclose_services(self) -> None:
        self._reaper.cancel()
        if self._starting:  # a service still starting (prestarted, say) is closed once started
            await asyncio.gather(*self._starting.values(), return_exceptions=True)
        services = list(self._services.values())
        self._services.clear()
        results = await asyncio.gather(*(svc.aclose() for svc in services), return_exceptions=True)
        for svc, result in zip(services, results, strict=True):
            if isinstance(result, BaseException):
                log.error("closing %s failed: %r", type(svc).__name__, result)
        if self.sessions.take_registrations():
            from ._state import worker_id

            try:
                await self.state.release_worker(worker_id())
            except Exception as exc:
                log.warning("session registry: cannot release this worker's sessions: %s", exc)
        await self.state.aclose()

    def close(self, timeout_s: float = 30.0) -> None:
        """Close every service, then stop the loop. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.in_loop_thread:
            raise ClosedError("Legs.close() cannot be called from inside an action")
        try:
            asyncio.run_coroutine_threadsafe(self._aclose_services(), self.loop).result(timeout_s)
        except Exception:
            log.exception("closing Agent Legs services did not finish cleanly")
        finally:
            tasks_done = asyncio.run_coroutine_threadsafe(_cancel_remaining(), self.loop)
            try:
                tasks_done.result(5)
            except Exception:
                log.warning("some runtime tasks did not stop within 5 s")
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            if not self.loop.is_running():
                self.loop.close()
        if "workspace" in self.__dict__:
            close = getattr(self.workspace, "close", None)
            if close is not None:
                close()


_REGISTRY_BEAT_S = 30.0


async def _cancel_remaining() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
