"""Remote browsers (a Playwright server, a Chromium over CDP) and the per-session egress proxy's own security.

Every remote browser is still sent through the session's EgressProxy (the denied origin receives nothing,
the allowed site works end to end); a local browser's proxy answers only this user's connections, a remote
browser's only clients holding the session's random credential;
close() leaves no browser process behind that we (or a server, for us) started.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_browser import CHROMIUM, nav

from agent_legs import Legs
from agent_legs.actions.browser._launcher import CHROMIUM_ARGS
from agent_legs.actions.browser._service import BrowserService
from agent_legs_testing import chromium_pids, component_missing, descendants, free_port, process_group, running

_NO_SANDBOX = ["--no-sandbox"] if os.geteuid() == 0 else []


@pytest.fixture
def legs(open_legs, website) -> Legs:
    return open_legs(policy=website.policy())


def _leftovers(*theirs: subprocess.Popen[bytes], timeout: float = 15) -> set[int]:
    """Processes we started that are still running, other than the given ones (servers and browsers the
    test started itself, with their children)."""
    deadline = time.monotonic() + timeout
    while True:
        keep = {p.pid for p in theirs} | {c for p in theirs for c in descendants(p.pid)}
        left = {pid for pid in descendants(os.getpid()) - keep if running(pid)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# -- helpers -----------------------------------------------------------------------------------------------
def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None and proc.stdout else ""
    _stop(proc)
    component_missing(
        what,
        f"did not listen on 127.0.0.1:{port}: {out[-800:]}",
        "pip install playwright (its driver ships the server); apt-get install -y chromium",
    )


def _playwright(args: list[str], port: int) -> subprocess.Popen[bytes]:
    """`python -m playwright ...` from the installed package: a real Playwright server on loopback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "playwright", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    _wait_port(port, proc, "Playwright server")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the server (or browser) the test started and its whole process group: `python -m playwright`
    runs node as a child, which can outlive a SIGTERM to the group; escalate to SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    deadline = time.monotonic() + 5
    while process_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_group(proc.pid) or proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _cdp_chromium(profile: Path, flags: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """A Chromium with --remote-debugging-port=0 on 127.0.0.1; its port read from DevToolsActivePort."""
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            *flags,
            *_NO_SANDBOX,
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return proc, int(active.read_text().split()[0])
        time.sleep(0.1)
    err = proc.stderr.read().decode(errors="replace")[-800:] if proc.poll() is not None and proc.stderr else ""
    _stop(proc)
    component_missing("Chromium (CDP)", f"no DevToolsActivePort in {profile}: {err}", "apt-get install -y chromium")


def _wait_gone(pids: set[int], timeout: float = 15) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = {p for p in pids if running(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {p for p in alive if running(p)}
    return alive


def _roundtrip(legs: Legs, website) -> None:
    """The allowed site end to end; the denied origin receives nothing, however the page asks."""
    r = nav(legs, website.site.url("/form"))
    assert r.ok and "`#name`" in r.output, r.output
    proxy = legs._runtime._services[BrowserService].sessions["default"].proxy
    assert proxy.credentials is not None and proxy.peer_uid is None  # a remote browser: told apart by credential
    r = legs.run("browser.fill", {"selector": "#name", "value": "Remote", "submit": True})
    assert r.ok and "name=Remote" in r.output, r.output
    r = nav(legs, website.other.url("/direct"))  # a top-level navigation to the denied origin
    assert r.error.type == "denied", r
    r = nav(legs, website.site.url("/embeds"))  # sub-resources and an iframe from the denied origin
    assert r.ok and r.data["blocked_requests"], r.data
    r = legs.run("browser.screenshot", {})
    assert r.ok and r.artifacts, r
    r = nav(legs, website.site.url("/js-auto"))  # the page sends itself there
    assert r.ok
    time.sleep(0.5)
    r = legs.run("browser.content", {})  # reports where the page tried to go, and left it
    assert r.ok and r.data["url"] in (website.site.url("/js-auto"), "about:blank"), r.data
    assert website.other.requests == []


# -- a Playwright server -------------------------------------------------------------------------------------
def test_playwright_run_server_gets_our_launch_options_and_is_policed(dirs, website) -> None:
    """`playwright run-server --unsafe` launches the Chromium we name, with our flags (the
    x-playwright-launch-options header); the page goes through our proxy; close() ends that Chromium."""
    ws, st = dirs
    port = free_port()
    server = _playwright(["run-server", "--host", "127.0.0.1", "--port", str(port), "--unsafe"], port)
    try:
        assert not chromium_pids(server.pid)
        legs = Legs(
            workspace=ws,
            state_dir=st,
            policy=website.policy(),
            settings={"browser": {"ws_endpoint": f"ws://127.0.0.1:{port}/", "executable_path": CHROMIUM}},
        )
        try:
            _roundtrip(legs, website)
            launched = chromium_pids(server.pid)
            assert launched, "the server launched no Chromium for us"
            main = [p for p in launched if b"--type=" not in Path(f"/proc/{p}/cmdline").read_bytes()]
            cmdline = Path(f"/proc/{main[0]}/cmdline").read_bytes().split(b"\0")
            assert cmdline[0].decode().endswith("chromium") or CHROMIUM.encode() in cmdline[0]
            for flag in CHROMIUM_ARGS:
                assert flag.encode() in cmdline, flag
            r = nav(legs, website.site.url("/files"))  # the last page's script may navigate at the same moment
            assert r.ok, r.output
            r = legs.run("browser.click", {"selector": "#dl"})  # a download streams back from the server
            assert r.artifacts and (ws / r.artifacts[0].path).read_bytes() == b"a,b\n1,2\n"
        finally:
            legs.close()
        assert _wait_gone(launched) == set(), "the Chromium launched for us outlived close()"
        assert _leftovers(server) == set()  # nor does our Playwright driver
        assert server.poll() is None  # the server is not ours to stop
    finally:
        _stop(server)


def test_playwright_launch_server_with_our_flags(dirs, website, tmp_path) -> None:
    """A browser server pre-launched by its operator with the hardening flags (`playwright launch-server`)."""
    ws, st = dirs
    port = free_port()
    config = tmp_path / "server.json"
    config.write_text(
        json.dumps(
            {
                "executablePath": CHROMIUM,
                "host": "127.0.0.1",
                "port": port,
                "wsPath": "/pw",
                "args": [*CHROMIUM_ARGS, *_NO_SANDBOX],
            }
        )
    )
    server = _playwright(["launch-server", "--browser", "chromium", "--config", str(config)], port)
    try:
        with Legs(
            workspace=ws,
            state_dir=st,
            policy=website.policy(),
            settings={"browser": {"ws_endpoint": f"ws://127.0.0.1:{port}/pw"}},
        ) as legs:
            _roundtrip(legs, website)
    finally:
        _stop(server)


def test_a_remote_headless_shell_is_refused_before_connecting(dirs, website) -> None:
    # The path names a binary on the server's machine: told by its name, refused before the server is asked.
    ws, st = dirs
    endpoint = f"ws://127.0.0.1:{free_port()}/"  # nothing listens: a refusal here is ours, not the connection's
    settings = {"browser": {"ws_endpoint": endpoint, "executable_path": "/opt/pw/chromium_headless_shell-1/headless_shell"}}
    with Legs(workspace=ws, state_dir=st, policy=website.policy(), settings=settings) as legs:
        r = nav(legs, website.site.url("/"))
    assert r.error.type == "unavailable" and "headless shell" in r.error.message, r.error


def test_remote_browser_without_the_webrtc_flags_is_refused(dirs, website, tmp_path) -> None:
    """A server whose Chromium lacks the flags that keep WebRTC UDP in the proxy: refused, nothing fetched."""
    ws, st = dirs
    port = free_port()
    config = tmp_path / "server.json"
    config.write_text(
        json.dumps({"executablePath": CHROMIUM, "host": "127.0.0.1", "port": port, "wsPath": "/pw", "args": _NO_SANDBOX})
    )
    server = _playwright(["launch-server", "--browser", "chromium", "--config", str(config)], port)
    try:
        with Legs(
            workspace=ws,
            state_dir=st,
            policy=website.policy(),
            settings={"browser": {"ws_endpoint": f"ws://127.0.0.1:{port}/pw"}},
        ) as legs:
            r = nav(legs, website.site.url("/"))
        assert r.error.type == "unavailable", r
        assert "--webrtc-ip-handling-policy=disable_non_proxied_udp" in r.error.message
        assert "--unsafe" in r.error.hint
        assert website.site.requests == []
    finally:
        _stop(server)


# -- Chromium over CDP ---------------------------------------------------------------------------------------
def test_chromium_over_cdp_is_policed_and_left_running_clean(dirs, website, tmp_path) -> None:
    ws, st = dirs
    proc, port = _cdp_chromium(tmp_path / "profile", [*CHROMIUM_ARGS, "--enable-automation"])
    try:
        legs = Legs(
            workspace=ws, state_dir=st, policy=website.policy(), settings={"browser": {"cdp_url": f"http://127.0.0.1:{port}"}}
        )
        try:
            _roundtrip(legs, website)
            nav(legs, website.site.url("/about"), session="second")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                assert any(t["url"] == website.site.url("/about") for t in json.loads(resp.read()))
        finally:
            legs.close()
        assert proc.poll() is None  # not ours: disconnecting leaves the user's browser running...
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            left = [t["url"] for t in json.loads(resp.read()) if t["type"] == "page"]
        assert not [u for u in left if u.startswith(website.site.base)], left  # ...without our tabs
        assert _leftovers(proc) == set()  # and nothing of ours (the Playwright driver) runs on
    finally:
        _stop(proc)


def test_chromium_over_cdp_without_our_flags_is_refused(dirs, website, tmp_path) -> None:
    ws, st = dirs
    proc, port = _cdp_chromium(tmp_path / "profile", [])
    try:
        with Legs(
            workspace=ws, state_dir=st, policy=website.policy(), settings={"browser": {"cdp_url": f"http://127.0.0.1:{port}"}}
        ) as legs:
            r = nav(legs, website.site.url("/"))
        assert r.error.type == "unavailable" and "--enable-automation" in r.error.hint, r
        assert website.site.requests == []
        assert proc.poll() is None
    finally:
        _stop(proc)


# -- the proxy: credential and address -------------------------------------------------------------------------
def _proxy_request(host: str, port: int, request: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and (b"407" in out.split(b"\r\n", 1)[0] or len(out) > 200):
                break
    return out


def _request_as(user: str, port: int, request: bytes) -> bytes:
    """``request`` sent to 127.0.0.1:``port`` by a process of another local user (bash's /dev/tcp)."""
    script = f'exec 3<>/dev/tcp/127.0.0.1/{port} && printf %s "$REQUEST" >&3 && timeout 10 head -c 300 <&3'
    done = subprocess.run(
        ["/bin/bash", "-c", script],
        user=user,
        cwd="/",
        capture_output=True,
        timeout=30,
        env={"REQUEST": request.decode(), "PATH": "/usr/bin:/bin"},
    )
    return done.stdout


def test_local_session_proxy_serves_only_this_user(legs, website) -> None:
    """A local browser's proxy tells its browser apart by the connection's user (no credential: Playwright
    would disable the HTTP cache for it); another local user's process gets 403 and nothing is forwarded."""
    if os.geteuid() != 0:
        component_missing("root", "switching to another local user needs root", "run the suite as root (as CI does)")
    assert nav(legs, website.site.url("/about")).ok
    proxy = legs._runtime._services[BrowserService].sessions["default"].proxy
    assert proxy.credentials is None and proxy.peer_uid == os.getuid()
    target = website.site.url("/probe-other-user")
    plain = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{website.site.port}\r\nConnection: close\r\n\r\n".encode()
    connect = f"CONNECT 127.0.0.1:{website.site.port} HTTP/1.1\r\nHost: 127.0.0.1:{website.site.port}\r\n\r\n".encode()
    for request in (plain, connect):
        reply = _request_as("nobody", proxy.port, request)
        assert reply.startswith(b"HTTP/1.1 403 ") and b"only its own browser" in reply, reply[:200]
    assert not [r for r in website.site.requests if r.path == "/probe-other-user"]
    assert proxy.refused_unauthenticated == 2
    reply = _proxy_request("127.0.0.1", proxy.port, plain)  # this user: served
    assert reply.startswith(b"HTTP/1.1 404 "), reply[:200]
    assert [r for r in website.site.requests if r.path == "/probe-other-user"]


def _host_address() -> str:
    """A non-loopback IPv4 address of this machine (what a remote browser host would reach)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
        s.connect(("192.0.2.123", 9))  # no packet is sent: picks the outgoing interface's address
        address = str(s.getsockname()[0])
        if not address.startswith("127."):
            return address
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for address in out:
        if "." in address and not address.startswith("127."):
            return address
    component_missing("a non-loopback address", "this machine has only loopback", "run on a host with a NIC")


def test_proxy_bind_address_for_a_remote_browser(dirs, website) -> None:
    """settings.browser.proxy_bind: the proxies listen there (not on loopback) and, reachable from other
    hosts, serve only clients holding their session's random credential (407 otherwise)."""
    ws, st = dirs
    address = _host_address()
    with Legs(workspace=ws, state_dir=st, policy=website.policy(), settings={"browser": {"proxy_bind": address}}) as legs:
        r = nav(legs, website.site.url("/embeds"))
        assert r.ok and r.data["blocked_requests"], r
        svc = legs._runtime._services[BrowserService]
        proxy = svc.sessions["default"].proxy
        assert proxy._server is not None and proxy._server.sockets[0].getsockname()[0] == address
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", proxy.port)) != 0  # not on loopback
        assert proxy.credentials is not None and len(proxy.credentials[1]) >= 24 and proxy.peer_uid is None
        user, password = proxy.credentials
        target = website.site.url("/probe-bind")
        plain = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{website.site.port}\r\n".encode()
        connect = f"CONNECT 127.0.0.1:{website.site.port} HTTP/1.1\r\nHost: 127.0.0.1:{website.site.port}\r\n".encode()
        wrong = b"Proxy-Authorization: Basic " + base64.b64encode(f"{user}:nope".encode()) + b"\r\n"
        assert nav(legs, website.site.url("/about"), session="other").ok
        other_creds = svc.sessions["other"].proxy.credentials
        assert other_creds is not None and other_creds != proxy.credentials
        foreign = b"Proxy-Authorization: Basic " + base64.b64encode(":".join(other_creds).encode()) + b"\r\n"
        for request in (plain + b"\r\n", connect + b"\r\n", plain + wrong + b"\r\n", plain + foreign + b"\r\n"):
            reply = _proxy_request(address, proxy.port, request)
            assert reply.startswith(b"HTTP/1.1 407 "), reply[:200]
            assert b"Proxy-Authenticate: Basic" in reply
        assert not [r for r in website.site.requests if r.path == "/probe-bind"]
        good = b"Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"
        reply = _proxy_request(address, proxy.port, plain + good + b"Connection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 404 "), reply[:200]
        assert [r for r in website.site.requests if r.path == "/probe-bind"]
        assert proxy.refused_unauthenticated >= 4
    assert website.other.requests == []


def test_proxy_bound_to_all_interfaces_needs_an_advertised_host(dirs, website) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=website.policy(), settings={"browser": {"proxy_bind": "0.0.0.0"}}) as legs:
        r = nav(legs, website.site.url("/"))
        assert r.error.type == "invalid_input" and "proxy_host" in r.error.message
    with Legs(
        workspace=ws,
        state_dir=st,
        policy=website.policy(),
        settings={"browser": {"proxy_bind": "0.0.0.0", "proxy_host": "127.0.0.1"}},
    ) as legs:
        r = nav(legs, website.site.url("/about"))
        assert r.ok and "We sell widgets" in r.output
