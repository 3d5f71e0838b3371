"""Reading a page for the model: markdown (links absolute, form fields listed with working selectors),
visible text or HTML, paginated, with what happened since the last call appended.

Invariants:

* One round trip (``_READ_JS``) reads everything: the HTML to convert (the page's ``main`` element when
  it has a substantial one, which the result says), title, base URL and the visible form fields.
* A read of a document unchanged since the last read returns what that read produced, its body not sent
  again (nor converted again). "Unchanged" is known soundly: the same tab, no main-frame navigation
  committed since (``BrowserSession.commits``, counted from the browser's events, which arrive before
  anything runs in a new document), the same format and selector, and the page, having recomputed
  everything the read returns (HTML, title, URL, each field's value and visibility), found it equal to the
  copy of the last read it keeps (strings compared, under a key per read). So a value a script set as a
  property, a style rule that hides a field or a ``pushState`` is read like any DOM change; the action
  span says which reads were reused (``agent_legs.browser.read_reused``).
* A read the page interrupts by navigating (a script, a refresh) is done again on the page it arrives
  at (``agent_legs._retry.retrying``, within the call's deadline); a page that a script takes to a
  blocked URL is left and the event noted (``read_landed``); one that keeps doing so is cleared to
  about:blank.
* Text is redacted whole before it is paginated (no page ends mid-secret); a page is at most
  ``settings.browser.max_content_chars`` and always fits in ``settings.max_output_chars`` with its
  header and notes; the rest is one ``browser_content(offset=...)`` away.
* Every result carries the requests the egress policy blocked since the last call (``blocked_requests``,
  with their rules) and the session's events (downloads, popups, crashes, self-navigations).

Threat model: page content is untrusted text handed to the model (prompt injection is its problem to
weigh, not ours to detect); what we guarantee is that it comes from the page the URL names, not from a
block page, and that nothing the page did on its own is hidden from it.
The read runs in the page's own world, and the copy is kept there: a hostile page can rewrite it (or its
own built-ins) to answer "unchanged"; the worst it gets is an earlier read of *its own document* shown
again, which it could have shown anyway. A reuse across documents or tabs is excluded outside the page's
reach (the commit count and the tab, checked again when the answer arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..._context import ActionContext
from ..._errors import ActionError
from ..._markdown import html_to_markdown
from ..._models import ActionOutput, Artifact
from ..._retry import retrying
from ..._telemetry._semconv import AGENT_LEGS_BROWSER_READ_REUSED
from ._blocked import denial_for, leave_if_blocked
from ._call import element_timeout_ms, guarded
from ._deadline import monotonic_deadline
from ._main_world import DOCUMENT_REPLACED, evaluate, navigated_away
from ._session import BrowserSession

__all__ = ["LastRead", "finish", "notes", "page_chars", "page_result", "paginate", "read_landed", "read_links", "read_page"]

_READ_TRIES = 5  # an evaluation whose execution context a navigation destroyed is tried again, within the deadline

# One round trip reads everything the model needs: the HTML to convert (the main element when the page
# has a substantial one), title, base URL, and the visible form fields with selectors that work.
_READ_JS = r"""([sel, fmt, known, key]) => {
  const esc = (s) => CSS.escape(s);
  const unique = (s) => { try { return document.querySelectorAll(s).length === 1; } catch (e) { return false; } };
  const selectorFor = (e) => {
    if (e.id && unique('#' + esc(e.id))) return '#' + esc(e.id);
    const tag = e.tagName.toLowerCase();
    if (e.name) { const s = `${tag}[name="${e.name.replace(/["\\]/g, '\\$&')}"]`; if (unique(s)) return s; }
    const parts = []; let n = e;
    while (n && n.nodeType === 1 && n !== document.body && n !== document.documentElement) {
      if (n !== e && n.id && unique('#' + esc(n.id))) { parts.unshift('#' + esc(n.id)); break; }
      let i = 1, sib = n; while ((sib = sib.previousElementSibling)) if (sib.tagName === n.tagName) i++;
      parts.unshift(n.tagName.toLowerCase() + ':nth-of-type(' + i + ')');
      n = n.parentElement;
    }
    if (!parts.length || !parts[0].startsWith('#')) parts.unshift('body');
    return parts.join(' > ');
  };
  const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
  const describe = (e) => {
    const tag = e.tagName.toLowerCase();
    const type = (e.getAttribute('type') || (tag === 'button' ? 'submit' : tag === 'input' ? 'text' : '')).toLowerCase();
    let label = e.labels && e.labels.length ? e.labels[0].innerText : '';
    label = label || e.getAttribute('aria-label') || e.placeholder || (tag === 'button' ? e.innerText : '')
      || (type === 'submit' || type === 'button' ? e.value : '') || e.title || '';
    const f = {tag, type, selector: selectorFor(e), label: label.trim().replace(/\s+/g, ' ').slice(0, 80)};
    if (e.required) f.required = true;
    if (e.disabled) f.disabled = true;
    if (tag === 'select') f.options = Array.from(e.options).slice(0, 20).map(o => o.text.trim().slice(0, 40));
    else if (!['password', 'file', 'submit', 'button', 'reset'].includes(type) && tag !== 'button' && e.value)
      f.value = String(e.value).slice(0, 80);
    return f;
  };
  let scope = sel ? null : document.body || document.documentElement, main = false;
  if (sel) { try { scope = document.querySelector(sel); } catch (e) { return {error: String(e)}; } if (!scope) return null; }
  else {
    const m = document.querySelector('main, [role=main]');
    if (m && m.textContent.trim().length >= 200) { scope = m; main = true; }
  }
  const fields = sel || fmt !== 'markdown' ? [] : Array.from(document.querySelectorAll(
      'input:not([type=hidden]), textarea, select, button')).filter(visible).slice(0, 60).map(describe);
  const out = {url: location.href, title: document.title, base: document.baseURI, main, fields, links: document.links.length,
               html: scope && fmt !== 'text' ? scope.outerHTML : '', text: scope && fmt === 'text' ? scope.innerText : ''};
  // The last read of this document is kept in it (``key`` names it): when everything this read returns is
  // equal to it (strings compared, nothing hashed), the body is not sent again, only ``same``.
  const rest = JSON.stringify([out.url, out.title, out.base, out.main, out.links, out.fields]);
  const slot = Symbol.for('agent_legs.last_read');
  let same = false;
  try {  // (a page that made this throw only loses the reuse)
    const last = window[slot];
    same = known !== null && !!last && last.key === known
      && last.html === out.html && last.text === out.text && last.rest === rest;
  } catch (e) {}
  if (same) return {same: known};
  try { window[slot] = {key, html: out.html, text: out.text, rest}; } catch (e) {}
  out.key = key;
  return out;
}"""

_LINKS_JS = (
    "() => Array.from(document.querySelectorAll('a[href]')).slice(0, 500)"
    ".map(a => [(a.innerText || a.title || '').trim().replace(/\\s+/g, ' ').slice(0, 120), a.href])"
)


def finish(s: BrowserSession, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the requests blocked and the session's events since the last call (which are cleared)."""
    taken = s.proxy.take_denied()
    s.recent_denials.extend(taken)  # still recognised when the page ends up on one of them later
    blocked = [{"url": d.url, "rule": d.rule} for d in taken]
    if blocked:
        data["blocked_requests"] = blocked
    events, s.events = s.events, []
    if events:
        data["events"] = events
    return data


