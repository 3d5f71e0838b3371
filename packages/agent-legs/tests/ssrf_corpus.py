"""SSRF attack corpus for http.request, run by test_ssrf.py inside a loopback-only netns.

An allowed server is listed explicitly ("127.0.0.1:<port>"); a second loopback server plays the
internal service an attacker wants. Every case must be refused, naming a rule, and the internal
server must receive nothing. Every case runs on both connection layers (aiohttp and httpx's own).
"""

from __future__ import annotations

import pytest

from agent_legs import Legs

pytestmark = pytest.mark.usefixtures("isolated_netns")

RESOLVE = {
    "internal.corp": ["127.0.0.1"],
    "private.corp": ["10.0.0.5"],
    "split.corp": ["93.184.216.34", "127.0.0.1"],
    "rebind.corp": ["127.0.0.1"],
    "meta.corp": ["169.254.169.254"],
    "v6.corp": ["::1"],
    "mapped.corp": ["::ffff:127.0.0.1"],
    "meta6.corp": ["::ffff:169.254.169.254"],
    "cgnat.corp": ["100.64.1.1"],
    "zero.corp": ["0.0.0.0"],
    "ula.corp": ["fd12:3456::1"],
}


@pytest.fixture(params=["aiohttp", "httpx"])
def env(request, tmp_path, http_server, second_http_server):
    flips: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        if host == "flip.corp":  # DNS rebinding: public for the first lookup, loopback afterwards
            flips.append(host)
            return ["93.184.216.34"] if len(flips) == 1 else ["127.0.0.1"]
        if host in RESOLVE:
            return RESOLVE[host]
        if host == "localhost":
            import socket

            return [i[4][0] for i in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
        raise OSError(f"unknown host {host}")

    allowed = f"127.0.0.1:{http_server.port}"
    legs = Legs(
        workspace=tmp_path / "ws",
        state_dir=tmp_path / "st",
        resolver=resolver,
        policy={"network": {"allow_hosts": ["*", allowed]}},
        settings={"http": {"transport": request.param}},
    )
    yield legs, http_server, second_http_server
    legs.close()


def cases(allowed: int, internal: int) -> list[tuple[str, str]]:
    a, i = allowed, internal
    redirect = f"http://127.0.0.1:{a}/redirect?to="
    return [
        ("direct", f"http://127.0.0.1:{i}/secret"),
        ("decimal", f"http://2130706433:{i}/"),
        ("hex", f"http://0x7f000001:{i}/"),
        ("hex-dotted", f"http://0x7f.0x0.0x0.0x1:{i}/"),
        ("hex-upper", f"http://0X7F000001:{i}/"),
        ("octal-padded", f"http://0177.0000.0000.0001:{i}/"),
        ("zero-padded", f"http://127.000.000.001:{i}/"),
        ("trailing-dot-ip", f"http://127.0.0.1.:{i}/"),
        ("short-hex", f"http://0x7f.1:{i}/"),
        ("octal", f"http://0177.0.0.1:{i}/"),
        ("short", f"http://127.1:{i}/"),
        ("other-loopback", f"http://127.0.0.2:{i}/"),
        ("ipv6-loopback", f"http://[::1]:{i}/"),
        ("ipv4-mapped", f"http://[::ffff:127.0.0.1]:{i}/"),
        ("ipv4-mapped-hex", f"http://[0:0:0:0:0:ffff:7f00:1]:{i}/"),
        ("ipv4-compat", f"http://[::127.0.0.1]:{i}/"),
        ("6to4", f"http://[2002:7f00:1::]:{i}/"),
        ("nat64", f"http://[64:ff9b::7f00:1]:{i}/"),
        ("ipv6-zone", f"http://[fe80::1%25lo]:{i}/"),
        ("ipv6-loopback-long", f"http://[0:0:0:0:0:0:0:1]:{i}/"),
        ("ipv6-loopback-zone", f"http://[::1%25lo]:{i}/"),
        ("ipv4-mapped-metadata", "http://[::ffff:169.254.169.254]/"),
        ("teredo", f"http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{i}/"),
        ("ula", "http://[fd00::1]/"),
        ("unspecified", f"http://0.0.0.0:{i}/"),
        ("unspecified-short", f"http://0:{i}/"),
        ("unspecified-v6", f"http://[::]:{i}/"),
        ("localhost", f"http://localhost:{i}/"),
        ("localhost-dot", f"http://LOCALHOST.:{i}/"),
        ("fullwidth", f"http://１２７.０.０.１:{i}/"),
        ("allowed-host-other-port", f"http://127.0.0.1:{i}/"),
        ("metadata", "http://169.254.169.254/latest/meta-data/"),
        ("metadata-name", "http://metadata.google.internal/computeMetadata/v1/"),
        ("cgnat", "http://100.64.0.1/"),
        ("private-10", "http://10.0.0.1/"),
        ("private-192", "http://192.168.0.1/"),
        ("dns-loopback", f"http://internal.corp:{i}/"),
        ("dns-private", "http://private.corp/"),
        ("dns-split", f"http://split.corp:{i}/"),
        ("dns-v6", f"http://v6.corp:{i}/"),
        ("dns-mapped", f"http://mapped.corp:{i}/"),
        ("dns-rebinding", f"http://flip.corp:{i}/"),
        ("dns-metadata", "http://meta.corp/"),
        ("dns-metadata-v6", "http://meta6.corp/"),
        ("dns-cgnat", "http://cgnat.corp/"),
        ("dns-zero", f"http://zero.corp:{i}/"),
        ("dns-ula", "http://ula.corp/"),
        ("metadata-alibaba", "http://100.100.100.200/latest/meta-data/"),
        ("metadata-aws-v6", "http://[fd00:ec2::254]/latest/meta-data/"),
        ("link-local", "http://169.254.1.1/"),
        ("multicast", "http://224.0.0.1/"),
        ("reserved", "http://240.0.0.1/"),
        ("userinfo", f"http://127.0.0.1:{a}@127.0.0.1:{i}/"),
        ("redirect-direct", f"{redirect}http://127.0.0.1:{i}/secret"),
        ("redirect-decimal", f"{redirect}http://2130706433:{i}/"),
        ("redirect-v6", f"{redirect}http://[::1]:{i}/"),
        ("redirect-localhost", f"{redirect}http://localhost:{i}/"),
        ("redirect-dns", f"{redirect}http://rebind.corp:{i}/"),
        ("redirect-metadata", f"{redirect}http://169.254.169.254/"),
        ("redirect-file", f"{redirect}file:///etc/passwd"),
        ("redirect-gopher", f"{redirect}gopher://127.0.0.1:{i}/_x"),
        ("redirect-protocol-relative", f"{redirect}//127.0.0.1:{i}/x"),
        (
            "redirect-chain",
            f"{redirect}" + f"http://127.0.0.1:{a}/redirect?to=http://127.0.0.1:{i}/".replace("?", "%3F").replace("=", "%3D"),
        ),
        ("redirect-307-post", f"{redirect}http://127.0.0.1:{i}/&status=307"),
        ("redirect-303-post", f"{redirect}http://127.0.0.1:{i}/&status=303"),
        ("redirect-hex", f"{redirect}http://0x7f000001:{i}/"),
        ("redirect-mapped", f"{redirect}http://[::ffff:7f00:1]:{i}/"),
        ("redirect-dns-private", f"{redirect}http://private.corp/"),
        ("redirect-cookie-then-internal", f"http://127.0.0.1:{a}/set-cookie?to=http://127.0.0.1:{i}/"),
        ("scheme-file", "file:///etc/passwd"),
        ("scheme-dict", f"dict://127.0.0.1:{i}/"),
    ]


IDS = [c[0] for c in cases(1, 2)]


@pytest.mark.parametrize("case", IDS)
def test_ssrf_case_is_refused(env, case: str) -> None:
    legs, allowed, internal = env
    url = dict(cases(allowed.port, internal.port))[case]
    method = "POST" if "post" in case else "GET"
    r = legs.run("http.request", {"method": method, "url": url, "body": "x" if method == "POST" else None})
    assert not r.ok, r.output
    # rebinding: the connection goes to the first (public) answer, unreachable in this namespace
    assert r.error.type in (
        ("denied", "invalid_input", "unavailable") if case == "dns-rebinding" else ("denied", "invalid_input")
    ), r.error
    if r.error.type == "denied":
        assert "rule:" in r.output
    assert internal.requests == [], f"{case}: the internal server was reached"


def test_allowed_server_still_works(env) -> None:
    legs, allowed, internal = env
    r = legs.run("http.request", {"method": "GET", "url": allowed.url("/json")})
    assert r.ok and r.data["status"] == 200
    r = legs.run("http.request", {"method": "GET", "url": allowed.url("/redirect?to=/json")})
    assert r.ok and r.data["status"] == 200 and len(r.data["redirects"]) == 1
    assert internal.requests == []


def test_namespace_has_only_loopback() -> None:
    from agent_legs_testing.netns import interfaces

    assert interfaces() == ["lo"]
