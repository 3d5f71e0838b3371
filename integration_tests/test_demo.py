"""The demo runs end to end (scripted model) and its effects are real."""

from __future__ import annotations

import email
import email.policy

from rich.console import Console

from agent_legs._demo import run_demo


def test_demo_does_the_whole_job(tmp_path, sandbox_image) -> None:
    console = Console(record=True, width=120)
    report = run_demo(tmp_path / "ws", tmp_path / "st", console=console)
    ws = tmp_path / "ws"
    # the CSV and chart made in the sandbox from the prices read in the browser
    assert (ws / "report/prices.csv").read_text().splitlines()[0] == "product,price"
    assert "Trail shoes,89.9" in (ws / "report/prices.csv").read_text()
    assert (ws / "report/prices.png").read_bytes()[:4] == b"\x89PNG"
    assert "mean" in (ws / "report/summary.md").read_text()
    # posted to the API
    assert report.posts and report.posts[0]["title"] == "Price report"
    # emailed with the chart attached
    (raw,) = report.mails
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["To"] == "team@example.com"
    names = {p.get_filename() for p in msg.iter_attachments()}
    assert names == {"prices.png", "prices.csv"}
    # one action denied on purpose, and the log says why
    denied = [e for e in report.log if e["outcome"] == "denied"]
    assert len(denied) == 1 and "169.254.169.254" in denied[0]["target"]
    assert {e["action"] for e in report.log} == {"browser.navigate", "code.run", "files.write", "http.request",
                                                 "email.send"}
    text = console.export_text()
    assert "scripted model" in text and "What the agent did" in text
