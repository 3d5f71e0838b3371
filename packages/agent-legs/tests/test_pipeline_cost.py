"""The fixed cost of a call, checked by what it does rather than by a clock (issue 20, item 5).

What the speed-ups of the pipeline rest on, each against real files and a real ``Legs``: a call
costs two ``write(2)``s (its intent line, its outcome line; the journal's ``done`` line rides with the
next intent) and no ``stat``; a writer still reopens a log another writer rotated before its next
line; a crash before a ``done`` line went out repeats nothing; a handler that waits keeps its
deadline, counted from its start, and its cleanup; the orjson encoder and the stdlib fallback write
the same values; the span made without the SDK when nothing records carries the ids the SDK gives;
the per-action plan follows an action registered again under its name.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from core_test_actions import registry
from opentelemetry import context, trace
from pydantic import BaseModel, ConfigDict

from agent_legs import ActionContext, ActionOutput, ActionRegistry, Legs, action
from agent_legs._telemetry import ActionLog, _log_writer, read_log
from agent_legs._telemetry._records import bounded_arguments
from agent_legs._telemetry._spans import Tracer

POLICY = {"allow": ["test.*"]}


class _Counts:
    """``os.write``/``os.stat``/``os.fstat`` calls on the given descriptors and paths, from any thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes: list[int] = []
        self.stats: list[str] = []
        self.fstats: list[int] = []
        write, stat, fstat = os.write, os.stat, os.fstat

        def counted_write(fd: int, data: bytes) -> int:
            self.writes.append(fd)
            return write(fd, data)

        def counted_stat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.stats.append(str(path))
            return stat(path, *args, **kwargs)

        def counted_fstat(fd: int):  # type: ignore[no-untyped-def]
            self.fstats.append(fd)
            return fstat(fd)

        monkeypatch.setattr(os, "write", counted_write)
        monkeypatch.setattr(os, "stat", counted_stat)
        monkeypatch.setattr(os, "fstat", counted_fstat)


def test_a_call_costs_two_writes_and_no_stat(dirs, monkeypatch) -> None:
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry) as legs:
        assert legs.run("test.inline", {"text": "warm"}).ok  # opens the journal
        log_fd, journal_fd = legs._telemetry.action_log._fd, legs._telemetry.journal._fd
        counts = _Counts(monkeypatch)
        for i in range(10):
            assert legs.run("test.inline", {"text": str(i)}).ok
        monkeypatch.undo()
    ours = {log_fd, journal_fd}
    # Ten intent lines (each carrying the previous call's done line) and ten outcome lines.
    assert sorted(fd for fd in counts.writes if fd in ours) == sorted([log_fd] * 10 + [journal_fd] * 10)
    assert [p for p in counts.stats if "actions.jsonl" in p] == []  # rotation is counted, not stat-ed
    assert [fd for fd in counts.fstats if fd in ours] == []  # the size is re-read once per 64 lines only
    entries = list(read_log(st / "actions.jsonl"))
    assert [e["outcome"] for e in entries] == ["ok"] * 11  # every call logged once, nothing left running


def test_a_writer_reopens_a_log_another_rotated_before_its_next_line(tmp_path, monkeypatch) -> None:
    path = tmp_path / "actions.jsonl"
    a = ActionLog(path)
    b = ActionLog(path, max_bytes=500, backups=3)  # another process's writer (its own descriptor and mapping)
    a.write({"w": "a", "i": 0})
    for i in range(5):
        b.write({"w": "b", "i": i, "pad": "x" * 200})  # rotates: actions.jsonl becomes actions.jsonl.1
    assert (tmp_path / "actions.jsonl.1").exists()
    counts = _Counts(monkeypatch)
    a.write({"w": "a", "i": 1})
    monkeypatch.undo()
    a.close()
    b.close()
    assert [p for p in counts.stats if "actions.jsonl" in p] == []  # told by the shared counter, not by stat
    current = [json.loads(x) for x in path.read_text().splitlines()]
    assert {"w": "a", "i": 1} in current  # in the new file, not in the backup
    entries = list(read_log(path))
    assert [e["i"] for e in entries if e["w"] == "a"] == [0, 1]
    assert [e["i"] for e in entries if e["w"] == "b"] == list(range(5))


