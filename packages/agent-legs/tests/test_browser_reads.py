"""Reading a page again: a read of a document unchanged since the last read reuses that read's result.

The page recomputes everything a read returns (its HTML, title, URL, the form fields with their values and
visibility) on every read and compares it with the copy of the last read it keeps; only the body's transfer
and conversion are saved. These tests pin both halves: the reuse happens (the action span's
``agent_legs.browser.read_reused``), and every change a script can make without a navigation or a DOM
mutation (a field's value set as a property, a style sheet rule that hides a field, ``history.pushState``)
is read, as is a new document with the same content.
"""

from __future__ import annotations

import os
import shutil

import pytest

from agent_legs_testing import component_missing

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REUSED = "agent_legs.browser.read_reused"

_DYN = """<!doctype html><html><head><meta charset='utf-8'><title>Dyn</title><style>p{color:black}</style></head>
<body><h1>Dynamic</h1><p>Quantity form.</p>
<label for='q'>Quantity</label><input id='q' name='q'>
<button id='set' onclick="document.getElementById('q').value = 'typed by script'">Set</button>
<button id='hide' onclick="document.styleSheets[0].insertRule('#q { display: none }', 0)">Hide</button>
<button id='push' onclick="history.pushState({}, '', '/dyn?step=2')">Push</button>
<button id='noop' onclick="void 0">Nothing</button>
</body></html>"""


# A page that makes the place where the read keeps its copy throw on every access.
_THROWS = """<!doctype html><html><head><meta charset='utf-8'><title>Throws</title><script>
Object.defineProperty(window, Symbol.for('agent_legs.last_read'),
  {get() { throw new Error('no'); }, set(v) { throw new Error('no'); }, configurable: false});
</script></head><body><h1>Throws</h1><p>Still readable.</p></body></html>"""


@pytest.fixture(autouse=True, scope="module")
def _need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        component_missing("Chromium", f"{CHROMIUM} not found", "apt-get install -y chromium (shared/setup.sh)")


@pytest.fixture
def legs(open_legs, website, captured_spans):
    website.site.routes["/dyn"] = lambda h, r: h.send_body(200, _DYN.encode(), "text/html; charset=utf-8")
    website.site.routes["/throws"] = lambda h, r: h.send_body(200, _THROWS.encode(), "text/html; charset=utf-8")
    return open_legs(policy=website.policy(), tracer_provider=captured_spans.provider)


def _reused(captured_spans, action: str) -> list[bool]:
    return [s.attributes[REUSED] for s in captured_spans.by_name(f"execute_tool browser_{action}")]


def test_a_second_read_of_an_unchanged_page_reuses_the_first_and_returns_the_same(legs, website, captured_spans) -> None:
    r = legs.run("browser.navigate", {"url": website.site.url("/form")})
    first = legs.run("browser.content", {})
    again = legs.run("browser.content", {})
    assert r.ok and first.ok and again.ok
    assert first.output == again.output and first.output in r.output  # the page as the navigation read it
    assert "Form fields" in first.output and "`#name`" in first.output
    assert _reused(captured_spans, "navigate") == [False]
    assert _reused(captured_spans, "content") == [True, True]
    # another format or selector is another read: not reused across them
    html = legs.run("browser.content", {"format": "html", "selector": "h1"})
    assert html.ok and html.output.startswith("<h1>")
    assert _reused(captured_spans, "content") == [True, True, False]


def test_pages_of_a_long_document_reuse_one_read(legs, website, captured_spans) -> None:
    legs.run("browser.navigate", {"url": website.site.url("/big")})
    offset, seen = 0, ""
    while offset is not None:
        page = legs.run("browser.content", {"offset": offset})
        assert page.ok
        seen += page.output
        offset = page.data["next_offset"]
    assert "Paragraph 0 " in seen and "Paragraph 399 " in seen
    assert all(_reused(captured_spans, "content"))


def test_changes_without_a_navigation_or_a_dom_mutation_are_read(legs, website, captured_spans) -> None:
    r = legs.run("browser.navigate", {"url": website.site.url("/dyn")})
    assert r.ok and "`#q` — Quantity" in r.output and "typed by script" not in r.output
    # a click that changes nothing: the click's own read finds the document unchanged
    assert legs.run("browser.click", {"selector": "#noop"}).ok
    assert _reused(captured_spans, "click") == [True]
    # a value set by a script as a property (no attribute, no input event, no DOM mutation)
    r = legs.run("browser.click", {"selector": "#set"})
    assert "value 'typed by script'" in r.output
    c = legs.run("browser.content", {})
    assert "value 'typed by script'" in c.output
    # a style sheet rule (CSSOM, no DOM mutation) hides the field: it is no longer listed
    r = legs.run("browser.click", {"selector": "#hide"})
    assert "`#q`" not in r.output and "`#set`" in r.output
    # a same-document navigation: the URL the page shows changes
    r = legs.run("browser.click", {"selector": "#push"})
    assert r.data["url"] == website.site.url("/dyn?step=2")
    c = legs.run("browser.content", {})
    assert c.data["url"] == website.site.url("/dyn?step=2") and "`#q`" not in c.output
    assert _reused(captured_spans, "click") == [True, False, False, False]
    assert _reused(captured_spans, "content") == [True, True]


def test_a_new_document_with_the_same_content_is_read_again(legs, website, captured_spans) -> None:
    url = website.site.url("/about")
    first = legs.run("browser.navigate", {"url": url})
    again = legs.run("browser.navigate", {"url": url})  # a new document, identical: read, not reused
    assert first.ok and again.ok and first.output == again.output
    assert _reused(captured_spans, "navigate") == [False, False]
    # an edit made through the page (a filled field) is read too
    legs.run("browser.navigate", {"url": website.site.url("/form")})
    legs.run("browser.fill", {"selector": "#name", "value": "Ada"})
    c = legs.run("browser.content", {})
    assert "`#name` — Name (required; value 'Ada')" in c.output
    assert _reused(captured_spans, "content") == [False]


def test_a_page_that_breaks_the_kept_copy_loses_only_the_reuse(legs, website, captured_spans) -> None:
    r = legs.run("browser.navigate", {"url": website.site.url("/throws")})
    c = legs.run("browser.content", {})
    assert r.ok and c.ok and "Still readable." in r.output and "Still readable." in c.output
    assert _reused(captured_spans, "content") == [False]
