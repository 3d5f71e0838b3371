"""files.* against the real filesystem."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from agent_legs import Legs


@pytest.fixture
def legs(open_legs) -> Legs:
    return open_legs()


def test_write_read_roundtrip_creates_parents(legs, dirs) -> None:
    r = legs.run("files.write", {"path": "a/b/c.txt", "content": "héllo\n"})
    assert r.ok and r.artifacts[0].path == "a/b/c.txt" and r.artifacts[0].size == len("héllo\n".encode())
    assert r.artifacts[0].mime_type == "text/plain"
    assert (dirs[0] / "a/b/c.txt").read_text() == "héllo\n"
    assert legs.run("files.read", {"path": "a/b/c.txt"}).output == "héllo\n"
    assert legs.run("files.read", {"path": str(dirs[0] / "a/b/c.txt")}).output == "héllo\n"  # absolute inside


def test_write_modes(legs, dirs) -> None:
    assert legs.run("files.write", {"path": "f.txt", "content": "1", "mode": "create"}).ok
    r = legs.run("files.write", {"path": "f.txt", "content": "2", "mode": "create"})
    assert r.error.type == "invalid_input" and "already exists" in r.error.message
    assert legs.run("files.write", {"path": "f.txt", "content": "2", "mode": "append"}).ok
    assert (dirs[0] / "f.txt").read_text() == "12"
    assert legs.run("files.write", {"path": "f.txt", "content": "3"}).ok
    assert (dirs[0] / "f.txt").read_text() == "3"


def test_write_is_atomic_and_leaves_no_temp(legs, dirs) -> None:
    (dirs[0] / "f.txt").write_text("old")
    os.chmod(dirs[0] / "f.txt", 0o600)
    legs.run("files.write", {"path": "f.txt", "content": "new"})
    assert sorted(os.listdir(dirs[0])) == ["f.txt"]
    assert (os.stat(dirs[0] / "f.txt").st_mode & 0o777) == 0o600  # mode kept


def test_read_paging(legs, dirs) -> None:
    (dirs[0] / "long.txt").write_text("".join(f"line {i}\n" for i in range(100)))
    r = legs.run("files.read", {"path": "long.txt", "offset": 10, "limit": 5})
    assert r.output.startswith("line 10\nline 11\n") and "offset=15" in r.output
    assert r.data["next_offset"] == 15 and r.data["total_lines"] == 100
    r = legs.run("files.read", {"path": "long.txt", "offset": 95})
    assert r.output == "".join(f"line {i}\n" for i in range(95, 100)) and r.data["next_offset"] is None


def test_read_respects_output_budget(dirs) -> None:
    ws, st = dirs
    (ws / "big.txt").write_text("".join(f"{i:08d}\n" for i in range(20000)))
    with Legs(workspace=ws, state_dir=st, settings={"max_output_chars": 1000}) as legs:
        r = legs.run("files.read", {"path": "big.txt"})
        assert r.ok and len(r.output) <= 1000 and "call files_read with offset=" in r.output


def test_read_binary_is_refused_with_hint(legs, dirs) -> None:
    (dirs[0] / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    r = legs.run("files.read", {"path": "img.png"})
    assert r.error.type == "invalid_input" and "binary" in r.error.message and "code_run" in r.error.hint
    (dirs[0] / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert legs.run("files.read", {"path": "latin1.txt"}).error.type == "invalid_input"


def test_read_size_limit(dirs) -> None:
    ws, st = dirs
    (ws / "big.txt").write_text("x" * 5000)
    with Legs(workspace=ws, state_dir=st, policy={"files": {"max_read_bytes": 1000}}) as legs:
        r = legs.run("files.read", {"path": "big.txt"})
        assert r.ok and r.data["truncated"] and "max_read_bytes" in r.output


def test_missing_file_is_not_found(legs) -> None:
    r = legs.run("files.read", {"path": "nope.txt"})
    assert r.error.type == "not_found" and r.error.hint
    assert legs.run("files.read", {"path": "no/dir/x.txt"}).error.type == "not_found"


def test_edit(legs, dirs) -> None:
    (dirs[0] / "e.py").write_text("a = 1\nb = 1\nc = 2\n")
    r = legs.run("files.edit", {"path": "e.py", "old_text": "= 1", "new_text": "= 3"})
    assert r.error.type == "invalid_input" and "2 times" in r.error.message
    assert legs.run("files.edit", {"path": "e.py", "old_text": "= 1", "new_text": "= 3", "count": 2}).ok
    assert (dirs[0] / "e.py").read_text() == "a = 3\nb = 3\nc = 2\n"
    r = legs.run("files.edit", {"path": "e.py", "old_text": "c = 9", "new_text": "x"})
    assert r.error.type == "invalid_input" and "c = 2" in r.error.hint
    assert (dirs[0] / "e.py").read_text() == "a = 3\nb = 3\nc = 2\n"


def test_list(legs, dirs) -> None:
    for p in ["a.csv", "b.txt", "sub/c.csv", "sub/deep/d.csv"]:
        (dirs[0] / p).parent.mkdir(parents=True, exist_ok=True)
        (dirs[0] / p).write_text("x")
    r = legs.run("files.list", {})
    assert [e["path"] for e in r.data["entries"]] == ["a.csv", "b.txt", "sub"]
    r = legs.run("files.list", {"pattern": "*.csv", "recursive": True})
    assert [e["path"] for e in r.data["entries"]] == ["a.csv", "sub/c.csv", "sub/deep/d.csv"]
    assert legs.run("files.list", {"path": "b.txt"}).error.type == "invalid_input"


def test_search(legs, dirs) -> None:
    (dirs[0] / "src").mkdir()
    (dirs[0] / "src/a.py").write_text("def foo():\n    return 42\n")
    (dirs[0] / "notes.md").write_text("foo bar\n")
    (dirs[0] / "bin.dat").write_bytes(b"foo\x00\x01")
    r = legs.run("files.search", {"pattern": r"foo"})
    assert r.output.splitlines() == ["notes.md:1: foo bar", "src/a.py:1: def foo():"]
    r = legs.run("files.search", {"pattern": "foo", "glob": "**/*.py"})
    assert r.output == "src/a.py:1: def foo():"
    assert legs.run("files.search", {"pattern": "("}).error.type == "invalid_input"


def test_search_caps_matches(legs, dirs) -> None:
    (dirs[0] / "many.txt").write_text("hit\n" * 1000)
    r = legs.run("files.search", {"pattern": "hit"})
    assert r.data["matches"] == 1000 and r.data["shown"] == 200 and "800 more matches" in r.output


def test_move_copy(legs, dirs) -> None:
    (dirs[0] / "d").mkdir()
    (dirs[0] / "d/x.txt").write_text("x")
    assert legs.run("files.copy", {"source": "d", "destination": "e"}).ok
    assert (dirs[0] / "e/x.txt").read_text() == "x"
    assert legs.run("files.copy", {"source": "d", "destination": "e"}).error.type == "invalid_input"
    assert legs.run("files.move", {"source": "e/x.txt", "destination": "y.txt"}).ok
    assert (dirs[0] / "y.txt").exists() and not (dirs[0] / "e/x.txt").exists()
    r = legs.run("files.move", {"source": "y.txt", "destination": "d/x.txt"})
    assert r.error.type == "invalid_input" and "overwrite" in r.error.hint
    assert legs.run("files.move", {"source": "y.txt", "destination": "d/x.txt", "overwrite": True}).ok
    assert legs.run("files.move", {"source": "d", "destination": "d/inner"}).error.type == "invalid_input"
    assert legs.run("files.move", {"source": "zz", "destination": "q"}).error.type == "not_found"


def test_delete_is_recoverable(legs, dirs) -> None:
    ws, st = dirs
    (ws / "d").mkdir()
    (ws / "d/x.txt").write_text("precious")
    r = legs.run("files.delete", {"path": "d"})
    assert r.error.type == "invalid_input" and "recursive" in r.error.hint
    r = legs.run("files.delete", {"path": "d", "recursive": True})
    assert r.ok and not (ws / "d").exists()
    assert str(st) not in r.output  # the state dir is never shown to the model
    (slot,) = (st / "trash").iterdir()
    assert json.loads((slot / "manifest.json").read_text())["path"] == "d"
    assert (slot / "item/x.txt").read_text() == "precious"


def test_read_only_workspace(dirs) -> None:
    ws, st = dirs
    (ws / "a.txt").write_text("a")
    with Legs(workspace=ws, state_dir=st, policy={"files": {"read_only": True}}) as legs:
        assert legs.run("files.read", {"path": "a.txt"}).ok
        for action, args in [
            ("files.write", {"path": "b.txt", "content": "x"}),
            ("files.edit", {"path": "a.txt", "old_text": "a", "new_text": "b"}),
            ("files.delete", {"path": "a.txt"}),
            ("files.move", {"source": "a.txt", "destination": "c.txt"}),
            ("files.copy", {"source": "a.txt", "destination": "c.txt"}),
        ]:
            r = legs.run(action, args)
            assert r.error.type == "denied" and "policy.files.read_only" in r.error.message, action
    assert sorted(os.listdir(ws)) == ["a.txt"]


def test_files_actions_are_read_only_flagged(legs) -> None:
    flags = {a.name: a.read_only for a in legs.actions if a.name.startswith("files.")}
    assert flags == {
        "files.read": True,
        "files.list": True,
        "files.search": True,
        "files.write": False,
        "files.edit": False,
        "files.move": False,
        "files.copy": False,
        "files.delete": False,
    }


def test_save_unique(dirs) -> None:
    from agent_legs._policy import FilesPolicy
    from agent_legs.actions.files._workspace import Workspace

    ws = Workspace(dirs[0], FilesPolicy(), dirs[1])
    assert ws.save_unique("shots/page.png", b"1").path == "shots/page.png"
    assert ws.save_unique("shots/page.png", b"2").path == "shots/page-1.png"
    assert ws.save_unique("shots/page.png", b"3").path == "shots/page-2.png"
    assert ws.save_unique("noext", b"3").path == "noext"
    assert ws.save_unique("noext", b"3").path == "noext-1"
    assert (Path(dirs[0]) / "shots/page-1.png").read_bytes() == b"2"


def test_read_a_huge_single_line_makes_progress(dirs) -> None:
    ws, st = dirs
    (ws / "min.js").write_text("x" * 5000 + "\nsecond\n")
    with Legs(workspace=ws, state_dir=st, settings={"max_output_chars": 1000}) as legs:
        r = legs.run("files.read", {"path": "min.js"})
        assert r.ok and len(r.output) <= 1000 and "line 1 is 5001 characters" in r.output
        assert r.data["next_offset"] == 1  # the model can move on instead of looping
        assert legs.run("files.read", {"path": "min.js", "offset": 1}).output == "second\n"


def test_read_cut_at_the_limit_inside_a_character_is_still_text(dirs) -> None:
    ws, st = dirs
    (ws / "u.txt").write_text("é" * 1000)  # 2000 bytes; the limit cuts after an odd byte
    with Legs(workspace=ws, state_dir=st, policy={"files": {"max_read_bytes": 1001}}) as legs:
        r = legs.run("files.read", {"path": "u.txt"})
        assert r.ok and r.output.startswith("é" * 500) and r.data["truncated"]


def test_read_counts_lines_like_grep(legs, dirs) -> None:
    (dirs[0] / "ff.txt").write_text("a\x0cb\nc\r\nd")  # form feed is not a line break; CRLF is one
    r = legs.run("files.read", {"path": "ff.txt", "offset": 1})
    assert r.output == "c\r\nd" and r.data["total_lines"] == 3
    assert legs.run("files.search", {"pattern": "^c"}).output == "ff.txt:2: c"


def test_read_trailing_slash_on_a_file(legs, dirs) -> None:
    (dirs[0] / "a.txt").write_text("a")
    assert legs.run("files.read", {"path": "a.txt/"}).error.type == "invalid_input"


def test_edit_hints(legs, dirs) -> None:
    (dirs[0] / "e.py").write_text("def f():\n    return 1\n\ndef g():\n    return 1\n")
    r = legs.run("files.edit", {"path": "e.py", "old_text": "return 1", "new_text": "return 2"})
    assert r.error.type == "invalid_input" and "2 times" in r.error.message and "lines 2, 5" in r.error.message
    r = legs.run("files.edit", {"path": "e.py", "old_text": "def f():\n  return 1", "new_text": "x"})
    assert "whitespace" in r.error.hint
    r = legs.run("files.edit", {"path": "e.py", "old_text": "return 1", "new_text": "x", "count": 3})
    assert "count=2" in r.error.hint
    r = legs.run("files.edit", {"path": "e.py", "old_text": "def g():\n    return 1", "new_text": "def g():\n    return 2"})
    assert r.ok and r.data["first_line"] == 4
    assert (dirs[0] / "e.py").read_text().endswith("return 1\n\ndef g():\n    return 2\n")
    (dirs[0] / "b.bin").write_bytes(b"\x00\x01")
    assert legs.run("files.edit", {"path": "b.bin", "old_text": "x", "new_text": "y"}).error.type == "invalid_input"


def test_list_cap_and_empty(legs, dirs) -> None:
    assert legs.run("files.list", {}).output == ".: empty directory"
    (dirs[0] / "many").mkdir()
    for i in range(520):
        (dirs[0] / f"many/{i:04d}.txt").write_text("")
    r = legs.run("files.list", {"path": "many"})
    assert len(r.data["entries"]) == 500 and r.data["more"] == 20 and "20 more entries" in r.output
    r = legs.run("files.list", {"path": "many", "pattern": "000?.txt"})
    assert len(r.data["entries"]) == 10
    assert "no entries match" in legs.run("files.list", {"pattern": "*.csv"}).output
    assert legs.run("files.list", {"path": "missing"}).error.type == "not_found"


def test_search_glob_matches_names_at_any_depth_and_paths_with_slash(legs, dirs) -> None:
    for p in ["a.py", "src/b.py", "src/deep/c.py", "docs/d.md"]:
        (dirs[0] / p).parent.mkdir(parents=True, exist_ok=True)
        (dirs[0] / p).write_text("needle\n")
    r = legs.run("files.search", {"pattern": "needle", "glob": "*.py"})
    assert [ln.split(":")[0] for ln in r.output.splitlines()] == ["a.py", "src/b.py", "src/deep/c.py"]
    r = legs.run("files.search", {"pattern": "needle", "glob": "src/*.py"})
    assert r.output == "src/b.py:1: needle"
    r = legs.run("files.search", {"pattern": "needle", "path": "docs/d.md"})
    assert r.output == "docs/d.md:1: needle"


def test_search_long_line_shows_the_match(legs, dirs) -> None:
    (dirs[0] / "min.js").write_text("a" * 10_000 + "NEEDLE" + "b" * 10_000)
    r = legs.run("files.search", {"pattern": "NEEDLE"})
    assert "NEEDLE" in r.output and len(r.output) < 400


def test_search_catastrophic_regex_is_stopped(legs, dirs) -> None:
    (dirs[0] / "a.txt").write_text("a" * 40 + "!\n")
    start = time.monotonic()
    r = legs.run("files.search", {"pattern": r"^(a|aa)+$"})
    assert r.error.type == "invalid_input" and "backtracking" in r.error.message, r.output
    assert time.monotonic() - start < 10


def test_search_output_is_bounded(dirs) -> None:
    ws, st = dirs
    (ws / "wide.txt").write_text(("hit " + "x" * 250 + "\n") * 300)
    with Legs(workspace=ws, state_dir=st, settings={"max_output_chars": 2000}) as legs:
        r = legs.run("files.search", {"pattern": "hit"})
        assert r.ok and len(r.output) <= 2000 and r.output.endswith("narrow the pattern, path or glob]")
        assert r.data["matches"] == 300


def test_copy_reports_skipped_links_and_returns_artifacts(legs, dirs, tmp_path) -> None:
    ws = dirs[0]
    (ws / "d").mkdir()
    (ws / "d/a.txt").write_text("a")
    os.symlink(tmp_path, ws / "d/out")
    r = legs.run("files.copy", {"source": "d", "destination": "e"})
    assert r.ok and [a.path for a in r.artifacts] == ["e/a.txt"] and "d/out" in r.output
    assert not os.path.lexists(ws / "e/out")


def test_move_overwrite_keeps_the_replaced_file_in_the_trash(legs, dirs) -> None:
    ws, st = dirs
    (ws / "a.txt").write_text("new")
    (ws / "b.txt").write_text("old")
    assert legs.run("files.move", {"source": "a.txt", "destination": "b.txt", "overwrite": True}).ok
    assert (ws / "b.txt").read_text() == "new"
    (slot,) = (st / "trash").iterdir()
    assert (slot / "item").read_text() == "old"


def test_delete_returns_a_trash_id_that_restores(legs, dirs) -> None:
    from agent_legs._policy import FilesPolicy
    from agent_legs.actions.files._workspace import Workspace

    (dirs[0] / "x.txt").write_text("precious")
    r = legs.run("files.delete", {"path": "x.txt"})
    assert r.ok and r.data["trash_id"] in r.output
    Workspace(dirs[0], FilesPolicy(), dirs[1]).restore(r.data["trash_id"])
    assert (dirs[0] / "x.txt").read_text() == "precious"


def test_search_and_recursive_list_stop_at_the_deadline(dirs) -> None:
    """The runtime cancels at the deadline; the worker thread sees the flag and stops too."""
    ws, st = dirs
    for i in range(100):
        (ws / f"d{i % 10}").mkdir(exist_ok=True)
        (ws / f"d{i % 10}/f{i}.txt").write_text("line with text\n" * 2000)
    for i in range(10_000):  # a wide tree for the listing
        (ws / f"d{i % 10}/e{i}").touch()
    policy = {"files": {"timeout_s": 0.05}}
    with Legs(workspace=ws, state_dir=st, policy=policy) as legs:
        for action, args in [("files.search", {"pattern": r"(\w+\s?)+z"}), ("files.list", {"recursive": True})]:
            start = time.monotonic()
            r = legs.run(action, args)
            assert r.error.type == "timeout", r.output
            assert time.monotonic() - start < 2
            time.sleep(0.2)  # the flag is seen at the next file
            cpu = time.process_time()
            time.sleep(0.3)
            assert time.process_time() - cpu < 0.1, f"{action} still works after the deadline"


def test_files_spans_and_log(dirs, read_log) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ws, st = dirs
    with Legs(workspace=ws, state_dir=st, tracer_provider=provider) as legs:
        legs.run("files.write", {"path": "a.txt", "content": "x"})
        legs.run("files.read", {"path": "../etc/passwd"})
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["execute_tool files_write", "execute_tool files_read"]
    assert spans[1].attributes["agent_legs.outcome"] == "denied"
    assert [e["outcome"] for e in read_log()] == ["ok", "denied"]
