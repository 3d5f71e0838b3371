"""Addresses and header values: the checks every recipient and header of ``email.send`` passes.

Threat model: the model (possibly prompt-injected) chooses the recipients, the subject and the body;
the operator chooses ``policy.email.allow_recipients`` and ``settings.email.from_address``. The model
must not reach anyone the policy does not allow, by any spelling, nor forge headers.

Invariants:

* only bare ASCII addresses are accepted (``parse_address``): no display names, comments, groups,
  encoded words (``?``), source routes (``%``, ``!``), ``/`` or IDN look-alikes (an international
  domain only in its ``xn--`` form); the domain is lower-cased, so the address checked against the
  policy is the address the envelope carries;
* every recipient (to, cc, bcc) must match ``policy.email.allow_recipients`` (case-insensitive globs,
  ``agent_legs._matching.text_matches``), and there are at most ``policy.email.max_recipients``;
* no header value may hold a control character, a Unicode line or paragraph separator, a bidi
  override or a zero-width mark (``CONTROL``): header injection (a second ``Bcc:`` line) and display
  spoofing cannot happen. The IMAP folder names, search values and saved attachment names are held
  to the same character rule.
"""

from __future__ import annotations

import email.utils
import re

from ..._context import ActionContext
from ..._errors import ActionError
from ..._matching import text_matches

__all__ = ["ADDRESS", "CONTROL", "check_recipients", "clean_header", "parse_address", "sender"]

# The local part is RFC 5322's dot-atom minus "?" (encoded words, "=?utf-8?b?...?="), "%" and "!"
# (source routes a relay may follow: "evil.com!ana@ok.com", "ana%evil.com@ok.com") and "/".
ADDRESS = re.compile(
    r"^[A-Za-z0-9.#$&'*+=^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
# C0/C1 controls, Unicode line/paragraph separators (str.splitlines() breaks on them, so does
# the email package's folding) and bidi overrides / zero-width marks (display spoofing).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def clean_header(name: str, value: str) -> str:
    """``value`` unchanged, or ``invalid_input`` if it holds a line break or control character."""
    if CONTROL.search(value):
        raise ActionError("invalid_input", f"{name} contains a line break or control character")
    return value


def parse_address(value: str, field_name: str = "address") -> str:
    """A bare address (``local@domain``, domain lower-cased), or ``invalid_input`` naming the field."""
    raw = value.strip()
    if CONTROL.search(raw):
        raise ActionError("invalid_input", f"{field_name} {value!r} contains a line break or control character")
    if len(raw) > 254 or raw.count("@") != 1 or not ADDRESS.match(raw) or ".." in raw or raw.startswith("."):
        raise ActionError(
            "invalid_input",
            f"{field_name} {value!r} is not a plain email address",
            hint="Use bare ASCII addresses like 'ana@example.com': no names, brackets, commas "
            "or comments (an international domain in its xn-- form).",
        )
    local, domain = raw.rsplit("@", 1)
    if local.endswith("."):
        raise ActionError("invalid_input", f"{field_name} {value!r} is not a plain email address")
    return f"{local}@{domain.lower()}"


def check_recipients(ctx: ActionContext, addresses: list[str]) -> None:
    """``denied`` (naming the rule) unless every address is allowed and there are not too many."""
    policy = ctx.policy.email
    if len(addresses) > policy.max_recipients:
        raise ActionError(
            "denied",
            f"{len(addresses)} recipients exceed the limit of {policy.max_recipients} (policy.email.max_recipients)",
            rule="policy.email.max_recipients",
        )
    for addr in addresses:
        # Case-insensitive: domains are, and mail providers treat local parts so too.
        if not text_matches(addr, policy.allow_recipients):
            allowed = ", ".join(policy.allow_recipients) if policy.allow_recipients else "empty: nobody"
            raise ActionError(
                "denied",
                f"recipient {addr} is not allowed by policy.email.allow_recipients ({allowed})",
                rule="policy.email.allow_recipients",
                hint="Only send to addresses the policy allows; ask the user otherwise.",
            )


def sender(configured: str) -> tuple[str, str]:
    """(envelope address, From header) from the operator's setting: 'bot@x.com' or 'Bot <bot@x.com>'."""
    name, addr = email.utils.parseaddr(configured)
    if not configured or CONTROL.search(configured) or not ADDRESS.match(addr):
        raise ActionError(
            "failed",
            f"no valid sender address configured ({configured!r})",
            hint="Set settings.email.from_address, e.g. 'bot@example.com' or 'Bot <bot@example.com>'.",
        )
    address = parse_address(addr, "settings.email.from_address")
    return address, email.utils.formataddr((name, address)) if name else address