def notes(data: dict[str, Any]) -> str:
    """The blocked requests and events of ``finish``, as lines for the model."""
    out = ""
    blocked = data.get("blocked_requests") or []
    if blocked:
        rules = sorted({b["rule"] for b in blocked})
        out += f"\n\n[{len(blocked)} request(s) blocked by the egress policy ({'; '.join(rules)}); see data.blocked_requests]"
    for event in data.get("events") or []:
        out += f"\n[{event}]"
    return out


def _format_fields(fields: list[dict[str, Any]]) -> str:
    """The visible form fields as lines: kind, selector, label and state."""
    lines = []
    for f in fields:
        kind = f["tag"] + (f"[{f['type']}]" if f["type"] and f["type"] != f["tag"] else "")
        extra = [x for x in ("required" if f.get("required") else "", "disabled" if f.get("disabled") else "") if x]
        if f.get("value"):
            extra.append(f"value {f['value']!r}")
        if f.get("options"):
            extra.append("options: " + ", ".join(f["options"]))
        label = f" — {f['label']}" if f.get("label") else ""
        lines.append(f"- {kind} `{f['selector']}`{label}{' (' + '; '.join(extra) + ')' if extra else ''}")
    return (
        (
            "\n\nForm fields (pass these selectors to browser_fill / browser_click; file inputs take workspace "
            "paths):\n" + "\n".join(lines)
        )
        if lines
        else ""
    )


