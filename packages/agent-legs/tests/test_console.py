"""``agent-legs console`` in real Chromium (Playwright) against a real uvicorn server on 127.0.0.1.

A ``Legs`` on the same state directory runs actions (the feed shows them without a reload) and waits
in the approval queue in a thread (``legs.run`` with ``approver="queue"``) while the page decides:
approve by clicking, reject with a message, edit (checked by the policy again), an already decided
request refused on a stale page. Login by token, 401 without it, a cross-origin POST from a page in
the same browser refused, markup in arguments shown as text. The screenshots in docs/console.md are
taken here (docs/images/console-*.png).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from agent_legs import Legs, Settings
from agent_legs._console import ConsoleConfig
from agent_legs._console._server import ConsoleServer
from agent_legs_testing import free_port

CHROMIUM = "/usr/bin/chromium"
TOKEN = "console-test-token-0123456789"
USER = "console:ana"
POLICY: dict[str, Any] = {
    "allow": ["files.*", "browser.*"],
    "require_approval": ["files.write"],
    "files": {"deny": ["secret/**"]},
}
DOCS_IMAGES = Path(__file__).resolve().parents[3] / "docs" / "images"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.set_default_timeout(20_000)
    yield p
    context.close()


def start_console(dirs: tuple[Path, Path], policy: dict[str, Any] | None = None, **settings: Any) -> ConsoleServer:
    from agent_legs._arguments import coerce_config as _coerce
    from agent_legs._policy import Policy

    ws, st = dirs
    config = ConsoleConfig(
        state_dir=st,
        workspace=ws,
        settings=Settings(**settings),
        policy=_coerce(policy, Policy) if policy else None,
        token=TOKEN,
        user=USER,
        port=free_port(),
    )
    return ConsoleServer(config).start()


@pytest.fixture
def console(dirs: tuple[Path, Path]) -> Iterator[ConsoleServer]:
    server = start_console(dirs, telemetry={"trace_url": "http://localhost:16686/trace/{trace_id}"})
    yield server
    server.stop()


def login(page: Page, console: ConsoleServer, path: str = "/") -> None:
    response = page.goto(f"{console.url}{path}{'&' if '?' in path else '?'}token={TOKEN}")
    assert response is not None and response.status == 200


class Waiter(threading.Thread):
    """``legs.run`` blocked in the approval queue, as an agent's tool call would be."""

    def __init__(self, legs: Legs, path: str, content: str = "draft") -> None:
        super().__init__(daemon=True)
        self.legs, self.path, self.content = legs, path, content
        self.result: Any = None

    def run(self) -> None:
        self.result = self.legs.run("files.write", {"path": self.path, "content": self.content}, session="conv-7")


def pending(legs: Legs, n: int = 1) -> list[Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = legs.approvals.pending()
        if len(rows) >= n:
            return rows
        time.sleep(0.05)
    raise AssertionError("no pending approval appeared")


def wait_for_calls(server: ConsoleServer, n: int) -> None:
    """Until the console's log follower has read ``n`` finished calls (it polls the log)."""
    deadline = time.monotonic() + 30
    while sum(e["outcome"] != "running" for e in server.app.state.view.entries()) < n:
        assert time.monotonic() < deadline, server.app.state.view.entries()
        time.sleep(0.05)


def shot(page: Page, name: str) -> None:
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMAGES / f"console-{name}.png"))


def test_login_by_token_sets_a_strict_cookie_and_nothing_without_it(console, page) -> None:
    for path in ("/", "/sessions", "/approvals", "/calls/x", "/feed/events", "/?token=wrong"):
        response = page.goto(console.url + path)
        assert response is not None and response.status == 401, path
    expect(page.get_by_role("heading", name="401: log in")).to_be_visible()
    refused = httpx.post(console.url + "/approvals/abc/approve", headers={"origin": console.url})
    assert refused.status_code == 401

    login(page, console, "/sessions")
    assert page.url == console.url + "/sessions"  # the token left the address bar
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    assert cookie["name"] == f"agent_legs_console_{console.config.port}"  # two consoles keep their own
    expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
    headers = httpx.get(console.url + "/", cookies={cookie["name"]: cookie["value"]}).headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    forged = cookie["value"].rsplit(".", 1)[0] + "." + "0" * 64  # a session id without this process's signature
    assert httpx.get(console.url + "/", cookies={cookie["name"]: forged}).status_code == 401
    rebinding = httpx.get(console.url + "/", headers={"host": f"attacker.example:{console.config.port}"})
    assert rebinding.status_code == 400


