"""Secrets: named values used in settings as ``{secret:NAME}`` and scrubbed from everything.

A secret value never reaches the model, a span or the action log: ``Redactor`` replaces every
occurrence (and its common encodings) with ``[REDACTED:NAME]``.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

from ._errors import ConfigError

__all__ = ["Redactor", "Secrets"]

_REF = re.compile(r"\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")
_MIN_SECRET_LEN = 4  # shorter values would redact ordinary text


class Secrets(Mapping[str, str]):
    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = {str(k): str(v) for k, v in (values or {}).items()}

    @classmethod
    def from_env(cls, prefix: str = "AGENT_LEGS_SECRET_") -> Secrets:
        """Every ``<prefix>NAME`` environment variable becomes secret ``NAME``."""
        return cls({k[len(prefix):]: v for k, v in os.environ.items() if k.startswith(prefix) and v})

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
    """Scrubs secret values (raw, URL-encoded, base64) from strings and nested data."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        variants: dict[str, str] = {}
        for name, value in secrets.items():
            if len(value) < _MIN_SECRET_LEN:
                continue
            for form in _encodings(value):
                variants.setdefault(form, name)
        self._names = variants
        ordered = sorted(variants, key=len, reverse=True)
        self._rx = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._rx is not None

    def text(self, s: str) -> str:
        if self._rx is None or not s:
            return s
        return self._rx.sub(lambda m: f"[REDACTED:{self._names[m.group(0)]}]", s)

    def data(self, obj: Any) -> Any:
        if self._rx is None:
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.text(k) if isinstance(k, str) else k: self.data(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.data(v) for v in obj)
        return obj


def _encodings(value: str) -> set[str]:
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    raw = value.encode()
    forms.add(base64.b64encode(raw).decode().rstrip("="))
    forms.add(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    return {f for f in forms if len(f) >= _MIN_SECRET_LEN}
