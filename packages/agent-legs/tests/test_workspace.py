"""Workspace, directly: path checks, fd walks, atomic writes, unique names, trash, against the real FS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from agent_legs import ActionError
from agent_legs._matching import glob_to_regex, path_matcher
from agent_legs._policy import FilesPolicy
from agent_legs.actions.files._text import decode_text
from agent_legs.actions.files._workspace import Workspace


@pytest.fixture
def ws(dirs: tuple[Path, Path]) -> Workspace:
    return Workspace(dirs[0], FilesPolicy(max_write_bytes=10_000), dirs[1])


def err(fn, *args, **kwargs) -> ActionError:
    with pytest.raises(ActionError) as exc:
        fn(*args, **kwargs)
    return exc.value


# -- check -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "rel"),
    [
        ("a.txt", "a.txt"),
        ("./a.txt", "a.txt"),
        ("a//b/./c.txt", "a/b/c.txt"),
        ("a/b/", "a/b"),
        ("", "."),
        (".", "."),
        ("./", "."),
        ("  a.txt  ", "a.txt"),
        ("données/résumé.txt", "données/résumé.txt"),
        ("...", "..."),
        ("a..b", "a..b"),
        ("%2e%2e/x", "%2e%2e/x"),
        ("．．/x", "．．/x"),
    ],
)
def test_check_normalises(ws: Workspace, path: str, rel: str) -> None:
    assert ws.check(path) == rel


def test_check_accepts_absolute_paths_inside(ws: Workspace) -> None:
    assert ws.check(str(ws.root / "a/b.txt")) == "a/b.txt"
    assert ws.check(str(ws.root)) == "."


@pytest.mark.parametrize(
    ("path", "etype", "text"),
    [
        ("../x", "denied", "escapes"),
        ("a/../../x", "denied", "escapes"),
        ("..", "denied", "escapes"),
        ("/etc/passwd", "denied", "outside the workspace"),
        ("//etc/passwd", "denied", "outside the workspace"),
        ("~/x", "denied", "home"),
        ("a\x00b", "invalid_input", "NUL"),
        ("a\x7fb", "invalid_input", "control"),
        ("a\udc80b", "invalid_input", "Unicode"),
        ("a\\b", "invalid_input", "separator"),
        ("C:/x", "invalid_input", "drive"),
        ("c:x", "invalid_input", "drive"),
        ("x" * 256, "invalid_input", "255"),
        ("/".join(["d" * 200] * 21), "invalid_input", "4096"),
        (".env", "denied", "policy.files.deny"),
        ("a/.env/b", "denied", "policy.files.deny"),
        ("a/b/c.pem", "denied", "policy.files.deny"),
        (".agent-legs-tmp-1234", "denied", "temporary"),
    ],
)
def test_check_refuses(ws: Workspace, path: str, etype: str, text: str) -> None:
    e = err(ws.check, path)
    assert e.type == etype and (text in e.message or text in (e.rule or "")), (e.message, e.rule)
    if etype == "denied":
        assert e.rule


def test_deny_rule_is_named(ws: Workspace) -> None:
    e = err(ws.check, "keys/server.pem")
    assert e.rule == "policy.files.deny['**/*.pem']"
    e = err(ws.check, "../x")
    assert e.rule == "workspace confinement"


def test_deny_globs_ignore_case_and_basename_without_slash(dirs) -> None:
    w = Workspace(dirs[0], FilesPolicy(deny=["secret*", "conf/*.ini"]), dirs[1])
    assert err(w.check, "a/b/secret.txt").rule == "policy.files.deny['secret*']"
    # issue 13.7: case-insensitive (was case-sensitive: 'a/Secret.txt' was readable)
    assert err(w.check, "a/Secret.txt").rule == "policy.files.deny['secret*']"
    assert err(w.check, "CONF/App.INI").rule == "policy.files.deny['conf/*.ini']"
    assert err(w.check, "conf/app.ini").type == "denied"
    assert w.check("x/conf/app.ini") == "x/conf/app.ini"  # a pattern with '/' matches the whole path
    assert err(w.check, "conf/app.ini/inner.txt").type == "denied"  # a denied directory's contents too


def test_read_only_refuses_writes_only(dirs) -> None:
    w = Workspace(dirs[0], FilesPolicy(read_only=True), dirs[1])
    (dirs[0] / "a.txt").write_text("a")
    assert w.read_bytes("a.txt") == b"a"
    for fn, args in [
        (w.write_bytes, ("b.txt", b"x")),
        (w.save_unique, ("b.txt", b"x")),
        (w.mkdir, ("d",)),
        (w.delete, ("a.txt",)),
        (w.move, ("a.txt", "c.txt")),
        (w.copy, ("a.txt", "c.txt")),
    ]:
        e = err(fn, *args)
        assert e.type == "denied" and e.rule == "policy.files.read_only", fn
    assert sorted(os.listdir(dirs[0])) == ["a.txt"]


# -- reading -----------------------------------------------------------------------------------
def test_read_bytes_and_limits(ws: Workspace, dirs) -> None:
    (dirs[0] / "f.bin").write_bytes(b"0123456789")
    assert ws.read_bytes("f.bin") == b"0123456789"
    assert ws.read_head("f.bin", 4) == (b"0123", 10)
    e = err(ws.read_bytes, "f.bin", max_bytes=5)
    assert e.type == "invalid_input" and "10 bytes" in e.message
    assert err(ws.read_bytes, "missing").type == "not_found"
    assert err(ws.read_bytes, "no/such/dir/f").type == "not_found"
    (dirs[0] / "d").mkdir()
    assert err(ws.read_bytes, "d").type == "invalid_input"
    assert err(ws.read_bytes, "f.bin/").type == "invalid_input"
    assert err(ws.read_bytes, "f.bin/x").message == "'f.bin' is not a directory"


def test_open_read_streams_and_refuses_special_files(ws: Workspace, dirs) -> None:
    (dirs[0] / "big.bin").write_bytes(os.urandom(3 << 20))
    with ws.open_read("big.bin") as f:
        assert f.read() == (dirs[0] / "big.bin").read_bytes()
    os.mkfifo(dirs[0] / "fifo")
    start = time.monotonic()
    e = err(ws.open_read, "fifo")  # O_NONBLOCK: no writer, but it must not hang
    assert e.type == "denied" and "special file" in e.rule and time.monotonic() - start < 1
    os.symlink("big.bin", dirs[0] / "link")
    assert err(ws.open_read, "link").rule == "workspace confinement (symlink)"


def test_hard_links_are_refused_for_reading_but_overwrite_breaks_them(ws: Workspace, dirs, tmp_path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    os.link(outside, dirs[0] / "alias.txt")
    assert err(ws.read_bytes, "alias.txt").rule == "workspace confinement (hard link)"
    ws.write_bytes("alias.txt", b"new")  # rename replaces the name; the other link keeps its data
    assert outside.read_text() == "outside" and (dirs[0] / "alias.txt").read_bytes() == b"new"


def test_artifact(ws: Workspace) -> None:
    ws.write_bytes("charts/a.png", b"\x89PNG")
    art = ws.artifact("charts/a.png")
    assert (art.path, art.mime_type, art.size) == ("charts/a.png", "image/png", 4)
    assert ws.artifact("charts/a.png").model_dump() == art.model_dump()
    assert ws.write_bytes("x.unknownext", b"1").mime_type == "application/octet-stream"


def test_decode_text() -> None:
    assert decode_text("é".encode()) == "é"
    assert decode_text(b"a\x00b") is None
    assert decode_text(b"\xff\xfe") is None
    cut = "aé".encode()[:2]  # a multi-byte character cut at a size limit is not "binary"
    assert decode_text(cut, complete=False) == "a"
    assert decode_text(cut, complete=True) is None


# -- writing -----------------------------------------------------------------------------------
def test_write_modes_and_parents(ws: Workspace, dirs) -> None:
    art = ws.write_bytes("a/b/c.txt", b"1")
    assert (art.path, art.size, art.mime_type) == ("a/b/c.txt", 1, "text/plain")
    ws.write_bytes("a/b/c.txt", b"2", mode="append")
    assert (dirs[0] / "a/b/c.txt").read_bytes() == b"12"
    e = err(ws.write_bytes, "a/b/c.txt", b"3", mode="create")
    assert e.type == "invalid_input" and "already exists" in e.message
    ws.write_bytes("a/b/c.txt", b"3")
    assert (dirs[0] / "a/b/c.txt").read_bytes() == b"3"
    assert err(ws.write_bytes, "a/b", b"x").message == "'a/b' is a directory"
    assert err(ws.write_bytes, ".", b"x").type == "invalid_input"
    assert err(ws.write_bytes, "a/b/c.txt/d", b"x").type == "invalid_input"


def test_write_limit_names_the_rule(ws: Workspace, dirs) -> None:
    e = err(ws.write_bytes, "big", b"x" * 10_001)
    assert e.type == "invalid_input" and "policy.files.max_write_bytes" in e.message
    ws.write_bytes("f", b"x" * 6000)
    e = err(ws.write_bytes, "f", b"x" * 6000, mode="append")
    assert "policy.files.max_write_bytes" in e.message and (dirs[0] / "f").stat().st_size == 6000
    assert ws.write_bytes("big", b"x" * 20_000, max_bytes=50_000).size == 20_000  # callers' own limit


def test_write_is_atomic_keeps_mode_and_leaves_no_temp(ws: Workspace, dirs) -> None:
    (dirs[0] / "f.sh").write_text("old")
    os.chmod(dirs[0] / "f.sh", 0o750)
    inode = os.stat(dirs[0] / "f.sh").st_ino
    ws.write_bytes("f.sh", b"new")
    st = os.stat(dirs[0] / "f.sh")
    assert st.st_ino != inode  # a new file renamed over the old one: readers see old or new, never half
    assert (st.st_mode & 0o777) == 0o750
    assert os.listdir(dirs[0]) == ["f.sh"]


def test_concurrent_readers_never_see_a_partial_write(ws: Workspace, dirs) -> None:
    a, b = b"A" * 200_000, b"B" * 200_000
    ws = Workspace(dirs[0], FilesPolicy(max_write_bytes=1 << 20), dirs[1])
    ws.write_bytes("f", a)
    stop = threading.Event()
    seen: set[bytes] = set()

    def reader() -> None:
        while not stop.is_set():
            data = (dirs[0] / "f").read_bytes()
            seen.add(data[:1] + data[-1:] + bytes([len(data) == 200_000]))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(100):
            ws.write_bytes("f", b if i % 2 else a)
    finally:
        stop.set()
        t.join()
    assert seen <= {b"AA\x01", b"BB\x01"}


def test_leftover_temp_files_are_hidden(ws: Workspace, dirs) -> None:
    (dirs[0] / ".agent-legs-tmp-deadbeef0000").write_text("crash leftover")
    (dirs[0] / "a.txt").write_text("a")
    assert [e.path for e in ws.iter_entries()] == ["a.txt"]


def test_save_unique(ws: Workspace, dirs) -> None:
    assert ws.save_unique("shots/page.png", b"1").path == "shots/page.png"
    assert ws.save_unique("shots/page.png", b"2").path == "shots/page-1.png"
    assert ws.save_unique("shots/page.png", b"3").path == "shots/page-2.png"
    assert ws.save_unique("a.tar.gz", b"1").path == "a.tar.gz"
    assert ws.save_unique("a.tar.gz", b"2").path == "a-1.tar.gz"
    assert ws.save_unique(".hidden", b"2").path == ".hidden"
    assert ws.save_unique(".hidden", b"2").path == ".hidden-1"
    assert (dirs[0] / "shots/page-1.png").read_bytes() == b"2"
    assert err(ws.save_unique, "../x.png", b"1").type == "denied"


def test_save_unique_is_race_free(ws: Workspace, dirs) -> None:
    names: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(10):
            art = ws.save_unique("out/chart.png", f"{n}-{i}".encode())
            with lock:
                names.append(art.path)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(names) == len(set(names)) == 80
    contents = {(dirs[0] / p).read_bytes() for p in names}
    assert len(contents) == 80  # no write clobbered another


# -- listing and walking ----------------------------------------------------------------------
def test_iter_entries(ws: Workspace, dirs, tmp_path) -> None:
    root = dirs[0]
    (root / "b").mkdir()
    (root / "b/x.txt").write_text("xx")
    (root / "a.txt").write_text("a")
    (root / ".env").write_text("k")
    os.symlink(tmp_path, root / "link")
    entries = {e.path: (e.kind, e.size) for e in ws.iter_entries(recursive=True)}
    assert entries == {"a.txt": ("file", 1), "b": ("dir", 0), "b/x.txt": ("file", 2), "link": ("symlink", 0)}
    assert [e.path for e in ws.iter_entries("b")] == ["b/x.txt"]
    assert err(lambda: list(ws.iter_entries("link"))).rule == "workspace confinement (symlink)"
    cancel = threading.Event()
    cancel.set()
    assert err(lambda: list(ws.iter_entries(recursive=True, cancel=cancel))).type == "timeout"


def test_iter_files_skips_what_cannot_be_read(ws: Workspace, dirs, tmp_path) -> None:
    root = dirs[0]
    (root / "d").mkdir()
    (root / "d/a.py").write_text("a")
    (root / "d/b.md").write_text("b")
    (root / "d/c.pem").write_text("secret")
    os.mkfifo(root / "d/fifo")
    os.symlink(tmp_path, root / "d/out")
    (tmp_path / "o.txt").write_text("outside")
    os.link(tmp_path / "o.txt", root / "d/hl.txt")
    assert [p for p, _, _ in ws.iter_files(".", 100)] == ["d/a.py", "d/b.md"]
    assert [p for p, _, _ in ws.iter_files("d", 100, match=path_matcher("*.py"))] == ["d/a.py"]
    assert list(ws.iter_files("d/b.md", 100)) == [("d/b.md", b"b", 1)]


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("*.py", ["a.py", "x/y/a.py"], ["a.pyc", "a.py/x"]),
        ("src/**/*.py", ["src/a.py", "src/x/y/a.py"], ["a.py", "lib/src/a.py"]),
        ("**/test_*.py", ["test_a.py", "t/test_a.py"], ["t/atest_a.py"]),
        ("data/?.csv", ["data/a.csv"], ["data/ab.csv", "x/data/a.csv"]),
        ("[ab].txt", ["a.txt", "b.txt"], ["c.txt"]),
        ("[!ab].txt", ["c.txt"], ["a.txt"]),
        ("[", ["["], ["a"]),
        ("[z-a]", ["[z-a]"], ["b"]),
    ],
)
def test_globs(pattern: str, yes: list[str], no: list[str]) -> None:
    match = path_matcher(pattern)
    assert all(match(p) for p in yes), [p for p in yes if not match(p)]
    assert not any(match(p) for p in no), [p for p in no if match(p)]
    assert glob_to_regex("**").match("a/b/c")


# -- move / copy -------------------------------------------------------------------------------
def test_move(ws: Workspace, dirs) -> None:
    root = dirs[0]
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    assert ws.move("a.txt", "d/e/a.txt") == "d/e/a.txt"  # parents created
    e = err(ws.move, "b.txt", "d/e/a.txt")
    assert e.type == "invalid_input" and "overwrite" in e.hint
    ws.move("b.txt", "d/e/a.txt", overwrite=True)
    assert (root / "d/e/a.txt").read_text() == "b"
    (replaced,) = ws.trash()  # the replaced file is recoverable
    assert replaced["path"] == "d/e/a.txt"
    assert err(ws.move, "d", "d/e/x").message == "cannot move 'd' into itself"
    assert err(ws.move, "nope", "x").type == "not_found"
    (root / "f").write_text("f")
    assert "directory" in err(ws.move, "d", "f", overwrite=True).message
    assert "directory" in err(ws.move, "f", "d", overwrite=True).message
    assert err(ws.move, "f", "newdir/").type == "invalid_input"
    assert ws.move("f", "f") == "f"


def test_copy_file_and_tree(ws: Workspace, dirs, tmp_path) -> None:
    root = dirs[0]
    (root / "src/sub").mkdir(parents=True)
    (root / "src/a.txt").write_text("a")
    (root / "src/sub/b.txt").write_text("b")
    os.chmod(root / "src/a.txt", 0o600)
    (root / "src/.env").write_text("SECRET=1")
    os.symlink(tmp_path, root / "src/out")
    res = ws.copy("src", "dst")
    assert sorted(a.path for a in res.artifacts) == ["dst/a.txt", "dst/sub/b.txt"]
    assert res.skipped == ["src/out"]
    assert (root / "dst/sub/b.txt").read_text() == "b" and not (root / "dst/.env").exists()
    assert (os.stat(root / "dst/a.txt").st_mode & 0o777) == 0o600
    assert not (root / "dst/out").exists()
    assert err(ws.copy, "src", "dst").type == "invalid_input"
    (root / "src/a.txt").write_text("A")
    ws.copy("src", "dst", overwrite=True)
    assert (root / "dst/a.txt").read_text() == "A"
    assert [m["path"] for m in ws.trash()] == ["dst"]  # the replaced tree is recoverable
    assert ws.copy("src/a.txt", "one.txt").artifacts[0].path == "one.txt"
    assert err(ws.copy, "src/a.txt", "one.txt").type == "invalid_input"
    assert err(ws.copy, "src", "src/inner").type == "invalid_input"
    assert err(ws.copy, "src/out", "x").rule == "workspace confinement (symlink)"


def test_copy_over_the_limit_or_cancelled_leaves_nothing(ws: Workspace, dirs) -> None:
    root = dirs[0]
    (root / "src").mkdir()
    for i in range(5):
        (root / f"src/{i}.txt").write_text("x" * 3000)  # 15 KB total, limit 10 KB
    before = sorted(p.name for p in root.iterdir())
    e = err(ws.copy, "src", "dst")
    assert e.type == "invalid_input" and "policy.files.max_write_bytes" in e.message
    assert sorted(p.name for p in root.iterdir()) == before  # no dst, no temp directory
    (root / "small").mkdir()
    (root / "small/a").write_text("a")
    cancel = threading.Event()
    cancel.set()
    assert err(ws.copy, "small", "dst", cancel=cancel).type == "timeout"
    assert not (root / "dst").exists() and not any(p.name.startswith(".agent-legs") for p in root.iterdir())


# -- delete / trash ----------------------------------------------------------------------------
def test_delete_restore(ws: Workspace, dirs) -> None:
    root, state = dirs
    (root / "d").mkdir()
    (root / "d/x.txt").write_text("precious")
    (root / "empty").mkdir()
    assert err(ws.delete, "d").hint == "Pass recursive=true to delete it and its contents."
    ws.delete("empty")  # an empty directory needs no recursive flag
    tid = ws.delete("d", recursive=True)
    assert not (root / "d").exists()
    manifest = json.loads((state / "trash" / tid / "manifest.json").read_text())
    assert manifest["path"] == "d" and manifest["kind"] == "dir" and manifest["trash_id"] == tid
    assert (state / "trash" / tid / "item/x.txt").read_text() == "precious"
    assert ws.restore(tid) == "d"
    assert (root / "d/x.txt").read_text() == "precious" and not (state / "trash" / tid).exists()
    tid = ws.delete("d/x.txt")
    (root / "d/x.txt").write_text("new")
    assert err(ws.restore, tid).type == "invalid_input"
    assert ws.restore(tid, destination="d/x.restored.txt") == "d/x.restored.txt"
    assert (root / "d/x.restored.txt").read_text() == "precious"
    assert err(ws.restore, "../../etc").type == "invalid_input"
    assert err(ws.restore, "20260101T000000-00000000").type == "not_found"
    assert err(ws.delete, "nope").type == "not_found"
    assert err(ws.delete, ".").type == "invalid_input"


def test_delete_a_symlink_removes_the_link_not_the_target(ws: Workspace, dirs, tmp_path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target/keep.txt").write_text("keep")
    os.symlink(tmp_path / "target", dirs[0] / "link")
    ws.delete("link", recursive=True)
    assert (tmp_path / "target/keep.txt").read_text() == "keep" and not os.path.lexists(dirs[0] / "link")


# -- races and the state directory ---------------------------------------------------------------
def test_fd_walk_pins_the_directory_it_checked(ws: Workspace, dirs, tmp_path) -> None:
    """Between walking to a directory and opening the file in it, the directory is renamed away
    and a symlink to the outside takes its place: the open, relative to the held fd, still reads
    the original directory's file and never the outside one."""
    root = dirs[0]
    (root / "race").mkdir()
    (root / "race/f.txt").write_text("inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/f.txt").write_text("outside")
    with ws._dir(["race"]) as dfd:
        os.rename(root / "race", root / "moved")
        os.symlink(tmp_path / "outside", root / "race")
        fd = ws._open_file(dfd, "f.txt", "race/f.txt")
        try:
            assert os.read(fd, 100) == b"inside"
        finally:
            os.close(fd)
    # and a fresh walk refuses the swapped-in symlink
    assert err(ws.read_bytes, "race/f.txt").rule == "workspace confinement (symlink)"