def test_a_log_removed_by_hand_is_recreated_within_a_bounded_number_of_lines(tmp_path) -> None:
    path = tmp_path / "actions.jsonl"
    log = ActionLog(path)
    log.write({"i": 0})
    path.unlink()
    for i in range(1, 80):  # the file's identity is checked once per 64 lines
        log.write({"i": i})
    log.close()
    assert path.exists()
    assert [json.loads(x)["i"] for x in path.read_text().splitlines()][-1] == 79


def test_a_crash_before_the_done_line_went_out_repeats_nothing(tmp_path) -> None:
    ws, st = tmp_path / "ws", tmp_path / "st"
    tests = Path(__file__).parent
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(tests)!r})
        from core_test_actions import registry
        from agent_legs import Legs
        legs = Legs(workspace={str(ws)!r}, state_dir={str(st)!r}, policy={POLICY!r}, registry=registry)
        for i in range(3):
            assert legs.run("test.echo", {{"text": str(i)}}).ok
        os._exit(0)  # no close: the last call's done line never goes out, as when killed
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    (journal,) = (st / "actions.pending").glob("*.jsonl")
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    assert [("intent" in x, "done" in x) for x in lines] == [
        (True, False),
        (False, True),  # the first call's done line, sent with the second intent
        (True, False),
        (False, True),
        (True, False),  # the third call's done line was still waiting
    ]
    before = list(read_log(st / "actions.jsonl"))  # the dead journal's settled intent is not shown twice
    assert [(e["outcome"], e["target"]) for e in before] == [("ok", "0"), ("ok", "1"), ("ok", "2")]
    Legs(workspace=ws, state_dir=st, policy=POLICY, registry=registry).close()  # recovers the dead journal
    after = list(read_log(st / "actions.jsonl"))
    assert [e["outcome"] for e in after] == ["ok", "ok", "ok"]  # no "unfinished" copy of the third
    assert not list((st / "actions.pending").iterdir())


# -- the handler under its deadline -------------------------------------------------------------------

steps = ActionRegistry()
cleaned: list[str] = []


class NapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    block_s: float = 0.0  # synchronous work before the first wait
    nap_s: float = 0.0
    naps: int = 1
    fail_after: bool = False


@action("test.nap", description="Block, then wait.", read_only=True, registry=steps, timeout=lambda policy, args: 0.4)
async def nap(ctx: ActionContext, args: NapIn) -> ActionOutput:
    try:
        time.sleep(args.block_s)  # the first step: runs before any timer could fire
        for _ in range(args.naps):
            await asyncio.sleep(args.nap_s)
        if args.fail_after:
            raise LookupError("after the waits")
        return ActionOutput(output=f"napped {args.naps}", data={"thread": threading.current_thread().name})
    finally:
        cleaned.append(f"{args.naps}")


def test_a_handler_that_waits_keeps_its_result_its_errors_its_deadline_and_its_cleanup(dirs) -> None:
    ws, st = dirs
    cleaned.clear()
    with Legs(workspace=ws, state_dir=st, policy={"allow": ["test.*"]}, registry=steps) as legs:
        r = legs.run("test.nap", {"naps": 3, "nap_s": 0.001})
        assert r.ok and r.output == "napped 3"
        r = legs.run("test.nap", {"naps": 2, "nap_s": 0.001, "fail_after": True})
        assert not r.ok and r.error is not None and r.error.type == "failed" and "LookupError" in r.error.message
        # The deadline counts the synchronous first step: 0.3 s of it leaves 0.1 s for a 0.3 s wait.
        r = legs.run("test.nap", {"block_s": 0.3, "nap_s": 0.3, "naps": 4})
        assert not r.ok and r.error is not None and r.error.type == "timeout" and r.error.retryable
        r = legs.run("test.nap", {"naps": 0})  # finishes without waiting
        assert r.ok and r.output == "napped 0"
    assert cleaned == ["3", "2", "4", "0"]  # every handler's finally ran, the stopped one's too


