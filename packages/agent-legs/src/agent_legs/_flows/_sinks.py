"""Sinks: what a call sends out, and where to; and which destinations are trusted.

Per action (the arguments after validation):

* ``email.send``: every recipient (``to``, ``cc``, ``bcc``) is a destination; the addresses, the
  subject, the body and the attachments (file contents) are the payload;
* ``http.request``: the URL's host; the URL, the query parameters, the header names and values,
  the JSON and the raw body;
* ``browser.navigate``: the URL's host; the URL;
* ``browser.fill``: the current page's host (the page's scripts read a field as it is typed, a
  submit sends it); the value, and the workspace files it names (a file input uploads them);
* ``browser.click``: the current page's host; its selector and text (what a click submits was
  checked when it was filled);
* ``mcp.<server>.<tool>``: the server (``mcp:<server>``); every argument.

Threat model: every argument is the attacker's choice. A destination the guard cannot name (a URL
without a host, a page not seen yet) is untrusted. Destination trust uses the one host parser
(``_matching``): every spelling of a host meets the same rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .._matching import HostRule, parse_host_rule, text_matches
from ._sources import url_host

__all__ = ["Sink", "Trust", "destinations", "extract"]


@dataclass
class Sink:
    destinations: list[tuple[str, str]]  # (kind: host | recipient | mcp | unknown, name)
    fields: list[tuple[str, str]] = field(default_factory=list)  # (argument, text)
    files: list[tuple[str, str]] = field(default_factory=list)  # (argument, workspace path)


def _host_dest(url: str) -> tuple[str, str]:
    target = url_host(url)
    if target is None:
        return ("unknown", url[:80] or "(no URL)")
    host, port = target
    return ("host", f"{host}:{port}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def destinations(action: str, args: dict[str, Any], page_url: str | None) -> list[tuple[str, str]] | None:
    """Where ``action`` called with ``args`` sends (``(kind, name)`` pairs), or ``None`` when it sends
    nothing out. Cheaper than ``extract``: the guard asks it first, and reads the payload only when
    some destination is not trusted."""
    if action == "email.send":
        return _recipients(args)
    if action in ("http.request", "browser.navigate"):
        return [_host_dest(str(args.get("url") or ""))]
    if action in ("browser.fill", "browser.click"):
        return [_host_dest(page_url) if page_url else ("unknown", "(the current page)")]
    if action.startswith("mcp."):
        return [("mcp", action.split(".")[1] if action.count(".") >= 2 else action)]
    return None


def _recipients(args: dict[str, Any]) -> list[tuple[str, str]]:
    """An email's destinations. Its own function: the comprehension makes ``args`` a closure cell, which
    would otherwise cost every ``destinations`` call one (an http.request's sink check included)."""
    return [("recipient", str(a)) for key in ("to", "cc", "bcc") for a in args.get(key) or []] or [("unknown", "(no recipient)")]


def extract(action: str, args: dict[str, Any], page_url: str | None) -> Sink | None:
    """The sink ``action`` called with ``args`` is, or ``None`` when the action sends nothing out."""
    dests = destinations(action, args, page_url)
    if dests is None:
        return None
    sink = Sink(dests)
    if action == "email.send":
        sink.fields += [(f"{key}[{i}]", str(a)) for key in ("to", "cc", "bcc") for i, a in enumerate(args.get(key) or [])]
        sink.fields += [("subject", str(args.get("subject") or "")), ("body", str(args.get("body") or ""))]
        sink.files += [(f"attachments[{i}]", str(p)) for i, p in enumerate(args.get("attachments") or [])]
    elif action == "http.request":
        sink.fields.append(("url", str(args.get("url") or "")))
        for key in ("params", "headers"):
            value = args.get(key) or {}
            pairs = value.items() if isinstance(value, dict) else ((p.get("name"), p.get("value")) for p in value)
            sink.fields += [(f"{key}.{k}", f"{k}={_text(v)}") for k, v in pairs]
        for key in ("json", "body"):
            if args.get(key) is not None:
                sink.fields.append((key, _text(args[key])))
    elif action == "browser.navigate":
        sink.fields.append(("url", str(args.get("url") or "")))
    elif action in ("browser.fill", "browser.click"):
        sink.fields += [(k, str(args[k])) for k in ("value", "selector", "text") if args.get(k)]
        if action == "browser.fill":
            lines = [ln.strip() for ln in str(args.get("value") or "").splitlines() if ln.strip()]
            sink.files += [("value", ln) for ln in lines]
    else:  # mcp.<server>.<tool>
        sink.fields += [(k, _text(v)) for k, v in args.items()]
    return sink


class Trust:
    """``policy.flows.trusted_destinations``, or its default (see ``FlowsPolicy``)."""

    def __init__(self, trusted: list[str] | None, allow_hosts: list[str], allow_recipients: list[str]) -> None:
        self._known: dict[tuple[str, str], bool] = {}  # answers so far (the rules are fixed with the policy)
        self.hosts: list[HostRule] = []
        self.recipients: list[str] = []
        self.mcp: list[str] = []
        if trusted is None:
            for entry in allow_hosts:
                try:
                    rule = parse_host_rule(entry)
                except Exception:  # noqa: S112 - the egress guard reports a bad rule; here it trusts nothing
                    continue
                if rule.explicit and rule.network is None:  # a named host, not a glob or a range
                    self.hosts.append(rule)
            self.recipients = [r for r in allow_recipients if not any(c in r for c in "*?[")]
            return
        for entry in (e.strip() for e in trusted):
            if "@" in entry:
                self.recipients.append(entry)
            elif entry.lower().startswith("mcp:"):
                self.mcp.append(entry[4:].strip())
            else:
                self.hosts.append(parse_host_rule(entry))

    def trusts(self, kind: str, name: str) -> bool:
        known = self._known.get((kind, name))
        if known is None:
            if len(self._known) >= 4096:
                self._known.clear()
            known = self._known[kind, name] = self._trusts(kind, name)
        return known

    def _trusts(self, kind: str, name: str) -> bool:
        if kind == "recipient":
            return bool(self.recipients) and text_matches(name, self.recipients)
        if kind == "mcp":
            return bool(self.mcp) and text_matches(name, self.mcp)
        if kind == "host":
            host, _, port = name.rpartition(":")
            return any(rule.matches(host, int(port)) for rule in self.hosts)
        return False
