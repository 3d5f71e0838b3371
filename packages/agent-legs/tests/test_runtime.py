"""The Legs runtime: sync and async callers, one loop thread, deadlines, results, lifetime."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from core_test_actions import events, registry

from agent_legs import AgentLegsError, ClosedError, ConfigError, Legs, UnknownActionError

POLICY = {"allow": ["test.*"], "require_approval": ["mail.*"]}


@pytest.fixture
def legs(open_legs) -> Legs:
    return open_legs(policy=POLICY, registry=registry)


def test_sync_run_returns_result(legs: Legs) -> None:
    r = legs.run("test.echo", {"text": "hi"}, session="s1", call_id="c1")
    assert r.ok and r.output == "hi" and r.error is None
    assert r.data == {"text": "hi", "session": "s1", "call_id": "c1"}
    assert r.action == "test.echo" and r.duration_ms >= 0
    assert r.trace_id and len(r.trace_id) == 32 and r.span_id and len(r.span_id) == 16


def test_tool_name_is_accepted(legs: Legs) -> None:
    assert legs.run("test_echo", {"text": "a"}).ok


def test_unknown_action_raises(legs: Legs) -> None:
    with pytest.raises(UnknownActionError, match=r"unknown action 'nope\.x'"):
        legs.run("nope.x", {})
    with pytest.raises(AgentLegsError):
        legs.run("nope.x", {})


def test_invalid_input_is_a_result(legs: Legs) -> None:
    r = legs.run("test.echo", {"text": 3})
    assert not r.ok and r.error and r.error.type == "invalid_input"
    assert "text" in r.error.message
    r = legs.run("test.echo", {"text": "a", "extra": 1})
    assert r.error and r.error.type == "invalid_input" and "extra" in r.error.message
    r = legs.run("test.echo", None)
    assert r.error and r.error.type == "invalid_input"


def test_lone_surrogates_are_invalid_input_and_still_logged(dirs, read_log, captured_spans) -> None:
    # Text that is not Unicode would fail deep inside an action (after side effects may have begun) or
    # cost the action-log line: it is refused up front, and the session name still gets its line.
    ws, st = dirs
    legs = Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry, tracer_provider=captured_spans.provider)
    r = legs.run("test.echo", {"text": "bad \ud800 text"})
    assert r.error and r.error.type == "invalid_input" and "text" in r.error.message and "surrogate" in r.error.message
    assert legs.run("test.echo", {"text": "fine"}, session="odd\udcff").ok
    legs.close()
    lines = read_log()
    assert [e["outcome"] for e in lines] == ["invalid_input", "ok"]
    assert lines[1]["session"] == "odd\udcff"  # JSON escapes it; the line reads back as written
    assert len(captured_spans.tool_spans()) == 2


def test_action_error_becomes_result(legs: Legs) -> None:
    r = legs.run("test.fail", {"text": "zz"})
    assert not r.ok and r.error is not None
    assert r.error.type == "not_found" and r.error.hint == "try another" and r.data == {"text": "zz"}
    assert "Error (not_found)" in r.output and "Hint: try another" in r.output


def test_bug_in_handler_is_failed_not_raised(legs: Legs) -> None:
    r = legs.run("test.boom", {})
    assert not r.ok and r.error and r.error.type == "failed" and "kaboom" in r.error.message


def test_denied_names_rule(dirs: tuple[Path, Path]) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"allow": ["test.echo"], "deny": ["test.fail"]}, registry=registry) as legs:
        r = legs.run("test.fail", {"text": "x"})
        assert r.error and r.error.type == "denied" and "policy.deny['test.fail']" in r.error.message
        r = legs.run("test.boom", {})
        assert r.error and r.error.type == "denied" and "not listed" in r.error.message


def test_timeout_really_cancels_work(legs: Legs) -> None:
    events.pop("t1", None)
    t0 = time.monotonic()
    r = legs.run("test.sleep", {"seconds": 30, "key": "t1"})
    assert time.monotonic() - t0 < 5
    assert r.error and r.error.type == "timeout"
    assert events["t1"].wait(2), "the handler was not cancelled"
    # the action has effects and was stopped at an unknown point: never advice to repeat it blindly
    assert not r.error.retryable and "may have taken effect in part" in r.error.message


def test_a_read_only_action_that_timed_out_is_retryable(legs: Legs) -> None:
    r = legs.run("test.wait", {"seconds": 30})
    assert r.error and r.error.type == "timeout" and r.error.retryable
    assert "may have taken effect" not in r.error.message


def test_output_is_bounded(dirs: tuple[Path, Path]) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, settings={"max_output_chars": 100}, registry=registry) as legs:
        r = legs.run("test.long", {"seconds": 1000})
        assert r.ok and len(r.output) < 200 and "900 more characters" in r.output


async def test_arun_many_tasks_at_once(legs: Legs) -> None:
    results = await asyncio.gather(*(legs.arun("test.echo", {"text": str(i)}, session=f"s{i % 7}") for i in range(200)))
    assert [r.output for r in results] == [str(i) for i in range(200)]


async def test_sync_run_inside_running_loop(legs: Legs) -> None:
    # A sync caller inside an event loop (e.g. a sync tool in an async app) must work.
    assert legs.run("test.echo", {"text": "inside"}).output == "inside"


def test_run_from_many_threads(legs: Legs) -> None:
    out: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        r = legs.run("test.echo", {"text": f"t{i}"})
        with lock:
            out.append(r.output)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == sorted(f"t{i}" for i in range(20))


async def test_cancelling_arun_cancels_handler(legs: Legs) -> None:
    events.pop("c1", None)
    task = asyncio.create_task(legs.arun("test.sleep", {"seconds": 0.25, "key": "c1"}))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events["c1"].wait(2)


def test_approval(dirs: tuple[Path, Path]) -> None:
    ws, st = dirs
    seen = []

    def approver(req):  # sync approver
        seen.append(req)
        return req.arguments["text"] == "yes"

    with Legs(
        workspace=ws, state_dir=st, policy=POLICY, registry=registry, approver=approver, secrets={"K": "topsecret-value"}
    ) as legs:
        assert legs.run("mail.send", {"text": "yes"}, call_id="a1").ok
        r = legs.run("mail.send", {"text": "no topsecret-value"})
        assert r.error and r.error.type == "approval_denied"
    assert seen[0].action == "mail.send" and seen[0].tool_name == "mail_send" and seen[0].call_id == "a1"
    assert "policy.require_approval['mail.*']" in seen[0].reason and "text=yes" in seen[0].reason
    assert seen[1].arguments["text"] == "no [REDACTED:K]" and "topsecret" not in seen[1].reason


def test_async_approver_and_no_approver(dirs: tuple[Path, Path]) -> None:
    ws, st = dirs

    async def approver(req):
        await asyncio.sleep(0)
        return True

    with Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry, approver=approver) as legs:
        assert legs.run("mail.send", {"text": "x"}).ok
    with Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry) as legs:
        r = legs.run("mail.send", {"text": "x"})
        assert r.error and r.error.type == "approval_denied"


def test_approver_that_raises_is_a_rejection(dirs: tuple[Path, Path]) -> None:
    ws, st = dirs

    def approver(req):
        raise ValueError("ui crashed")

    with Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry, approver=approver) as legs:
        r = legs.run("mail.send", {"text": "x"})
        assert r.error and r.error.type == "approval_denied"


def test_state_dir_inside_workspace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must not contain each other"):
        Legs(workspace=tmp_path, state_dir=tmp_path / "state")
    with pytest.raises(ConfigError):
        Legs(workspace=tmp_path / "st" / "ws", state_dir=tmp_path / "st")


def test_bad_config_raises(dirs: tuple[Path, Path]) -> None:
    ws, st = dirs
    with pytest.raises(ConfigError, match="alow"):
        Legs(workspace=ws, state_dir=st, policy={"alow": ["files.*"]})
    with pytest.raises(ConfigError):
        Legs(workspace=ws, state_dir=st, settings={"code": {"imagee": "x"}})


def test_close_is_idempotent_and_final(dirs: tuple[Path, Path]) -> None:
    ws, st = dirs
    legs = Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry)
    thread = legs._runtime._thread
    assert thread.is_alive()
    legs.close()
    legs.close()
    assert not thread.is_alive()
    with pytest.raises(ClosedError):
        legs.run("test.echo", {"text": "late"})


async def test_async_context_manager(dirs: tuple[Path, Path]) -> None:
    ws, st = dirs
    async with Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry) as legs:
        assert (await legs.arun("test.echo", {"text": "a"})).ok


def test_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "agent-legs.toml"
    cfg.write_text(
        'workspace = "ws"\nstate_dir = "st"\n'
        "[settings.telemetry]\ncapture_content = false\n"
        '[policy]\nallow = ["test.echo"]\n[policy.files]\nread_only = true\n'
        '[[policy.budgets]]\nactions = "test.*"\nlimit = 5\nper = "day"\n'
    )
    with Legs.from_config(cfg, registry=registry) as legs:
        assert legs.workspace == tmp_path / "ws" and legs.state_dir == tmp_path / "st"
        assert legs.policy.files.read_only and not legs.settings.telemetry.capture_content
        assert legs.policy.budgets[0].limit == 5
        assert legs.run("test.echo", {"text": "x"}).ok
    with Legs.from_config(cfg, workspace=tmp_path / "other", registry=registry) as legs:
        assert legs.workspace == tmp_path / "other"
    bad = tmp_path / "bad.toml"
    bad.write_text("workspace = [\n")
    with pytest.raises(ConfigError):
        Legs.from_config(bad)
    bad.write_text('wrkspace = "x"\n')
    with pytest.raises(ConfigError, match="wrkspace"):
        Legs.from_config(bad)


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, dirs: tuple[Path, Path]) -> None:
    monkeypatch.setenv("AGENT_LEGS_CODE__IMAGE", "custom:1")
    monkeypatch.setenv("AGENT_LEGS_TELEMETRY__CAPTURE_CONTENT", "false")
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, registry=registry) as legs:
        assert legs.settings.code.image == "custom:1"
        assert legs.settings.telemetry.capture_content is False
    with Legs(workspace=ws, state_dir=st, registry=registry, settings={"code": {"image": "arg:2"}}) as legs:
        assert legs.settings.code.image == "arg:2"  # explicit arguments win


def test_default_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    with Legs(workspace=tmp_path / "ws", registry=registry) as legs:
        assert legs.state_dir == tmp_path / "xdg" / "agent-legs"


def test_actions_catalog(legs: Legs) -> None:
    names = [a.name for a in legs.actions]
    assert "test.echo" in names
    spec = legs.get_action("test_echo")
    assert spec.tool_name == "test_echo" and spec.read_only and spec.description == "Echo the text."


def test_inline_actions_run_on_the_callers_thread(legs: Legs, captured_spans) -> None:
    r = legs.run("test.inline", {"text": "a"})
    assert r.ok and r.data["thread"] == threading.current_thread().name
    assert legs.run("test.echo", {"text": "a"}).data is not None  # non-inline still hops


async def test_inline_actions_in_async_callers(legs: Legs) -> None:
    r = await legs.arun("test.inline", {"text": "a"})
    assert r.ok and r.data["thread"] == threading.current_thread().name
    # a sync call from inside a running loop cannot use a private loop: it hops instead
    r = legs.run("test.inline", {"text": "b"})
    assert r.ok and r.data["thread"] == "agent-legs-runtime"


def test_inline_actions_keep_one_span_and_nesting(dirs, captured_spans, read_log) -> None:
    ws, st = dirs
    tracer = captured_spans.provider.get_tracer("t")
    with Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry, tracer_provider=captured_spans.provider) as legs:
        with tracer.start_as_current_span("parent") as parent:
            legs.run("test.inline", {"text": "a"})
        legs.close()
        with pytest.raises(ClosedError):
            legs.run("test.inline", {"text": "late"})
    (span,) = captured_spans.tool_spans()
    assert span.parent.span_id == parent.get_span_context().span_id
    assert len(read_log()) == 1


def test_a_session_used_while_the_reaper_closes_others_is_kept(dirs: tuple[Path, Path]) -> None:
    """The reaper finds sessions a and b idle and closes a (slowly); meanwhile a caller thread uses b.
    b must not be closed in that pass: a session is closed only once its TTL has passed since its
    last use (before, the reaper closed everything its scan had found: b lost its browser context,
    kernel, ... in the middle of its use)."""
    from agent_legs._service import Service

    ttl = 1.0
    closed_at: dict[str, float] = {}
    closing_a = threading.Event()
    release_a = threading.Event()

    class Recorder(Service):
        async def close_session(self, session: str) -> None:
            if session == "a":
                closing_a.set()
                while not release_a.is_set():
                    await asyncio.sleep(0.01)
            closed_at[session] = time.monotonic()

    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry, settings={"session_ttl_s": ttl}) as legs:
        runtime = legs._runtime
        runtime.submit(runtime.service(Recorder)).result()
        runtime.touch_session("a")
        runtime.touch_session("b")
        assert closing_a.wait(30)  # the reaper found both idle and is closing a
        used_b = time.monotonic()
        assert legs.run("test.inline", {"text": "x"}, session="b").ok  # b is used again, from this thread
        release_a.set()
        deadline = time.monotonic() + 30
        while "b" not in closed_at and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "b" in closed_at  # idle again later: closed then
        assert closed_at["b"] - used_b >= ttl, "b was closed right after its use, by the scan made before it"