def test_a_new_action_appears_live_and_markup_in_arguments_is_text(console, page, dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"allow": ["files.*"]}) as legs:
        assert legs.run("files.write", {"path": "before.txt", "content": "x"}, session="conv-1").ok
        login(page, console)
        expect(page.locator("#live")).to_have_text("live")
        expect(page.locator("#feed-rows tr")).to_have_count(1)
        page.evaluate("window.loadedOnce = true")  # gone if the page reloads
        payload = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
        r = legs.run("files.write", {"path": "notes.txt", "content": payload}, session="conv-1")
        assert r.ok, r
        denied = legs.run("files.read", {"path": "../etc/passwd"}, session="conv-2")
        assert not denied.ok
    rows = page.locator("#feed-rows tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("files.read")
    expect(rows.first).to_contain_text("denied")
    expect(rows.first).to_contain_text("workspace confinement")  # the rule of a refusal
    assert page.evaluate("window.loadedOnce") is True
    rows.nth(1).get_by_role("button", name="Details").click()
    detail = page.locator("#detail")
    expect(detail).to_contain_text("<script>window.pwned = 1</script>")  # shown as text
    expect(detail).to_contain_text(f"Wrote notes.txt ({len(payload.encode())} bytes)")  # the result
    trace = detail.get_by_role("link")
    expect(trace).to_have_attribute("href", f"http://localhost:16686/trace/{r.trace_id}")
    assert page.evaluate("window.pwned") is None and page.locator("#detail script, #detail img").count() == 0
    shot(page, "feed")

    page.get_by_label("Session").fill("conv-2")  # filters: only that session, then live again
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#feed-rows tr")).to_have_count(1)
    expect(page.locator("#live")).to_have_text("live")
    with Legs(workspace=ws, state_dir=st, policy={"allow": ["files.*"]}) as legs:
        legs.run("files.read", {"path": "notes.txt"}, session="conv-1")
        legs.run("files.read", {"path": "notes.txt"}, session="conv-2")
    expect(page.locator("#feed-rows tr")).to_have_count(2)
    expect(page.locator("#feed-rows tr").first).to_contain_text("conv-2")


def test_approve_by_clicking_and_the_waiting_call_completes(console, page, dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, approver="queue") as legs:
        waiter = Waiter(legs, "report.txt", "<b>quarterly</b> numbers")
        waiter.start()
        [item] = pending(legs)
        login(page, console, "/approvals")
        card = page.locator(f"#approval-{item.id}")
        expect(card).to_contain_text("policy.require_approval['files.write']")
        expect(card.locator("pre.arguments")).to_contain_text('"content": "<b>quarterly</b> numbers"')
        expect(page.locator("#approval-count")).to_contain_text("1")
        shot(page, "approvals")
        card.get_by_label("always for this session").first.check()
        card.get_by_role("button", name="Approve", exact=True).click()
        expect(page.locator(f"#approval-{item.id}")).to_contain_text("approved: the call runs")
        waiter.join(30)
        assert waiter.result is not None and waiter.result.ok, waiter.result
        assert (ws / "report.txt").read_text() == "<b>quarterly</b> numbers"
        assert legs.approvals.get(item.id).by == USER  # type: ignore[union-attr]
        [rule] = legs.standing_rules("conv-7")  # "always for this session"
        assert rule.by == USER and rule.scope == "session"
    entry = [json.loads(line) for line in (st / "actions.jsonl").read_text().splitlines()][-1]
    assert entry["approval"] == {"decision": "approved", "by": USER, "rule": None}


def test_a_rejection_reaches_the_caller_with_its_message(console, page, dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, approver="queue") as legs:
        login(page, console, "/approvals")  # open first: the request arrives without a reload
        expect(page.get_by_text("No call is waiting for approval.")).to_be_visible()
        page.evaluate("window.loadedOnce = true")
        waiter = Waiter(legs, "friday.txt")
        waiter.start()
        [item] = pending(legs)
        card = page.locator(f"#approval-{item.id}")
        expect(card).to_be_visible()
        expect(page.get_by_text("No call is waiting for approval.")).to_be_hidden()
        assert page.evaluate("window.loadedOnce") is True
        card.get_by_label("Message to the agent").fill("not on a Friday")
        card.get_by_role("button", name="Reject").click()
        expect(page.locator(f"#approval-{item.id}")).to_contain_text("rejected")
        waiter.join(30)
        r = waiter.result
        assert r is not None and not r.ok and r.error.type == "approval_denied"
        assert "not on a Friday" in r.error.message and USER in r.error.message
        assert not (ws / "friday.txt").exists()


def test_an_edit_is_checked_by_the_policy_again(console, page, dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, approver="queue") as legs:
        login(page, console, "/approvals")
        for target, expected in (("secret/keys.txt", "denied"), ("final.txt", "ok")):
            waiter = Waiter(legs, "draft.txt")
            waiter.start()
            [item] = pending(legs)
            page.reload()
            card = page.locator(f"#approval-{item.id}")
            card.get_by_text("Edit arguments").click()
            card.get_by_label("Arguments (JSON object").fill(json.dumps({"path": target, "content": "edited"}))
            card.get_by_role("button", name="Approve with these arguments").click()
            expect(page.locator(f"#approval-{item.id}")).to_contain_text("approved with edited arguments")
            waiter.join(30)
            r = waiter.result
            assert r is not None and (r.ok if expected == "ok" else r.error.type == expected), r
        assert (ws / "final.txt").read_text() == "edited"
        assert not (ws / "draft.txt").exists() and not (ws / "secret").exists()

        waiter = Waiter(legs, "draft.txt")  # not a JSON object: refused on the page, still pending
        waiter.start()
        [item] = pending(legs)
        page.reload()
        card = page.locator(f"#approval-{item.id}")
        card.get_by_text("Edit arguments").click()
        card.get_by_label("Arguments (JSON object").fill('["path", "x"]')
        card.get_by_role("button", name="Approve with these arguments").click()
        expect(page.locator(f"#approval-{item.id}")).to_contain_text("must be a JSON object; nothing was decided")
        assert legs.approvals.get(item.id).state == "pending"  # type: ignore[union-attr]
        legs.approvals.reject(item.id, by="test")
        waiter.join(30)


def test_a_stale_page_cannot_decide_again(console, page, dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, approver="queue") as legs:
        waiter = Waiter(legs, "once.txt")
        waiter.start()
        [item] = pending(legs)
        login(page, console, "/approvals")
        legs.approvals.approve(item.id, by="bob")  # decided elsewhere while the page is open
        waiter.join(30)
        page.locator(f"#approval-{item.id}").get_by_role("button", name="Reject").click()
        refusal = page.locator(f"#approval-{item.id}")
        expect(refusal).to_contain_text("Refused:")
        expect(refusal).to_contain_text(f"approval request {item.id} was already approved by bob")
        assert waiter.result.ok and legs.approvals.get(item.id).state == "approved"  # type: ignore[union-attr]


def test_a_cross_origin_post_is_refused_and_decides_nothing(console, page, dirs, website) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, approver="queue") as legs:
        waiter = Waiter(legs, "forged.txt")
        waiter.start()
        [item] = pending(legs)
        login(page, console)  # the person is logged in; then visits a hostile page on another local port
        target = f"{console.url}/approvals/{item.id}/approve"
        html = (
            f"<form id=f method=post action='{target}'><input name=always value=on></form>"
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        website.other.routes["/attack"] = lambda h, r: h.send_body(200, html, "text/html")
        with page.expect_response(target) as answer:
            page.goto(website.other.url("/attack"))
        assert answer.value.status == 403
        expect(page.locator("body")).to_contain_text("cross-site request refused: Origin")

        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        no_csrf = httpx.post(target, cookies=cookies, headers={"origin": console.url})
        assert no_csrf.status_code == 403 and "CSRF token" in no_csrf.text
        assert legs.approvals.get(item.id).state == "pending"  # type: ignore[union-attr]
        legs.approvals.reject(item.id, by="test")
        waiter.join(30)
        assert not (ws / "forged.txt").exists()


def test_sessions_show_the_browser_tab_budgets_and_recent_calls(dirs, page, website) -> None:
    ws, st = dirs
    policy = {
        **website.policy(),
        "allow": ["files.*", "browser.*"],
        "budgets": [{"actions": "browser.*", "limit": 20, "per": "day", "scope": "session"}],
    }
    server = start_console(dirs, policy)
    try:
        with Legs(workspace=ws, state_dir=st, policy=policy) as legs:
            assert legs.run("browser.navigate", {"url": website.site.url("/")}, session="shop").ok
            shot_result = legs.run("browser.screenshot", {}, session="shop")
            assert shot_result.ok, shot_result
            wait_for_calls(server, 2)
            login(page, server, "/sessions")
            section = page.locator("section.session", has_text="shop")
            image = section.get_by_role("img", name="Latest browser screenshot of session shop")
            expect(image).to_be_visible()
            assert page.evaluate("i => i.naturalWidth", image.element_handle()) > 100
            expect(section).to_contain_text("2 / 20")  # budget used / limit
            expect(section.locator("tbody tr", has_text="browser.navigate")).to_have_count(1)
            shot(page, "sessions")
            cookies = {c["name"]: c["value"] for c in page.context.cookies()}
            for path in ("../state/actions.jsonl", "screenshots/../../state/state.sqlite3", shot_result.artifacts[0].path):
                answer = httpx.get(f"{server.url}/artifacts", params={"path": path}, cookies=cookies)
                assert answer.status_code == (200 if path.endswith(".png") else 404), path
    finally:
        server.stop()


def test_trace_url_must_be_an_http_template_with_the_trace_id() -> None:
    from agent_legs import ConfigError

    assert Settings(telemetry={"trace_url": "http://jaeger:16686/trace/{trace_id}"}).telemetry.trace_url
    for bad in ("javascript:alert(1)//{trace_id}", "http://jaeger:16686/trace/", "/trace/{trace_id}"):
        with pytest.raises((ValueError, ConfigError), match="trace_url must be an http"):
            Settings(telemetry={"trace_url": bad})


def test_the_command_prints_a_login_url_and_binds_to_loopback_only(dirs) -> None:
    import os
    import re
    import subprocess
    import sys

    ws, st = dirs
    base = [sys.executable, "-m", "agent_legs._cli", "--workspace", str(ws), "--state-dir", str(st), "console"]
    env = {k: v for k, v in os.environ.items() if k != "AGENT_LEGS_CONSOLE_TOKEN"}
    remote = subprocess.run([*base, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60, env=env)
    assert remote.returncode == 2 and "not a loopback address" in remote.stderr and "--allow-remote" in remote.stderr
    port = free_port()
    proc = subprocess.Popen([*base, "--port", str(port)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = ""
        while "token=" not in line:
            line = proc.stderr.readline()
            assert line, "the console exited without printing its URL"
        url = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line).group(1)  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while True:
            try:
                with httpx.Client() as client:
                    assert client.get(url.split("?")[0]).status_code == 401
                    assert client.get(url, follow_redirects=True).status_code == 200
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)


def test_log_lines_carry_the_result_and_artifacts_only_with_content_capture(dirs) -> None:
    ws, st = dirs
    for capture in (True, False):
        with Legs(
            workspace=ws, state_dir=st, policy={"allow": ["files.*"]}, settings={"telemetry": {"capture_content": capture}}
        ) as legs:
            assert legs.run("files.write", {"path": f"c-{capture}.txt", "content": "hello"}).ok
        entry = json.loads((st / "actions.jsonl").read_text().splitlines()[-1])
        if capture:
            assert entry["result"] == f"Wrote c-{capture}.txt (5 bytes)" and entry["artifacts"] == [f"c-{capture}.txt"]
        else:
            assert not {"arguments", "result", "artifacts"} & set(entry)


@pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")
def test_sessions_show_the_code_kernel_and_its_figures(dirs, page) -> None:
    ws, st = dirs
    policy = {"allow": ["code.*"], "code": {"timeout_s": 60}}
    server = start_console(dirs, policy)
    try:
        with Legs(workspace=ws, state_dir=st, policy=policy, settings={"code": {"pool_size": 0}}) as legs:
            plot = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('sales')"
            r = legs.run("code.run", {"code": plot}, session="analysis")
            assert r.ok and any(a.path.startswith("figures/") for a in r.artifacts), r
            wait_for_calls(server, 1)
            login(page, server, "/sessions")
            section = page.locator("section.session", has_text="analysis")
            kernel = section.locator('dt:has-text("Code kernel") + dd')
            expect(kernel).to_contain_text("alive (last: code.run")
            figure = section.get_by_role("img", name="Figure figures/")
            expect(figure).to_be_visible()
            assert page.evaluate("i => i.naturalWidth", figure.element_handle()) > 100
        page.reload()  # Legs closed: the kernel ended with its session
        expect(page.locator('section.session:has-text("analysis") dt:has-text("Code kernel") + dd')).to_contain_text("ended")
    finally:
        server.stop()


def test_an_expired_request_is_refused_clearly_on_the_page(console, page, dirs) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={**POLICY, "approval_timeout_s": 2}, approver="queue") as legs:
        waiter = Waiter(legs, "late.txt")
        waiter.start()
        [item] = pending(legs)
        login(page, console, "/approvals")
        waiter.join(30)  # nobody decided in time: the call was refused
        assert waiter.result.error.type == "approval_denied" and "expired" in waiter.result.error.message
        page.locator(f"#approval-{item.id}").get_by_role("button", name="Approve", exact=True).click()
        refusal = page.locator(f"#approval-{item.id}")
        expect(refusal).to_contain_text(f"Refused: approval request {item.id} was already expired at")
        assert not (ws / "late.txt").exists()
