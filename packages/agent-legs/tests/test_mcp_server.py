"""``agent-legs mcp`` against the official MCP client, the server a real subprocess (stdio and HTTP).

Covers: the tool list is the adapters' (names, descriptions, schemas) for the same policy; results
carry text, ``structuredContent`` (the ActionResult) and ``isError``; a denied call names its rule;
a real sandbox figure comes back as image content; each client session is its own Agent Legs
session; approvals by MCP elicitation (approve, decline, no capability, secrets redacted); the HTTP
transport's bearer token (401), Origin (403) and Host (421) checks; one log line per tool call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from typer.testing import CliRunner

from agent_legs import Legs, offered_actions, tool_schema
from agent_legs._cli import app

pytestmark = pytest.mark.timeout(240)

POLICY = """
[policy]
allow = ["files.*", "code.*"]
deny = ["files.delete"]
require_approval = ["files.write"]
[[policy.budgets]]
actions = "files.list"
limit = 1
per = "total"
scope = "session"
"""


def _config(tmp_path: Path, policy: str = POLICY) -> Path:
    path = tmp_path / "agent-legs.toml"
    path.write_text(f'workspace = "ws"\nstate_dir = "state"\n{policy}')
    return path


def _argv(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent_legs._cli", "--config", str(config), "mcp", *args]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_LEGS_")}
    env.update(extra)
    return env


def _log(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "actions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class Elicitations:
    """An elicitation callback that records what it was asked and answers as told."""

    def __init__(self, answer: str = "accept", approve: bool = True) -> None:
        self.answer, self.approve = answer, approve
        self.messages: list[str] = []
        self.schemas: list[dict[str, Any]] = []

    async def __call__(self, context: Any, params: Any) -> types.ElicitResult:
        self.messages.append(params.message)
        self.schemas.append(params.requested_schema)
        if self.answer == "accept":
            return types.ElicitResult(action="accept", content={"approve": self.approve})
        return types.ElicitResult(action=self.answer)


@asynccontextmanager
async def stdio_session(
    config: Path, elicit: Elicitations | None = None, *, args: tuple[str, ...] = (), **env: str
) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=_argv(config, *args)[1:], env=_env(**env))
    async with stdio_client(params) as (read, write), ClientSession(read, write, elicitation_callback=elicit) as s:
        await s.initialize()
        yield s


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


# -- stdio -------------------------------------------------------------------------------------------
async def test_tools_are_the_adapters_tools(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with Legs.from_config(config) as legs:
        expected = {s.tool_name: (s.description, tool_schema(legs, s)) for s in offered_actions(legs)}
    async with stdio_session(config) as s:
        tools = (await s.list_tools()).tools
    assert [t.name for t in tools] == list(expected)
    assert "files_delete" not in expected and "http_request" not in expected  # denied, not listed
    for tool in tools:
        assert (tool.description, tool.input_schema) == expected[tool.name]
        assert tool.annotations is not None and tool.annotations.read_only_hint == (
            tool.name in {"files_read", "files_list", "files_search"}
        )


async def test_round_trip_denial_bad_input_and_one_log_line_per_call(tmp_path: Path) -> None:
    config = _config(tmp_path, '[policy]\nallow = ["files.*"]\ndeny = ["files.delete"]\n')
    async with stdio_session(config) as s:
        w = await s.call_tool("files_write", {"path": "notes/a.txt", "content": "hello mcp"})
        r = await s.call_tool("files_read", {"path": "notes/a.txt"})
        denied = await s.call_tool("files_delete", {"path": "notes/a.txt"})
        bad = await s.call_tool("files_read", {"pathx": "notes/a.txt"})
        unknown = await s.call_tool("no_such_tool", {})
        escape = await s.call_tool("files_read", {"path": "../../etc/passwd"})
        again = await s.call_tool("files_read", {"path": "notes/a.txt"})  # the server lives on
    assert not w.is_error and (tmp_path / "ws" / "notes" / "a.txt").read_text() == "hello mcp"
    assert not r.is_error and _text(r) == "hello mcp"
    assert r.structured_content is not None and r.structured_content["ok"] is True
    assert r.structured_content["action"] == "files.read" and r.structured_content["output"] == "hello mcp"
    assert re.fullmatch(r"[0-9a-f]{32}", r.structured_content["trace_id"])
    assert denied.is_error and "policy.deny['files.delete']" in _text(denied)
    assert denied.structured_content["error"]["type"] == "denied"
    assert (tmp_path / "ws" / "notes" / "a.txt").exists()
    assert bad.is_error and bad.structured_content["error"]["type"] == "invalid_input" and "path" in _text(bad)
    assert unknown.is_error and "no_such_tool" in _text(unknown) and "files_read" in _text(unknown)
    assert _text(unknown).startswith("Error (invalid_input):")
    assert escape.is_error and escape.structured_content["error"]["type"] == "denied"
    assert not again.is_error and _text(again) == "hello mcp"

    entries = _log(tmp_path)  # seven calls, seven lines (the unknown tool's too)
    assert [e["action"] for e in entries] == [
        "files.write",
        "files.read",
        "files.delete",
        "files.read",
        "no_such_tool",
        "files.read",
        "files.read",
    ]
    assert [e["outcome"] for e in entries] == ["ok", "ok", "denied", "invalid_input", "invalid_input", "denied", "ok"]
    assert entries[4]["decision"] == "invalid" and "no tool named 'no_such_tool'" in entries[4]["error"]
    sessions = {e["session"] for e in entries}
    assert len(sessions) == 1 and next(iter(sessions)).startswith("mcp-") and "default" not in sessions
    session = next(iter(sessions))
    # the MCP request id in the call id, unique per session (email.send's ledger keys on it)
    assert all(re.fullmatch(re.escape(session) + r":\d+", e["call_id"]) for e in entries)
    assert len({e["call_id"] for e in entries}) == len(entries)


async def test_two_stdio_clients_get_their_own_sessions(tmp_path: Path) -> None:
    """Two clients on the same state dir: a session-scoped budget (1 files.list) is theirs alone."""
    config = _config(
        tmp_path,
        '[policy]\nallow = ["files.*"]\n[[policy.budgets]]\nactions = "files.list"\n'
        'limit = 1\nper = "total"\nscope = "session"\n',
    )
    async with stdio_session(config) as a, stdio_session(config) as b:
        first_a = await a.call_tool("files_list", {})
        second_a = await a.call_tool("files_list", {})
        first_b = await b.call_tool("files_list", {})
    assert not first_a.is_error and not first_b.is_error
    assert second_a.is_error and second_a.structured_content["error"]["type"] == "budget_exceeded"
    sessions = [e["session"] for e in _log(tmp_path)]
    assert sessions[0] == sessions[1] != sessions[2]


async def test_code_figure_comes_back_as_image_content(tmp_path: Path) -> None:
    config = _config(tmp_path, '[policy]\nallow = ["code.*"]\n')
    async with stdio_session(config) as s:
        r = await s.call_tool("code_run", {"code": "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nx = 41"})
        again = await s.call_tool("code_run", {"code": "x + 1"})  # the same kernel: one session per client
    assert not r.is_error, _text(r)
    images = [c for c in r.content if isinstance(c, types.ImageContent)]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(r.content[0], types.TextContent)
    figures = [a["path"] for a in r.structured_content["artifacts"] if a["path"].startswith("figures/")]
    assert len(figures) == 1 and (tmp_path / "ws" / figures[0]).exists()
    assert not again.is_error and again.structured_content["data"]["value"] == "42"


async def test_elicitation_approves_and_declines(tmp_path: Path) -> None:
    config = _config(tmp_path)
    secret = "canary-sekret-42"
    approve, decline, cancel = Elicitations(), Elicitations(approve=False), Elicitations(answer="cancel")
    async with stdio_session(config, approve, AGENT_LEGS_SECRET_TOKEN=secret) as s:
        ok = await s.call_tool("files_write", {"path": "yes.txt", "content": f"key {secret}"})
    async with stdio_session(config, decline) as s:
        no = await s.call_tool("files_write", {"path": "no.txt", "content": "x"})
    async with stdio_session(config, cancel) as s:
        gone = await s.call_tool("files_write", {"path": "cancel.txt", "content": "x"})
    assert not ok.is_error and (tmp_path / "ws" / "yes.txt").read_text() == f"key {secret}"
    assert len(approve.messages) == 1
    message = approve.messages[0]
    assert "files.write" in message and "yes.txt" in message and "policy.require_approval['files.write']" in message
    assert secret not in message and "[REDACTED:TOKEN]" in message
    assert approve.schemas[0]["properties"]["approve"]["type"] == "boolean"
    for result, name in ((no, "no.txt"), (gone, "cancel.txt")):
        assert result.is_error and result.structured_content["error"]["type"] == "approval_denied"
        assert "policy.require_approval['files.write']" in _text(result)
        assert not (tmp_path / "ws" / name).exists()
    assert len(decline.messages) == 1 and len(cancel.messages) == 1
    assert [e["decision"] for e in _log(tmp_path)] == ["approved", "rejected", "rejected"]


async def test_without_elicitation_an_approval_is_denied_with_the_rule(tmp_path: Path) -> None:
    config = _config(tmp_path)
    async with stdio_session(config, None) as s:  # the client declares no elicitation capability
        r = await s.call_tool("files_write", {"path": "a.txt", "content": "x"})
    assert r.is_error and r.structured_content["error"]["type"] == "approval_denied"
    assert "policy.require_approval['files.write']" in _text(r)
    assert not (tmp_path / "ws" / "a.txt").exists()


async def test_without_elicitation_the_approval_queue_decides_when_asked_to(tmp_path: Path) -> None:
    """--approval-queue: a client that cannot be asked waits in the queue; a person approves from the CLI."""
    config = _config(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent_legs._cli", "--config", str(config), *args],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )

    async with stdio_session(config, None, args=("--approval-queue",)) as s:
        call = asyncio.create_task(s.call_tool("files_write", {"path": "a.txt", "content": "x"}))
        deadline = time.monotonic() + 60
        while True:
            listed = await asyncio.to_thread(cli, "approvals", "--json")
            pending = json.loads(listed.stdout or "[]") if listed.returncode == 0 else []
            if pending:
                break
            assert time.monotonic() < deadline, listed.stderr
            await asyncio.sleep(0.2)
        (item,) = pending
        assert item["action"] == "files.write" and not (tmp_path / "ws" / "a.txt").exists()
        approved = await asyncio.to_thread(cli, "approve", item["id"], "--by", "ana")
        assert approved.returncode == 0, approved.stderr
        r = await asyncio.wait_for(call, 60)
    assert not r.is_error, _text(r)
    assert (tmp_path / "ws" / "a.txt").read_text() == "x"
    (line,) = [e for e in _log(tmp_path) if e["action"] == "files.write"]
    assert line["approval"]["decision"] == "approved" and line["approval"]["by"] == "ana"


# -- HTTP --------------------------------------------------------------------------------------------
class HttpServer:
    def __init__(self, proc: subprocess.Popen[str], url: str, stderr: list[str]) -> None:
        self.proc, self.url, self.stderr = proc, url, stderr


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, token: str | None = "s3cret-token", policy: str = POLICY, address: str = "127.0.0.1:0") -> HttpServer:
        env = _env(**({"AGENT_LEGS_MCP_TOKEN": token} if token is not None else {}))
        proc = subprocess.Popen(
            _argv(_config(tmp_path, policy), "--http", address, *args),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        lines: queue.Queue[str] = queue.Queue()
        seen: list[str] = []
        assert proc.stderr is not None
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
        while True:
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                raise AssertionError(f"the server did not start: {seen}") from None
            seen.append(line)
            if m := re.search(r"serving streamable HTTP at (\S+)", line):
                return HttpServer(proc, m.group(1), seen)

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def http_session(url: str, token: str, elicit: Elicitations | None = None) -> AsyncIterator[ClientSession]:
    client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with (
        client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write, elicitation_callback=elicit) as s,
    ):
        await s.initialize()
        yield s


_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
_ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def test_http_token_origin_and_host_checks(tmp_path: Path, http_server: Any) -> None:
    server = http_server()
    url = server.url
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    good = {**_ACCEPT, "Authorization": "Bearer s3cret-token"}
    with httpx.Client(timeout=30) as http:
        assert http.post(url, json=_INIT, headers=_ACCEPT).status_code == 401
        wrong = http.post(url, json=_INIT, headers={**_ACCEPT, "Authorization": "Bearer s3cret-tokeN"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert http.post(url, json=_INIT, headers={**_ACCEPT, "Authorization": "Basic s3cret-token"}).status_code == 401
        assert http.post(url, json=_INIT, headers={**good, "Origin": "https://evil.example"}).status_code == 403
        assert http.post(url, json=_INIT, headers={**good, "Origin": f"http://127.0.0.1:{port + 1}"}).status_code == 403
        # DNS rebinding: a page at evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example
        assert http.post(url, json=_INIT, headers={**good, "Host": f"evil.example:{port}"}).status_code == 421
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
            assert http.post(url, json=_INIT, headers={**good, "Origin": origin}).status_code == 200
        ok = http.post(url, json=_INIT, headers=good)
        assert ok.status_code == 200 and "agent-legs" in ok.text
    assert _log(tmp_path) == []  # nothing refused reached an action


def test_http_allow_origin_allow_host_and_random_token(tmp_path: Path, http_server: Any) -> None:
    import socket

    with socket.socket() as probe:  # a free port, named before the start so --allow-host can carry it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = http_server(
        "--allow-origin",
        "https://app.example.com",
        "--allow-host",
        f"mcp.internal:{port}",
        token=None,
        address=f"127.0.0.1:{port}",
    )
    tokens = [m.group(1) for line in server.stderr if (m := re.search(r"bearer token .*: (\S+)$", line.strip()))]
    assert len(tokens) == 1 and len(tokens[0]) >= 32
    good = {**_ACCEPT, "Authorization": f"Bearer {tokens[0]}"}
    with httpx.Client(timeout=30) as http:
        assert http.post(server.url, json=_INIT, headers={**good, "Origin": "https://app.example.com"}).status_code == 200
        assert http.post(server.url, json=_INIT, headers={**good, "Origin": "https://other.example.com"}).status_code == 403
        assert http.post(server.url, json=_INIT, headers=_ACCEPT).status_code == 401
        assert http.post(server.url, json=_INIT, headers={**good, "Host": f"mcp.internal:{port}"}).status_code == 200
        assert http.post(server.url, json=_INIT, headers={**good, "Host": f"mcp.other:{port}"}).status_code == 421


async def test_http_clients_get_their_own_sessions_and_elicitation(tmp_path: Path, http_server: Any) -> None:
    server = http_server()
    approve = Elicitations()
    async with http_session(server.url, "s3cret-token", approve) as a, http_session(server.url, "s3cret-token") as b:
        assert [t.name for t in (await a.list_tools()).tools] == [t.name for t in (await b.list_tools()).tools]
        first_a = await a.call_tool("files_list", {})
        second_a = await a.call_tool("files_list", {})
        first_b = await b.call_tool("files_list", {})
        wrote = await a.call_tool("files_write", {"path": "h.txt", "content": "over http"})
        refused = await b.call_tool("files_write", {"path": "b.txt", "content": "x"})  # b cannot be asked
        set_a = await a.call_tool("code_run", {"code": "who = 'a'"})
        get_b = await b.call_tool("code_run", {"code": "'who' in globals()"})
        get_a = await a.call_tool("code_run", {"code": "who"})
    assert not first_a.is_error and not first_b.is_error
    assert second_a.is_error and second_a.structured_content["error"]["type"] == "budget_exceeded"
    assert not wrote.is_error and (tmp_path / "ws" / "h.txt").read_text() == "over http"
    assert len(approve.messages) == 1 and "h.txt" in approve.messages[0]
    assert refused.is_error and refused.structured_content["error"]["type"] == "approval_denied"
    assert not set_a.is_error and get_b.structured_content["data"]["value"] == "False"
    assert get_a.structured_content["data"]["value"] == "'a'"
    entries = _log(tmp_path)
    assert len(entries) == 8  # one line per tool call
    by_session: dict[str, list[str]] = {}
    for e in entries:
        by_session.setdefault(e["session"], []).append(e["action"])
    assert len(by_session) == 2 and all(s.startswith("mcp-") for s in by_session)
    assert sorted(map(len, by_session.values())) == [3, 5]


# -- command line ------------------------------------------------------------------------------------
def test_command_line_refusals(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--workspace", str(tmp_path / "ws"), "--state-dir", str(tmp_path / "st"), "mcp"]
    r = runner.invoke(app, [*base, "--http", "0.0.0.0:8765", "--token", "t"])
    assert r.exit_code == 2 and "--allow-remote" in r.output
    r = runner.invoke(app, [*base, "--http", "127.0.0.1:http"])
    assert r.exit_code == 2 and "numeric port" in r.output
    r = runner.invoke(app, [*base, "--http", "127.0.0.1:0", "--token", "  "])
    assert r.exit_code == 2 and "empty" in r.output
    r = runner.invoke(app, [*base, "--token", "t"])
    assert r.exit_code == 2 and "only with --http" in r.output
    assert not (tmp_path / "ws").exists()  # refused before anything was created


def test_remote_bind_warns(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _argv(_config(tmp_path), "--http", "0.0.0.0:0", "--allow-remote"),
        env=_env(AGENT_LEGS_MCP_TOKEN="t0ken-for-remote"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "serving streamable HTTP" in line:
                break
        text = "".join(lines)
        assert "warning" in text and "reachable from the network" in text
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_http_session_close_releases_its_sandbox(tmp_path: Path, http_server: Any) -> None:
    """A client that ends its MCP session (DELETE) ends its Agent Legs session: its kernel is removed."""
    import socket
    import time

    from agent_legs_testing.docker import LABEL

    server = http_server(policy='[settings.code]\npool_size = 0\n[policy]\nallow = ["code.*"]\n')
    owner = f"label={LABEL}.owner={socket.gethostname()}:{server.proc.pid}"

    def containers() -> list[str]:
        out = subprocess.run(["docker", "ps", "-aq", "--filter", owner], capture_output=True, text=True, check=True)
        return out.stdout.split()

    async with http_session(server.url, "s3cret-token") as a:
        assert not (await a.call_tool("code_run", {"code": "1"})).is_error
        assert len(containers()) == 1
    deadline = time.monotonic() + 60
    while containers() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert containers() == []


# -- the 2026-07-28 protocol (the SDK's Client, mode="auto") ------------------------------------------
def _modern_client(config: Path, elicit: Elicitations | None = None) -> Client:
    return Client(StdioServerParameters(command=sys.executable, args=_argv(config)[1:], env=_env()), elicitation_callback=elicit)


async def test_modern_protocol_approval_rides_input_required(tmp_path: Path) -> None:
    config = _config(tmp_path)
    approve, decline = Elicitations(), Elicitations(approve=False)
    async with _modern_client(config, approve) as c:
        assert c.session.protocol_version == "2026-07-28"  # no server-to-client requests in this era
        ok = await c.call_tool("files_write", {"path": "yes.txt", "content": "x"})
    async with _modern_client(config, decline) as c:
        no = await c.call_tool("files_write", {"path": "no.txt", "content": "x"})
    async with _modern_client(config, None) as c:  # no elicitation capability: the rule decides
        silent = await c.call_tool("files_write", {"path": "silent.txt", "content": "x"})
    assert not ok.is_error and (tmp_path / "ws" / "yes.txt").exists()
    assert len(approve.messages) == 1 and "yes.txt" in approve.messages[0]
    assert "policy.require_approval['files.write']" in approve.messages[0]
    for result, name in ((no, "no.txt"), (silent, "silent.txt")):
        assert result.is_error and result.structured_content["error"]["type"] == "approval_denied"
        assert not (tmp_path / "ws" / name).exists()
    # one line per call that ran (the question round ran nothing)
    assert [e["decision"] for e in _log(tmp_path)] == ["approved", "rejected", "rejected"]


async def test_modern_protocol_answer_binds_to_the_call_it_was_asked_about(tmp_path: Path) -> None:
    """An approval counts once, for the same tool and arguments, with the state the server issued."""
    config = _config(tmp_path)
    yes = {"approve": types.ElicitResult(action="accept", content={"approve": True})}
    async with _modern_client(config, Elicitations()) as c:
        s = c.session
        first = await s.call_tool("files_write", {"path": "asked.txt", "content": "x"}, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult) and first.request_state
        assert "asked.txt" in first.input_requests["approve"].params.message
        swapped = await s.call_tool(
            "files_write",
            {"path": "other.txt", "content": "x"},
            allow_input_required=True,
            input_responses=yes,
            request_state=first.request_state,
        )
        forged = await s.call_tool(
            "files_write",
            {"path": "asked.txt", "content": "x"},
            allow_input_required=True,
            input_responses=yes,
            request_state="agent-legs-approval-forged",
        )
        assert isinstance(swapped, types.InputRequiredResult) and isinstance(forged, types.InputRequiredResult)
        # the first state was spent by the swapped retry: using it again asks again
        reused = await s.call_tool(
            "files_write",
            {"path": "asked.txt", "content": "x"},
            allow_input_required=True,
            input_responses=yes,
            request_state=first.request_state,
        )
        assert isinstance(reused, types.InputRequiredResult)
        done = await s.call_tool(
            "files_write",
            {"path": "asked.txt", "content": "x"},
            allow_input_required=True,
            input_responses=yes,
            request_state=reused.request_state,
        )
        assert isinstance(done, types.CallToolResult) and not done.is_error
    assert (tmp_path / "ws" / "asked.txt").exists() and not (tmp_path / "ws" / "other.txt").exists()
    assert [(e["action"], e["decision"]) for e in _log(tmp_path)] == [("files.write", "approved")]


def test_without_the_sdk_the_command_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['mcp'] = None\n"  # an environment without the [mcp] extra
        "from agent_legs._cli import main; main()"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "--workspace", str(tmp_path / "ws"), "--state-dir", str(tmp_path / "st"), "mcp"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "pip install 'agent-legs[mcp]'" in r.stderr and "Traceback" not in r.stderr


async def test_the_fallback_approver_decides_when_the_client_cannot_be_asked(tmp_path: Path) -> None:
    """An embedding application's own approver (here in process, the SDK's in-memory transport)."""
    from agent_legs._mcp_server import McpApprovals, build_server

    seen: list[Any] = []

    def fallback(request: Any) -> bool:
        seen.append(request)
        return request.arguments["path"] == "ok.txt"

    approvals = McpApprovals(fallback)
    policy = {"allow": ["files.*"], "require_approval": ["files.write"]}
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "state", policy=policy, approver=approvals.approve) as legs:
        async with Client(build_server(legs, approvals, session="embedded"), mode="legacy") as c:
            ok = await c.call_tool("files_write", {"path": "ok.txt", "content": "x"})
            no = await c.call_tool("files_write", {"path": "no.txt", "content": "x"})
    assert not ok.is_error and no.is_error and no.structured_content["error"]["type"] == "approval_denied"
    assert [r.action for r in seen] == ["files.write", "files.write"] and seen[0].session == "embedded"
    assert (tmp_path / "ws" / "ok.txt").exists() and not (tmp_path / "ws" / "no.txt").exists()
