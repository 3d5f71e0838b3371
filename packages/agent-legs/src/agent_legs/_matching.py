"""The one matcher module: every pattern a policy or a caller writes is matched here.

* Path globs (``policy.files.deny``, ``files.list``/``files.search`` patterns, the sandbox's masks):
  ``glob_to_regex`` (``**`` spans directories, ``*`` and ``?`` stay within one name),
  ``path_matcher`` (patterns without ``/`` match a name at any depth, as .gitignore does) and
  ``DenyList`` (a path is denied when it or an ancestor matches; case-insensitive).
* Host rules (``network.allow_hosts``/``deny_hosts``, ``http.auth[].hosts``, trusted destinations):
  ``parse_host_rule`` after ``normalize_host`` (one host parser: decimal/hex/octal IPv4 forms, IPv6
  zones, IDNA and trailing dots all become one canonical name, so two rules cannot disagree about
  what host a URL names).
* Names (action names in ``allow``/``deny``/``require_approval``, the adapters' ``include``/
  ``exclude``): ``name_pattern``/``name_matches``, case-sensitive ``fnmatch`` globs.
* Free text values (email recipients, ``unless`` conditions): ``text_matches``, case-insensitive
  globs.

Invariants: matching is pure (no I/O, no resolution); a pattern that cannot compile matches itself
literally rather than everything; host names are compared only in their canonical form.

Threat model: the model chooses the values (paths, URLs, recipients) but not the patterns, which
come from the operator's policy. Every equivalent spelling of a value (case, IP forms, IDNA, ``..``
handled by the callers' normalisation) must meet the same rule.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._errors import ActionError

__all__ = [
    "DenyList",
    "HostRule",
    "glob_to_regex",
    "name_matches",
    "name_pattern",
    "normalize_host",
    "parse_host_rule",
    "path_matcher",
    "text_matches",
]

_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)  # pure; errors are not cached
def normalize_host(host: str) -> str:
    """Lowercase, IDNA-encode, strip a trailing dot, and canonicalise IP literals.

    ``2130706433``, ``0x7f000001``, ``0177.0.0.1`` and ``127.1`` all become ``127.0.0.1`` (as
    browsers and libc read them); ``[::ffff:127.0.0.1]`` becomes ``::ffff:7f00:1``.
    """
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    h = h.rstrip(".").lower()
    if not h:
        raise ActionError("invalid_input", "empty host name")
    if "%" in h or ":" in h:
        try:
            return str(ipaddress.ip_address(h.split("%", 1)[0]))  # zones say nothing about the target
        except ValueError:
            raise ActionError("invalid_input", f"invalid IPv6 address {host!r}") from None
    if not h.isascii():
        try:  # IDNA (with NFKC mapping): fullwidth digits and dots become ASCII here
            h = h.encode("idna").decode("ascii").rstrip(".")
        except UnicodeError:
            raise ActionError("invalid_input", f"invalid host name {host!r}") from None
    if _NUMERIC_HOST.match(h):
        try:
            return socket.inet_ntoa(socket.inet_aton(h))
        except OSError:
            if h.replace(".", "").isdigit():
                raise ActionError("invalid_input", f"invalid IPv4 address {host!r}") from None
    if not re.fullmatch(r"[a-z0-9_.-]+", h) or ".." in h:
        raise ActionError("invalid_input", f"invalid host name {host!r}")
    return h


@dataclass(frozen=True, slots=True)
class HostRule:
    """One ``host[:port]`` rule: an exact name or IP (normalised), a glob (``*.example.com``) or a CIDR."""

    text: str
    host_rx: re.Pattern[str] | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None
    explicit: bool  # names one host (no wildcard): may reach a private address

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                return False
            return ip.version == self.network.version and ip in self.network
        return self.host_rx is not None and self.host_rx.match(host) is not None


def parse_host_rule(text: str) -> HostRule:
    """Parse ``host``, ``host:port``, ``[v6]:port``, ``*.glob`` or ``cidr/len``; ``ValueError`` on a bad port."""
    raw = text.strip().lower()
    port: int | None = None
    host = raw
    m = re.fullmatch(r"\[([0-9a-f:.%a-z]+)\](?::(\d+))?", raw)
    if m:  # [v6]:port
        host, port = m.group(1), int(m.group(2)) if m.group(2) else None
    elif raw.count(":") == 1:
        host, _, p = raw.partition(":")
        if not p.isdigit():
            raise ValueError(f"invalid port in host rule {text!r}")
        port = int(p)
    if "/" in host:
        return HostRule(text, None, ipaddress.ip_network(host, strict=False), port, True)
    if host == "*" or any(c in host for c in "*?["):
        rx = re.compile("^" + re.escape(host).replace(r"\*", "[^/]*").replace(r"\?", ".") + "$")
        return HostRule(text, rx, None, port, False)
    canonical = normalize_host(host)
    return HostRule(text, re.compile("^" + re.escape(canonical) + "$"), None, port, True)


def glob_to_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """Translate a path glob: ``**`` spans directories, ``*`` and ``?`` stay within one name."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern.startswith("[!", i) or pattern.startswith("[]", i) else i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    try:
        return re.compile("".join(out) + r"\Z", flags)
    except re.error:  # e.g. a reversed range "[z-a]": match it literally rather than fail
        return re.compile(re.escape(pattern) + r"\Z", flags)


def path_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate on relative paths: patterns with '/' match the whole path, others any name
    (as .gitignore and ripgrep do), so '*.py' finds Python files at any depth."""
    rx = glob_to_regex(pattern)
    if "/" in pattern:
        return lambda rel: rx.match(rel) is not None
    return lambda rel: rx.match(rel.rsplit("/", 1)[-1]) is not None


def _union(rxs: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{rx.pattern})" for rx in rxs), re.DOTALL | re.IGNORECASE) if rxs else None


class DenyList:
    """``policy.files.deny``: the one matcher every family uses (files, attachments, uploads, the
    sandbox's masks), so they cannot disagree.

    A path is denied when the path itself or any of its ancestors matches a pattern: patterns
    without '/' match a name at any depth (``.env`` denies ``a/.env`` and ``a/.env/b``), others match
    a whole path from the root (``secrets/**`` denies ``secrets/a``; ``secrets/*`` denies
    ``secrets/a/b`` too, through its ancestor ``secrets/a``). Matching ignores case (Unicode
    case folding as ``re.IGNORECASE`` does it): the workspace may sit on a case-insensitive file
    system, where ``.ENV`` *is* ``.env``, and ``server.PEM`` is a key whatever its case.
    """

    __slots__ = ("_names", "_paths", "_rules", "by_path")

    def __init__(self, patterns: list[str]) -> None:
        rules = []
        for p in patterns:
            # '**/NAME' (NAME without '/') is a name pattern: it matches NAME at any depth.
            name = p[3:] if p.startswith("**/") and "/" not in p[3:] and "**" not in p[3:] else p
            anywhere = "/" not in name
            rules.append((p, glob_to_regex(name if anywhere else p, ignore_case=True), anywhere))
        self._rules = rules
        self._names = _union([rx for _, rx, anywhere in rules if anywhere])
        self._paths = _union([rx for _, rx, anywhere in rules if not anywhere])
        self.by_path = self._paths is not None
        """Whether some pattern matches whole paths: only then can a rename of a directory change
        the denial of what is inside it (name patterns deny the same entries wherever they are)."""

    def __bool__(self) -> bool:
        return bool(self._rules)

    def rule(self, rel: str) -> str | None:
        """The first pattern that denies the normalised relative path ``rel`` ('a/b.txt'), or None."""
        if not self._rules or rel in ("", "."):
            return None
        parts = rel.split("/")
        # Combined regexes answer "denied?" (the common answer is no); then find which rule.
        names, paths = self._names, self._paths
        if names is None or not any(map(names.match, parts)):
            if paths is None:
                return None
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if not any(map(paths.match, prefixes)):
                return None
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern, rx, anywhere in self._rules:
            if any(rx.match(x) for x in prefixes) or (anywhere and any(rx.match(p) for p in parts)):
                return pattern
        return None


@functools.lru_cache(maxsize=1024)
def name_pattern(pattern: str) -> re.Pattern[str]:
    """A case-sensitive ``fnmatch`` glob over names (``files.*``, ``*_read``)."""
    return re.compile(fnmatch.translate(pattern))


def name_matches(pattern: str, *names: str) -> bool:
    """Whether ``pattern`` matches any of ``names`` (an action's name and its tool name)."""
    rx = name_pattern(pattern)
    return any(rx.match(n) is not None for n in names)


@functools.lru_cache(maxsize=4096)
def _text_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.strip().lower()), re.DOTALL)


def text_matches(value: str, patterns: Iterable[str]) -> bool:
    """Whether ``value`` fits one of ``patterns``: case-insensitive globs (recipients, ``unless`` values)."""
    v = value.lower()
    return any(_text_pattern(p).match(v) is not None for p in patterns)
