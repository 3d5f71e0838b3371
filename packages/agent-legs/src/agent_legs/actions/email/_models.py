"""The input models of ``email.send``, ``email.list`` and ``email.read``, and the approval summary.

Invariants: unknown fields are refused (``extra="forbid"``); the field descriptions are what the
model reads in the tool schema. The models check shape only: addresses, header values, folders,
queries and ids are checked by the handlers (``_addresses``, ``_query``, ``_imap``), which name the
rule in their errors. ``approval_summary`` shows an approver every recipient (bcc included), the
subject, the first lines of the body and the attachments: what will leave, not what the model says.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ._query import QUERY_SYNTAX

__all__ = ["ListInput", "ReadInput", "SendInput", "approval_summary"]


class SendInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(
        min_length=1,
        description="Recipient addresses, bare (e.g. 'ana@example.com'); no display names. Each must be allowed by the policy.",
    )
    subject: str = Field(max_length=998, description="Subject line (one line, no line breaks).")
    body: str = Field(description="Message text: plain text, or HTML when html=true.")
    cc: list[str] = Field(default_factory=list, description="Cc addresses (bare).")
    bcc: list[str] = Field(default_factory=list, description="Bcc addresses (bare; hidden from other recipients).")
    html: bool = Field(False, description="Body is HTML (a plain-text alternative is generated).")
    attachments: list[str] = Field(default_factory=list, description="Workspace paths of files to attach.")


class ListInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str = Field("INBOX", description="Mailbox folder, e.g. INBOX or Sent.")
    query: str | None = Field(None, description=QUERY_SYNTAX)
    unread_only: bool = Field(False, description="Only unread messages (same as the 'unseen' filter).")
    limit: int = Field(20, ge=1, le=200, description="Maximum messages returned, newest first.")


class ReadInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Message id (a number) from email_list, in the same folder.")
    folder: str = Field("INBOX", description="Mailbox folder the id belongs to.")
    save_attachments: bool = Field(False, description="Also save the attachments in the workspace under attachments/.")


def approval_summary(args: SendInput) -> str:
    """What an approver is shown: recipients, subject, the first lines of the body, attachments."""
    lines = [ln.strip()[:160] for ln in args.body.strip().splitlines() if ln.strip()][:5]
    recipients = "; ".join(
        part
        for part in (
            "to " + ", ".join(args.to),
            "cc " + ", ".join(args.cc) if args.cc else "",
            "bcc " + ", ".join(args.bcc) if args.bcc else "",
        )
        if part
    )
    attach = f" Attachments: {', '.join(args.attachments)}." if args.attachments else ""
    kind = "HTML body" if args.html else "Body"
    return f"Send email {recipients}. Subject: {args.subject[:200]!r}. {kind} starts: {' / '.join(lines)!r}.{attach}"
