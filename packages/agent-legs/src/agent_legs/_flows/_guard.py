"""The exfiltration guard: private data a session read cannot leave for an untrusted destination
unapproved.

Two hooks in the call pipeline (``_pipeline.CallPipeline``: ``_check_flow`` and after ``success``):

* ``check`` before a sink runs (after the policy, before approval): when the call's payload shares a
  12-character window (verbatim or encoded, see ``_encodings``) with what a private source returned
  to this session, or attaches a workspace file the session did not write, and some destination is
  not trusted, it returns a ``Finding``: ``policy.flows.mode`` then sends the call to approval or
  refuses it; the reason names the rule ``policy.flows``, the reading call ids and the destinations;
* ``record`` after a reading action's result: its fingerprints (private) go to the state store
  before the model sees the result; its label (untrusted: shown to approvers, deciding nothing) is
  buffered in this worker and written in one batch (before this worker reads the store for a check,
  when ``_LABEL_BATCH`` are pending or the oldest is ``_LABEL_DELAY_S`` old as the next one comes, and
  at ``flush()``, which ``Legs.close`` calls), so that an ``http.request`` or a browser action pays no
  store round trip; other workers see them once written.

Threat model: the model is fully compromised (a prompt injection chooses every call). It can copy,
encode, split (fragments of 12 or more characters each) and attach what it read; each is caught.
It cannot see or change the index, the key or the policy. Fail closed: a store that cannot be reached
makes the sink ``unavailable``, never allowed; a private read during the outage is indexed in this
worker's memory (or, when not even the key could be read, makes the session *blind* here: its later
sinks to untrusted destinations are asked or refused).
Not covered (stated in docs/security.md): paraphrased or summarised data, fragments under 12
characters, covert channels (timing, which URL of a set is fetched), data leaving through
``code.run``'s own network access, and other sessions' data (each session is judged on its own reads).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
import time
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import ActionError
from ._encodings import WINDOW, fingerprints, normalize, sorted_fingerprints, views
from ._index import Entry, SessionCache, SessionIndex, contains, decode_fps, row_digest
from ._sinks import Sink, Trust, destinations, extract
from ._sources import WRITES, is_private, is_untrusted, result_texts

if TYPE_CHECKING:
    from .._policy import Policy
    from .._runtime import Runtime
    from .._settings import Settings

__all__ = ["RULE", "Finding", "FlowGuard"]

log = logging.getLogger("agent_legs.flows")

RULE = "policy.flows"
_SESSIONS = 1024  # sessions whose current browser page and written files this worker remembers
_BLIND_SESSIONS = 65_536  # sessions remembered as blind (a few bytes each)
_WRITTEN = 256  # file digests remembered per session (the oldest forgotten: such a file counts as private)
_LABEL_BATCH = 256  # untrusted labels buffered before a write is forced (a hop costs the runtime thread ~0.8 ms of CPU)
_MEMO = 32  # texts whose fingerprints are remembered (a pure function of the text and the key)
_MEMO_CHARS = 16_384  # only texts up to this long (a remembered text's row is ~11 bytes per character)
_LABEL_DELAY_S = 1.0  # nor is one kept unwritten longer than this while calls keep coming (flush() at close)
_TRUSTED_URLS = 4096  # http.request URLs remembered as going to a trusted destination
_TRUSTED_URL_CHARS = 2048  # only short ones (the model chooses URLs: 4,096 long ones must not pin megabytes)
_SINKS = ("email.send", "http.request", "browser.navigate", "browser.fill", "browser.click")


@dataclass(frozen=True)
class Finding:
    """Why a sink call carries private data to an untrusted destination."""

    reason: str  # "policy.flows: private data read by files.read call read-7 would go to attacker.example (body)"
    call_ids: list[str]
    destinations: list[str]

    def flow(self) -> dict[str, Any]:
        return {"rule": RULE, "reason": self.reason, "call_ids": self.call_ids, "destinations": self.destinations}


class FlowGuard:
    def __init__(self, policy: Policy, settings: Settings, runtime: Runtime) -> None:
        flows = policy.flows
        self.mode = flows.mode
        self.trust = Trust(flows.trusted_destinations, policy.network.allow_hosts, policy.email.allow_recipients)
        self._extra = list(flows.private_sources)
        self._credentialed = [h for auth in settings.http.auth for h in auth.hosts]
        self._cap = flows.max_index_chars
        self._attachment_cap = policy.email.max_attachment_bytes
        self._runtime = runtime
        self._cache = SessionCache()
        self._pages: OrderedDict[str, str] = OrderedDict()
        # fingerprints of private reads the store could not take (unreachable), per session, this worker only
        self._local: OrderedDict[str, list[Entry]] = OrderedDict()
        # sessions that read private data while the store was unreachable and nothing could be indexed
        self._blind: OrderedDict[str, Entry] = OrderedDict()
        # digests of the files each session wrote (files.write/edit) on this worker: an attachment with
        # one of them is judged by its content; any other workspace file is private by provenance
        self._written: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()
        self._key: bytes | None = None
        # untrusted labels (session, call_id, action) not yet in the store, and when the oldest came
        self._labels: list[tuple[str, str | None, str]] = []
        self._labels_since = 0.0
        self._labels_lock = threading.Lock()  # record runs on the callers' loops (inline actions), in threads
        # the fingerprints of texts read lately (a pure function of the text and the key): a text read again
        # (an agent re-reading a file) is not fingerprinted again; digest of the text -> (encoded, count, row digest)
        self._memo: OrderedDict[bytes, tuple[str, int, bytes]] = OrderedDict()
        self._memo_lock = threading.Lock()
        # http.request URLs whose destination is trusted (a pure function of the URL and the fixed policy):
        # a sink check of one of them reads nothing else (at most _TRUSTED_URLS short ones, then cleared)
        self._trusted_urls: set[str] = set()
        # whether an http.request result can be private (credentialed hosts, or a private_sources
        # pattern naming it): when not, its record is the untrusted label alone
        self._http_private = bool(self._credentialed) or is_private("http.request", {}, self._extra, [])

    # -- which calls the guard looks at --------------------------------------------------------
    def is_sink(self, action: str) -> bool:
        return self.mode != "off" and (action in _SINKS or action.startswith("mcp."))

    def observes(self, action: str) -> bool:
        """Whether ``record`` wants this action's results (a source, a write, a browser page)."""
        if self.mode == "off":
            return False
        return (
            action in WRITES
            or action.startswith("browser.")
            or action == "http.request"
            or is_untrusted(action)
            or is_private(action, {}, self._extra, [])
        )

    # -- the store -------------------------------------------------------------------------------
    async def _fingerprint_key(self) -> bytes:
        if self._key is None:
            self._key = bytes.fromhex(await self._runtime.on_loop(self._runtime.state.flow_key()))
        return self._key

    async def _index(self, session: str) -> SessionIndex:
        index = self._cache.get(session)
        labels = self._take_labels()  # written first, in the same hop: the rows read include them
        generation = self._runtime.state.flow_generation(session)  # before the rows it vouches for
        first, rows = await self._runtime.on_loop(self._labels_then_entries(labels, session, index.last_id))
        if index.first_id and first != index.first_id:  # its rows were dropped since (closed on some worker)
            self._cache.drop(session)
            index = self._cache.get(session)
            first, rows = await self._runtime.on_loop(self._runtime.state.flow_entries(session, 0))
        with index.lock:
            for row in rows:
                if row[0] > index.last_id:
                    index.add(row)
            index.generation = generation
        return index

    def _held(self, session: str, digest: bytes) -> bool:
        """Whether this worker's index of ``session`` knows, without asking the store, that a read of the text
        whose fingerprints' row digest is ``digest`` adds nothing: the session is saturated, or a row with
        exactly these fingerprints is in the store. Only while the store's drop generation of the session is
        the one read before the index's rows were (no drop of them began since: ``_state._flowgen``)."""
        index = self._cache.peek(session)
        if index is None:
            return False
        with index.lock:
            if index.generation is None or index.generation != self._runtime.state.flow_generation(session):
                return False
            return index.saturated is not None or index.holds(digest)

    async def _add(self, session: str, call_id: str | None, action: str, label: str, fps: str = "", n: int = 0) -> None:
        await self._runtime.on_loop(self._runtime.state.add_flow_entry(session, call_id, action, label, fps, n))

    async def _labels_then_entries(
        self, labels: list[tuple[str, str | None, str]], session: str, after: int
    ) -> tuple[int, list[tuple[int, str | None, str, str, str, int]]]:
        await self._write_labels(labels)
        return await self._runtime.state.flow_entries(session, after)

    async def _write_labels(self, labels: list[tuple[str, str | None, str]]) -> None:
        """On the runtime loop: the buffered untrusted labels, in the order they came, in one transaction
        (one commit per batch, not per label). Labels the store cannot take change no decision: they
        are logged and dropped."""
        if not labels:
            return
        try:
            await self._runtime.state.add_flow_entries(
                [(s, call_id, action, "untrusted", "", 0) for s, call_id, action in labels]
            )
        except ActionError as exc:
            _, call_id, action = labels[0]
            log.warning("%d untrusted label(s) not stored (the first: %s call %s): %s", len(labels), action, call_id, exc.message)

    async def _labels_then_drop(self, labels: list[tuple[str, str | None, str]], session: str) -> None:
        await self._write_labels(labels)
        await self._runtime.state.drop_flow_entries(session)

    def _label(self, session: str, call_id: str | None, action: str) -> bool:
        """Buffer an untrusted label; True when the buffer is due to be written."""
        now = time.monotonic()
        with self._labels_lock:
            if not self._labels:
                self._labels_since = now
            self._labels.append((session, call_id, action))
            return len(self._labels) >= _LABEL_BATCH or now - self._labels_since >= _LABEL_DELAY_S

    def _take_labels(self, drop_session: str | None = None) -> list[tuple[str, str | None, str]]:
        with self._labels_lock:
            labels, self._labels = self._labels, []
        return [label for label in labels if label[0] != drop_session]

    @property
    def pending(self) -> bool:
        """Whether untrusted labels wait to be written (``flush``)."""
        return bool(self._labels)

    async def flush(self) -> None:
        """Write the buffered untrusted labels (one hop to the runtime loop for all of them)."""
        labels = self._take_labels()
        if labels:
            await self._runtime.on_loop(self._write_labels(labels))

    async def forget(self, session: str) -> None:
        """Drop ``session``'s index (the session was closed): the store's rows first, so that a store
        that is down leaves everything as it was (``unavailable``; fail closed)."""
        labels = self._take_labels(drop_session=session)  # the others' are written now
        await self._runtime.on_loop(self._labels_then_drop(labels, session))
        self._cache.drop(session)
        for table in (self._pages, self._written, self._blind, self._local):
            table.pop(session, None)

    # -- after a result ------------------------------------------------------------------------
    async def record(
        self, action: str, arguments: dict[str, Any], session: str, call_id: str | None, output: str, data: Any
    ) -> None:
        """Label what ``action`` returned to ``session``. A private read the store cannot take (it is
        unreachable) makes the session *blind* in this worker: every later sink of it to an untrusted
        destination goes to the mode's outcome (fail closed); the read itself is not withheld."""
        if self.mode == "off":
            return
        if action == "http.request" and not self._http_private:  # untrusted, never private (see __init__)
            now = time.monotonic()  # _label, inline
            with self._labels_lock:
                if not self._labels:
                    self._labels_since = now
                self._labels.append((session, call_id, action))
                due = len(self._labels) >= _LABEL_BATCH or now - self._labels_since >= _LABEL_DELAY_S
            if due:
                await self.flush()
            return
        if action.startswith("browser.") and isinstance(data, dict) and isinstance(data.get("url"), str):
            self._pages[session] = data["url"]
            self._pages.move_to_end(session)
            while len(self._pages) > _SESSIONS:
                self._pages.popitem(last=False)
        if action in WRITES:  # in this worker's memory only: no store write per file written
            digest = await self._written_digest(action, arguments, session)
            if digest is not None:
                _remember(self._written, session, digest)
            return
        if is_private(action, arguments, self._extra, self._credentialed):
            await self._record_private(action, session, call_id, result_texts(action, output))
        elif is_untrusted(action) and self._label(session, call_id, action):
            await self.flush()

    async def _record_private(self, action: str, session: str, call_id: str | None, text: str) -> None:
        """Index private ``text``. With the store unreachable the read is not withheld: its fingerprints
        stay in this worker's memory (``_local``), or, without the key to make them, the session turns
        *blind* here (every later untrusted sink of it is asked or refused)."""
        if len(text) < WINDOW:
            return  # too short to carry a fragment (normalising never lengthens a text)
        try:
            key = await self._fingerprint_key()
        except ActionError as exc:
            if exc.type != "unavailable":
                raise
            if len(normalize(text)) >= WINDOW:
                self._mark_blind(session, Entry(call_id, action, array("Q")))
            return
        encoded, n, digest = await self._fingerprints(text, key)
        if n == 0:
            return  # too short once normalised: no window, nothing to carry
        if self._held(session, digest):  # a text read again: no round trip to the store
            return
        try:  # one hop to the store's loop for the session's rows and the new one
            await self._runtime.on_loop(self._index_then_add(session, call_id, action, encoded, n, digest))
        except ActionError as exc:
            if exc.type != "unavailable":
                raise
            local = self._local.setdefault(session, [])
            local.append(Entry(call_id, action, decode_fps(encoded)))
            self._local.move_to_end(session)
            if sum(len(e.fps) for e in local) > self._cap:
                self._mark_blind(session, local[-1])
                del self._local[session]
            while len(self._local) > _SESSIONS:  # forgotten here: blind instead (fail closed)
                old, entries = self._local.popitem(last=False)
                self._mark_blind(old, entries[0])

    async def _index_then_add(self, session: str, call_id: str | None, action: str, encoded: str, n: int, digest: bytes) -> None:
        """On the runtime loop: the session's rows brought up to date, then this read's row unless it adds
        nothing (saturated, or a row with exactly these fingerprints is in the store already)."""
        index = await self._index(session)
        with index.lock:
            known = index.saturated is not None or index.holds(digest)
        if known:
            return
        if index.total + n > self._cap:
            await self._add(session, call_id, action, "saturated")
        else:
            await self._add(session, call_id, action, "private", encoded, n)

    async def _fingerprints(self, text: str, key: bytes) -> tuple[str, int, bytes]:
        """``text``'s fingerprints, encoded for the store, how many, and the row's digest (``row_digest``);
        computed in a thread, or taken from the memo of texts read lately (``_MEMO``)."""
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, key=key[:64]).digest()
        with self._memo_lock:
            hit = self._memo.get(digest)
            if hit is not None:
                self._memo.move_to_end(digest)
                return hit
        fps = await asyncio.to_thread(sorted_fingerprints, text, key)
        encoded = base64.b64encode(fps).decode("ascii")  # encode_fps's form: sorted little-endian words
        made = (encoded, len(fps) // 8, row_digest(encoded))
        if len(text) <= _MEMO_CHARS:
            with self._memo_lock:
                self._memo[digest] = made
                while len(self._memo) > _MEMO:
                    self._memo.popitem(last=False)
        return made

    def _mark_blind(self, session: str, entry: Entry) -> None:
        self._blind.setdefault(session, entry)
        while len(self._blind) > _BLIND_SESSIONS:
            self._blind.popitem(last=False)

    async def _read(self, path: str, limit: int) -> bytes | None:
        try:
            data, _ = await asyncio.to_thread(self._runtime.workspace.read_head, path, limit)
        except (ActionError, OSError, ValueError):
            return None  # not a readable workspace file: the action itself reports it
        return data

    async def _written_digest(self, action: str, arguments: dict[str, Any], session: str) -> str | None:
        """The digest of the file ``session`` just wrote, as an attachment check reads it (its first
        ``max_attachment_bytes``), or ``None`` if it must stay private by provenance.

        ``files.write`` replacing or creating a file wrote exactly ``content``: hashed from the argument,
        with no read back (a read would cost a thread hop per write, and would credit the session with
        whatever another writer put there meanwhile). An append adds to bytes the session may never have
        seen, and an edit changes them: the result counts as written only if what was there before was
        written by this session too (or, for an append, nothing was). An edit's former content is its
        result with the replacement undone, checked by redoing it; when that is ambiguous (``new_text``
        empty or found elsewhere) the file stays private (friction, never a leak)."""
        content = arguments.get("content")
        mode = arguments.get("mode", "overwrite")
        cap = self._attachment_cap
        if action == "files.write" and isinstance(content, str) and mode in ("overwrite", "create"):
            return hashlib.sha256(content.encode("utf-8")[:cap]).hexdigest()
        path = str(arguments.get("path") or "")
        data = await self._read(path, cap) if path else None
        if data is None:
            return None
        if action == "files.write" and mode == "append":
            added = content.encode("utf-8") if isinstance(content, str) else None
            if added is None or len(data) >= cap or not data.endswith(added):
                return None  # over the cap or changed meanwhile: private by provenance (friction, never a leak)
            before = data[: len(data) - len(added)]
            if before and hashlib.sha256(before).hexdigest() not in self._written.get(session, ()):
                return None  # appended to a file the session did not write: still private
        elif action == "files.edit" and not self._edited_own(arguments, data, session):
            return None  # edited a file the session did not write (or cannot tell): still private
        return hashlib.sha256(data).hexdigest()

    def _edited_own(self, arguments: dict[str, Any], data: bytes, session: str) -> bool:
        old, new, count = arguments.get("old_text"), arguments.get("new_text"), arguments.get("count", 1)
        if not (isinstance(old, str) and isinstance(new, str) and old and new and isinstance(count, int)):
            return False
        if len(data) >= self._attachment_cap:
            return False  # the digests cover only the head: cannot tell
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        before = text.replace(new, old)
        if before.count(old) != count or before.replace(old, new, count) != text:
            return False
        return hashlib.sha256(before.encode("utf-8")).hexdigest() in self._written.get(session, ())

    # -- before a sink ---------------------------------------------------------------------------
    async def check(self, action: str, arguments: dict[str, Any], session: str) -> Finding | None:
        """Whether this call would carry private data of ``session`` to an untrusted destination."""
        if self.mode == "off" or not (action in _SINKS or action.startswith("mcp.")):  # is_sink, inline
            return None
        url = arguments.get("url") if action == "http.request" else None
        if type(url) is str and url in self._trusted_urls:
            return None  # its one destination is trusted (nothing else is read, see below)
        page = self._pages.get(session)
        dests = destinations(action, arguments, page)  # the payload is read only for an untrusted one
        # A loop, not a comprehension: a comprehension reading ``self`` makes it a closure cell of every
        # call (and a function object), even one whose destination is trusted.
        # Nor a list when every destination is trusted (the common case).
        trust = self.trust
        untrusted: list[str] | None = None
        for kind, name in dests or ():
            if not trust.trusts(kind, name):
                if untrusted is None:
                    untrusted = []
                untrusted.append(_show(kind, name))
        if untrusted is None:
            # an http.request's destination is its URL's host alone: the answer holds for the URL
            if type(url) is str and len(url) <= _TRUSTED_URL_CHARS:
                if len(self._trusted_urls) >= _TRUSTED_URLS:
                    self._trusted_urls.clear()
                self._trusted_urls.add(url)
            return None
        sink = extract(action, arguments, page)
        if sink is None:
            return None
        index = await self._index(session)
        key = await self._fingerprint_key()
        found: dict[int, Entry] = {}
        where: list[str] = []
        files: list[str] = []
        for arg, text in sink.fields:
            hits = await asyncio.to_thread(_lookup, index, text, key, self._local.get(session, []))
            if hits:
                where.append(arg)
                found.update((id(e), e) for e in hits)
        for arg, path in sink.files:
            data = await self._read(path, self._attachment_cap)
            if data is None:
                continue
            if hashlib.sha256(data).hexdigest() not in self._written.get(session, ()):
                files.append(f"workspace file {path} ({arg}; the session did not write it)")
                where.append(arg)
                continue
            hits = await asyncio.to_thread(_lookup, index, data.decode("utf-8", "replace"), key, self._local.get(session, []))
            if hits:
                where.append(arg)
                found.update((id(e), e) for e in hits)
        saturated = index.saturated is not None and _carries_text(sink)
        blind = self._blind.get(session) if _carries_text(sink) else None
        if not found and not files and not saturated and blind is None:
            return None
        parts = []
        entries = list(found.values())
        if entries:
            parts.append(
                "private data read by " + ", ".join(e.name() for e in entries[:5]) + (" and more" if len(entries) > 5 else "")
            )
        if files:
            parts.append("private " + ", ".join(files))
        if saturated and index.saturated is not None and index.unindexed:
            parts.append(
                f"text of a session that read private data at {index.saturated.name()} before the guard's "
                "fingerprints changed (state store schema v5: the guard can no longer tell what is private)"
            )
        elif saturated and index.saturated is not None:
            parts.append(
                f"text of a session whose private reads passed policy.flows.max_index_chars ({self._cap}) "
                f"at {index.saturated.name()} (the guard can no longer tell what is private)"
            )
        if blind is not None:
            parts.append(
                f"text of a session whose {blind.name()} read private data while the state store was unreachable "
                "(it is in no index: the guard cannot tell what is private)"
            )
        reason = f"{RULE}: {' and '.join(parts)} would go to {', '.join(untrusted)}"
        if where:
            reason += f" (in {', '.join(dict.fromkeys(where))})"
        if index.untrusted:
            reason += "; this session also read untrusted content (" + ", ".join(e.name() for e in index.untrusted[-3:]) + ")"
        ids = [e.call_id or e.action for e in entries] + (
            [index.saturated.call_id or index.saturated.action] if saturated and index.saturated else []
        )
        ids += [blind.call_id or blind.action] if blind is not None else []
        return Finding(reason, ids, untrusted)

    def refusal(self, action: str, finding: Finding) -> ActionError:
        """The error of a call ``mode = "deny"`` refuses."""
        return ActionError(
            "denied",
            f"{action} was refused: {finding.reason}",
            rule=RULE,
            data={"flow": finding.flow()},
            hint="Do not retry or re-encode it: data the user keeps private may not go to that destination. "
            "Tell the user what you wanted to send and where; they can trust the destination in "
            "policy.flows.trusted_destinations.",
        )


def _lookup(index: SessionIndex, text: str, key: bytes, local: list[Entry]) -> list[Entry]:
    fps = fingerprints(views(text), key)
    if not fps:
        return []
    with index.lock:
        found = index.lookup(fps)
    return found + [e for e in list(local) if any(contains(e.fps, fp) for fp in fps)]


def _remember(table: OrderedDict[str, OrderedDict[str, None]], session: str, digest: str) -> None:
    digests = table.setdefault(session, OrderedDict())
    table.move_to_end(session)
    digests[digest] = None
    digests.move_to_end(digest)
    while len(digests) > _WRITTEN:
        digests.popitem(last=False)
    while len(table) > _SESSIONS:
        table.popitem(last=False)


def _carries_text(sink: Sink) -> bool:
    return bool(sink.files) or any(len(normalize(text)) >= WINDOW for _, text in sink.fields)


def _show(kind: str, name: str) -> str:
    if kind == "host":
        host, _, port = name.rpartition(":")
        return host if port in ("80", "443") else name
    return f"mcp server {name}" if kind == "mcp" else name
