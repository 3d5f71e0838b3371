"""One session's kernel: what the host knows of it, how a call claims it (replacing it when it cannot
be trusted) and how a call runs on it.

A kernel is one container running the driver, its attach ``Channel``, its guarded-network proxy (if
any) and the denied-path ``Masks`` fixed when it started. At most one call runs on it at a time
(``lock``); ``dead`` marks it killed.

Invariants:

* **Replaced before anything runs** (``claim``): a kernel found dead, or out of step (code wrote on
  its channel between calls), or whose masks cannot hide denied paths that appeared since it started
  (``policy.files.deny``), is replaced before the request is sent; the call says why
  (``kernel_replaced``, ``denied_paths_appeared``). Getting the kernel (a place, a container start, the
  session's running call, replacements) is bounded by ``ready_by`` (the call's ``timeout_s`` plus
  ``policy.code.queue_timeout_s``); the code's run by ``timeout_s`` counted from the moment it is sent,
  so a call queued behind other sessions' container starts still gets all of its time.
* **A broken kernel never serves a second call** (``run_code``): a timeout, a protocol breach, a
  dead container, a driver error or a cancelled caller kills the kernel (the work really stops) and
  the session's next call gets a fresh one; the error says the code may have run in part.
* **One container per first call** (``promised_kernel``): a session's first call while the pool is
  starting a kernel takes that one (a new service, or one prestarted at ``Legs()``) instead of
  starting a second container beside it; a call that gives up leaves it to the pool.
* **No set-id file reaches the host**: after every call, whatever happened, set-id bits the
  sandbox's user left in the workspace are stripped (``CodeService.after_call``) and listed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..._errors import ActionError
from ..._telemetry._semconv import AGENT_LEGS_CODE_CONTAINER, AGENT_LEGS_CODE_LANGUAGE, AGENT_LEGS_CODE_NEW_KERNEL
from . import _fs as _code_fs
from ._channel import Channel, ProtocolError, clean_reply, reply_cap
from ._container import CLEANUP_S, SocketProxy

if TYPE_CHECKING:
    from ..._context import ActionContext
    from ._hosts import Host
    from ._models import RunInput
    from ._service import CodeService

__all__ = ["IDLE_LOST", "RAN_LOST", "Call", "Kernel", "claim", "oom_killed", "promised_kernel", "run_code", "take_or_start"]

IDLE_LOST = (
    "this session's sandbox kernel was lost with its Docker engine (its variables and imports); nothing of this "
    "call ran, and the next call starts a fresh kernel on a host that answers"
)
RAN_LOST = (
    "the Docker engine running this session's sandbox stopped answering during the call: the code may have run "
    "in part (check the workspace before running it again), this session's variables were lost, and the next "
    "call starts a fresh kernel on a host that answers"
)

log = logging.getLogger("agent_legs.code")


@dataclass(eq=False)
class Kernel:
    """One container running the driver, as the host knows it (one call at a time holds ``lock``)."""

    container: Any
    channel: Channel
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dead: bool = False
    proxy: SocketProxy | None = None
    masks: _code_fs.Masks = field(default_factory=_code_fs.Masks)  # denied paths hidden in this container
    host: Any = None  # the ``_hosts.Host`` it runs on


@dataclass
class Call:
    """What one call on a kernel gave: the cleaned reply, and what happened to the kernel around it."""

    reply: dict[str, Any]
    fresh: bool  # the call ran on a kernel it started (or took from the pool)
    replaced: str  # why an earlier kernel of the session was replaced ("" when none was)
    appeared: list[str]  # denied paths the session's old kernel could not hide (it was replaced)
    setid_removed: list[str]  # workspace entries whose set-id bits were stripped after the call


async def oom_killed(kernel: Kernel) -> bool:
    """Whether the engine says the kernel's container was killed for memory (False when it cannot say)."""
    try:
        await asyncio.wait_for(asyncio.to_thread(kernel.container.reload), CLEANUP_S)
    except Exception:
        return False
    return bool(kernel.container.attrs.get("State", {}).get("OOMKilled"))


async def take_or_start(svc: CodeService) -> Kernel:
    """(``CodeService.kernel_for``, once the session is admitted) A kernel for a new session: a warm one of
    the chosen host's pool, else the one that pool is starting right now (a new service, or a prestarted
    one: never a second container beside it), else one started there (another host if that one is taken
    out meanwhile)."""
    while True:
        host = await svc._place()
        if host.pool:  # no await between the check and the claim: two first calls cannot both claim
            kernel = host.pool.pop(0)
            svc._fill_pool(host)
            return kernel
        if not (svc._pool_filling(host) and host.promised is None):
            break
        promised = await promised_kernel(host)
        if promised is not None:
            return promised
    while True:
        placed = host
        placed.pending += 1
        try:
            kernel = await svc._new_kernel(placed)
            break
        except ActionError:
            if placed.up():
                raise
            host = await svc._place()  # that host was taken out: another one, or unavailable
        finally:
            placed.pending -= 1
    svc._fill_pool(host)
    return kernel


