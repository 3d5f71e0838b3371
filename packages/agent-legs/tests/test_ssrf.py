"""The SSRF corpus runs in a loopback-only network namespace (see ssrf_corpus.py)."""

from __future__ import annotations

from pathlib import Path

from agent_legs_testing.netns import run_pytest_in_netns


def test_ssrf_corpus_in_loopback_only_netns() -> None:
    result = run_pytest_in_netns(Path(__file__).with_name("ssrf_corpus.py"))
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    summary = [line for line in result.stdout.splitlines() if " passed" in line]
    assert summary and "failed" not in summary[-1], report
    assert int(summary[-1].split(" passed")[0].split()[-1]) >= 30, report
