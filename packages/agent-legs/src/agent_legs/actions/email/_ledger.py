"""The send ledger: a logical send happens at most once, even across retries, crashes and timeouts.

The ledger is the state store's ``sends`` table (``agent_legs._state``). The protocol, for one
logical send (``send_key``: the call id, or else the session and the message's content):

1. ``MailService.serialized(key)``: concurrent calls for the same key run one after the other, so
   the second sees what the first did;
2. ``MailService.claim``: one atomic, durable insert, so of two workers racing for a key exactly one
   sends, on one machine or many (PostgreSQL); the loser gets the earlier entry and reports it
   (``earlier_result``) instead of sending;
3. the outcome is recorded: ``sent`` (the server accepted it), ``release`` (nothing was delivered:
   refused, or interrupted before the content went out; a later call may send) or ``unknown`` (the
   content went out, the final reply never came: possibly delivered). ``settle_interrupted`` picks
   one of the three for an exchange that ended in an exception or a cancellation.

Invariants:

* ``claimed`` and ``unknown`` both read as "possibly sent": never sent again for that key, never
  reported as retryable; the model is told not to send it again with a new call but to check first;
* a store that is down before the claim: ``unavailable``, nothing sent. After the claim, a failure
  to record the outcome leaves the claim in place (possibly sent): at most once, never twice;
* without a call id, an identical message in the same session within
  ``_CONTENT_DEDUPE_WINDOW_S`` is taken as a retry of the first (not sent again); after it, as a new
  message with a new Message-ID;
* the Message-ID is derived from the key: a resend after a lost ledger still carries the same one,
  which receiving systems use to drop duplicates.

Threat model: a compromised model can repeat a call (same id or not) as often as it likes; it cannot
make one logical send reach a recipient twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

from ..._context import ActionContext
from ..._errors import ActionError
from ..._models import ActionOutput
from ..._service import Service

__all__ = ["UNKNOWN_HINT", "Claim", "MailService", "earlier_result", "message_id_for", "send_key"]

# An identical message (no call id) repeated in the same session within this window is taken as a
# retry of the first and not sent again; after it, as a new message.
_CONTENT_DEDUPE_WINDOW_S = 6 * 3600

UNKNOWN_HINT = (
    "Do NOT send this email again with a new call: it may already have been delivered, and a "
    "new call would send a second copy. Check first (the Sent folder, if the provider keeps one, "
    "with email_list; or the recipient's mailbox), or ask the user whether it arrived."
)

log = logging.getLogger("agent_legs")


def send_key(call_id: str | None, session: str, digest: str) -> tuple[str, float | None]:
    """(ledger key, content dedupe window) of a logical send: by call id, else by session and content."""
    if call_id:
        return f"call:{call_id}", None
    return f"content:{hashlib.sha256(f'{session}|{digest}'.encode()).hexdigest()}", _CONTENT_DEDUPE_WINDOW_S


def message_id_for(key: str, sender: str) -> str:
    """The Message-ID of a logical send: stable per key, in the sender's domain."""
    return f"<agent-legs.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{sender.rsplit('@', 1)[1]}>"


@dataclass
class Claim:
    key: str
    message_id: str


class MailService(Service):
    """The send ledger (at most once per logical send, in the state store) and the host name used in EHLO."""

    async def start(self) -> None:
        from ..._state import worker_id

        self._store = self.runtime.state
        self._owner = worker_id()
        self._inflight: dict[str, asyncio.Lock] = {}
        # socket.getfqdn() may do reverse DNS; aiosmtplib would call it on every connection.
        self.local_hostname = await asyncio.to_thread(socket.getfqdn)

    @contextlib.asynccontextmanager
    async def serialized(self, key: str) -> AsyncIterator[None]:
        """Concurrent calls for the same logical send run one after the other (the second sees the first)."""
        lock = self._inflight.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._inflight.get(key) is lock:
                del self._inflight[key]

    async def claim(
        self, key: str, digest: str, message_id: str, window_s: float | None
    ) -> tuple[Claim | None, dict[str, Any] | None]:
        """Record a send as started (returns the claim), or return the earlier entry for this key."""
        claimed, entry = await self._store.claim_send(key, digest, message_id, window_s, owner=self._owner)
        if claimed is not None:
            return Claim(key, claimed), None
        assert entry is not None
        return None, {
            "state": entry.state,
            "message_id": entry.message_id,
            "result": entry.result,
            "time": entry.updated,
            "same_content": entry.digest in (None, digest),
        }

    async def release(self, claim: Claim) -> None:
        """Nothing was accepted by the server: a later call may try again."""
        await self._record(self._store.release_send(claim.key, claim.message_id), claim)

    async def unknown(self, claim: Claim) -> None:
        """The content went out, the answer never came: possibly sent, never resent."""
        await self._record(self._store.mark_unknown(claim.key, claim.message_id), claim)

    async def sent(self, claim: Claim, result: dict[str, Any]) -> None:
        await self._record(self._store.mark_sent(claim.key, claim.message_id, result), claim)

    async def settle_interrupted(self, claim: Claim, accepted: dict[str, Any] | None, content_sent: bool) -> None:
        """Record an exchange that ended in an exception or a cancellation.

        ``accepted``: the server's acceptance, if it came (then cancelled while closing: it is sent).
        ``content_sent``: the content went out and no reply to it came (the server may have it).
        """
        if accepted is not None:
            await self.sent(claim, accepted)
        elif not content_sent:
            await self.release(claim)  # refused or never reached DATA: nothing was delivered
        else:  # lost mid-DATA; the server may have taken it. Keep the claim: at most once.
            await self.unknown(claim)

    @staticmethod
    async def _record(update: Awaitable[Any], claim: Claim) -> None:
        try:
            await update
        except Exception as exc:  # the claim stays: reported as possibly sent, never sent twice
            log.warning("send ledger: cannot record the outcome of %s (it stays 'possibly sent'): %s", claim.message_id, exc)


def earlier_result(ctx: ActionContext, earlier: dict[str, Any]) -> ActionOutput:
    """What a repeated send returns: the earlier result, or ``failed`` (not retryable) if it is unknown."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(earlier["time"]))
    if earlier["state"] != "sent":
        raise ActionError(
            "failed",
            f"an earlier attempt of this send ({earlier['message_id']}, {when}) was "
            "interrupted while the server may have been taking the message: delivery is unknown. "
            "It may have been delivered, so this call id will not send it again",
            retryable=False,
            hint=UNKNOWN_HINT,
            data={"possibly_sent": True, "message_id": earlier["message_id"]},
        )
    result = earlier["result"] or {}
    data = {**result, "duplicate": True, "message_id": earlier["message_id"], "sent_at": when}
    if not earlier["same_content"]:
        data["content_differs"] = True
        return ActionOutput(
            output=f"Call id {ctx.call_id} already sent {earlier['message_id']} at {when}; this call's "
            "content differs and was NOT sent. Use a new call to send another message.",
            data=data,
        )
    return ActionOutput(
        output=f"Already sent earlier as {earlier['message_id']} at {when} to "
        f"{', '.join(result.get('recipients', []))}; not sent again.",
        data=data,
    )
