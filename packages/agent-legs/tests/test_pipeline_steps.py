"""The Python steps a call's pipeline takes, counted (issue 20, round 9): not timed.

* ``success`` checks that a result's ``data`` has text keys only without a Python step per key (a
  generator resumed per key was 11 function calls of every ``http.request``), and still sends any
  other key (a subclass of ``str`` included) through the model's validation;
* a log line (and a span's arguments JSON) whose keys are all text is encoded by one orjson call
  without ``OPT_NON_STR_KEYS`` (its slower path for dicts); any other key makes orjson raise, and the
  line is encoded again with the option, the same text as before;
* a call notes its session (last use, and whether the registry must hear of it) with one reading of
  the loop's clock under one acquisition of the session table's lock.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from agent_legs import ActionOutput, Legs
from agent_legs._sessions import SessionTable
from agent_legs._telemetry import _log_writer


def _python_calls(fn: Any) -> int:
    """How many Python-level function calls (generator resumptions included) ``fn()`` makes."""
    count = [0]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            count[0] += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count[0]


class _Str(str):
    __slots__ = ()


def test_a_results_text_keys_are_checked_without_a_python_step_per_key(tmp_path: Path) -> None:
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st") as legs:
        pipeline, spec = legs._pipeline, legs.get_action("http.request")
        few = ActionOutput(output="x", data={f"k{i}": i for i in range(2)})
        many = ActionOutput(output="x", data={f"k{i}": i for i in range(200)})
        pipeline.success(spec, few, 0.0)  # anything made once per process, made
        assert _python_calls(lambda: pipeline.success(spec, many, 0.0)) == _python_calls(
            lambda: pipeline.success(spec, few, 0.0)
        )  # main: 198 more (a generator resumed per key)
        assert pipeline.success(spec, many, 0.0).data == many.data
        # A key that is not exactly ``str`` still goes through the model (which makes it a plain str).
        odd = pipeline.success(spec, ActionOutput(output="x", data={_Str("k"): 1}), 0.0)
        assert odd.data == {"k": 1} and all(type(k) is str for k in odd.data)


class _CountingLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acquired = 0

    def acquire(self, *args: Any) -> bool:
        self.acquired += 1
        return self._lock.acquire(*args)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_call_notes_its_session_with_one_clock_reading_under_one_lock(tmp_path: Path) -> None:
    with Legs(workspace=tmp_path / "ws", state_dir=tmp_path / "st") as legs:
        runtime = legs._runtime
        lock = _CountingLock()
        runtime.sessions._lock = lock  # type: ignore[assignment]
        clock = runtime.loop.time
        readings: list[float] = []

        def time() -> float:
            readings.append(clock())
            return readings[-1]

        runtime.loop.time = time  # type: ignore[method-assign]
        registered: list[str] = []

        async def register(session: str) -> None:
            registered.append(session)

        runtime._register = register  # type: ignore[method-assign]
        try:
            runtime.touch_session("s1")
            runtime.touch_session("s1")
        finally:
            del runtime.loop.time
        assert lock.acquired == 2  # main: 4 (the last use, then the registry's beat)
        assert len(readings) == 2  # main: 2 more, of time.monotonic
        assert "s1" in runtime.sessions
        assert runtime.sessions.touch_due("s1", readings[-1] + 1.0, 30.0) is False  # registered at the first call
        for f in list(runtime._background):
            f.result(5)
        assert registered == ["s1"]  # once per beat


def test_touch_due_notes_the_last_use_and_claims_the_beat_once() -> None:
    table = SessionTable()
    assert table.touch_due("s", 100.0, 30.0) is True
    assert table.touch_due("s", 120.0, 30.0) is False  # within the beat
    assert table.idle(121.0) == ["s"] and table.idle(120.0) == []  # last used at 120
    assert table.touch_due("s", 131.0, 30.0) is True  # the beat passed: claimed again
    assert table.unregister("s") is True
    assert table.touch_due("s", 132.0, 30.0) is True  # unregistered: due at once


def test_a_line_with_text_keys_is_encoded_once_without_the_non_str_keys_option(monkeypatch) -> None:
    real = _log_writer._orjson
    options: list[int] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def dumps(self, obj: Any, default: Any = None, option: int = 0) -> bytes:
            options.append(option)
            return real.dumps(obj, default=default, option=option)

    monkeypatch.setattr(_log_writer, "_orjson", Counting())
    assert _log_writer.encode_line({"a": 1, "b": {"c": [1, None, "é"]}}) == '{"a":1,"b":{"c":[1,null,"é"]}}\n'.encode()
    assert len(options) == 1 and not options[0] & real.OPT_NON_STR_KEYS  # main: with the option
    assert _log_writer.json_text({"a": [1]}) == '{"a":[1]}'
    assert len(options) == 2 and not options[1] & real.OPT_NON_STR_KEYS
    # Keys that are not text (a caller's raw arguments): encoded again with the option, as before.
    assert _log_writer.encode_line({"a": {1: "x", _Str("k"): None}}) == b'{"a":{"1":"x","k":null}}\n'
    assert _log_writer.json_text({None: 2}) == '{"null":2}'
    # What orjson refuses either way (a lone surrogate) still goes to the stdlib encoder.
    assert _log_writer.encode_line({"s": "\ud800"}) == b'{"s":"\\ud800"}\n'
