"""MIME: the message ``email.send`` builds, and the parsing of what ``email.list``/``email.read`` fetch.

Building (``build_message``): the headers come from values ``_addresses`` has already checked; every
part goes out 7bit (no server needs 8BITMIME or SMTPUTF8 for what we send); attachments are read
from the workspace through its confinement (``Workspace.check`` / ``read_bytes``: the files policy's
deny list applies), and their total is bounded by ``policy.email.max_attachment_bytes``; an HTML body
gets a generated plain-text alternative.

Parsing (``parse_message``, ``decode_header``, ``header``): the input is an untrusted, possibly
hostile message. Invariants: parsing never fails the call (a broken charset, structure or header
falls back to the raw text); a header value never spans lines; an HTML body is converted to text
with images dropped (a remote image is a tracking or exfiltration beacon); an attachment's name is
reduced to one safe file name (``safe_filename``: no directories, no control characters), so saving
it cannot escape ``attachments/``.
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.policy
import email.utils
import hashlib
import mimetypes
import re
from email.message import EmailMessage
from typing import Any

from ..._context import ActionContext
from ..._errors import ActionError
from ..._markdown import html_to_markdown
from ..files._text import guess_mime
from ._addresses import CONTROL
from ._models import SendInput

__all__ = ["build_message", "decode_header", "header", "html_to_text", "parse_message", "safe_filename"]

# The 7bit transfer encoding for every part: no server needs 8BITMIME or SMTPUTF8 for what we send.
_SMTP_POLICY = email.policy.SMTP.clone(cte_type="7bit")


def build_message(
    ctx: ActionContext, args: SendInput, from_header: str, to: list[str], cc: list[str], subject: str
) -> tuple[EmailMessage, list[tuple[str, str]]]:
    """The message (without Message-ID) and (path, sha256) of each attachment."""
    limit = ctx.policy.email.max_attachment_bytes
    files: list[tuple[str, bytes]] = []
    total = 0
    for path in args.attachments:
        rel = ctx.workspace.check(path)
        try:
            data = ctx.workspace.read_bytes(rel, max_bytes=limit)
        except ActionError as exc:
            if exc.type == "invalid_input" and "over the limit" in exc.message:
                raise ActionError(
                    "invalid_input",
                    f"attachment {rel!r} is larger than policy.email.max_attachment_bytes ({limit} bytes)",
                    rule="policy.email.max_attachment_bytes",
                ) from None
            raise
        total += len(data)
        if total > limit:
            raise ActionError(
                "invalid_input",
                f"attachments total {total} bytes, over policy.email.max_attachment_bytes ({limit} bytes)",
                rule="policy.email.max_attachment_bytes",
            )
        files.append((rel, data))

    msg = EmailMessage(policy=_SMTP_POLICY)
    msg["From"] = from_header
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(usegmt=True)
    if args.html:
        msg.set_content(html_to_text(args.body) or " ")
        msg.add_alternative(args.body, subtype="html")
    else:
        msg.set_content(args.body)
    for rel, data in files:
        maintype, _, subtype = guess_mime(rel).partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=rel.rsplit("/", 1)[-1])
    digests = [(rel, hashlib.sha256(data).hexdigest()) for rel, data in files]
    return msg, digests


def decode_header(value: Any) -> str:
    """A compat32 header value as text: encoded words decoded, raw 8-bit bytes read as UTF-8."""
    if value is None:
        return ""
    text = str(value)
    try:
        text.encode("ascii")
    except UnicodeEncodeError:  # undecoded 8-bit bytes come back as surrogate escapes
        text = text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    try:
        decoded = str(email.header.make_header(email.header.decode_header(text)))
    except (LookupError, ValueError, UnicodeError):  # an unknown charset or a broken encoded word
        return text
    return " ".join(decoded.split()) if "\n" in decoded or "\r" in decoded else decoded


def header(msg: email.message.Message, name: str) -> str:
    """A decoded header value; a header the parser chokes on comes back raw rather than failing the call."""
    try:
        value = msg.get(name)
        return "" if value is None else str(value)
    except Exception:  # the email package's header parser has raised on hostile input before
        for key, raw in msg.raw_items():
            if key.lower() == name.lower():
                return str(raw)
        return ""


def parse_message(raw: bytes) -> tuple[EmailMessage, str, list[tuple[dict[str, Any], bytes]]]:
    """The parsed message, its text body and its attachments (listing entry, content)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = ""
    try:
        # The plain part first; an empty or blank one (some mailers send HTML with an empty text/plain
        # alternative) falls back to the HTML part, converted to text.
        for preference in (("plain", "html"), ("html",)):
            body_part = msg.get_body(preferencelist=preference)
            if body_part is None:
                continue
            content = body_part.get_content()
            if body_part.get_content_type() == "text/html":
                content = html_to_text(str(content))
            text = str(content).strip()
            if text:
                break
    except (LookupError, ValueError, AttributeError, TypeError):  # a broken charset or structure
        payload = msg.get_payload(decode=True)
        text = payload.decode(errors="replace").strip() if isinstance(payload, bytes) else ""
    attachments: list[tuple[dict[str, Any], bytes]] = []
    for part in msg.iter_attachments():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":  # a forwarded message: keep it as a .eml file
            inner = part.get_payload()
            payload = inner[0].as_bytes() if isinstance(inner, list) and inner and not isinstance(inner[0], str) else b""
            default = "forwarded.eml"
        else:
            decoded = part.get_payload(decode=True)
            payload = decoded if isinstance(decoded, bytes) else b""
            default = "attachment" + (mimetypes.guess_extension(ctype) or "")
        try:
            filename = part.get_filename()
        except Exception:  # a malformed filename parameter
            filename = None
        name = safe_filename(filename or default)
        attachments.append(({"filename": name, "content_type": ctype, "size": len(payload)}, payload))
    return msg, text, attachments


def html_to_text(html: str) -> str:
    """An HTML body as Markdown text, images dropped."""
    # Images dropped: a remote image in an email is a tracking (or exfiltration) beacon.
    return html_to_markdown(html, images=False)


def safe_filename(name: str) -> str:
    """One file name (no directories, controls or odd characters, at most 120 characters)."""
    name = CONTROL.sub("", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^\w.\- ]+", "_", name).strip(" ._") or "attachment"
    if len(name) > 120:
        stem, dot, ext = name.rpartition(".")
        name = stem[:110] + dot + ext[:9] if dot and len(ext) < 10 else name[:120]
    return name