async def test_cancelling_a_waiting_handler_reaches_it(dirs) -> None:
    ws, st = dirs
    cleaned.clear()
    async with Legs(workspace=ws, state_dir=st, policy={"allow": ["test.*"]}, registry=steps) as legs:
        spec = legs.get_action("test.nap")
        task = asyncio.ensure_future(legs._pipeline.execute(spec, {"nap_s": 0.3, "naps": 1}, "s", None, context.get_current()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cleaned == ["1"]
    assert [e["error"] for e in read_log(st / "actions.jsonl")] == ["cancelled by the caller"]


# -- encoding and ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        {"action": "files.read", "arguments": {"path": "a.txt"}, "duration_ms": 0.123, "call_id": None},
        {"text": "lone \ud800 surrogate"},  # orjson refuses it: the stdlib escapes it
        {"big": 2**70, "neg": -(2**70)},  # beyond 64 bits: the stdlib
        {1: "a non-str key", "nested": {"list": [1, 2.5, True, None, "é\u2028"]}},
        {"when": __import__("datetime").datetime(2026, 1, 2, 3, 4, 5), "raw": b"x", "path": Path("/a/b")},
    ],
)
def test_the_fast_encoder_and_the_fallback_write_the_same_values(entry, monkeypatch) -> None:
    fast = _log_writer.encode_line(entry)
    monkeypatch.setattr(_log_writer, "_fast", False)
    slow = _log_writer.encode_line(entry)
    assert fast.endswith(b"\n") and fast.count(b"\n") == 1 and slow.endswith(b"\n")
    assert json.loads(fast) == json.loads(slow)


def test_short_flat_arguments_are_logged_as_they_are_and_long_ones_still_bounded() -> None:
    from agent_legs._secrets import Redactor

    none = Redactor({})
    flat = {"path": "a.txt", "n": 3, "flag": True, "ratio": 0.5, "nothing": None}
    assert bounded_arguments(flat, none) == flat
    long = {"content": "x" * 5000}
    assert "sha256" in bounded_arguments(long, none)["content"]
    many = {f"k{i}": "y" * 1000 for i in range(40)}  # each string short, the whole over 16 KiB
    assert isinstance(bounded_arguments(many, none), str) and "sha256" in bounded_arguments(many, none)
    secret = Redactor({"TOKEN": "s3cr3t-value-123"})
    assert "s3cr3t" not in json.dumps(bounded_arguments({"h": "Bearer s3cr3t-value-123"}, secret))
    # http.request's empty headers and params: as they are, in containers of the line's own
    empty = {"method": "GET", "url": "http://a.test/", "headers": {}, "params": {}, "json": None, "body": None}
    logged = bounded_arguments(empty, none)
    assert logged == empty and logged["headers"] is not empty["headers"] and logged["params"] is not empty["params"]
    assert bounded_arguments({"headers": {"h": "v"}, "items": [], "n": 1}, none) == {"headers": {"h": "v"}, "items": [], "n": 1}
    assert "s3cr3t" not in json.dumps(bounded_arguments({"headers": {}, "h": "s3cr3t-value-123"}, secret))


def test_a_span_nobody_records_carries_the_ids_the_sdk_would_give() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
    from opentelemetry.trace.span import TraceState

    provider = TracerProvider(sampler=ALWAYS_OFF)
    ours, sdk = Tracer(None, provider), provider.get_tracer("sdk")
    caller = NonRecordingSpan(
        SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(3), trace_state=TraceState([("k", "v")]))
    )
    for parent in (None, context.get_current(), trace.set_span_in_context(caller)):
        span = ours.silent_span(parent)
        assert span is not None and not span.is_recording()
        got, want = span.get_span_context(), sdk.start_span("x", context=parent).get_span_context()
        assert (got.trace_flags, got.trace_state, got.is_remote, got.is_valid) == (
            want.trace_flags,
            want.trace_state,
            want.is_remote,
            want.is_valid,
        )
        if parent is not None and trace.get_current_span(parent).get_span_context().is_valid:
            assert got.trace_id == 0xABC and got.span_id != 0xDEF  # a child of the caller's span
    recording = Tracer(None, TracerProvider())
    assert recording.silent_span(None) is None  # a provider that records makes its spans itself


