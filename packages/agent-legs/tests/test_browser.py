"""browser.* with a real Chromium (Playwright) against sites served on 127.0.0.1."""

from __future__ import annotations

import subprocess

import pytest

from agent_legs import Legs


def chromium_pids() -> set[str]:
    out = subprocess.run(["pgrep", "-f", "chromium"], capture_output=True, text=True)
    return set(out.stdout.split())


@pytest.fixture
def legs(dirs, website, captured_spans):
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=website.policy(), tracer_provider=captured_spans.provider) as legs:
        yield legs


def nav(legs, url, session="default"):
    return legs.run("browser.navigate", {"url": url}, session=session)


def test_navigate_reads_markdown(legs, website) -> None:
    r = nav(legs, website.site.url("/"))
    assert r.ok and r.data["title"] == "Shop" and r.data["status"] == 200
    assert "# Products" in r.output and "Widget: $5.00" in r.output and "[About us](/about)" in r.output


def test_click_fill_submit_back(legs, website) -> None:
    nav(legs, website.site.url("/"))
    r = legs.run("browser.click", {"text": "About us"})
    assert r.ok and r.data["url"].endswith("/about") and "We sell widgets" in r.output
    r = legs.run("browser.back", {})
    assert r.ok and r.data["url"].endswith("/")
    r = legs.run("browser.click", {"selector": "a[href='/form']"})
    assert "#name" in r.output and "Form fields" in r.output
    assert legs.run("browser.fill", {"selector": "#name", "value": "Ana"}).ok
    r = legs.run("browser.fill", {"selector": "#email", "value": "ana@example.com", "submit": True})
    assert r.ok and "Thanks" in r.output and "name=Ana" in r.output
    posted = [x for x in website.site.requests if x.path == "/submit"]
    assert posted and posted[0].method == "POST"


def test_content_formats_and_pagination(legs, website) -> None:
    nav(legs, website.site.url("/big"))
    r = legs.run("browser.content", {})
    assert r.data["next_offset"] and "call browser_content with offset=" in r.output
    r2 = legs.run("browser.content", {"offset": r.data["next_offset"]})
    assert r2.ok and r2.data["offset"] == r.data["next_offset"]
    assert legs.run("browser.content", {"format": "html", "selector": "h1"}).output == "Big"
    assert legs.run("browser.content", {"format": "text", "selector": "h1"}).output == "Big"


def test_screenshot_and_links(legs, website, dirs) -> None:
    nav(legs, website.site.url("/"))
    r = legs.run("browser.screenshot", {"full_page": True})
    (artifact,) = r.artifacts
    assert artifact.mime_type == "image/png" and (dirs[0] / artifact.path).read_bytes()[:4] == b"\x89PNG"
    r = legs.run("browser.links", {})
    assert {"text": "About us", "url": website.site.url("/about")} in r.data["links"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "data:text/html,<h1>x</h1>", "javascript:alert(1)",
                                 "view-source:http://127.0.0.1/", "chrome://settings", "about:config",
                                 "blob:http://127.0.0.1/x", "ftp://127.0.0.1/"])
def test_non_web_schemes_denied(legs, url) -> None:
    r = nav(legs, url)
    assert r.error.type == "denied" and "rule:" in r.output


def test_denied_host_navigation(legs, website) -> None:
    r = nav(legs, website.other.url("/secret"))
    assert r.error.type == "denied" and "policy.network.allow_hosts" in r.output
    assert website.other.requests == []


def test_redirect_into_denied_host(legs, website) -> None:
    r = nav(legs, website.site.url("/redirect-out"))
    assert r.error.type == "denied" and "blocked" in r.error.message
    assert website.other.requests == []


def test_subresources_from_denied_host_are_blocked_and_listed(legs, website) -> None:
    r = nav(legs, website.site.url("/embeds"))
    assert r.ok and "local content" in r.output
    blocked = {b["url"].split("127.0.0.1:")[-1] for b in r.data["blocked_requests"]}
    assert {f"{website.other.port}/pixel.png", f"{website.other.port}/frame", f"{website.other.port}/tracker.js"} <= blocked
    assert website.other.requests == []


