"""The egress guard's decisions, with an injected resolver (no packet leaves this process)."""

from __future__ import annotations

import ipaddress

import pytest

from agent_legs import ActionError
from agent_legs._egress import EgressGuard, classify_ip, normalize_host
from agent_legs._policy import NetworkPolicy


def guard(resolve: dict[str, list[str]] | None = None, **policy) -> EgressGuard:
    table = resolve or {}

    async def resolver(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return EgressGuard(NetworkPolicy(**policy), resolver=resolver)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("EXAMPLE.com.", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("cafe.example", "cafe.example"),
    ],
)
def test_normalize_host(raw: str, canonical: str) -> None:
    assert normalize_host(raw.replace("%25", "%")) == canonical


@pytest.mark.parametrize(
    ("ip", "category"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback (embedded in IPv6)"),
        ("::ffff:10.0.0.1", "private (embedded in IPv6)"),
        ("::127.0.0.1", "loopback (embedded in IPv6)"),
        ("2002:7f00:1::", "loopback (embedded in IPv6)"),
        ("64:ff9b::a00:1", "private (embedded in IPv6)"),
        ("240.0.0.1", "reserved"),
        ("198.18.0.1", "private"),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_classify(ip: str, category: str | None) -> None:
    assert classify_ip(ipaddress.ip_address(ip)) == category


async def test_public_host_allowed_by_star() -> None:
    g = guard({"api.example.com": ["93.184.216.34"]})
    d = await g.check_url("https://api.example.com/v1")
    assert d.host == "api.example.com" and d.port == 443 and [str(a) for a in d.addresses] == ["93.184.216.34"]


async def _denied(g: EgressGuard, url: str) -> ActionError:
    with pytest.raises(ActionError) as exc:
        await g.check_url(url)
    return exc.value


async def test_name_resolving_to_private_is_denied() -> None:
    e = await _denied(guard({"evil.example": ["10.0.0.5"]}), "http://evil.example/")
    assert e.type == "denied" and "10.0.0.5 (resolved from evil.example) is a private address" in e.message
    assert e.rule == "policy.network.allow_private=false" and "evil.example:80" in e.hint


async def test_any_private_answer_denies_the_name() -> None:
    e = await _denied(guard({"split.example": ["93.184.216.34", "127.0.0.1"]}), "http://split.example/")
    assert "loopback" in e.message


async def test_explicit_private_entry_allows_exactly_that_host_and_port() -> None:
    g = guard({"localhost": ["127.0.0.1"]}, allow_hosts=["127.0.0.1:8080", "localhost:9000"])
    assert (await g.check_url("http://127.0.0.1:8080/x")).port == 8080
    assert (await g.check_url("http://localhost:9000/x")).port == 9000
    assert "not in the allowed hosts" in (await _denied(g, "http://127.0.0.1:8081/")).message
    assert "not in the allowed hosts" in (await _denied(g, "http://localhost:8080/")).message
    assert "not in the allowed hosts" in (await _denied(g, "http://127.0.0.2:8080/")).message


async def test_allow_private_opens_private_but_not_metadata() -> None:
    g = guard({"internal": ["10.0.0.5"], "meta": ["169.254.169.254"]}, allow_private=True)
    assert (await g.check_url("http://internal/")).addresses[0] == ipaddress.ip_address("10.0.0.5")
    e = await _denied(g, "http://meta/")
    assert e.rule == "egress guard (cloud metadata)"
    assert (await _denied(g, "http://169.254.169.254/latest/meta-data/")).rule == "egress guard (cloud metadata)"
    g2 = guard(allow_hosts=["169.254.169.254"])
    assert (await g2.check_url("http://169.254.169.254/")).port == 80  # only when named explicitly


async def test_deny_hosts_beat_allow() -> None:
    g = guard({"api.evil.com": ["93.184.216.34"], "ok.com": ["93.184.216.35"]}, deny_hosts=["*.evil.com"])
    e = await _denied(g, "https://api.evil.com/")
    assert e.rule == "policy.network.deny_hosts['*.evil.com']"
    assert (await g.check_url("https://ok.com/")).host == "ok.com"


async def test_allow_globs_and_ports() -> None:
    g = guard({"a.github.com": ["140.82.112.3"], "github.com": ["140.82.112.4"]}, allow_hosts=["*.github.com", "github.com:443"])
    assert (await g.check_url("https://a.github.com/")).host == "a.github.com"
    assert (await g.check_url("https://github.com/")).host == "github.com"
    assert "not in the allowed hosts" in (await _denied(g, "http://github.com/")).message
    assert "not in the allowed hosts" in (await _denied(g, "https://example.com/")).message


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/",
        "gopher://x/",
        "javascript:alert(1)",
        "data:text/html,hi",
        "dict://127.0.0.1:11211/",
        "//example.com/x",
        "example.com",
    ],
)
async def test_schemes(url: str) -> None:
    e = await _denied(guard({"example.com": ["93.184.216.34"]}), url)
    assert e.type == "denied" and e.rule == "policy.network.schemes"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@example.com/",
        "http://exa mple.com/",
        "http://[::1/",
        "http://example.com:99999/",
        "http://\n127.0.0.1/",
        "http:///path",
    ],
)
async def test_malformed(url: str) -> None:
    e = await _denied(guard({"example.com": ["93.184.216.34"]}), url)
    assert e.type == "invalid_input", e


