"""What one call leaves behind before it is written: the ``CallRecord``, and its arguments bounded for the log.

Invariants: a log line's size does not grow with the payload (a string argument longer than
``PREVIEW_CHARS`` becomes a redacted preview with its size and sha256, and arguments whose JSON is longer
than 16 KiB become one such string); every value is redacted before it is cut, so a secret straddling
the cut is never half shown. Threat model: the model may send arguments of any size and shape.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .._secrets import Redactor

__all__ = ["PREVIEW_CHARS", "CallRecord", "bounded_arguments", "dumps", "target", "truncate"]

# Keys of the arguments that best say what an action touched (the log's "target" column).
_TARGET_KEYS = ("url", "path", "source", "to", "id", "selector", "text", "language")


@dataclass(slots=True)
class CallRecord:
    """Everything known about one call when it ends."""

    action: str
    tool_name: str
    session: str
    call_id: str | None
    decision: str
    outcome: str
    duration_ms: float
    arguments: Any = None
    result: Any = None
    error_message: str | None = None
    rule: str | None = None
    record_id: str | None = None  # the intent line's id, when the action got as far as its handler
    approval: dict[str, Any] | None = None  # {"decision", "by", "rule"} when the call went through approval
    artifacts: list[str] | None = None  # workspace paths of the files a successful call produced
    ids: tuple[str | None, str | None] | None = None  # the span's trace and span ids as hex, when already known


def truncate(s: str, limit: int) -> str:
    """``s`` cut to ``limit`` characters, saying how many more there were."""
    return s if len(s) <= limit else s[:limit] + f"...[{len(s) - limit} more chars]"


# Strings of the arguments longer than this are logged as a redacted preview with their size and hash,
# and arguments whose JSON is longer than _MAX_ARGUMENTS_CHARS as one such string: a line's size does
# not grow with the payload (a 20 MB files.write costs the same line as a 2 kB one).
PREVIEW_CHARS = 1024
_MAX_ARGUMENTS_CHARS = 16_384


def bounded_arguments(arguments: Any, redactor: Redactor) -> Any:
    """The arguments as the log keeps them: redacted, each long string replaced by a preview, size and sha256."""
    if not redactor and type(arguments) is dict and len(arguments) <= 64:  # flat, short and no secrets: as they are
        room = _MAX_ARGUMENTS_CHARS
        flat: dict[str, Any] = {}  # built as it is checked (no list of the empty values to replace after)
        for k, v in arguments.items():
            if type(k) is not str or (type(v) is str and len(v) > PREVIEW_CHARS):
                break
            if type(v) is str:
                room -= 6 * (len(k) + len(v)) + 8
            elif v is None or type(v) is bool or type(v) is float or (type(v) is int and -(2**63) < v < 2**63):
                room -= 6 * len(k) + 40
            elif not v and (type(v) is dict or type(v) is list):  # http.request's headers/params when it has none
                room -= 6 * len(k) + 12
                v = type(v)()  # a new empty dict or list, as the walk gives: the line shares nothing
            else:
                break
            flat[k] = v
        else:
            if room >= 0:
                return flat
    bound = _Bound(redactor)
    out = bound.walk(arguments)
    if bound.chars <= _MAX_ARGUMENTS_CHARS:  # surely short enough: no need to encode it to know
        return out
    text = dumps(out)
    return _digest(text, redactor) if len(text) > _MAX_ARGUMENTS_CHARS else out


class _Bound:
    """One walk of ``bounded_arguments`` (an object, not a recursive closure: a closure that calls itself is
    a reference cycle, garbage for the cycle collector after every call with nested arguments)."""

    __slots__ = ("chars", "redactor")

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.chars = 0  # an upper bound of the JSON's length: 6 per character (a \\uXXXX escape) plus quotes and separators

    def walk(self, value: Any) -> Any:
        if isinstance(value, str):
            out = self.redactor.text(value) if len(value) <= PREVIEW_CHARS else _digest(value, self.redactor)
            self.chars += 6 * len(out) + 4
            return out
        if isinstance(value, dict):
            self.chars += 2
            return {self.key(k): self.walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            self.chars += 2
            return [self.walk(v) for v in value]
        if value is None or isinstance(value, bool | float):
            self.chars += 32  # at most 24 characters (-1.2345678901234567e-308), Infinity, NaN, true, null
        elif isinstance(value, int):
            self.chars += value.bit_length() // 3 + 4  # decimal digits <= bits / 3.32, a sign
        else:
            self.chars += _MAX_ARGUMENTS_CHARS + 1  # anything else is written as its str(): encode it to know
        return value

    def key(self, k: Any) -> Any:
        if isinstance(k, str):
            k = self.redactor.text(k)
            self.chars += 6 * len(k) + 4
            return k
        self.chars += 32
        return k


def _digest(value: str, redactor: Redactor) -> str:
    # Redacted BEFORE the cut (a secret straddling the cut is never half shown), hashed after redaction
    # (the hash of a value without secrets is the hash of what was written).
    text = redactor.text(value)
    raw = text.encode("utf-8", "backslashreplace")
    return f"{text[:PREVIEW_CHARS]}...[{len(text)} chars, {len(raw)} bytes UTF-8, sha256 {hashlib.sha256(raw).hexdigest()}]"


def target(arguments: Any) -> str | None:
    """The log's "target" column: the argument that best says what the call touched (one line, 200 chars)."""
    if not isinstance(arguments, dict):
        return None
    for key in _TARGET_KEYS:
        value = arguments.get(key)
        if value:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            return truncate(text.replace("\n", " "), 200)
    return None


def dumps(obj: Any) -> str:
    """JSON as spans and logs show it: non-ASCII kept, anything else as its ``str``."""
    return json.dumps(obj, ensure_ascii=False, default=str)
