from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from agent_legs import Legs
from agent_legs_testing.http_server import start_server

# One real Legs and one real HTTP server for the standard suites (their properties cannot use fixtures).
_TMP = Path(tempfile.mkdtemp(prefix="lc-agent-legs-"))
SERVER, _HTTPD = start_server()
SERVER.routes["/form"] = lambda h, r: h.send_body(
    200,
    b"<html><title>Form</title><body><form action='/echo'><input id='q' name='q'><button>Go</button></form></body></html>",
    "text/html",
)
WS = _TMP / "ws"


def prepare_example(action: str) -> None:
    """Reset the files the examples use, so every example call succeeds."""
    WS.mkdir(exist_ok=True)
    (WS / "example.txt").write_text("alpha\nbeta\n")
    (WS / "edit.txt").write_text("a" * 1000)
    (WS / "dir").mkdir(exist_ok=True)
    (WS / "dir/x.txt").write_text("x")
    (WS / "to-delete.txt").write_text("bye")
    if action.startswith("browser.") and action != "browser.navigate":
        LEGS.run("browser.navigate", {"url": SERVER.url("/html")})
        LEGS.run("browser.navigate", {"url": SERVER.url("/form")})  # a page to act on, and one to go back to


LEGS = Legs(workspace=_TMP / "ws", state_dir=_TMP / "st", policy={"network": {"allow_hosts": [f"127.0.0.1:{SERVER.port}"]}})
prepare_example("")

EXAMPLES: dict[str, dict[str, object]] = {
    "files.read": {"path": "example.txt"},
    "files.write": {"path": "out/written.txt", "content": "hello"},
    "files.edit": {"path": "edit.txt", "old_text": "a", "new_text": "b", "count": 1000},
    "files.list": {"path": ".", "recursive": True},
    "files.search": {"pattern": "alpha"},
    "files.move": {"source": "dir/x.txt", "destination": "moved.txt", "overwrite": True},
    "files.copy": {"source": "example.txt", "destination": "copy.txt", "overwrite": True},
    "files.delete": {"path": "to-delete.txt"},
    "http.request": {"method": "GET", "url": SERVER.url("/json")},
    "code.run": {"code": "print(1 + 1)"},
    "code.reset": {},
    # email is configured against real servers in its own tests; here only the tool contract is checked
    "email.send": {"to": ["nobody@example.com"], "subject": "s", "body": "b"},
    "email.list": {},
    "email.read": {"id": "1"},
    "browser.navigate": {"url": SERVER.url("/form")},
    "browser.content": {"format": "text"},
    "browser.click": {"selector": "button"},
    "browser.fill": {"selector": "#q", "value": "hello"},
    "browser.screenshot": {},
    "browser.links": {},
    "browser.back": {},
}


def _cleanup() -> None:
    LEGS.close()
    _HTTPD.shutdown()
    shutil.rmtree(_TMP, ignore_errors=True)


atexit.register(_cleanup)


def standard_suites(base: type, prefix: str) -> dict[str, type]:
    """One langchain-tests suite class per registered example action, built on ``base``."""
    from langchain_agent_legs import AgentLegsTool

    suites: dict[str, type] = {}
    for action in EXAMPLES:  # noqa: PLC0206  (each test reads its example afresh)

        def tool_constructor(self: object, action: str = action) -> AgentLegsTool:
            prepare_example(action)  # each test calls the tool once: give it a fresh world
            return AgentLegsTool.from_spec(LEGS, LEGS.get_action(action))

        def tool_invoke_params_example(self: object, action: str = action) -> dict[str, object]:
            return dict(EXAMPLES[action])

        name = f"{prefix}_{action.replace('.', '_')}"
        suites[name] = type(
            name,
            (base,),
            {"tool_constructor": property(tool_constructor), "tool_invoke_params_example": property(tool_invoke_params_example)},
        )
    return suites
