"""The SSRF corpus runs in a loopback-only network namespace (see ssrf_corpus.py)."""

from __future__ import annotations

from pathlib import Path

import ssrf_corpus

from agent_legs_testing.netns import assert_passes_in_netns


def test_ssrf_corpus_in_loopback_only_netns() -> None:
    # every case on both connection layers, the allowed-server checks, the namespace check
    expected = 2 * len(ssrf_corpus.IDS) + 2 + 1
    assert len(ssrf_corpus.IDS) >= 30
    assert assert_passes_in_netns(Path(__file__).with_name("ssrf_corpus.py"), min_passed=expected) == expected