@pytest.mark.parametrize("path", ["/js-auto", "/meta", "/ws", "/fetch"])
def test_page_initiated_requests_are_blocked(legs, website, path) -> None:
    nav(legs, website.site.url(path))
    legs.run("browser.content", {})  # give timers and refreshes a moment through a second round trip
    import time

    time.sleep(0.5)
    legs.run("browser.content", {})
    assert website.other.requests == []


def test_js_click_navigation_and_popup_blocked(legs, website) -> None:
    nav(legs, website.site.url("/js-nav"))
    legs.run("browser.click", {"selector": "#go"})
    nav(legs, website.site.url("/popup"))
    legs.run("browser.click", {"selector": "#pop"})
    legs.run("browser.content", {})
    assert website.other.requests == []


def test_cookies_persist_in_session_and_do_not_leak(legs, website) -> None:
    nav(legs, website.site.url("/login"), session="alice")
    assert "cookie=sid=abc123" in nav(legs, website.site.url("/whoami"), session="alice").output
    assert "cookie=none" in nav(legs, website.site.url("/whoami"), session="bob").output


def test_named_profile_survives_restart(dirs, website) -> None:
    ws, st = dirs
    cfg = dict(workspace=ws, state_dir=st, policy=website.policy(), settings={"browser": {"profile": "shop"}})
    with Legs(**cfg) as legs:
        assert nav(legs, website.site.url("/login")).ok
    with Legs(**cfg) as legs:
        assert "cookie=sid=abc123" in nav(legs, website.site.url("/whoami")).output
    assert (st / "browser-profiles/shop.json").exists()


def test_page_load_span(legs, website, captured_spans) -> None:
    nav(legs, website.site.url("/"))
    (load,) = captured_spans.by_name("browser page load")
    assert load.parent.span_id == captured_spans.by_name("execute_tool browser_navigate")[0].context.span_id


def test_no_chromium_left_after_close(dirs, website) -> None:
    ws, st = dirs
    before = chromium_pids()
    legs = Legs(workspace=ws, state_dir=st, policy=website.policy())
    nav(legs, website.site.url("/"))
    assert chromium_pids() - before
    legs.close()
    import time

    deadline = time.monotonic() + 10
    while chromium_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (chromium_pids() - before)


def test_missing_browser_is_unavailable(dirs, website) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=website.policy(),
              settings={"browser": {"executable_path": "/nonexistent/chromium"}}) as legs:
        r = nav(legs, website.site.url("/"))
    assert r.error.type == "unavailable" and "chromium" in r.error.hint.lower()


def test_downloads_land_in_the_workspace_with_a_size_limit(dirs, website) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={**website.policy(), "browser": {"max_download_bytes": 100_000}}) as legs:
        nav(legs, website.site.url("/files"))
        r = legs.run("browser.click", {"selector": "#dl"})
        (artifact,) = r.artifacts
        assert artifact.path == "downloads/report.csv" and (ws / artifact.path).read_bytes() == b"a,b\n1,2\n"
        r = legs.run("browser.click", {"selector": "#big"})
        assert r.artifacts == [] and any("max_download_bytes" in e for e in r.data.get("events", [])), r.data
    assert not (ws / "downloads/huge.bin").exists()


def test_hung_page_times_out_and_the_session_recovers(dirs, website) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={**website.policy(), "browser": {"timeout_s": 2}}) as legs:
        r = nav(legs, website.site.url("/hang"))
        assert r.error.type == "timeout"
        assert nav(legs, website.site.url("/about")).ok


def test_crashed_browser_is_relaunched_and_says_what_was_lost(dirs, website) -> None:
    import os
    import signal
    import time

    ws, st = dirs
    before = chromium_pids()
    with Legs(workspace=ws, state_dir=st, policy=website.policy()) as legs:
        assert nav(legs, website.site.url("/")).ok
        import contextlib

        for pid in chromium_pids() - before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(1)
        r = nav(legs, website.site.url("/about"))
        assert r.ok and any("crashed" in e for e in r.data.get("events", [])), r.data