def test_a_span_context_made_directly_is_the_one_the_api_makes() -> None:
    import random

    from opentelemetry.trace.span import TraceState

    from agent_legs._telemetry import _spans

    assert _spans._span_context is _spans._made_directly  # this API version's layout was recognised
    rng = random.Random(7)  # test data
    states = (None, TraceState([("k", "v")]))
    for _ in range(200):
        args = (rng.getrandbits(128), rng.getrandbits(64), rng.choice((0, _spans._RANDOM_TRACE_ID)), rng.choice(states))
        made, ref = _spans._made_directly(*args), _spans._made_by_the_api(*args)
        assert made == ref and type(made) is type(ref)
        assert (made.trace_id, made.span_id, made.is_remote, made.trace_flags, made.trace_state, made.is_valid) == (
            ref.trace_id,
            ref.span_id,
            ref.is_remote,
            ref.trace_flags,
            ref.trace_state,
            ref.is_valid,
        )
    assert not _spans._made_directly(0, 5, 0, None).is_valid and not _spans._made_directly(5, 0, 0, None).is_valid


def test_record_ids_stay_unique_when_the_application_seeds_random_and_across_a_fork(tmp_path) -> None:
    """Record ids come from a generator of their own (no ``getrandom(2)`` per call): an application that
    seeds the ``random`` module with a constant, in two processes, and a forked child, still get ids no
    other process has (``logged_ids`` and recovery find a call's line by its id)."""
    script = textwrap.dedent(
        """
        import os, random, sys
        from agent_legs._telemetry import _facade
        random.seed(0)
        first = [_facade._record_id() for _ in range(3)]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, ",".join(_facade._record_id() for _ in range(3)).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        child = os.read(r, 4096).decode().split(",")
        parent = [_facade._record_id() for _ in range(3)]
        print(",".join(first), ",".join(child), ",".join(parent))
        """
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
        for _ in range(2)
    ]
    ids = [i for run in runs for group in run for i in group.split(",")]
    assert len(ids) == 18 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == 18  # no id twice: not across processes seeded alike, not between parent and child


def test_log_times_are_isoformat_milliseconds_utc_and_move_with_the_clock() -> None:
    """``_now`` caches the second's text and the millisecond's: the text is still what
    ``datetime.isoformat(timespec="milliseconds")`` writes for the current time."""
    from datetime import UTC, datetime

    from agent_legs._telemetry import _facade

    seen = set()
    for _ in range(200):
        before = datetime.now(UTC).replace(microsecond=datetime.now(UTC).microsecond // 1000 * 1000)
        text = _facade._now()
        after = datetime.now(UTC)
        parsed = datetime.fromisoformat(text)
        assert text == parsed.isoformat(timespec="milliseconds")
        assert before.timestamp() - 0.002 <= parsed.timestamp() <= after.timestamp()
        seen.add(text)
        time.sleep(0.0005)
    assert len(seen) > 50  # it moves with the clock, not stuck on a cached value


# -- the result, made without validating values already of the model's types --------------------------

results = ActionRegistry()
_returned: dict[str, dict] = {}


class _NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


@action("r.plain", description="Output of exactly the model's types.", registry=results)
async def plain_result(ctx: ActionContext, args: _NoArgs) -> ActionOutput:
    from agent_legs import Artifact

    data = _returned["plain"] = {"a": [1, {"b": 2}], "s": "x"}
    return ActionOutput(output="done", data=data, artifacts=[Artifact(path="f.png", mime_type="image/png", size=3)])


@action("r.loose", description="An artifact given as a dict.", registry=results)
async def loose_result(ctx: ActionContext, args: _NoArgs) -> ActionOutput:
    return ActionOutput(output="done", artifacts=[{"path": "f.png", "mime_type": "image/png", "size": 3}])  # type: ignore[list-item]


@action("r.badkey", description="Data with a key that is not text.", registry=results)
async def badkey_result(ctx: ActionContext, args: _NoArgs) -> ActionOutput:
    return ActionOutput(output="done", data={1: "x"})  # type: ignore[dict-item]


def test_a_result_made_directly_is_the_validated_result_and_odd_outputs_are_still_checked(dirs) -> None:
    from agent_legs import ActionResult, Artifact

    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, policy={"allow": ["r.*"]}, registry=results) as legs:
        r = legs.run("r.plain", {})
        loose = legs.run("r.loose", {})
        bad = legs.run("r.badkey", {})
    fields = r.model_dump(exclude={"error"})  # what success() passes the model (error left unset)
    validated = ActionResult(**fields)
    assert r.ok and r == validated and r.model_fields_set == validated.model_fields_set
    assert r.model_dump_json() == validated.model_dump_json() and repr(r) == repr(validated)
    assert r.data == _returned["plain"] and r.data is not _returned["plain"]  # a copy, as validation makes
    assert r.trace_id and r.span_id and r.duration_ms >= 0
    assert loose.ok and isinstance(loose.artifacts[0], Artifact) and loose.artifacts[0].path == "f.png"  # converted
    assert not bad.ok and bad.error is not None and bad.error.type == "failed"  # refused, as before
    assert "internal error" in bad.error.message


