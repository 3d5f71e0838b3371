"""The one egress guard: decides every network destination (http, browser, sandbox).

Two steps, both naming the rule behind a denial:

1. ``check_target(url)`` — scheme, host normalisation (decimal/hex/octal/short IPv4 forms, IPv6
   zones, IDNA, trailing dots) and the ``deny_hosts`` / ``allow_hosts`` globs (optional ``:port``).
   Pure computation, microseconds.
2. ``check_host(host, port)`` — resolves the name and checks *every* address: loopback, private,
   link-local, CGNAT, multicast, reserved, unspecified, IPv4 embedded in IPv6 (mapped, compatible,
   6to4, Teredo, NAT64) and cloud metadata addresses are refused unless the policy allows them.
   Callers connect only to the returned addresses (the connection is pinned), so DNS rebinding
   cannot swap the target after the check.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._errors import ActionError
from ._matching import HostRule, normalize_host, parse_host_rule
from ._policy import NetworkPolicy

__all__ = ["Destination", "EgressGuard", "Resolver", "Target", "classify_ip", "is_loopback_host", "normalize_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
}
_METADATA_NAMES = {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPAT = ipaddress.ip_network("::/96")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


@functools.lru_cache(maxsize=4096)
def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (a name is not resolved)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)  # ipaddress's is_private & co. scan lists of networks
def classify_ip(ip: IPAddress) -> str | None:
    """Why an address is not a public destination (``None`` if it is one)."""
    if ip in _METADATA:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped
        if embedded is None and ip in _IPV4_COMPAT and int(ip) > 1:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip.sixtofour is not None:
            embedded = ip.sixtofour
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is None and (ip in _NAT64 or ip in _NAT64_LOCAL):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = classify_ip(embedded)
            return f"{inner} (embedded in IPv6)" if inner else None
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if not ip.is_global:
        return "special-purpose"
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """A URL that passed the scheme and host rules (not yet resolved)."""

    scheme: str
    host: str
    port: int
    explicit: bool
    rule: str


@dataclass(frozen=True, slots=True)
class Destination:
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class EgressGuard:
    def __init__(self, policy: NetworkPolicy, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self.resolver: Resolver = resolver or _system_resolver
        self._allow = [parse_host_rule(r) for r in policy.allow_hosts]
        self._deny = [parse_host_rule(r) for r in policy.deny_hosts]
        self._schemes = set(policy.schemes)
        # URL -> its Target: check_target is a pure function of the URL and this (fixed) policy, and
        # URLs repeat (polling, retries). Only passes are kept; a refusal is worked out every time.
        self._targets: dict[str, Target] = {}

    # -- step 1: scheme and host rules -------------------------------------------------------------
    def check_scheme(self, url: str) -> str:
        scheme = url.split(":", 1)[0].strip().lower() if ":" in url else ""
        if scheme not in self._schemes:
            raise ActionError(
                "denied",
                f"URL scheme {scheme or '(none)'!r} is not allowed (allowed: {', '.join(sorted(self._schemes))})",
                rule="policy.network.schemes",
            )
        return scheme

    def check_target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            target = self._check_target(url)
            if len(self._targets) >= 1024:
                self._targets.clear()
            self._targets[url] = target
        return target

    def _check_target(self, url: str) -> Target:
        if _CONTROL_OR_SPACE.search(url.strip()):
            raise ActionError("invalid_input", "URL contains whitespace or control characters")
        scheme = self.check_scheme(url)
        try:
            parts = urlsplit(url.strip())
            raw_host = parts.hostname
            port = parts.port
        except ValueError as exc:
            raise ActionError("invalid_input", f"invalid URL {url!r}: {exc}") from None
        if not raw_host:
            raise ActionError("invalid_input", f"URL has no host: {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ActionError(
                "invalid_input",
                "credentials in URLs are not allowed",
                hint="Configure credentials in settings.http.auth instead.",
            )
        host = normalize_host(raw_host)
        target = self._check_host_rules(scheme, host, port or DEFAULT_PORTS.get(scheme, 0))
        literal = _ip(host)
        if literal is not None:  # no DNS needed: refuse a private literal before anything else
            self._check_ip(literal, target)
        return target

    def _check_host_rules(self, scheme: str, host: str, port: int) -> Target:
        if host in _METADATA_NAMES:
            raise ActionError("denied", f"{host} is a cloud metadata service", rule="egress guard (cloud metadata)")
        for rule in self._deny:
            if rule.matches(host, port):
                raise ActionError("denied", f"{host}:{port} is denied", rule=f"policy.network.deny_hosts[{rule.text!r}]")
        explicit: HostRule | None = None
        wildcard: HostRule | None = None
        for rule in self._allow:
            if rule.matches(host, port):
                if rule.explicit:
                    explicit = rule
                    break
                wildcard = wildcard or rule
        chosen = explicit or wildcard
        if chosen is None:
            raise ActionError(
                "denied", f"{host}:{port} is not in the allowed hosts", rule="policy.network.allow_hosts (host not listed)"
            )
        return Target(scheme, host, port, chosen.explicit, f"policy.network.allow_hosts[{chosen.text!r}]")

    # -- step 2: resolve and check every address -------------------------------------------------
    async def check_host(self, host: str, port: int, scheme: str | None = None) -> Destination:
        target = self._check_host_rules(scheme or "", normalize_host(host), port)
        return await self.resolve(target)

    async def check_url(self, url: str) -> Destination:
        return await self.resolve(self.check_target(url))

    async def resolve(self, target: Target) -> Destination:
        literal = _ip(target.host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                raw = await self.resolver(target.host, target.port)
            except (OSError, UnicodeError) as exc:
                raise ActionError(
                    "failed", f"cannot resolve {target.host}: {exc}", retryable=True, hint="Check the host name."
                ) from None
            addresses = []
            for a in raw:
                ip = _ip(a.split("%", 1)[0])
                if ip is not None and ip not in addresses:
                    addresses.append(ip)
            if not addresses:
                raise ActionError("failed", f"{target.host} has no address", retryable=True)
        for ip in addresses:
            self._check_ip(ip, target)
        return Destination(target.scheme, target.host, target.port, tuple(addresses))

    def _check_ip(self, ip: IPAddress, target: Target) -> None:
        category = classify_ip(ip)
        if category is None:
            return
        metadata = category.startswith("cloud metadata")  # also when embedded in an IPv6 address
        if not metadata and (target.explicit or self.policy.allow_private):
            return
        via = "" if str(ip) == target.host else f" (resolved from {target.host})"
        if metadata:
            # Only an explicit rule naming the address itself can open a metadata endpoint.
            if target.explicit and _ip(target.host) == ip:
                return
            raise ActionError("denied", f"{ip}{via} is a cloud metadata address", rule="egress guard (cloud metadata)")
        raise ActionError(
            "denied",
            f"{ip}{via} is a {category} address",
            rule="policy.network.allow_private=false",
            hint=f"To allow it, list '{target.host}:{target.port}' explicitly in policy.network.allow_hosts.",
        )