@dataclass(frozen=True, eq=False)
class LastRead:
    """What the last read of a session's tab returned, and of which document: the tab, and the count of its
    committed main-frame navigations before that read (``BrowserSession.commits``, from the browser's events:
    the page cannot hold it back); ``key`` names the copy the page keeps of it."""

    page: Any
    commits: int
    fmt: str
    selector: str | None
    key: str
    info: dict[str, Any]


def _known_key(s: BrowserSession, fmt: str, selector: str | None) -> str | None:
    """The key of the last read, if it read this same document the same way (no navigation since)."""
    last = s.last_read
    if last is None or last.page is not s.page or last.commits != s.commits or (last.fmt, last.selector) != (fmt, selector):
        return None
    return last.key


async def _evaluate_read(s: BrowserSession, fmt: str, selector: str | None, reuse: bool = True) -> tuple[Any, bool]:
    """One round trip of ``_READ_JS``; ``True`` when the page's document is unchanged since the last read, whose
    result is then returned again (the page recomputed all of it and found it equal: the body is not sent)."""
    page, commits = s.page, s.commits
    known = _known_key(s, fmt, selector) if reuse else None
    key = secrets.token_hex(8)
    info = await evaluate(s, _READ_JS, [selector, fmt, known, key])
    if not (isinstance(info, dict) and "same" in info):
        # Kept for reuse only when no navigation committed while it ran (it may have read the new document).
        if isinstance(info, dict) and info.get("key") == key and s.commits == commits and s.page is page:
            s.last_read = LastRead(page, commits, fmt, selector, key, info)
        return info, False
    last = s.last_read
    # Still the same tab and no navigation committed since the read was sent (the browser reports a commit
    # before anything runs in the new document, so a "same" from another document would show here as a change).
    if known is not None and last is not None and last.key == known == info["same"] and last.commits == commits == s.commits:
        return last.info, True
    s.last_read = None
    if not reuse:  # (a "same" it was not asked about: only a page that rewrote the read could answer so)
        raise ActionError("failed", "the page answered the read with a result it was not asked for")
    return await _evaluate_read(s, fmt, selector, reuse=False)  # a navigation came in between: read it whole


async def _read(
    s: BrowserSession, fmt: str, selector: str | None, then: Callable[[], None] | None = None
) -> tuple[str, dict[str, Any], bool]:
    """The page (or one element) in the requested format, facts about the page, and whether the document was
    unchanged since the last read (whose result is reused); ``then`` runs once the page has answered, and what
    it starts gets one turn of the loop (to send its messages) before the conversion."""
    async for attempt in retrying(attempts=_READ_TRIES, retry_on=navigated_away, deadline=monotonic_deadline()):
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                # The page navigated while we read it (a script, a refresh, leaving a blocked page):
                # read the page it arrives at instead of failing.
                with contextlib.suppress(Exception):
                    await s.page.wait_for_load_state("load", timeout=5_000)
            info, reused = await _evaluate_read(s, fmt, selector)
    if then is not None:
        then()
        # One turn of the loop before the conversion, which holds it for several ms: what ``then`` started
        # (the next click's selector engine, ``_warm``) sends its message now and the renderer works on it
        # while we convert, instead of after (its answer is never awaited here).
        await asyncio.sleep(0)
    if info is None:
        raise ActionError(
            "not_found",
            f"no element matches the selector {selector!r}",
            hint="Call browser_content without a selector to see the page and its fields.",
        )
    if "error" in info:
        raise ActionError("invalid_input", f"invalid CSS selector {selector!r}: {info['error']}")
    meta = {"url": info["url"], "title": info["title"], "main_content_only": info["main"]}
    if fmt == "html":
        return info["html"], meta, reused
    if fmt == "text":
        return info["text"].strip(), meta, reused
    cached = s.md_cache
    if cached is not None and cached[0] == info["base"] and cached[1] == info["html"]:
        md = cached[2]
    else:
        md = html_to_markdown(info["html"], info["base"])
        s.md_cache = (info["base"], info["html"], md)
    if info["main"]:
        md = (
            "(the page's main content; browser_content with selector='body' shows everything, browser_links lists "
            f"all {info['links']} links)\n\n" + md
        )
    return md + _format_fields(info["fields"]), meta, reused


