"""Labels: which results are *private* (the user's data) and which are *untrusted* (may carry an
injected instruction), and the text of a result the index covers.

* private: ``files.read``, ``files.search``, ``email.read``, ``email.list``, ``code.run`` output,
  ``http.request`` responses from a host that has configured credentials (``settings.http.auth``),
  and the actions ``policy.flows.private_sources`` names;
* untrusted: ``browser.*``, ``http.request``, ``email.*`` and ``mcp.*`` results;
* writes: ``files.write``/``files.edit`` leave the digest of the file they wrote in the worker's
  memory, so that a file the session wrote itself is judged by its content when it is attached,
  while any other workspace file is private by provenance (also one written on another worker:
  friction, never a leak).

Invariant: the indexed text is the content the model was given (the result's output after redaction;
of an ``http.request`` the body without the status line and headers): whatever private content the
model can copy into a sink, the index covers. Metadata (paths, sizes, response headers) is not
indexed: it would make every later request that repeats a content type or a URL look private.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

from .._matching import name_matches, normalize_host, parse_host_rule

__all__ = ["WRITES", "is_private", "is_untrusted", "result_texts", "url_host"]

_PRIVATE = ("files.read", "files.search", "email.read", "email.list", "code.run")
_UNTRUSTED = ("browser.*", "http.request", "email.*", "mcp.*")
WRITES = ("files.write", "files.edit")


def url_host(url: str) -> tuple[str, int] | None:
    """The canonical host and port ``url`` names, or ``None`` when it names none."""
    # A sink check asks it per call and URLs repeat: remembered, but only short ones (the model
    # chooses URLs: 1,024 long ones must not pin megabytes).
    return _url_host(url) if len(url) <= _CACHED_URL_CHARS else _url_host.__wrapped__(url)


_CACHED_URL_CHARS = 2048


@functools.lru_cache(maxsize=1024)  # pure: errors become None
def _url_host(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url.strip())
        if not parts.hostname:
            return None
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower(), 0)
        return normalize_host(parts.hostname), port
    except Exception:  # ValueError (bad port), ActionError (bad host): no host
        return None


def is_private(action: str, arguments: dict[str, Any], extra: list[str], credentialed: list[str]) -> bool:
    # Loops, not generators: a generator reading ``action`` or ``target`` makes each a closure cell of
    # every call (asked after every result of a reading action), and a function and generator per use.
    if action in _PRIVATE:
        return True
    for pattern in extra:
        if name_matches(pattern, action):
            return True
    if action == "http.request" and credentialed:
        target = url_host(str(arguments.get("url", "")))
        if target is None:
            return False
        for rule in credentialed:
            if _host_matches(rule, *target):
                return True
    return False


@functools.lru_cache(maxsize=1024)  # pure: asked after every result of a reading action
def is_untrusted(action: str) -> bool:
    return any(name_matches(p, action) for p in _UNTRUSTED)


def _host_matches(rule: str, host: str, port: int) -> bool:
    try:
        return parse_host_rule(rule).matches(host, port)
    except Exception:  # a rule that names no host matches nothing
        return False


def result_texts(action: str, output: str) -> str:
    """The part of a result the index covers: the output the model reads; of an ``http.request``,
    the response body (its status line and headers are the server's, and name the URL)."""
    if action == "http.request":
        _, sep, body = output.partition("\n\n")
        return body if sep else output
    return output
