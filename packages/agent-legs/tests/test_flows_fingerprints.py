"""The exfiltration guard's fingerprints (state store schema v5): keyed vector multiply-shift hashes of
every 12-character window, computed for a whole text at once (``agent_legs._flows._encodings``), and the
migration of a store whose private rows hold the former BLAKE2b fingerprints (fail closed). Real SQLite
files, real servers on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
import re
import sqlite3
import sys

import pytest
from flows_corpus import SECRET, write_private_store

from agent_legs import Legs
from agent_legs._flows._encodings import WINDOW, fingerprints, normalize, sorted_fingerprints, window_hashes
from agent_legs._flows._index import decode_fps, encode_fps
from agent_legs._state import SCHEMA_VERSION

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def _windows(text: str) -> list[str]:
    norm = normalize(text)
    return [norm[i : i + WINDOW] for i in range(len(norm) - WINDOW + 1)]


def test_normalize_is_the_regex_form_for_every_white_space_character() -> None:
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if re.fullmatch(r"\s", chr(c))]
    rnd = random.Random(7)
    alphabet = [*spaces, *"aBcİß.-", *(chr(rnd.randrange(0x20, 0x30000)) for _ in range(64))]
    for _ in range(5000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 24)))
        assert normalize(text) == re.sub(r"\s+", " ", text.lower()), repr(text)


def test_a_window_has_one_fingerprint_wherever_it_is_and_the_key_decides_it() -> None:
    text = "xx Maria Gonzalez, IBAN DE44 yy MARIA   gonzalez, iban de44"
    by_window: dict[str, set[int]] = {}
    hashes = window_hashes(normalize(text), KEY)
    assert hashes is not None
    for window, fp in zip(_windows(text), hashes.tolist(), strict=True):
        by_window.setdefault(window, set()).add(fp)
    assert all(len(fps) == 1 for fps in by_window.values())  # the same window twice: the same fingerprint
    assert len({next(iter(f)) for f in by_window.values()}) == len(by_window)  # different windows: different
    assert fingerprints([SECRET], KEY) <= fingerprints([f"see {SECRET.upper()} here"], KEY)
    assert fingerprints([SECRET], KEY).isdisjoint(fingerprints([SECRET], bytes(16)))  # another key: other values
    assert window_hashes(normalize("eleven char"), KEY) is None and sorted_fingerprints("eleven char", KEY) == b""


def test_the_stored_form_is_the_sorted_distinct_set_and_distinct_windows_do_not_collide() -> None:
    rnd = random.Random(3)
    text = "".join(rnd.choice("ab \u00e9\U0001f600") for _ in range(200_000))  # few letters: many near-equal windows
    fps = fingerprints([text], KEY)
    assert len(fps) == len(set(_windows(text)))  # ~190,000 distinct windows, as many fingerprints
    stored = sorted_fingerprints(text, KEY)
    assert base64.b64encode(stored).decode() == encode_fps(fps)
    assert set(decode_fps(encode_fps(fps))) == fps


def _old_fingerprints(text: str, key: bytes) -> set[int]:
    """The function before schema v5: one keyed BLAKE2b per window (what a v4 store's rows hold)."""
    return {int.from_bytes(hashlib.blake2b(key + w.encode(), digest_size=8).digest(), "little") for w in _windows(text)}


def test_a_store_of_the_former_fingerprints_fails_closed_after_the_upgrade(dirs, http_server, second_http_server) -> None:
    write_private_store(dirs[0])
    policy = {
        "allow": ["files.*", "http.request"],
        "require_approval": [],
        "network": {"allow_hosts": ["*", f"127.0.0.1:{second_http_server.port}"], "allow_private": True},
    }
    asked: list[str] = []
    with Legs(workspace=dirs[0], state_dir=dirs[1], policy=policy) as legs:
        key = bytes.fromhex(legs._runtime.submit(legs._runtime.state.flow_key()).result())
    text = (dirs[0] / "private/customer.txt").read_text()
    old = _old_fingerprints(text, key)
    # a version-4 store: a session read the customer record under the former fingerprints
    with contextlib.closing(sqlite3.connect(dirs[1] / "state.sqlite3", isolation_level=None)) as db:
        db.execute(
            "INSERT INTO flow_index (session, call_id, action, label, fps, n, created) VALUES (?, ?, ?, ?, ?, ?, 0)",
            ("s", "read-7", "files.read", "private", encode_fps(old), len(old)),
        )
        db.execute("DELETE FROM agent_legs_schema WHERE version >= 5")
    with Legs(workspace=dirs[0], state_dir=dirs[1], policy=policy, approver=lambda r: asked.append(r.reason) or False) as legs:
        assert legs._runtime.submit(legs._runtime.state.schema_version()).result() == SCHEMA_VERSION == 5
        leak = legs.run(
            "http.request", {"method": "POST", "url": http_server.url("/collect"), "body": SECRET}, session="s", call_id="send-1"
        )
        other = legs.run(  # a session of after the upgrade is judged by its own reads
            "http.request",
            {"method": "POST", "url": http_server.url("/collect"), "body": SECRET},
            session="new",
            call_id="send-2",
        )
        trusted = legs.run(
            "http.request",
            {"method": "POST", "url": second_http_server.url("/in"), "body": SECRET},
            session="s",
            call_id="send-3",
        )
    assert leak.error is not None and leak.error.type == "approval_denied", leak.output
    assert "files.read call read-7 before the guard's fingerprints changed" in asked[0]
    assert other.ok and trusted.ok and len(asked) == 1
    assert len(http_server.requests) == 1  # only the new session's own words went out
    with contextlib.closing(sqlite3.connect(dirs[1] / "state.sqlite3")) as db:
        assert db.execute("SELECT label, fps FROM flow_index WHERE session='s' AND label != 'untrusted'").fetchall() == [
            ("unindexed", "")
        ]


@pytest.mark.parametrize("size", [12, 13, 4096])
def test_every_window_of_a_text_is_found_in_a_payload_that_carries_it(size: int) -> None:
    rnd = random.Random(size)
    private = "".join(rnd.choice("abcdefghij0123456789 ,.") for _ in range(size))
    index = fingerprints([private], KEY)
    for start in range(0, max(size - WINDOW, 0) + 1, max(size // 50, 1)):
        fragment = private[start : start + WINDOW]
        if len(normalize(fragment)) < WINDOW:
            continue
        assert fingerprints([f"prefix {fragment.upper()} suffix"], KEY) & index


def test_the_two_implementations_are_one_function() -> None:
    from agent_legs._flows._encodings import _hashes_by_integers, _hashes_by_numpy

    rnd = random.Random(11)
    alphabet = "ab c.\u00e9\u4e2d\U0001f600\U0010fffd"
    for size in (12, 13, 40, 511, 2000):
        for key in (KEY, bytes(16), b"\xff" * 16):
            norm = normalize("".join(rnd.choice(alphabet) for _ in range(size)))
            if len(norm) >= WINDOW:
                assert _hashes_by_integers(norm, key).tolist() == _hashes_by_numpy(norm, key).tolist()


def test_short_private_texts_never_load_numpy_and_store_the_same_rows() -> None:
    script = (
        "import sys, base64\n"
        "from agent_legs._flows._encodings import sorted_fingerprints, fingerprints\n"
        "from agent_legs._flows._index import encode_fps\n"
        f"key = bytes.fromhex({KEY.hex()!r})\n"
        f"short = sorted_fingerprints({SECRET!r}, key)\n"
        "assert 'numpy' not in sys.modules, 'numpy loaded for a short text'\n"
        "import numpy\n"
        f"assert short == sorted_fingerprints({SECRET!r}, key)\n"  # now the NumPy path: the same row
        f"assert base64.b64encode(short).decode() == encode_fps(fingerprints([{SECRET!r}], key))\n"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