def test_intermediate_symlink_inside_is_refused_too(ws: Workspace, dirs) -> None:
    (dirs[0] / "real").mkdir()
    (dirs[0] / "real/f").write_text("x")
    os.symlink("real", dirs[0] / "alias")
    assert err(ws.read_bytes, "alias/f").rule == "workspace confinement (symlink)"
    assert err(ws.write_bytes, "alias/g", b"x").rule == "workspace confinement (symlink)"
    assert not (dirs[0] / "real/g").exists()


def test_state_dir_moved_inside_is_unreachable_at_any_depth(tmp_path: Path) -> None:
    root, state = tmp_path / "ws", tmp_path / "st"
    root.mkdir()
    (state / "trash/slot/item").mkdir(parents=True)
    (state / "trash/slot/item/secret.txt").write_text("s")
    os.rename(state, root / "st")
    w = Workspace(root, FilesPolicy(), root / "st")
    for path in ["st/trash/slot/item/secret.txt", "st/x"]:
        e = err(w.read_bytes, path)
        assert e.type == "denied" and e.rule == "workspace confinement (state dir)", path
    assert err(w.write_bytes, "st/trash/new.txt", b"x").rule == "workspace confinement (state dir)"
    assert [e.path for e in w.iter_entries(recursive=True)] == []
    assert list(w.iter_files(".", 100)) == []
    (root / "other").mkdir()
    for fn, args, kwargs in [
        (w.delete, ("st",), {"recursive": True}),
        (w.move, ("st", "moved"), {}),
        (w.move, ("other", "st"), {"overwrite": True}),
        (w.copy, ("st", "copy"), {}),
        (w.copy, ("other", "st"), {"overwrite": True}),
    ]:
        e = err(fn, *args, **kwargs)
        assert e.rule == "workspace confinement (state dir)", (fn, args, e)
    assert (root / "st/trash/slot/item/secret.txt").read_text() == "s"


