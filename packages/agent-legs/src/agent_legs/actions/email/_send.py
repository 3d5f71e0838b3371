"""SMTP delivery for ``email.send`` (aiosmtplib): one message, transient failures retried within the deadline.

``smtp_send`` delivers a message the handler has built and the ledger (``_ledger``) has claimed. It
tells the ledger's protocol where the exchange stopped through ``Progress``: ``in_data`` from the
server's 354 on (the content may have gone out), ``result`` once the server accepted the message.

Invariants:

* never sent twice: once the content may have reached the server (``in_data``) and no reply to it
  came, the send is never attempted again, by this call or (through the ledger) any other; it is
  reported as "delivery unknown", ``retryable: false``, ``data.possibly_sent``, with a hint telling
  the model to check rather than send again. ``_data`` sends DATA and the content as two steps
  precisely so that "the server never invited the content" is told apart from "the reply was lost";
* retried only what cannot have delivered anything: a 4xx reply (to the envelope or the content), a
  connection lost or refused before the content went out, every recipient refused with 4xx. The
  attempts (at most ``len(_BACKOFF_S) + 1``, paused by ``_BACKOFF_S``) run under
  ``agent_legs._retry.retrying``: a retry is not started unless its pause and ``_MIN_ATTEMPT_S``
  fit before the deadline; each attempt is one ``smtp send`` span with ``agent_legs.email.attempt``;
* the deadline (``_servers.exchange_deadline``) bounds the whole exchange: every operation's own
  timeout is what is left of it, and ``asyncio.timeout`` is the backstop;
* certificates are verified; a certificate, authentication or capability failure is final (a retry
  cannot fix it) and its message names the setting to check; the password never appears in a
  message, a span or the log.

Threat model: the model chooses the recipients and the content (checked before, by ``_addresses``
and the policy); the server may be slow, hang at any stage, refuse or drop the connection
(``integration_tests/faults/test_email.py`` hangs it at every stage).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from ..._context import ActionContext
from ..._errors import ActionError
from ..._retry import retrying
from ..._telemetry._semconv import (
    AGENT_LEGS_EMAIL_ATTEMPT,
    AGENT_LEGS_EMAIL_BYTES,
    AGENT_LEGS_EMAIL_RECIPIENTS,
    AGENT_LEGS_EMAIL_REFUSED,
    ERROR_TYPE,
    SERVER_ADDRESS,
    SERVER_PORT,
)
from . import _servers
from ._ledger import UNKNOWN_HINT, MailService
from ._settings import MailServer

__all__ = ["Progress", "smtp_send"]

# The pauses before the 2nd, 3rd and 4th attempts.
_BACKOFF_S = (0.2, 1.0, 3.0)
# A retry is not worth starting with less time than this left.
_MIN_ATTEMPT_S = 0.5


class Progress:
    """Where an SMTP transaction is, so a failure or cancellation can be classified."""

    def __init__(self) -> None:
        self.stage = "connecting"  # for messages: what the exchange was doing when it stopped
        self.in_data = False  # message content sent, final reply not yet read: delivery unknown
        self.result: dict[str, Any] | None = None  # the server accepted the message


class _Transient(ActionError):
    """A failure another attempt may cure; the error reported as it is when no attempt follows."""


class _AllRefused(Exception):
    def __init__(self, refused: dict[str, str], transient: bool) -> None:
        super().__init__(refused)
        self.refused = refused
        self.transient = transient


async def smtp_send(
    ctx: ActionContext,
    svc: MailService,
    server: MailServer,
    msg: EmailMessage,
    sender: str,
    recipients: list[str],
    progress: Progress,
    deadline: float,
) -> tuple[dict[str, str], str]:
    """Deliver ``msg`` once, retrying transient failures, all before ``deadline`` (``time.monotonic()``).

    Returns the refused recipients (address: reply) and the server's reply to the content.
    """
    port = server.port or {"tls": 465, "starttls": 587, "none": 25}[server.security]
    password = _servers.password(ctx, server, "smtp")
    delivery = _Delivery(ctx, svc, server, port, password, msg, sender, recipients, progress, deadline)
    async for attempt in retrying(
        attempts=len(_BACKOFF_S) + 1,
        retry_on=lambda exc: isinstance(exc, _Transient),
        waits=_BACKOFF_S,
        deadline=deadline,
        min_attempt_s=_MIN_ATTEMPT_S,
    ):
        with attempt:
            outcome = await delivery.attempt(attempt.retry_state.attempt_number)
    return outcome


@dataclass
class _Delivery:
    """One message's delivery: each attempt connects, authenticates and sends, in a span of its own."""

    ctx: ActionContext
    svc: MailService
    server: MailServer
    port: int
    password: str | None
    msg: EmailMessage
    sender: str
    recipients: list[str]
    progress: Progress
    deadline: float
    content: bytes = field(init=False)
    total_s: float = field(init=False)  # the whole exchange's time (for messages)

    def __post_init__(self) -> None:
        self.content = self.msg.as_bytes()
        self.total_s = max(self.deadline - time.monotonic(), 0.0)

    async def attempt(self, number: int) -> tuple[dict[str, str], str]:
        """Attempt ``number`` (1-based): the refused recipients and the reply, or an ``ActionError``
        (``_Transient`` if another attempt may cure it)."""
        import aiosmtplib

        server, port, msg, recipients, total_s = self.server, self.port, self.msg, self.recipients, self.total_s
        progress, deadline = self.progress, self.deadline
        remaining = max(deadline - time.monotonic(), 0.001)
        with self.ctx.tracer.start_as_current_span("smtp send") as span:
            span.set_attribute(SERVER_ADDRESS, server.host)
            span.set_attribute(SERVER_PORT, port)
            span.set_attribute(AGENT_LEGS_EMAIL_RECIPIENTS, len(recipients))
            span.set_attribute(AGENT_LEGS_EMAIL_BYTES, len(self.content))
            span.set_attribute(AGENT_LEGS_EMAIL_ATTEMPT, number)
            # Every operation's own timeout is what is left of the whole; asyncio.timeout is the backstop.
            smtp = aiosmtplib.SMTP(
                hostname=server.host,
                port=port,
                local_hostname=self.svc.local_hostname,
                timeout=remaining,
                use_tls=server.security == "tls",
                start_tls=server.security == "starttls",
                tls_context=_servers.tls(server) if server.security != "none" else None,
            )
            progress.stage = "connecting"
            try:
                async with asyncio.timeout(remaining):
                    await smtp.connect()
                    if server.username:
                        progress.stage = "authenticating"
                        if smtp.is_ehlo_or_helo_needed:  # after STARTTLS the server's extensions are re-read
                            await smtp.ehlo()
                        # One mechanism, not login()'s try-them-all: a wrong password then fails fast and clearly.
                        if "plain" in {m.lower() for m in smtp.server_auth_methods}:
                            await smtp.auth_plain(server.username, self.password or "")
                        else:
                            await smtp.login(server.username, self.password or "")
                    progress.stage = "sending the envelope (MAIL FROM, RCPT TO)"
                    await smtp.mail(self.sender)
                    refused: dict[str, str] = {}
                    codes: list[int] = []
                    for rcpt in recipients:
                        try:
                            await smtp.rcpt(rcpt)
                        except aiosmtplib.SMTPRecipientRefused as exc:
                            refused[rcpt] = f"{exc.code} {exc.message}"
                            codes.append(exc.code)
                    if len(refused) == len(recipients):
                        transient = all(400 <= c < 500 for c in codes)
                        raise _AllRefused(refused, transient)
                    progress.stage = "waiting for the answer to DATA"
                    reply = await _data(smtp, self.content, progress)
                response = f"{reply.code} {reply.message}"
                progress.result = {
                    "message_id": msg["Message-ID"],
                    "response": response,
                    "recipients": [r for r in recipients if r not in refused],
                    "refused": refused,
                }
                progress.in_data = False
                span.set_attribute(AGENT_LEGS_EMAIL_REFUSED, len(refused))
                left = deadline - time.monotonic()
                if left > 0.05:  # a polite QUIT, within what is left of the deadline
                    with contextlib.suppress(Exception):
                        await smtp.quit(timeout=min(2.0, left))
                return refused, response
            except TimeoutError:
                # The deadline (ours, or an operation's timeout, which is what was left of it) passed.
                span.set_attribute(ERROR_TYPE, "timeout")
                if progress.in_data:
                    raise ActionError(
                        "timeout",
                        f"the SMTP server {server.host}:{port} received the message content but did "
                        f"not confirm it within {total_s:.3g} s (settings.email.smtp.timeout_s / "
                        f"policy.email.timeout_s): delivery is unknown (it may have been delivered). The send "
                        f"{msg['Message-ID']} is recorded "
                        "as possibly sent; the same call id will not send it again",
                        retryable=False,
                        hint=UNKNOWN_HINT,
                        data={"possibly_sent": True, "message_id": msg["Message-ID"], "stage": progress.stage},
                    ) from None
                raise ActionError(
                    "timeout",
                    f"the SMTP server {server.host}:{port} did not answer within {total_s:.3g} s "
                    f"(settings.email.smtp.timeout_s / policy.email.timeout_s) while {progress.stage}, after "
                    f"{number} attempt(s); the message content was never sent, so nothing was delivered",
                    retryable=True,
                    hint="The mail server is slow or down: try again later (nothing was sent, so "
                    "a retry cannot deliver a duplicate).",
                    data={"possibly_sent": False, "stage": progress.stage},
                ) from None
            except _AllRefused as exc:
                raise (_Transient if exc.transient else ActionError)(
                    "failed",
                    f"every recipient was refused: {exc.refused}",
                    retryable=exc.transient,
                    hint="A temporary refusal: try again later."
                    if exc.transient
                    else "Check the addresses; the server will not take them.",
                    data={"refused": exc.refused},
                ) from None
            except aiosmtplib.SMTPAuthenticationError as exc:
                raise ActionError(
                    "failed",
                    f"SMTP authentication failed for user {server.username!r} at {server.host}:{port} ({exc.code} {exc.message})",
                    retryable=False,
                    hint="Check settings.email.smtp username and password.",
                ) from None
            except aiosmtplib.SMTPNotSupported as exc:
                raise ActionError(
                    "failed",
                    f"the SMTP server {server.host}:{port} does not support what the settings require: {exc}",
                    retryable=False,
                    hint="Check settings.email.smtp.security (starttls, tls) and the port.",
                ) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) else None
                span.set_attribute(ERROR_TYPE, type(exc).__name__)
                if _servers.cert_error(exc):
                    raise ActionError(
                        "failed",
                        f"the SMTP server's TLS certificate is not trusted: {exc}",
                        retryable=False,
                        hint="Fix the server certificate or set settings.email.smtp.ca_file to the CA that issued it.",
                    ) from None
                if progress.in_data and code is None:
                    # No reply to the message content: the server may have taken it. Never resend.
                    raise ActionError(
                        "failed",
                        f"the connection to {server.host}:{port} was lost after the "
                        "message content was sent and before the server confirmed it: delivery is "
                        f"unknown (it may have been delivered). The send {msg['Message-ID']} is "
                        "recorded as possibly sent; the same call id will not send it again",
                        retryable=False,
                        hint=UNKNOWN_HINT,
                        data={"possibly_sent": True, "message_id": msg["Message-ID"]},
                    ) from None
                progress.in_data = False  # a reply code after DATA is a definite refusal
                transient = code is None or 400 <= code < 500
                failure = ActionError if not transient else _Transient
                if code is None:
                    raise failure(
                        "unavailable",
                        f"cannot reach the SMTP server {server.host}:{port} (after {number} attempts): {exc}; nothing was sent",
                        retryable=True,
                        hint="The mail server is down or unreachable: try again later.",
                    ) from None
                message = getattr(exc, "message", str(exc))
                raise failure(
                    "failed",
                    f"the SMTP server refused the message: {code} {message}",
                    retryable=transient,
                    hint="A temporary refusal: try again later." if transient else None,
                ) from None
            finally:
                smtp.close()


async def _data(smtp: Any, content: bytes, progress: Progress) -> Any:
    """DATA, then the content: ``progress.in_data`` from the server's 354 on, not before.

    aiosmtplib's ``data()`` does both in one call, so a timeout inside it cannot tell "the server never
    invited the content" (nothing sent: safe to retry) from "the content went out, the reply did not
    come" (delivery unknown). The content goes out with the protocol's own write and read, as ``data()``
    does it: line endings CRLF, leading dots doubled, the terminating dot line.
    """
    import aiosmtplib

    start = await smtp.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    progress.in_data = True  # from here on, the server may end up with the whole message
    progress.stage = "waiting for the server to confirm the message content"
    payload = re.sub(rb"(?m)^\.", b"..", re.sub(rb"\r\n|\r|\n", b"\r\n", content))
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    protocol.write(payload + b".\r\n")
    reply = await protocol.read_response(timeout=smtp.timeout)
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return reply
