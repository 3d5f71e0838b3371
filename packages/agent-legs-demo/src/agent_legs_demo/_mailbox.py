"""The demo's IMAP mailbox: a throwaway Dovecot (see ``dovecot``) with the supplier's email waiting.

When Dovecot is missing or does not start, ``start_mailbox`` says why and the demo skips the inbox.
"""

from __future__ import annotations

import secrets
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ._services import STOCK
from .dovecot import DovecotServer, DovecotUnavailable, start_dovecot

USER = "team"
Mailbox = DovecotServer


def supplier_email() -> bytes:
    """The message waiting in the inbox: the supplier's stock list as a CSV attachment."""
    msg = EmailMessage()
    msg["From"] = "orders@supplier.example.com"
    msg["To"] = "team@example.com"
    msg["Subject"] = "Stock levels this week"
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="supplier.example.com")
    msg.set_content("Hello,\n\nattached are this week's stock levels for your catalogue.\n\nBest regards,\nSupplier\n")
    csv = "product,units\n" + "".join(f"{name},{units}\n" for name, units in STOCK.items())
    msg.add_attachment(csv.encode(), maintype="text", subtype="csv", filename="stock.csv")
    return bytes(msg)


def start_mailbox(messages: list[bytes]) -> tuple[Mailbox | None, str]:
    """Start Dovecot with ``messages`` in the INBOX. Returns (mailbox, "") or (None, why not)."""
    try:
        mailbox = start_dovecot(USER, secrets.token_urlsafe(16), prefix="agent-legs-demo-imap-")
    except DovecotUnavailable as exc:
        return None, f"Dovecot: {exc.reason} ({exc.fix})"
    for raw in messages:
        mailbox.deliver(raw)
    return mailbox, ""