def test_bounding_nested_arguments_leaves_no_cyclic_garbage() -> None:
    """Before: the walk was a closure calling itself (a reference cycle per call): ~8 objects of cyclic
    garbage for every call with nested arguments (http.request's headers), ~9 % of a call at 50 concurrent
    in the cycle collector. The log record is the same."""
    import gc

    from agent_legs._secrets import Redactor
    from agent_legs._telemetry._records import bounded_arguments

    args = {"method": "GET", "url": "http://127.0.0.1/x", "headers": {"Accept": "text/plain"}, "params": {"q": ["a", 1]}}
    assert bounded_arguments(args, Redactor({"TOKEN": "s3cr3t-value-123456"})) == args
    redactor = Redactor({"TOKEN": "s3cr3t-value-123456"})
    gc.collect()
    gc.disable()
    try:
        for _ in range(1000):
            bounded_arguments(args, redactor)
        # The old walk left 8 objects per call (8,000 here). Not 0: threads that earlier tests left running
        # (a container's removal, a runtime's loop) may make garbage of their own meanwhile (32 once seen).
        assert gc.collect() < 500
    finally:
        gc.enable()


def test_an_action_registered_again_under_its_name_gets_a_new_plan(tmp_path) -> None:
    """The pipeline keeps per action what depends only on the spec and the policy (its plan: tool name,
    the policy's timeout, the guard's hooks); an action registered again under the same name is planned
    again: its calls run the new handler with the new spec's timeout, not the old plan's."""
    reg = ActionRegistry()

    class In(BaseModel):
        text: str

    @action("test.swap", description="the first spec", input_model=In, inline=True, registry=reg)
    async def first(ctx: ActionContext, args: In) -> ActionOutput:
        return ActionOutput(output=f"first {ctx.timeout_s:g}")

    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st", policy=POLICY, registry=reg) as legs:
        assert legs.run("test.swap", {"text": "x"}).output == "first 60"  # no policy section: 60 s
        reg.unregister("test.swap")

        @action("test.swap", description="the second spec", input_model=In, inline=True, timeout=lambda p, a: 7, registry=reg)
        async def second(ctx: ActionContext, args: In) -> ActionOutput:
            return ActionOutput(output=f"second {ctx.timeout_s:g}")

        assert legs.run("test.swap", {"text": "x"}).output == "second 7"
        reg.unregister("test.swap")
        action("test.swap", description="the first spec, again", input_model=In, inline=True, registry=reg)(first)
        assert legs.run("test.swap", {"text": "x"}).output == "first 60"  # the policy's timeout again
