"""Secrets: named values used in settings as ``{secret:NAME}`` and scrubbed from everything.

Invariants (threat model: the agent is fully compromised and wants a secret back, e.g. by making a
server reflect the ``Authorization`` header it was sent, or by reading a file that holds the key):

* A secret value never reaches the model, a span or the action log: ``Redactor`` replaces every
  occurrence with ``[REDACTED:NAME]``, and every common encoding of it too: percent-encoding (upper-
  and lower-case hex, ``+`` for space), JSON string escaping, hex (lower and upper case), and base64
  and base64url at each of the three byte alignments (a secret after ``user:`` in Basic auth lands at
  an arbitrary offset of the encoded stream; the characters that depend on the secret alone are
  scrubbed, the one or two mixed with its neighbours carry at most 4 of its bits each).
* Scrub first, cut after. Whoever shortens text (the runtime's output bound, a page of a long
  document, the head of a stream) scrubs the whole text first; text that is itself only the head of
  something longer (a body cut at a byte cap) is scrubbed with ``cut=True``, which also removes a
  trailing partial occurrence: a secret straddling a cut never leaks its prefix.
* Values shorter than 4 characters are not scrubbed (they would redact ordinary text); encoded forms
  shorter than 6 characters are not either.

Cost: one ``str.__contains__`` (a C substring search) per form over the text, then one compiled
alternation of only the forms present; for five 32-character secrets over 100 KB: about 2 ms.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

from ._errors import ConfigError

__all__ = ["Redactor", "Secrets"]

_REF = re.compile(r"\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")
_MIN_SECRET_LEN = 4  # shorter values would redact ordinary text
_MIN_ENCODED_LEN = 6  # an encoded form (or the stable core of one) shorter than this is too common to scrub
_MIN_PARTIAL_LEN = 4  # a trailing partial occurrence this long or longer is scrubbed from cut text
_PERCENT = re.compile(r"%[0-9A-F]{2}")
_URLSAFE = str.maketrans("+/", "-_")


class Secrets(Mapping[str, str]):
    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = {str(k): str(v) for k, v in (values or {}).items()}

    @classmethod
    def from_env(cls, prefix: str = "AGENT_LEGS_SECRET_") -> Secrets:
        """Every ``<prefix>NAME`` environment variable becomes secret ``NAME``."""
        return cls({k[len(prefix) :]: v for k, v in os.environ.items() if k.startswith(prefix) and v})

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._values)})"  # names only, never values

    def resolve(self, template: str) -> str:
        """Replace ``{secret:NAME}`` references; an unknown name is a configuration error."""

        def sub(m: re.Match[str]) -> str:
            try:
                return self._values[m.group(1)]
            except KeyError:
                raise ConfigError(f"unknown secret {m.group(1)!r} referenced in settings") from None

        return _REF.sub(sub, template)


class Redactor:
    """Scrubs secret values and their encodings from strings and nested data."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        forms: dict[str, str] = {}
        for name, value in secrets.items():
            if len(value) < _MIN_SECRET_LEN:
                continue
            forms.setdefault(value, name)
            for form in _encodings(value):
                forms.setdefault(form, name)
        self._names = forms
        # Longest first: where forms overlap, the longer one is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)
        # Every proper prefix of every form (at least _MIN_PARTIAL_LEN long): what a cut may leave behind.
        self._prefixes: dict[str, str] = {}
        for form in self._forms:
            for k in range(_MIN_PARTIAL_LEN, len(form)):
                self._prefixes.setdefault(form[:k], forms[form])
        self._longest_prefix = max((len(p) for p in self._prefixes), default=0)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def text(self, s: str, *, cut: bool = False) -> str:
        """``s`` with every secret form replaced by ``[REDACTED:NAME]``.

        ``cut=True`` says ``s`` is the head of a longer text: a trailing partial form (a secret
        straddling the cut) is replaced as well.
        """
        forms = self._forms
        if not forms or not s:
            return s
        # A loop, not a comprehension: a comprehension reading ``s`` would make ``s`` a cell, allocated
        # (a garbage-collected object) on every call, secrets or not.
        present: list[str] | None = None
        for f in forms:  # C substring searches: the fast common case is none
            if f in s:
                if present is None:
                    present = []
                present.append(f)
        if present:
            rx = re.compile("|".join(map(re.escape, present)))  # re caches compiled patterns
            s = rx.sub(lambda m: f"[REDACTED:{self._names[m.group(0)]}]", s)
        if cut:
            s = self._scrub_tail(s)
        return s

    def cut(self, s: str, limit: int) -> str:
        """The first ``limit`` characters of ``s``, scrubbed as a whole before the cut."""
        s = self.text(s)
        return s if len(s) <= limit else self.text(s[:limit], cut=True)

    def _scrub_tail(self, s: str) -> str:
        for k in range(min(self._longest_prefix, len(s)), _MIN_PARTIAL_LEN - 1, -1):
            name = self._prefixes.get(s[-k:])
            if name is not None:
                return f"{s[:-k]}[REDACTED:{name}]"
        return s

    def data(self, obj: Any) -> Any:
        if not self._forms:
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.text(k) if isinstance(k, str) else k: self.data(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.data(v) for v in obj)
        return obj


def _encodings(value: str) -> set[str]:
    """The encoded forms of ``value`` worth scrubbing (the value itself excluded)."""
    raw = value.encode()
    forms: set[str] = set()
    for quoted in (urllib.parse.quote(value, safe=""), urllib.parse.quote(value), urllib.parse.quote_plus(value)):
        forms.add(quoted)
        forms.add(_PERCENT.sub(lambda m: m.group(0).lower(), quoted))
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(raw.hex())
    forms.add(raw.hex().upper())
    full = base64.b64encode(raw).decode().rstrip("=")
    forms.update((full, full.translate(_URLSAFE)))
    n = len(raw)
    for k in range(3):  # the secret starting at byte k of a 3-byte group of the encoded stream
        encoded = base64.b64encode(b"\0" * k + raw + b"\0\0").decode()
        # character i covers bits [6i, 6i + 6): keep those inside the secret's bits [8k, 8(k + n))
        core = encoded[-(-8 * k // 6) : 8 * (k + n) // 6]
        forms.update((core, core.translate(_URLSAFE)))
    return {f for f in forms if f != value and len(f) >= _MIN_ENCODED_LEN}
