"""The console's Starlette application: the pages, their fragments and the decisions.

Routes: ``/`` the live feed (filters ``session``, ``action``, ``outcome``), ``/feed/events`` its
server-sent events, ``/calls/{id}`` a call's detail (arguments, result, error, the rule, who approved,
the trace link from ``settings.telemetry.trace_url``), ``/sessions``, ``/approvals`` (and
``/approvals/list``, ``/approvals/count``, ``/approvals/events``: new requests pushed),
``POST /approvals/{id}/{approve|reject|edit}``,
``/artifacts?path=`` (an image a logged call produced), ``/static/`` (htmx, the style sheet).

Invariants: every template is rendered by one Jinja environment with autoescaping on, and values are
put in as text (JSON is pretty-printed to a string, then escaped): an argument holding ``<script>``
shows as text. Every route sits behind ``AuthMiddleware``. The state store is opened on the server's
event loop at startup and closed at shutdown; the log follower is one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._state import open_store
from ._approvals import Approvals
from ._auth import Auth, AuthMiddleware, cookie_name
from ._config import ConsoleConfig, is_loopback
from ._data import IMAGE_TYPES, Filters, LogView, outcome_class
from ._feed import approvals_response, feed_response
from ._sessions import sessions_view

__all__ = ["create_app"]

_HERE = Path(__file__).parent
_TRACE_ID = re.compile(r"^[0-9a-f]{32}\Z")  # \Z: $ would match before a trailing newline


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True)
    env.filters["pretty"] = _pretty
    env.filters["outcome_class"] = outcome_class
    env.filters["clock"] = lambda t: str(t or "")[11:23] or "-"
    env.filters["ms"] = lambda v: "-" if v is None else f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"
    env.filters["qs"] = urlencode
    return env


def create_app(config: ConsoleConfig) -> Starlette:
    env = _environment()
    view = LogView(config.state_dir / "actions.jsonl", config.workspace, config.recent)
    stopping = asyncio.Event()
    holder: dict[str, Any] = {}

    def page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        sid = request.scope.get("state", {}).get("console_sid", "")
        html = env.get_template(name).render(csrf=auth.csrf_token(sid), user=config.user, path=request.url.path, **values)
        return HTMLResponse(html, status_code=status)

    def render_row(entry: dict[str, Any]) -> str:
        return env.get_template("_row.html").render(e=entry)

    def trace_link(entry: dict[str, Any]) -> str | None:
        template, trace_id = config.settings.telemetry.trace_url, str(entry.get("trace_id") or "")
        if not template or not _TRACE_ID.match(trace_id):
            return None
        return template.replace("{trace_id}", trace_id)

    def approvals() -> Approvals:
        return Approvals(holder["store"], config.user)

    def filters_of(request: Request) -> Filters:
        q = request.query_params
        return Filters(q.get("session", "").strip(), q.get("action", "").strip(), q.get("outcome", "").strip())

    async def feed(request: Request) -> Response:
        filters = filters_of(request)
        await asyncio.to_thread(view.ready.wait, 5)
        entries = view.entries(filters)  # one snapshot; the feed sends every matching call added after it
        seq = max((e["_seq"] for e in entries), default=0)
        return page(request, "feed.html", entries=entries, filters=filters, query={**filters.query(), "since": str(seq)})

    async def events(request: Request) -> Response:
        raw = request.headers.get("last-event-id") or request.query_params.get("since") or "0"
        since = int(raw) if raw.isdigit() else 0
        return feed_response(request, view, filters_of(request), since, render_row, stopping)

    async def call(request: Request) -> Response:
        entry = view.get(request.path_params["id"])
        if entry is None:
            return PlainTextResponse("no such call in the recent action log", 404)
        return page(request, "_call.html", e=entry, trace=trace_link(entry))

    async def sessions(request: Request) -> Response:
        await asyncio.to_thread(view.ready.wait, 5)
        found, shared = await sessions_view(view, holder["store"], config.policy, max(config.settings.session_ttl_s, 120.0))
        return page(request, "sessions.html", sessions=found, shared=shared)

    async def approvals_page(request: Request) -> Response:
        return page(request, "approvals.html", rows=await approvals().pending())

    async def approvals_list(request: Request) -> Response:
        return page(request, "_approval_list.html", rows=await approvals().pending())

    async def approvals_events(request: Request) -> Response:
        known = {i for i in request.query_params.get("known", "").split(",") if i}

        def card(row: Any) -> str:
            sid = request.scope.get("state", {}).get("console_sid", "")
            return env.get_template("_approval.html").render(row=row, csrf=auth.csrf_token(sid))

        return approvals_response(request, approvals(), known, card, stopping)

    async def approvals_count(request: Request) -> Response:
        return page(request, "_count.html", n=len(await approvals().pending()))

    async def decide(request: Request) -> Response:
        approval_id, kind = request.path_params["id"], request.path_params["kind"]
        form = await request.form()
        outcome = await approvals().decide(approval_id, kind, dict(form))
        return page(request, "_decided.html", status=outcome.status, outcome=outcome, approval_id=approval_id)

    async def artifact(request: Request) -> Response:
        path = request.query_params.get("path", "")
        target = view.artifact_path(path)
        if target is None:
            return PlainTextResponse("not an image that a logged call produced in the workspace", 404)
        return FileResponse(target, media_type=IMAGE_TYPES[target.suffix.lower()])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        holder["store"] = open_store(config.state_dir, config.settings, config.secrets)
        view.start()
        try:
            yield
        finally:
            stopping.set()
            view.stop()
            await holder["store"].aclose()

    app = Starlette(
        routes=[
            Route("/", feed),
            Route("/feed/events", events),
            Route("/calls/{id}", call),
            Route("/sessions", sessions),
            Route("/approvals", approvals_page),
            Route("/approvals/list", approvals_list),
            Route("/approvals/count", approvals_count),
            Route("/approvals/events", approvals_events),
            Route("/approvals/{id}/{kind}", decide, methods=["POST"]),
            Route("/artifacts", artifact),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ],
        lifespan=lifespan,
    )
    auth = Auth(config.token)
    app.state.stopping = stopping
    app.state.view = view
    app.add_middleware(AuthMiddleware, auth=auth, loopback_only=is_loopback(config.host), cookie=cookie_name(config.port))  # type: ignore[arg-type]
    return app
