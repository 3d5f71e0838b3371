"""Secrets never come back: reflected in any common encoding, or straddling any cut.

Canary secrets are injected by ``settings.http.auth`` into requests to a real HTTP server on
127.0.0.1 that reflects them (raw, base64/base64url at every byte alignment, hex, percent-encoded),
or sit in a workspace file; every place a result goes is then searched for them: ``output``,
``data``, every span attribute (in-memory exporter) and the action-log file. The search decodes
what it finds (base64 at every offset, hex at both nibble offsets, percent-encoding), so it does not
depend on how the redactor builds its forms.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from agent_legs import Legs
from agent_legs._secrets import Redactor

TOKEN = "tok-Canary-7Q2w9ZkX4vLm"
PASS = "pw-Canary/h8Ue3n+Rt6yPq"
SECRETS = {"API_TOKEN": TOKEN, "DB_PASS": PASS}


def _decodings(blob: str) -> list[str]:
    """``blob`` and everything a reader could decode out of it."""
    out = [blob, urllib.parse.unquote(blob), urllib.parse.unquote_plus(blob)]
    for run in re.findall(r"[0-9a-fA-F]{12,}", blob):
        for off in (0, 1):
            part = run[off:]
            out.append(bytes.fromhex(part[: len(part) // 2 * 2]).decode("latin-1"))
    for run in re.findall(r"[A-Za-z0-9+/_-]{8,}", blob):
        run = run.replace("-", "+").replace("_", "/")
        for off in range(4):
            part = run[off:]
            out.append(base64.b64decode(part[: len(part) // 4 * 4]).decode("latin-1"))
    return out


def leaks(blob: str, secrets: dict[str, str] = SECRETS, n: int = 6) -> list[str]:
    """Every ``n``-character piece of a secret readable from ``blob``, directly or decoded."""
    found = []
    texts = _decodings(blob)
    for value in secrets.values():
        for i in range(len(value) - n + 1):
            piece = value[i : i + n]
            if any(piece in t for t in texts):
                found.append(piece)
    return found


def everywhere(result: Any, spans: Any, state: Path) -> str:
    """Everything the model, the traces and the log received, as one text."""
    parts = [result.output, json.dumps(result.data), json.dumps(result.error.model_dump() if result.error else None)]
    for span in spans.spans:
        parts += [str(v) for v in (span.attributes or {}).values()]
        parts.append(span.status.description or "")
    parts.append((state / "actions.jsonl").read_text())
    return "\n".join(parts)


def _reflections(value: str) -> str:
    raw = value.encode()
    quoted = urllib.parse.quote(value, safe="")
    lowered = re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted)
    lines = [
        f"raw {value}",
        f"hex {raw.hex()}",
        f"HEX {raw.hex().upper()}",
        f"pct {quoted}",
        f"pctlower {lowered}",
        f"plus {urllib.parse.quote_plus(value)}",
    ]
    for prefix in (b"", b"u", b"user:", b"ab", b"abcd"):
        for suffix in (b"", b"!", b"!?"):
            blob = prefix + raw + suffix
            lines.append(f"b64 {base64.b64encode(blob).decode()}")
            lines.append(f"b64url {base64.urlsafe_b64encode(blob).decode().rstrip('=')}")
    return "\n".join(lines)


@pytest.fixture
def legs(dirs, http_server, captured_spans):
    ws, st = dirs
    with Legs(
        workspace=ws,
        state_dir=st,
        secrets=SECRETS,
        policy={"network": {"allow_hosts": [f"127.0.0.1:{http_server.port}"]}, "http": {"max_response_bytes": 4000}},
        settings={
            "max_output_chars": 6000,
            "http": {
                "auth": [
                    {
                        "hosts": [f"127.0.0.1:{http_server.port}"],
                        "headers": {"X-Api-Key": "{secret:API_TOKEN}", "X-Db-Pass": "{secret:DB_PASS}"},
                    }
                ]
            },
        },
        tracer_provider=captured_spans.provider,
    ) as legs:
        yield legs


def test_canary_check_finds_every_encoding() -> None:
    # The detector itself: without redaction it sees every reflection (else the tests below prove nothing).
    for line in _reflections(TOKEN).splitlines():
        assert leaks(line), line
    assert not leaks("nothing to see here [REDACTED:API_TOKEN] dXNlcjp[REDACTED:API_TOKEN]")


def test_reflected_secret_in_every_encoding_is_scrubbed(legs, http_server, captured_spans, dirs) -> None:
    @http_server.route("/reflect")
    def reflect(h, r):
        body = _reflections(r.headers["x-api-key"]) + "\n" + _reflections(r.headers["x-db-pass"])
        h.send_body(200, body.encode(), "text/plain", {"X-Echo": r.headers["x-api-key"]})

    r = legs.run("http.request", {"method": "GET", "url": http_server.url("/reflect")})
    assert r.ok, r.output
    assert http_server.requests[-1].headers["x-api-key"] == TOKEN  # the canary did go out
    assert r.output.count("[REDACTED:API_TOKEN]") >= 30 and "[REDACTED:DB_PASS]" in r.output
    assert leaks(everywhere(r, captured_spans, dirs[1])) == []


def test_reflected_secret_in_json_data_is_scrubbed(legs, http_server, captured_spans, dirs) -> None:
    @http_server.route("/reflect.json")
    def reflect(h, r):
        v = r.headers["x-api-key"]
        h.send_json(
            200,
            {
                "basic": base64.b64encode(f"user:{v}".encode()).decode(),
                "hex": v.encode().hex(),
                "url": "https://x.example/?k=" + urllib.parse.quote(v),
                "raw": {v: v},
            },
        )

    r = legs.run("http.request", {"method": "GET", "url": http_server.url("/reflect.json")})
    assert r.ok and set(r.data["json"]) == {"basic", "hex", "url", "raw"}
    assert leaks(everywhere(r, captured_spans, dirs[1])) == []


def test_secret_straddling_the_output_bound_leaves_no_prefix(legs, dirs, captured_spans) -> None:
    # files.read of a one-line file whose secret straddles what fits in the output (the line is cut there).
    ws, st = dirs
    for cut_inside in (1, 5, len(TOKEN) - 1):
        captured_spans.clear()
        budget = 6000 - 300  # files.read leaves room for its notes
        (ws / "notes.txt").write_text("x" * (budget - cut_inside) + TOKEN + "y" * 50 + "\n")
        r = legs.run("files.read", {"path": "notes.txt"})
        assert r.ok and "only the first" in r.output
        assert leaks(everywhere(r, captured_spans, st), n=4) == [], cut_inside


def test_secret_straddling_the_result_cut_leaves_no_prefix(dirs, captured_spans) -> None:
    # The runtime's own bound (settings.max_output_chars) on an action that returns more.
    from core_test_actions import registry

    ws, st = dirs
    limit = 500
    with Legs(
        workspace=ws,
        state_dir=st,
        policy={"allow": ["test.*"]},
        registry=registry,
        secrets=SECRETS,
        settings={"max_output_chars": limit},
        tracer_provider=captured_spans.provider,
    ) as legs:
        for cut_inside in (1, 4, len(PASS) - 1):
            r = legs.run("test.echo", {"text": "z" * (limit - cut_inside) + PASS + " tail"})
            assert r.ok and "[output truncated" in r.output
            assert leaks(r.output, n=4) == [], (cut_inside, r.output[-60:])
        # the action log's "target" (the argument cut to 200 characters) too
        r = legs.run("test.echo", {"text": "t" * 195 + PASS})
        assert leaks(everywhere(r, captured_spans, st), n=4) == []


def test_secret_straddling_the_http_byte_cap_leaves_no_prefix(legs, http_server, captured_spans, dirs) -> None:
    # The response is cut at policy.http.max_response_bytes (4000, within the 6000-character output bound)
    # before the runtime sees it.
    @http_server.route("/cut")
    def cut(h, r):
        at = int(r.query["at"][0])
        h.send_body(200, (b"y" * (4000 - at)) + r.headers["x-api-key"].encode() + b"z" * 100, "text/plain")

    for at in (1, 6, len(TOKEN) - 1):
        r = legs.run("http.request", {"method": "GET", "url": http_server.url(f"/cut?at={at}")})
        assert r.ok and r.data["truncated"] is True
        assert leaks(everywhere(r, captured_spans, dirs[1]), n=4) == [], at


def test_file_with_secret_is_scrubbed_when_read(legs, dirs, captured_spans) -> None:
    ws, st = dirs
    (ws / "config.txt").write_text(
        f"user=svc\npassword={PASS}\nauth=Basic {base64.b64encode(f'svc:{PASS}'.encode()).decode()}\nhex={PASS.encode().hex()}\n"
    )
    r = legs.run("files.read", {"path": "config.txt"})
    assert r.ok and r.output.count("[REDACTED:DB_PASS]") == 3
    assert leaks(everywhere(r, captured_spans, st)) == []


def test_redactor_forms_and_partial_tail() -> None:
    r = Redactor({"K": "p@ss word/+=zz"})
    for prefix in ("", "a", "ab"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode((prefix + "p@ss word/+=zz").encode()).decode()
            assert "[REDACTED:K]" in r.text(encoded), (prefix, encoded)
    assert r.text(b"p@ss word/+=zz".hex().upper()) == "[REDACTED:K]"
    assert r.text("p%40ss%20word%2f%2b%3dzz") == "[REDACTED:K]"
    assert r.text('{"k": "p@ss word/+=zz"}') == '{"k": "[REDACTED:K]"}'
    # a head of a longer text: a trailing partial secret goes too, a complete text keeps its tail
    assert r.text("abc p@ss wor", cut=True) == "abc [REDACTED:K]"
    assert r.text("abc p@ss wor") == "abc p@ss wor"
    assert r.text("abc p@s", cut=True) == "abc p@s"  # 3 characters: below the partial minimum
    assert r.cut("xx p@ss word/+=zz yy", 8) == "xx [REDA"


@pytest.mark.usefixtures("sandbox_image", "no_leftover_containers")
def test_secret_straddling_the_code_output_cap_leaves_no_prefix(dirs, captured_spans) -> None:
    # Code prints a secret it read from a workspace file, so that policy.code.max_output_bytes cuts it.
    ws, st = dirs
    (ws / "cfg.txt").write_text(TOKEN)
    with Legs(
        workspace=ws,
        state_dir=st,
        secrets=SECRETS,
        tracer_provider=captured_spans.provider,
        settings={"code": {"pool_size": 0}},
        policy={"code": {"max_output_bytes": 1000, "timeout_s": 30}},
    ) as legs:
        code = (
            "s = open('cfg.txt').read()\n"
            "for k in (1, 6, len(s) - 1):\n"
            "    print('x' * (1000 - k) + s + '!' * 50 if k == CUT else '', end='')\n"
        )
        for cut in (1, 6, len(TOKEN) - 1):
            captured_spans.clear()
            r = legs.run("code.run", {"code": code.replace("CUT", str(cut))})
            assert r.ok and r.data["stdout_truncated"], r.output
            assert leaks(everywhere(r, captured_spans, st), n=4) == [], cut


def test_secret_straddling_a_browser_page_boundary_leaves_no_prefix_or_suffix(dirs, website, captured_spans) -> None:
    # browser.content pages a long page: the secret must not be split between two pages.
    import shutil

    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        pytest.fail("Chromium is needed (shared/setup.sh installs it)")
    ws, st = dirs
    page = 1000  # settings.max_output_chars 1800 -> pages of 1000 characters
    for cut in (1, 6, len(TOKEN) - 1):
        website.site.routes[f"/long{cut}"] = lambda h, r, cut=cut: h.send_body(
            200, f"<html><body><p>{'a' * (page - cut)}{TOKEN}{'b' * 300}</p></body></html>".encode(), "text/html"
        )
    with Legs(
        workspace=ws,
        state_dir=st,
        secrets=SECRETS,
        policy=website.policy(),
        settings={"max_output_chars": 1800},
        tracer_provider=captured_spans.provider,
    ) as legs:
        for cut in (1, 6, len(TOKEN) - 1):
            captured_spans.clear()
            assert legs.run("browser.navigate", {"url": website.site.url(f"/long{cut}")}).ok
            first = legs.run("browser.content", {"format": "text"})
            second = legs.run("browser.content", {"format": "text", "offset": first.data["next_offset"]})
            assert first.ok and second.ok  # the pages, joined, hold the marker (it may be split, the secret never)
            assert "[REDACTED:API_TOKEN]" in first.output.rsplit("\n\n[", 1)[0] + second.output
            for r in (first, second):
                assert leaks(everywhere(r, captured_spans, st), n=4) == [], (cut, r.output[:80], r.output[-80:])


def test_secret_at_a_search_snippet_edge_leaves_no_part(legs, dirs, captured_spans) -> None:
    # files.search shows a 300-character window of a long line around the match: the secret sits on
    # the window's edge (either side), and inside the match too.
    ws, st = dirs
    (ws / "a.log").write_text(
        "MATCH"
        + "." * 290
        + TOKEN
        + "." * 400
        + "\n"  # the window's end cuts the secret
        + "." * 400
        + TOKEN
        + "." * 60
        + "MATCH"
        + "." * 400
        + "\n"  # its start does
        + "." * 10
        + "key="
        + TOKEN
        + "." * 10
        + "\n"
    )  # the match holds the secret
    for pattern in ("MATCH", "key=tok"):
        captured_spans.clear()
        r = legs.run("files.search", {"pattern": pattern})
        assert r.ok and r.data["matches"] >= 1, r.output
        assert leaks(everywhere(r, captured_spans, st), n=4) == [], (pattern, r.output)


def test_approval_summary_cut_leaves_no_part(dirs) -> None:
    # The approver sees the first 160 characters of each body line: built from scrubbed arguments.
    ws, st = dirs
    seen = []

    def approver(request) -> bool:
        seen.append(request)
        return False

    with Legs(
        workspace=ws, state_dir=st, secrets=SECRETS, approver=approver, policy={"email": {"allow_recipients": ["*@example.com"]}}
    ) as legs:
        for cut in (1, 6, len(PASS) - 1):
            r = legs.run(
                "email.send",
                {"to": ["ana@example.com"], "subject": "s" * (200 - cut) + PASS, "body": "b" * (160 - cut) + PASS + " tail\n"},
            )
            assert r.error is not None and r.error.type == "approval_denied"
    assert len(seen) == 3
    for request in seen:
        assert "[REDACTED:DB_PASS]" in json.dumps(request.arguments)
        assert leaks(request.reason + json.dumps(request.arguments), n=4) == [], request.reason
