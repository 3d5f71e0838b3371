"""The demo's own services, all on 127.0.0.1 and on ports the OS picks.

* a small shop website: home page with a search form, a catalogue table, one page per product with
  its price and an enquiry form (form submissions are recorded);
* a JSON API that records what is posted to ``/reports``;
* an SMTP server that accepts every message and saves it as an ``.eml`` file (nothing is relayed).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

RECIPIENT = "team@example.com"  # the only address the demo policy allows
# the request denied on purpose: cloud metadata, the classic SSRF target
METADATA_URL = "http://169.254.169.254/latest/meta-data/"

# name, price (USD), description
PRODUCTS: list[tuple[str, float, str]] = [
    ("Trail shoes", 89.90, "Light trail running shoes with a grippy sole."),
    ("Rain jacket", 129.00, "Waterproof, breathable three-layer shell."),
    ("Headlamp", 34.50, "400 lumens, USB-C rechargeable."),
    ("Water bottle", 18.25, "750 ml insulated steel bottle."),
    ("Backpack 30 L", 74.00, "Day pack with a rain cover."),
    ("Camping stove", 59.95, "Compact gas stove, 2.6 kW."),
]
# what the supplier's email says is in the warehouse (the CSV attached to it)
STOCK: dict[str, int] = {
    "Trail shoes": 42,
    "Rain jacket": 12,
    "Headlamp": 80,
    "Water bottle": 150,
    "Backpack 30 L": 25,
    "Camping stove": 9,
}

_CSS = "body{font-family:sans-serif;max-width:42em;margin:2em auto}td,th{padding:.2em 1em;text-align:left}"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _page(title: str, body: str) -> bytes:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><nav><a href='/'>Home</a> · <a href='/catalogue'>Catalogue</a>"
        f"</nav>{body}</body></html>"
    ).encode()


def _table(products: list[tuple[str, float, str]]) -> str:
    rows = "".join(
        f"<tr><td><a href='/products/{slug(n)}'>{html.escape(n)}</a></td><td class='price'>${p:.2f}</td></tr>"
        for n, p, _ in products
    )
    return f"<table><tr><th>Product</th><th>Price</th></tr>{rows}</table>"


@dataclass
class DemoServices:
    """Handles to the running services and what they received."""

    mail_dir: Path
    shop_port: int = 0
    api_port: int = 0
    smtp_port: int = 0
    posts: list[dict[str, Any]] = field(default_factory=list)
    form_posts: list[dict[str, list[str]]] = field(default_factory=list)
    mails: list[bytes] = field(default_factory=list)
    mail_files: list[Path] = field(default_factory=list)
    _stops: list[Callable[[], None]] = field(default_factory=list)

    @property
    def shop(self) -> str:
        return f"http://127.0.0.1:{self.shop_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()


class _Handler(BaseHTTPRequestHandler):
    svc: DemoServices

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def log_message(self, *args: Any) -> None:  # the demo's screen is for the agent's steps
        pass


class _Shop(_Handler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        by_slug = {slug(n): (n, p, d) for n, p, d in PRODUCTS}
        if url.path == "/":
            body = _page(
                "Trailhead Outfitters",
                (
                    "<h1>Trailhead Outfitters</h1><p>Gear for the outdoors since 1998.</p>"
                    "<p><a href='/catalogue'>Catalogue</a></p>"
                    "<form action='/search'><label for='q'>Search</label> <input id='q' name='q'>"
                    " <button type='submit'>Search</button></form>"
                ),
            )
        elif url.path == "/catalogue":
            body = _page("Catalogue — Trailhead Outfitters", f"<h1>Catalogue</h1><p>All prices in USD.</p>{_table(PRODUCTS)}")
        elif url.path == "/search":
            q = (parse_qs(url.query).get("q") or [""])[0].lower()
            found = [p for p in PRODUCTS if q in p[0].lower() or q in p[2].lower()]
            body = _page("Search", f"<h1>Search: {html.escape(q)}</h1>{_table(found) if found else '<p>No match.</p>'}")
        elif url.path.startswith("/products/") and url.path[len("/products/") :] in by_slug:
            name, price, desc = by_slug[url.path[len("/products/") :]]
            body = _page(
                name,
                (
                    f"<h1>{html.escape(name)}</h1><p class='price'>${price:.2f}</p><p>{html.escape(desc)}</p>"
                    "<form method='post' action='/enquiry'><input type='hidden' name='product' "
                    f"value='{html.escape(name)}'><label for='email'>Your email</label> <input id='email' name='email'>"
                    " <button type='submit'>Ask about stock</button></form>"
                ),
            )
        else:
            self._send(404, _page("Not found", "<h1>Not found</h1>"), "text/html; charset=utf-8")
            return
        self._send(200, body, "text/html; charset=utf-8")

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/enquiry":
            self._send(404, _page("Not found", "<h1>Not found</h1>"), "text/html; charset=utf-8")
            return
        self.svc.form_posts.append(parse_qs(self._body().decode(errors="replace")))
        self._send(200, _page("Thank you", "<h1>Thank you</h1><p>We will get back to you.</p>"), "text/html; charset=utf-8")


class _Api(_Handler):
    def do_GET(self) -> None:
        self._send(200, json.dumps({"reports": self.svc.posts}).encode(), "application/json")

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/reports":
            self._send(404, b'{"error": "not found"}', "application/json")
            return
        raw = self._body()
        try:
            doc = json.loads(raw)
        except ValueError:
            self._send(400, b'{"error": "send JSON"}', "application/json")
            return
        self.svc.posts.append(doc if isinstance(doc, dict) else {"value": doc})
        self._send(201, json.dumps({"id": len(self.svc.posts), "status": "stored"}).encode(), "application/json")


def _serve_http(svc: DemoServices, handler: type[_Handler]) -> int:
    cls = type(handler.__name__, (handler,), {"svc": svc})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), cls)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name=f"demo-{handler.__name__}", daemon=True).start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    svc._stops.append(stop)
    return int(httpd.server_address[1])


def _serve_smtp(svc: DemoServices) -> int:
    """aiosmtpd on its own loop thread, listening on an OS-chosen port (no port race)."""
    from aiosmtpd.smtp import SMTP

    class Capture:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            raw: bytes = envelope.original_content or envelope.content
            svc.mails.append(raw)
            subject = re.search(rb"^Subject: (.*)$", raw, re.MULTILINE | re.IGNORECASE)
            name = slug((subject.group(1) if subject else b"message").decode(errors="replace"))[:40] or "message"
            path = svc.mail_dir / f"{len(svc.mails):02d}-{name}.eml"
            path.write_bytes(raw)
            svc.mail_files.append(path)
            return "250 2.0.0 captured by the demo (not delivered)"

    svc.mail_dir.mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="demo-smtp", daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        loop.create_server(lambda: SMTP(Capture(), hostname="demo-smtp.localhost"), "127.0.0.1", 0), loop
    ).result(10)

    def stop() -> None:
        async def close() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    svc._stops.append(stop)
    return int(server.sockets[0].getsockname()[1])


def start_services(mail_dir: Path) -> DemoServices:
    svc = DemoServices(mail_dir=mail_dir)
    try:
        svc.shop_port = _serve_http(svc, _Shop)
        svc.api_port = _serve_http(svc, _Api)
        svc.smtp_port = _serve_smtp(svc)
    except BaseException:
        svc.stop()
        raise
    return svc