def test_state_dir_bind_mounted_into_the_workspace_is_unreachable(tmp_path: Path) -> None:
    """A bind mount (same inode, no symlink to see) in a private mount namespace."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        from agent_legs_testing import component_missing

        component_missing(
            "unshare -m (root)",
            "a private mount namespace is needed for a bind mount",
            "run the tests as root with util-linux installed",
        )
    root, state = tmp_path / "ws", tmp_path / "st"
    (root / "mnt").mkdir(parents=True)
    (state / "trash").mkdir(parents=True)
    (state / "trash/secret.txt").write_text("s")
    script = textwrap.dedent(f"""
        import subprocess, sys
        subprocess.run(["mount", "--bind", {str(state)!r}, {str(root / "mnt")!r}], check=True)
        from agent_legs._policy import FilesPolicy
        from agent_legs.actions.files._workspace import Workspace
        from agent_legs import ActionError
        w = Workspace({str(root)!r}, FilesPolicy(), {str(state)!r})
        assert open({str(root / "mnt/trash/secret.txt")!r}).read() == "s"  # the mount works
        for path in ["mnt/trash/secret.txt", "mnt/trash"]:
            try:
                w.read_bytes(path)
            except ActionError as e:
                assert e.rule == "workspace confinement (state dir)", e.rule
            else:
                sys.exit("read through the bind mount: " + path)
        assert [e.path for e in w.iter_entries(recursive=True)] == [], list(w.iter_entries(recursive=True))
        print("ok")
    """)
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0 and "unshare failed" in proc.stderr:
        from agent_legs_testing import component_missing

        component_missing("unshare -m", proc.stderr.strip(), "run the tests as root (CAP_SYS_ADMIN)")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# -- sweeping temporary files (issue 22.2) --------------------------------------------------------
def test_sweep_removes_only_abandoned_temp_names_of_our_pattern(ws: Workspace, dirs, tmp_path) -> None:
    from agent_legs.actions.files._temp import owner_tag, temp_name

    root = dirs[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / "sub").mkdir()
    old = time.time() - 7200
    names = {
        "dead-owner": f".agent-legs-tmp-{owner_tag()}-{dead.pid}-{'a' * 12}",
        "dead-owner-dir": f"sub/.agent-legs-tmp-{owner_tag()}-{dead.pid}-{'b' * 12}",
        "ours-now": temp_name(),
        "foreign-recent": f".agent-legs-tmp-0badc0de-{dead.pid}-{'c' * 12}",
        "foreign-old": f".agent-legs-tmp-0badc0de-1-{'d' * 12}",
        "legacy-old": f".agent-legs-tmp-{'e' * 12}",
        "legacy-recent": f".agent-legs-tmp-{'f' * 12}",
        "not-our-pattern-old": ".agent-legs-tmp-notours",
        "upper-old": f".AGENT-LEGS-TMP-{'1' * 12}",
    }
    for key, name in names.items():
        p = root / name
        if key.endswith("-dir"):
            p.mkdir()
            (p / "inner.bin").write_bytes(b"i" * 100)
        else:
            p.write_bytes(b"t" * 10)
        if key.endswith("-old"):
            os.utime(p, (old, old))
    outside = tmp_path / "outside-temp"
    outside.mkdir()
    (outside / f".agent-legs-tmp-{owner_tag()}-{dead.pid}-{'9' * 12}").write_text("not ours to touch")
    os.symlink(outside, root / "link")  # never followed

    result = ws.sweep_temp()
    removed = {"dead-owner", "dead-owner-dir", "foreign-old", "legacy-old"}
    assert sorted(result.removed) == sorted(names[k] for k in removed)
    assert result.bytes == 10 * 3 + 100 and result.complete
    for key, name in names.items():
        assert (root / name).exists() == (key not in removed), key
    assert len(list(outside.iterdir())) == 1


def test_sweep_stops_at_its_entry_cap(ws: Workspace, dirs) -> None:
    for i in range(20):
        (dirs[0] / f"f{i}.txt").write_text("x")
    assert not ws.sweep_temp(max_entries=5).complete and ws.sweep_temp().complete


def test_cancel_commit_point() -> None:
    from agent_legs.actions.files._cancel import Cancel

    c = Cancel()
    c.commit()
    assert c.cancel() is True  # the worker had passed its commit point: its effect may be in place
    c = Cancel()
    assert c.cancel() is False
    with pytest.raises(ActionError) as exc:
        c.commit()  # a cancelled worker never commits
    assert exc.value.type == "timeout"


def test_temp_names_carry_their_owner(ws: Workspace, dirs) -> None:
    from agent_legs.actions.files._temp import TMP_NAME, temp_name

    m = TMP_NAME.match(temp_name())
    assert m and int(m.group(2)) == os.getpid()
