"""The action log as the console reads it: one follower thread, the recent calls in memory.

``LogView`` follows ``<state_dir>/actions.jsonl`` (``follow_log``: rotation-safe, the history first)
in one daemon thread, keeps the newest ``recent`` calls by id (a call seen ``running`` and then
finished is one call), and hands every new entry to the subscribers (the live feed's connections).
Sessions, their recent calls, their latest screenshot and code figures are derived from it.

Invariants: entries are the log's own (already redacted, arguments bounded); nothing here writes.
``artifact_path`` serves only images that a logged call produced, resolved inside the workspace.
"""

from __future__ import annotations

import fnmatch
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._telemetry import follow_log

__all__ = ["IMAGE_TYPES", "Filters", "LogView", "SessionSummary", "outcome_class"]

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}


def outcome_class(entry: dict[str, Any]) -> str:
    outcome = entry.get("outcome")
    return "ok" if outcome == "ok" else "running" if outcome == "running" else "failed"


@dataclass(frozen=True)
class Filters:
    session: str = ""
    action: str = ""  # a name or a glob (browser.*)
    outcome: str = ""  # ok | failed | an error type (denied, approval_denied, ...)

    def keep(self, e: dict[str, Any]) -> bool:
        if self.session and e.get("session") != self.session:
            return False
        if self.action and not fnmatch.fnmatchcase(str(e.get("action", "")), self.action):
            return False
        if self.outcome == "failed":
            return outcome_class(e) == "failed"
        return not self.outcome or e.get("outcome") == self.outcome

    def query(self) -> dict[str, str]:
        return {k: v for k, v in (("session", self.session), ("action", self.action), ("outcome", self.outcome)) if v}


@dataclass
class SessionSummary:
    session: str
    calls: int = 0
    failed: int = 0
    last: str = ""
    recent: list[dict[str, Any]] = field(default_factory=list)  # newest first
    screenshot: str | None = None  # workspace path of the latest browser screenshot
    screenshot_time: str = ""
    code_last: dict[str, Any] | None = None  # the latest code.* call
    kernel: str = "none"  # none | started | reset | failed: what the latest code.* call left
    figures: list[str] = field(default_factory=list)  # images of the latest code.run that produced any


class LogView:
    def __init__(self, log_path: Path, workspace: Path, recent: int = 5000) -> None:
        self.log_path, self.workspace, self.recent = log_path, workspace.resolve(), recent
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._stop = threading.Event()
        self._seq = 0  # every entry added gets the next number (``_seq``): what a page has seen
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()  # set once the history is read

    # -- the follower ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="agent-legs-console-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _follow(self) -> None:
        if not self.log_path.exists():  # no history: every entry, once the log appears, is news
            self.ready.set()
        for entry in follow_log(self.log_path, poll_s=0.2, stop=self._stop):
            if entry is None:
                self.ready.set()
                continue
            self._add(entry, live=self.ready.is_set())
        self.ready.set()

    def _add(self, entry: dict[str, Any], live: bool) -> None:
        key = str(entry.get("id") or f"{entry.get('time')}-{entry.get('span_id')}")
        with self._lock:
            self._seq += 1
            entry = {**entry, "id": key, "_seq": self._seq}
            self._entries.pop(key, None)
            self._entries[key] = entry
            while len(self._entries) > self.recent:
                self._entries.popitem(last=False)
            subscribers = list(self._subscribers)
        if live:
            for notify in subscribers:
                notify(entry)

    def subscribe(self, notify: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(notify)

        def unsubscribe() -> None:
            with self._lock:
                if notify in self._subscribers:
                    self._subscribers.remove(notify)

        return unsubscribe

    # -- reading --------------------------------------------------------------------------------
    def entries(self, filters: Filters | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The newest matching calls, newest first."""
        with self._lock:
            items = list(self._entries.values())
        out: list[dict[str, Any]] = []
        for e in reversed(items):
            if filters is None or filters.keep(e):
                out.append(e)
                if len(out) >= limit:
                    break
        return out

    @property
    def seq(self) -> int:
        """The number of the newest entry (a page rendered now has seen everything up to it)."""
        with self._lock:
            return self._seq

    def since(self, seq: int, filters: Filters) -> list[dict[str, Any]]:
        """The matching entries added after ``seq``, oldest first (a live feed catching up)."""
        with self._lock:
            items = list(self._entries.values())
        return [e for e in items if e["_seq"] > seq and filters.keep(e)]

    def get(self, entry_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._entries.get(entry_id)

    def sessions(self, recent: int = 8) -> list[SessionSummary]:
        """Every session seen in the recent log, most recently active first."""
        with self._lock:
            items = list(self._entries.values())
        found: dict[str, SessionSummary] = {}
        for e in items:  # oldest first: later calls overwrite what earlier ones left
            s = found.setdefault(str(e.get("session")), SessionSummary(str(e.get("session"))))
            s.calls += 1
            s.failed += outcome_class(e) == "failed"
            s.last = str(e.get("time") or "")
            s.recent.insert(0, e)
            del s.recent[recent:]
            action, ok = str(e.get("action", "")), e.get("outcome") == "ok"
            images = [p for p in e.get("artifacts") or [] if isinstance(p, str) and Path(p).suffix.lower() in IMAGE_TYPES]
            if action == "browser.screenshot" and ok and images:
                s.screenshot, s.screenshot_time = images[-1], s.last
            if action.startswith("code.") and e.get("outcome") != "running":  # in flight: decides nothing yet
                s.code_last = e
                s.kernel = "reset" if action == "code.reset" and ok else "started" if ok else "failed"
                if action == "code.run" and ok and images:
                    s.figures = images
        return sorted(found.values(), key=lambda s: s.last, reverse=True)

    def artifact_path(self, path: str) -> Path | None:
        """The file of an image a logged call produced, inside the workspace; ``None`` for anything else."""
        if Path(path).suffix.lower() not in IMAGE_TYPES:
            return None
        with self._lock:
            produced = any(path in (e.get("artifacts") or []) for e in self._entries.values())
        if not produced:
            return None
        target = (self.workspace / path).resolve()
        if not target.is_relative_to(self.workspace) or not target.is_file():
            return None
        return target
