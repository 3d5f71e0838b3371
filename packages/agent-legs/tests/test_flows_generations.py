"""The exfiltration guard's re-read path (issue 20, round 3): a text read again asks the store nothing,
yet a session closed on another worker (another process included) is indexed anew, also when the close
runs while this worker reads its rows (``agent_legs._state._flowgen``: drop generations in memory
shared by every worker of one SQLite store). Real SQLite files, real processes, real servers on loopback.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from flows_corpus import write_private_store

from agent_legs import Legs
from agent_legs._state._flowgen import FlowGenerations


def _policy(partner_port: int) -> dict:
    return {
        "allow": ["files.*", "http.request"],
        "require_approval": [],
        "network": {"allow_hosts": ["*", f"127.0.0.1:{partner_port}"], "allow_private": True},
    }


def _legs(dirs, partner) -> Legs:
    write_private_store(dirs[0])
    return Legs(workspace=dirs[0], state_dir=dirs[1], policy=_policy(partner.port), approver=lambda r: False)


def _read(legs, session="s", call_id="read-7"):
    r = legs.run("files.read", {"path": "private/customer.txt"}, session=session, call_id=call_id)
    assert r.ok, r.output
    return r


def _private_rows(dirs, session="s") -> int:
    with contextlib.closing(sqlite3.connect(dirs[1] / "state.sqlite3")) as db:
        return db.execute("SELECT COUNT(*) FROM flow_index WHERE label='private' AND session=?", (session,)).fetchone()[0]


def _delete_rows(dirs, session="s") -> None:
    """What a drop's ``DELETE`` does when it commits (the generation marks are the caller's)."""
    with contextlib.closing(sqlite3.connect(dirs[1] / "state.sqlite3", isolation_level=None)) as db:
        db.execute("DELETE FROM flow_index WHERE session=?", (session,))


def test_a_text_read_again_asks_the_store_nothing(dirs, http_server, second_http_server) -> None:
    with _legs(dirs, second_http_server) as legs:
        _read(legs)
        _read(legs, call_id="read-again")  # the index now holds the row, read under a drop generation
        statements: list[str] = []
        legs._runtime.state._conn().set_trace_callback(statements.append)
        try:
            for i in range(3):
                _read(legs, call_id=f"read-{i}")
        finally:
            legs._runtime.state._conn().set_trace_callback(None)
        assert [s for s in statements if "flow_index" in s] == []
        assert _private_rows(dirs) == 1
        r = legs.run(
            "http.request",
            {"method": "POST", "url": http_server.url("/collect"), "body": "fyi: Maria Gonzalez, IBAN DE44 5001 0517"},
            session="s",
            call_id="send-1",
        )
    assert r.error is not None and r.error.type == "approval_denied", r.output
    assert http_server.requests == []


def test_a_session_closed_by_another_process_is_indexed_anew_when_read_again(dirs, http_server, second_http_server) -> None:
    closer = textwrap.dedent(
        f"""
        from pathlib import Path
        from agent_legs import Legs
        with Legs(workspace=Path({str(dirs[0])!r}), state_dir=Path({str(dirs[1])!r}), policy={_policy(second_http_server.port)!r}) as legs:
            legs.close_session("s")
        """
    )
    with _legs(dirs, second_http_server) as one:
        _read(one)
        _read(one, call_id="read-again")  # known now: a further read of the text would ask the store nothing
        done = subprocess.run([sys.executable, "-c", closer], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert _private_rows(dirs) == 0
        _read(one, call_id="read-8")  # the other process's drop changed the generation: written anew
        assert _private_rows(dirs) == 1
    with _legs(dirs, second_http_server) as two:  # a worker that never saw the session refuses the flow
        r = two.run(
            "http.request",
            {"method": "POST", "url": http_server.url("/collect"), "body": "fyi: Maria Gonzalez, IBAN DE44 5001 0517"},
            session="s",
            call_id="send-1",
        )
    assert r.error is not None and r.error.type == "approval_denied" and "read-8" in r.output, r.output
    assert http_server.requests == []


def test_a_drop_under_way_while_a_worker_reads_its_rows_is_not_missed(dirs, second_http_server) -> None:
    with _legs(dirs, second_http_server) as one, _legs(dirs, second_http_server) as two:
        gens = two._runtime.state._generations
        # 1. the drop has begun (not committed) when one reads the rows: they are not vouched for
        _read(one)
        gens.begin("s")
        _read(one, call_id="read-again")  # rows read while the drop is under way
        _delete_rows(dirs)  # the drop commits
        _read(one, call_id="read-8")  # before the drop's end is marked: still written anew
        gens.end("s")
        assert _private_rows(dirs) == 1
        # 2. rows vouched for, then a drop begins and commits: the begin mark alone makes one ask again
        _read(one, call_id="read-9")
        gens.begin("s")
        _delete_rows(dirs)
        _read(one, call_id="read-10")
        gens.end("s")
        assert _private_rows(dirs) == 1


def test_generations_are_shared_by_processes_and_a_drop_under_way_reads_as_unknown(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3-flowgen"
    one, two = FlowGenerations(path), FlowGenerations(path)
    before = one.read("s")
    assert before is not None
    two.begin("s")
    two.begin("s")  # two drops of the same session at once
    assert one.read("s") is None
    two.end("s")
    assert one.read("s") is None  # one of them still under way
    two.end("s")
    after = one.read("s")
    assert after is not None and after != before
    script = f"from pathlib import Path; from agent_legs._state._flowgen import FlowGenerations as G; g = G(Path({str(path)!r})); g.begin('s'); g.end('s')"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert one.read("s") not in (None, after)
    one.close()
    two.close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_generations_file_deleted_and_made_anew_never_vouches_for_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3-flowgen"
    one = FlowGenerations(path)
    before = one.read("s")
    path.unlink()  # an operator removes it while a worker runs; another worker makes it anew
    two = FlowGenerations(path)
    assert two.read("s") is not None
    now = one.read("s")  # the first worker maps the new file: its words start at 0 too, its id differs
    assert now is not None and now != before and now == two.read("s")
    two.begin("s")  # a drop through the new file is seen by the first worker
    assert one.read("s") is None
    two.end("s")
    assert one.read("s") not in (None, now)
    one.close()
    two.close()