async def test_metadata_names_denied_without_dns() -> None:
    e = await _denied(guard(), "http://metadata.google.internal/computeMetadata/v1/")
    assert e.rule == "egress guard (cloud metadata)"


async def test_dns_failure_is_a_clear_error() -> None:
    e = await _denied(guard(), "https://no-such-host.example/")
    assert e.type == "failed" and "cannot resolve" in e.message


async def test_check_host_for_proxies() -> None:
    g = guard({"example.com": ["93.184.216.34"]})
    assert (await g.check_host("example.com", 443)).addresses
    with pytest.raises(ActionError):
        await g.check_host("127.0.0.1", 22)


@pytest.mark.parametrize(
    "raw",
    [
        "0X7F000001",
        "127.000.000.001",
        "0x7f.1",
        "127.0.0.1.",
        "[::FFFF:127.0.0.1]",
        "[0:0:0:0:0:0:0:1]",
        "[::1%eth0]",
        "LocalHost.",
    ],
)
def test_normalize_more_forms(raw: str) -> None:
    assert normalize_host(raw) in ("127.0.0.1", "::ffff:7f00:1", "::1", "localhost")


@pytest.mark.parametrize("ip", ["::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "64:ff9b::a9fe:a9fe"])
async def test_metadata_embedded_in_ipv6_stays_blocked_with_allow_private(ip: str) -> None:
    g = guard({"meta6": [ip]}, allow_private=True)
    assert (await _denied(g, f"http://[{ip}]/")).rule == "egress guard (cloud metadata)"
    assert (await _denied(g, "http://meta6/")).rule == "egress guard (cloud metadata)"


async def test_allow_private_applies_to_hosts_matched_by_allow_hosts_only() -> None:
    g = guard({"db.internal": ["10.0.0.7"], "other": ["10.0.0.8"]}, allow_hosts=["*.internal"], allow_private=True)
    assert (await g.check_url("http://db.internal/")).host == "db.internal"
    assert "not in the allowed hosts" in (await _denied(g, "http://other/")).message


async def test_deny_rules_see_normalised_hosts_and_ports() -> None:
    g = guard(allow_hosts=["127.0.0.1:8080"], deny_hosts=["127.0.0.1:8080"])
    e = await _denied(g, "http://2130706433:8080/")
    assert e.rule == "policy.network.deny_hosts['127.0.0.1:8080']"
    g = guard({"a.evil.com": ["93.184.216.34"]}, deny_hosts=["*.EVIL.com"])
    assert (await _denied(g, "https://A.Evil.COM./")).rule == "policy.network.deny_hosts['*.EVIL.com']"


async def test_cidr_and_ipv6_rules() -> None:
    g = guard(allow_hosts=["[::1]:8080", "10.1.0.0/16"])
    assert (await g.check_url("http://[::1]:8080/")).addresses[0] == ipaddress.ip_address("::1")
    assert (await g.check_url("http://10.1.2.3/")).port == 80
    assert "not in the allowed hosts" in (await _denied(g, "http://10.2.0.1/")).message


async def test_dns_answers_with_zones_and_link_local() -> None:
    e = await _denied(guard({"ll.example": ["fe80::1%eth0"]}), "http://ll.example/")
    assert "link-local" in e.message


async def test_empty_dns_answer_and_garbage_are_failures() -> None:
    e = await _denied(guard({"empty.example": [], "junk.example": ["not-an-ip"]}), "http://empty.example/")
    assert e.type == "failed" and e.retryable
    assert (await _denied(guard({"junk.example": ["not-an-ip"]}), "http://junk.example/")).type == "failed"


async def test_system_resolver_with_localhost() -> None:
    g = EgressGuard(NetworkPolicy())  # the real resolver: localhost is loopback
    e = await _denied(g, "http://localhost:9/")
    assert e.type == "denied" and "loopback" in e.message and e.rule == "policy.network.allow_private=false"
    d = await EgressGuard(NetworkPolicy(allow_hosts=["localhost:9"])).check_url("http://localhost:9/")
    assert all(a.is_loopback for a in d.addresses)


def test_check_scheme_is_sync_and_names_the_rule() -> None:
    g = guard()
    for url in ("file:///etc/passwd", "data:text/html,x", "javascript:alert(1)", "JAVASCRIPT:alert(1)", "blob:x"):
        with pytest.raises(ActionError) as exc:
            g.check_scheme(url)
        assert exc.value.rule == "policy.network.schemes"
    g.check_scheme("HTTPS://example.com/")
