"""`agent-legs demo` end to end (scripted model): its effects are real and asserted.

The full run uses every real component (Dovecot, Chromium, Docker sandbox, SMTP capture); the
degraded run takes Docker and Chromium away and checks the demo still finishes, says what was
missing and how to fix it. A real-model variant runs only when a provider key is set.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from agent_legs_demo import run_demo
from agent_legs_demo._script import parse_prices
from agent_legs_demo._services import PRODUCTS, STOCK

FAMILIES = {"email", "browser", "code", "files", "http"}


def _mail(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_demo_does_the_whole_job(tmp_path: Path, sandbox_image: str, captured_spans) -> None:
    console = Console(record=True, width=140)
    ws, st = tmp_path / "ws", tmp_path / "st"
    report = run_demo(ws, st, console=console, tracer_provider=captured_spans.provider)
    text = console.export_text()
    assert report.error is None, text
    assert report.inbox, f"the IMAP mailbox did not start: {report.inbox_note}. Fix: apt-get install -y dovecot-imapd"
    assert not report.problems, report.problems

    # the supplier's attachment, saved from the mailbox into the workspace
    assert (ws / "attachments/stock.csv").read_text().startswith("product,units\n")
    # the CSV and chart made in the sandbox from the prices read in the browser, joined with the stock list
    rows = list(csv.DictReader(io.StringIO((ws / "report/prices.csv").read_text())))
    assert [r["product"] for r in rows] == [name for name, _, _ in PRODUCTS]
    assert {r["product"]: float(r["price"]) for r in rows} == {name: price for name, price, _ in PRODUCTS}
    assert {r["product"]: int(r["units"]) for r in rows} == STOCK
    assert (ws / "report/prices.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mean price $67.60" in (ws / "report/summary.md").read_text()
    assert {p.relative_to(ws).as_posix() for p in report.files} == {
        "attachments/stock.csv",
        "report/prices.csv",
        "report/prices.png",
        "report/summary.md",
    }

    # posted to the API: the statistics the sandbox computed
    (post,) = report.posts
    stock_value = round(sum(price * STOCK[name] for name, price, _ in PRODUCTS), 2)
    assert post["title"] == "Price report"
    assert post["statistics"]["products"] == 6 and post["statistics"]["stock_value"] == pytest.approx(stock_value)

    # emailed with the chart and the CSV attached, and captured as an .eml file
    (raw,) = report.mails
    msg = _mail(raw)
    assert msg["To"] == "team@example.com" and msg["Subject"] == "Price report"
    attachments = {p.get_filename(): p.get_content() for p in msg.iter_attachments()}
    assert set(attachments) == {"prices.png", "prices.csv"}
    assert attachments["prices.png"][:4] == b"\x89PNG"
    (eml,) = report.mail_files
    assert eml.read_bytes() == raw and eml.parent == st / "demo-mail"

    # the action log of this run: every family, one denial on purpose, and why
    actions = [e["action"] for e in report.log]
    assert {a.split(".")[0] for a in actions} == FAMILIES
    assert actions[:2] == ["email.list", "email.read"]
    denied = [e for e in report.log if e["outcome"] != "ok"]
    assert len(denied) == 1, denied
    assert denied[0]["outcome"] == "denied" and "169.254.169.254" in denied[0]["target"]
    assert denied[0]["rule"].startswith("policy.network.allow_hosts")
    assert [e["decision"] for e in report.log if e["action"] == "email.send"] == ["approved"]

    # spans: one per log line, all in the demo's one trace, under its root span
    tool_spans = captured_spans.tool_spans()
    assert len(tool_spans) == len(report.log)
    (root,) = captured_spans.by_name("invoke_agent agent-legs-demo")
    assert {f"{s.context.trace_id:032x}" for s in [*tool_spans, root]} == {report.trace_id}
    assert {e["trace_id"] for e in report.log} == {report.trace_id}
    (denied_span,) = [s for s in tool_spans if (s.attributes or {}).get("agent_legs.outcome") == "denied"]
    assert denied_span.status.status_code.name == "ERROR"
    assert str((denied_span.attributes or {})["agent_legs.rule"]).startswith("policy.network.allow_hosts")

    # what the user reads
    assert "scripted model plays the agent" in text
    assert "What the agent did" in text and "Denied http.request" in text
    assert str(eml) in text and report.trace_id and report.trace_id in text
    assert "Jaeger" in text


def test_demo_carries_on_without_docker_and_browser(tmp_path: Path) -> None:
    """Through the real CLI: no Docker engine, no Chromium. The agent gets structured
    errors, works around them, the job still reaches the API and the mailbox, and the screen says
    how to fix what was missing."""
    env = {
        **os.environ,
        "AGENT_LEGS_CODE__DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "AGENT_LEGS_BROWSER__EXECUTABLE_PATH": "/nonexistent/chromium",
        "COLUMNS": "160",
    }
    cli = Path(sys.executable).with_name("agent-legs")
    r = subprocess.run([str(cli), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    ws = tmp_path / "agent-workspace-demo"
    # the CSV written with files.write by the agent itself, no chart
    assert (ws / "report/prices.csv").read_text().splitlines()[0] == "product,price"
    assert not (ws / "report/prices.png").exists()
    (eml,) = (tmp_path / ".agent-legs-demo-state/demo-mail").glob("*.eml")
    assert {p.get_filename() for p in _mail(eml.read_bytes()).iter_attachments()} == {"prices.csv"}
    assert "unavailable" in out and "over HTTP" in out
    assert "Some parts were unavailable" in out and "agent-legs doctor" in out
    assert "Denied http.request" in out


def test_demo_with_a_bad_model_name_explains_instead_of_crashing(tmp_path: Path) -> None:
    console = Console(record=True, width=140)
    report = run_demo(tmp_path / "ws", tmp_path / "st", model="no-such-provider:some-model", console=console, inbox=False)
    assert report.error and "no-such-provider" in report.error
    assert not report.posts and not report.mails and not report.ok
    assert "The demo did not finish" in console.export_text()


def test_parse_prices_reads_browser_and_http_markdown() -> None:
    markdown = (
        "| Product | Price |\n| --- | --- |\n| [Trail shoes](/products/trail-shoes) | $89.90 |\n| Plain name | $1,234.5 |\n"
    )
    assert parse_prices(markdown) == [("Trail shoes", 89.90), ("Plain name", 1234.5)]


@pytest.mark.real_model
def test_demo_with_a_real_model(tmp_path: Path, sandbox_image: str) -> None:
    if os.environ.get("OPENAI_API_KEY"):
        model = "openai:gpt-4o-mini"
    elif os.environ.get("ANTHROPIC_API_KEY"):
        model = "anthropic:claude-3-5-haiku-latest"
    else:
        pytest.skip("no OPENAI_API_KEY or ANTHROPIC_API_KEY: the real-model demo needs one")
    console = Console(record=True, width=140)
    report = run_demo(tmp_path / "ws", tmp_path / "st", model=model, console=console)
    assert report.error is None, console.export_text()
    assert report.posts and report.mails, console.export_text()
    assert any(e["outcome"] == "denied" for e in report.log)


def test_the_core_cli_without_the_demo_package_says_how_to_install_it() -> None:
    code = (
        "import sys\nsys.modules['agent_legs_demo'] = None\nsys.argv = ['agent-legs', 'demo']\n"
        "from agent_legs._cli import main\nmain()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "pip install agent-legs-demo" in r.stderr and "bash shared/demo.sh" in r.stderr