async def promised_kernel(host: Host) -> Kernel | None:
    """(``take_or_start``) The kernel ``host``'s pool is starting now, for the caller (None: the
    pool made none; the caller starts its own). A caller that gives up leaves the kernel to the pool."""
    promised: asyncio.Future[Kernel | None] = asyncio.get_running_loop().create_future()
    host.promised = promised
    try:
        return await asyncio.shield(promised)
    except BaseException:
        if host.promised is promised:
            host.promised = None
        made = promised.result() if promised.done() and not promised.cancelled() else None
        if made is not None:
            host.pool.append(made)  # made meanwhile: back to the pool
        else:
            promised.cancel()
        raise


async def claim(svc: CodeService, session: str, deadline: float, ready_s: float, appeared: list[str]) -> tuple[Kernel, bool, str]:
    """The session's kernel, locked for this call: (kernel, fresh, why an earlier one was replaced).

    A kernel found dead or out of step before anything is sent to it is replaced here (nothing of
    this call ran yet), and so is one whose masks cannot hide denied paths that appeared since it
    started (``appeared`` collects them); starting and waiting end at ``deadline`` (``ready_s`` after
    the call began: its ``timeout_s`` plus ``policy.code.queue_timeout_s``)."""
    replaced = ""
    mask_replacements = 0
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                kernel, fresh = await svc.kernel_for(session, deadline)
                await kernel.lock.acquire()
                try:
                    if not kernel.dead:
                        await kernel.channel.ensure_idle()
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
                except (EOFError, OSError, ProtocolError) as exc:
                    lost = None if isinstance(exc, ProtocolError) else await svc.host_failed(session, kernel, IDLE_LOST)
                    if lost is not None:  # its engine is gone: say so (naming the host), no silent restart
                        kernel.lock.release()
                        raise lost from None
                    replaced = (
                        "the session's kernel had stopped since the last call (its state was lost); a fresh one was started"
                        if not isinstance(exc, ProtocolError)
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
            f"no sandbox kernel was ready within {ready_s:g} s (this call's timeout_s plus "
            "policy.code.queue_timeout_s: starting a container behind other sessions' starts, or waiting "
            "for this session's running call); nothing ran",
            retryable=True,
            hint="The sandboxes are busy, not broken: retry in a moment.",
            rule="policy.code.queue_timeout_s",
        ) from None


async def run_code(svc: CodeService, ctx: ActionContext, args: RunInput, ready_by: float, limit_s: float) -> Call:
    """Run ``args`` on the session's kernel (claimed by ``ready_by``, loop time), the code within ``limit_s``
    from the moment it is sent; the reply cleaned.

    Every way the call can fail on the kernel's side ends with the kernel killed and an
    ``ActionError`` saying what may have happened to the workspace and the session's state."""
    max_bytes = ctx.policy.code.max_output_bytes
    memory_mb = ctx.policy.code.memory_mb
    appeared: list[str] = []  # denied paths the session's kernel could not hide: it was replaced
    loop = asyncio.get_running_loop()
    ready_s = limit_s + ctx.policy.code.queue_timeout_s
    kernel, fresh, replaced = await claim(svc, ctx.session, ready_by, ready_s, appeared)
    deadline = loop.time() + limit_s  # the code's own time: from the moment it is sent
    setid_removed: list[str] = []
    try:
        kernel.last_used = time.monotonic()
        with ctx.tracer.start_as_current_span("sandbox exec") as span:
            span.set_attribute(AGENT_LEGS_CODE_LANGUAGE, args.language)
            span.set_attribute(AGENT_LEGS_CODE_CONTAINER, kernel.container.short_id)
            span.set_attribute(AGENT_LEGS_CODE_NEW_KERNEL, fresh)
            try:
                async with asyncio.timeout_at(deadline):
                    raw = await kernel.channel.request(
                        {"code": args.code, "language": args.language, "max_output_bytes": max_bytes}, reply_cap(max_bytes)
                    )
                reply = clean_reply(raw, max_bytes)
            except TimeoutError:
                await svc.discard(ctx.session, kernel, CLEANUP_S)
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
            except ProtocolError as exc:
                await svc.discard(ctx.session, kernel, CLEANUP_S)
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
                lost = await svc.host_failed(ctx.session, kernel, RAN_LOST)
                if lost is not None:  # the engine itself is gone, not only this kernel
                    raise lost from None
                oom = await oom_killed(kernel)
                await svc.discard(ctx.session, kernel, CLEANUP_S)
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
        await svc.discard(ctx.session, kernel, CLEANUP_S)
        raise ActionError(
            "failed",
            f"the sandbox driver failed ({reply['driver_error']}); the code may have run in "
            "part (check the workspace before running it again); the kernel was replaced",
            retryable=False,
        )
    if kernel.proxy is not None:  # what the egress guard refused during this call
        reply["network_denied"] = [{"url": d.url, "rule": d.rule, "message": d.message} for d in kernel.proxy.take_denied()[:50]]
    return Call(reply, fresh, replaced, appeared, setid_removed)