def page_chars(ctx: ActionContext) -> int:
    """How many characters of a page one result shows."""
    # leave room for the header and the notes inside the runtime's output bound
    return max(1000, min(ctx.settings.browser.max_content_chars, ctx.settings.max_output_chars - 800))


def paginate(text: str, offset: int, limit: int) -> tuple[str, int | None]:
    """``limit`` characters of ``text`` from ``offset``, and the offset to continue at (``None``: the end)."""
    chunk = text[offset : offset + limit]
    end = offset + len(chunk)
    if end < len(text):
        return chunk + f"\n\n[{len(text) - end} more characters — call browser_content with offset={end}]", end
    return chunk, None


_T = TypeVar("_T")


async def read_landed(
    ctx: ActionContext,
    s: BrowserSession,
    read: Callable[[], Awaitable[_T]],
    url_of: Callable[[_T], str],
    interrupted: tuple[str, ...] = DOCUMENT_REPLACED,
) -> _T:
    """``read()`` of the page where it landed. A page that a script or refresh takes to a blocked URL
    (before or while we read it) is left, the event noted, and the page it is back at is read instead;
    a read cut short by a navigation (its error names one of ``interrupted``) is done again on the next page.

    This follows the page as it moves (at most six reads, the last three on a cleared tab) rather than
    retrying one failed operation, so it is a loop of its own, not ``retrying``; every read in it is
    bounded by the call's deadline (``guarded``)."""
    last = 5
    for attempt in range(last + 1):
        if attempt >= 3:  # it keeps leaving for blocked URLs (a refresh or timer loop): stop it there
            with contextlib.suppress(Exception):  # (a navigation still under way may interrupt it: again)
                await s.page.goto("about:blank")
            s.md_cache = None
            if attempt == 3:
                s.events.append("the page kept navigating to blocked URLs by itself; the tab was cleared (about:blank)")
        await leave_if_blocked(s)
        try:
            result: _T = await guarded(ctx, s, read())
        except ActionError as exc:
            if attempt == last or not any(marker in exc.message for marker in interrupted):
                raise
            with contextlib.suppress(Exception):  # the page is navigating (script, refresh): read the next one
                await s.page.wait_for_load_state("load", timeout=element_timeout_ms(ctx))
            continue
        if attempt >= 3 or denial_for(s, url_of(result)) is None:
            return result
    raise AssertionError("unreachable")  # the last attempt returns or raises


async def read_page(
    ctx: ActionContext, s: BrowserSession, fmt: str, selector: str | None, then: Callable[[], None] | None = None
) -> tuple[str, dict[str, Any]]:
    """The page where it landed in ``fmt``, redacted, and facts about it (URL, title, main content only);
    ``then`` as in ``_read``."""
    text, meta, reused = await read_landed(ctx, s, lambda: _read(s, fmt, selector, then), lambda r: str(r[1]["url"]))
    ctx.set_attribute(AGENT_LEGS_BROWSER_READ_REUSED, reused)
    return ctx.redactor.text(text), meta  # scrubbed whole before it is paginated: no page ends mid-secret


async def page_result(
    ctx: ActionContext,
    s: BrowserSession,
    status: int | None,
    artifacts: list[Artifact] | None = None,
    then: Callable[[], None] | None = None,
) -> ActionOutput:
    """The page after a navigation, click or submit: title, URL, status and the first part as markdown
    (``then`` as in ``_read``)."""
    with ctx.tracer.start_as_current_span("browser read page"):
        text, meta = await read_page(ctx, s, "markdown", None, then)
    body, next_offset = paginate(text, 0, page_chars(ctx))
    data = finish(s, {**meta, "status": status, "next_offset": next_offset, "length": len(text)})
    status_text = f" (status {status})" if status is not None else ""
    return ActionOutput(
        output=f"# {meta['title'] or '(untitled)'}\nURL: {meta['url']}{status_text}\n\n{body}" + notes(data),
        data=data,
        artifacts=artifacts or [],
    )


async def read_links(ctx: ActionContext, s: BrowserSession) -> list[tuple[str, str]]:
    """The page's links (at most 500) where it landed: text and absolute URL."""
    links: list[tuple[str, str]] = await read_landed(ctx, s, lambda: evaluate(s, _LINKS_JS), lambda _: str(s.page.url))
    return links
