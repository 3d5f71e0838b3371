"""Reaching a mail server: its settings, its password, its TLS context and the exchange's deadline.

Shared by SMTP (``_send``) and IMAP (``_imap``).

Invariants:

* a server that is not configured is ``unavailable`` (the hint names the setting); plain text
  (``security='none'``) is refused (``denied``) to anything but a loopback host, so a password or a
  message never crosses a network unencrypted;
* the password is resolved from the secrets only when needed and never appears in a message;
* certificates are always verified (the system store, or ``ca_file`` added by the operator); a
  changed ``ca_file`` is re-read (the cached context is keyed by its mtime);
* ``exchange_deadline`` bounds the whole exchange (connect, TLS, AUTH, every attempt and the back-off
  between them) by ``settings.email.<server>.timeout_s``, and ends it a little before the runtime's
  deadline (``policy.email.timeout_s``), so that the action, which knows how far it got, reports
  the timeout rather than the runtime.

Threat model: the settings come from the operator, not the model; the model cannot choose a server.
"""

from __future__ import annotations

import functools
import os
import ssl
import time

from ..._context import ActionContext
from ..._egress import is_loopback_host
from ..._errors import ActionError, AgentLegsError
from ._settings import MailServer

__all__ = ["cert_error", "exchange_deadline", "password", "server", "tls"]


def server(ctx: ActionContext, which: str) -> MailServer:
    """``settings.email.<which>`` (``smtp`` or ``imap``), checked: configured, TLS off loopback."""
    configured: MailServer | None = getattr(ctx.settings.email, which)
    if configured is None:
        raise ActionError(
            "unavailable",
            f"no {which.upper()} server is configured",
            hint=f"Set settings.email.{which} (host, port, security, username, password).",
        )
    if configured.security == "none" and not is_loopback_host(configured.host):
        raise ActionError(
            "denied",
            f"{which.upper()} without TLS (security='none') is only allowed to a loopback host, not {configured.host}",
            rule=f"settings.email.{which}.security",
        )
    return configured


def password(ctx: ActionContext, mail_server: MailServer, which: str) -> str | None:
    """The server's password from the secrets (None: no password set)."""
    if not mail_server.password:
        return None
    try:
        return ctx.secrets.resolve(mail_server.password)
    except AgentLegsError as exc:
        raise ActionError(
            "failed",
            f"settings.email.{which}.password: {exc}",
            hint="Pass the secret to Legs(secrets=...) under the referenced name.",
        ) from None


def tls(mail_server: MailServer) -> ssl.SSLContext:
    """A verifying TLS context (with the server's ``ca_file`` if set), shared between connections."""
    ca_file = mail_server.ca_file
    mtime = os.stat(ca_file).st_mtime_ns if ca_file and os.path.exists(ca_file) else 0
    return _tls_context(ca_file, mtime)


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None, mtime: int) -> ssl.SSLContext:
    # Loading the CA bundle costs ~10 ms per connection; a context is thread-safe to share.
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


def cert_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or one it was raised from) is a failed certificate verification."""
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def exchange_deadline(started: float, ctx_timeout_s: float, server_timeout_s: float) -> float:
    """When the SMTP/IMAP exchange must be over (``time.monotonic()``).

    ``server_timeout_s`` counts from now and bounds the whole exchange; it also ends a little before
    the runtime's deadline (``policy.email.timeout_s`` from the handler's start), so the action itself
    reports the timeout with what it knows (nothing sent, or delivery unknown).
    """
    margin = min(1.0, 0.1 * ctx_timeout_s)
    return min(started + ctx_timeout_s - margin, time.monotonic() + server_timeout_s)
