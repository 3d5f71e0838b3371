"""Attack corpus against workspace confinement: every case is refused and changes nothing on disk."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from agent_legs import ActionError, Legs
from agent_legs._policy import FilesPolicy
from agent_legs.actions.files._workspace import Workspace

SECRET = "outside-secret-content"


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under the roots with its type and content hash (symlinks by target)."""
    out: dict[str, str] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if (
                    p.name
                    in (
                        "actions.jsonl",
                        ".actions.jsonl.lock",  # the log's rotation lock and counter (made with the log)
                        "budgets.sqlite3",
                        "budgets.sqlite3-wal",
                        "budgets.sqlite3-shm",
                        "state.sqlite3",
                        "state.sqlite3-wal",
                        "state.sqlite3-shm",
                    )
                    or "actions.pending" in p.parts
                ):  # the state store; the action log, its lock file and its intent journal
                    continue
                if p.is_symlink():
                    out[str(p)] = "link:" + os.readlink(p)
                elif p.is_file():
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
                else:
                    out[str(p)] = "dir" if p.is_dir() else "other"
    return out


@pytest.fixture
def world(tmp_path: Path):
    ws, st, outside = tmp_path / "ws", tmp_path / "state", tmp_path / "outside"
    for d in (ws, st, outside):
        d.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "dir").mkdir()
    (outside / "dir/inner.txt").write_text(SECRET)
    (st / "private.txt").write_text(SECRET)
    (ws / "ok.txt").write_text("fine")
    (ws / "sub").mkdir()
    (ws / "sub/ok.txt").write_text("fine")
    (ws / ".env").write_text("API_KEY=x")
    (ws / "sub/.env").write_text("API_KEY=y")
    (ws / "server.pem").write_text("-----BEGIN")
    (ws / "keys").mkdir()
    (ws / "keys/id_rsa").write_text("-----BEGIN OPENSSH")
    os.symlink(outside / "secret.txt", ws / "link_file")
    os.symlink(outside / "dir", ws / "link_dir")
    os.symlink("../outside/secret.txt", ws / "rel_link")
    os.symlink(st, ws / "link_state")
    os.symlink("/dev/zero", ws / "devzero")
    os.symlink("loop_b", ws / "loop_a")
    os.symlink("loop_a", ws / "loop_b")
    os.symlink(outside, ws / "sub/escape")
    os.mkfifo(ws / "fifo")
    os.link(outside / "secret.txt", ws / "hardlink.txt")
    os.link(st / "private.txt", ws / "statelink.txt")
    os.symlink("/dev", ws / "devdir")
    (ws / "big.txt").write_text("x" * 2000)
    # the default deny list in other cases (issue 13.7): a case-insensitive file system aliases them
    (ws / ".ENV").write_text("API_KEY=upper")
    (ws / "server.PEM").write_text("-----BEGIN upper")
    (ws / "keys/ID_RSA").write_text("-----BEGIN OPENSSH upper")
    (ws / "Keys").mkdir()
    (ws / "Keys/Id_Ed25519").write_text("-----BEGIN OPENSSH mixed")
    # a denied directory's contents (issue 13.8)
    (ws / "secrets").mkdir()
    (ws / "secrets/api.txt").write_text("TOKEN=in-a-denied-dir")
    (ws / "secrets/deeper").mkdir()
    (ws / "secrets/deeper/db.txt").write_text("TOKEN=deeper")
    (ws / "public").mkdir()
    (ws / "public/readme.txt").write_text("fine")
    return ws, st, outside


def _legs(world, **policy) -> Legs:
    ws, st, _ = world
    return Legs(workspace=ws, state_dir=st, policy={"files": policy} if policy else None)


ATTACKS: list[tuple] = [
    # id, action, args, error type, text the message must contain[, files policy]
    ("dotdot", "files.read", {"path": "../outside/secret.txt"}, "denied", "escapes"),
    ("dotdot-deep", "files.read", {"path": "sub/../../outside/secret.txt"}, "denied", "escapes"),
    ("dotdot-inner", "files.read", {"path": "sub/../ok.txt"}, "denied", "escapes"),
    ("dotdot-trailing", "files.read", {"path": "sub/.."}, "denied", "escapes"),
    ("abs-etc", "files.read", {"path": "/etc/passwd"}, "denied", "outside the workspace"),
    ("abs-outside", "files.read", {"path": "OUTSIDE/secret.txt"}, "denied", "outside the workspace"),
    ("abs-state", "files.read", {"path": "STATE/private.txt"}, "denied", "outside the workspace"),
    ("abs-prefix-sibling", "files.read", {"path": "WS_SIBLING/x"}, "denied", "outside the workspace"),
    ("home", "files.read", {"path": "~/.ssh/id_rsa"}, "denied", "home"),
    ("home-user", "files.read", {"path": "~root/.bashrc"}, "denied", "home"),
    ("nul", "files.read", {"path": "ok.txt\x00.png"}, "invalid_input", "NUL"),
    ("control", "files.write", {"path": "a\nb.txt", "content": "x"}, "invalid_input", "control"),
    ("backslash", "files.read", {"path": "..\\outside\\secret.txt"}, "invalid_input", "separator"),
    ("drive", "files.read", {"path": "C:/Windows/win.ini"}, "invalid_input", "drive"),
    ("symlink-file", "files.read", {"path": "link_file"}, "denied", "symbolic link"),
    ("symlink-rel", "files.read", {"path": "rel_link"}, "denied", "symbolic link"),
    ("symlink-dir", "files.read", {"path": "link_dir/inner.txt"}, "denied", "symbolic link"),
    ("symlink-dir-list", "files.list", {"path": "link_dir"}, "denied", "symbolic link"),
    ("symlink-nested", "files.read", {"path": "sub/escape/secret.txt"}, "denied", "symbolic link"),
    ("symlink-state", "files.read", {"path": "link_state/private.txt"}, "denied", "symbolic link"),
    ("symlink-loop", "files.read", {"path": "loop_a"}, "denied", "symbolic link"),
    ("symlink-write-through", "files.write", {"path": "link_file", "content": "pwned"}, "denied", "symbolic link"),
    ("symlink-write-into-dir", "files.write", {"path": "link_dir/new.txt", "content": "x"}, "denied", "symbolic link"),
    ("symlink-append", "files.write", {"path": "link_file", "content": "x", "mode": "append"}, "denied", "symbolic link"),
    ("symlink-edit", "files.edit", {"path": "link_file", "old_text": "outside", "new_text": "x"}, "denied", "symbolic link"),
    ("symlink-copy-src", "files.copy", {"source": "link_dir", "destination": "stolen"}, "denied", "symbolic link"),
    ("symlink-copy-file", "files.copy", {"source": "link_file", "destination": "stolen.txt"}, "denied", "symbolic link"),
    ("symlink-move-into", "files.move", {"source": "ok.txt", "destination": "link_dir/ok.txt"}, "denied", "symbolic link"),
    ("symlink-search", "files.search", {"pattern": "secret", "path": "link_dir"}, "denied", "symbolic link"),
    ("device", "files.read", {"path": "devzero"}, "denied", "symbolic link"),
    ("fifo", "files.read", {"path": "fifo"}, "denied", "not a regular file"),
    ("fifo-write", "files.write", {"path": "fifo", "content": "x"}, "denied", "not a regular file"),
    ("hardlink", "files.read", {"path": "hardlink.txt"}, "denied", "hard-linked"),
    ("hardlink-append", "files.write", {"path": "hardlink.txt", "content": "x", "mode": "append"}, "denied", "hard-linked"),
    ("deny-env", "files.read", {"path": ".env"}, "denied", "policy.files.deny"),
    ("deny-env-nested", "files.read", {"path": "sub/.env"}, "denied", "policy.files.deny"),
    ("deny-env-write", "files.write", {"path": "new/.env", "content": "x"}, "denied", "policy.files.deny"),
    ("deny-pem", "files.read", {"path": "server.pem"}, "denied", "policy.files.deny"),
    ("deny-idrsa", "files.read", {"path": "keys/id_rsa"}, "denied", "policy.files.deny"),
    ("deny-copy-to", "files.copy", {"source": "ok.txt", "destination": "x/.env"}, "denied", "policy.files.deny"),
    ("deny-move-to", "files.move", {"source": "ok.txt", "destination": "cert.pem"}, "denied", "policy.files.deny"),
    ("deny-delete", "files.delete", {"path": ".env"}, "denied", "policy.files.deny"),
    ("deny-dotslash", "files.read", {"path": "./.env"}, "denied", "policy.files.deny"),
    ("deny-doubleslash", "files.read", {"path": "sub//.env"}, "denied", "policy.files.deny"),
    ("delete-root", "files.delete", {"path": ".", "recursive": True}, "invalid_input", "root"),
    ("delete-root-abs", "files.delete", {"path": "WS", "recursive": True}, "invalid_input", "root"),
    ("write-root", "files.write", {"path": "/", "content": "x"}, "denied", "outside"),
    ("temp-name", "files.write", {"path": ".agent-legs-tmp-abc", "content": "x"}, "denied", "temporary"),
    ("long-name", "files.write", {"path": "a" * 300, "content": "x"}, "invalid_input", "255"),
    ("move-outside", "files.move", {"source": "ok.txt", "destination": "../ok.txt"}, "denied", "escapes"),
    ("copy-outside", "files.copy", {"source": "ok.txt", "destination": "/tmp/ok.txt"}, "denied", "outside"),
    ("oversize", "files.write", {"path": "big.txt", "content": "x" * 2000}, "invalid_input", "limit"),
    # more traversal and absolute forms
    ("dotdot-bare", "files.list", {"path": ".."}, "denied", "escapes"),
    ("dotdot-slash", "files.list", {"path": "../"}, "denied", "escapes"),
    ("dotdot-write", "files.write", {"path": "sub/../../x.txt", "content": "x"}, "denied", "escapes"),
    ("abs-proc-root", "files.read", {"path": "/proc/self/root/etc/passwd"}, "denied", "outside the workspace"),
    ("abs-double-slash", "files.read", {"path": "//etc/passwd"}, "denied", "outside the workspace"),
    ("abs-dev", "files.read", {"path": "/dev/zero"}, "denied", "outside the workspace"),
    ("abs-state-write", "files.write", {"path": "STATE/new.txt", "content": "x"}, "denied", "outside the workspace"),
    ("abs-list-root", "files.list", {"path": "/"}, "denied", "outside the workspace"),
    ("abs-search-etc", "files.search", {"pattern": "root", "path": "/etc"}, "denied", "outside the workspace"),
    ("home-write", "files.write", {"path": "~/.bashrc", "content": "x"}, "denied", "home"),
    # encodings are names, not syntax: they stay inside and simply do not exist
    ("url-encoded-dots", "files.read", {"path": "%2e%2e/outside/secret.txt"}, "not_found", "does not exist"),
    ("fullwidth-dots", "files.read", {"path": "\uff0e\uff0e/outside/secret.txt"}, "not_found", "does not exist"),
    ("windows-unc", "files.read", {"path": "\\\\server\\share\\x"}, "invalid_input", "separator"),
    ("windows-drive-backslash", "files.read", {"path": "C:\\Windows\\win.ini"}, "invalid_input", "separator"),
    ("windows-drive-relative", "files.write", {"path": "c:evil.txt", "content": "x"}, "invalid_input", "drive"),
    ("nul-in-dir", "files.write", {"path": "sub\x00/x.txt", "content": "x"}, "invalid_input", "NUL"),
    ("long-component-utf8", "files.read", {"path": "d/" + "\u00e9" * 128}, "invalid_input", "255"),
    ("long-path", "files.write", {"path": "/".join(["d" * 200] * 21), "content": "x"}, "invalid_input", "4096"),
    # trailing slashes
    ("trailing-slash-env", "files.read", {"path": ".env/"}, "denied", "policy.files.deny"),
    ("trailing-slash-file-write", "files.write", {"path": "ok.txt/", "content": "x"}, "invalid_input", "ends with '/'"),
    ("trailing-slash-symlink", "files.list", {"path": "link_dir/"}, "denied", "symbolic link"),
    # symlinks: to the state dir, through intermediate directories, for every verb
    ("symlink-state-list", "files.list", {"path": "link_state"}, "denied", "symbolic link"),
    ("symlink-state-write", "files.write", {"path": "link_state/x.txt", "content": "x"}, "denied", "symbolic link"),
    ("symlink-state-search", "files.search", {"pattern": "secret", "path": "link_state"}, "denied", "symbolic link"),
    ("symlink-delete-through", "files.delete", {"path": "link_dir/inner.txt"}, "denied", "symbolic link"),
    (
        "symlink-edit-nested",
        "files.edit",
        {"path": "sub/escape/secret.txt", "old_text": "outside", "new_text": "x"},
        "denied",
        "symbolic link",
    ),
    ("symlink-copy-into", "files.copy", {"source": "ok.txt", "destination": "link_dir/x.txt"}, "denied", "symbolic link"),
    ("symlink-move-from", "files.move", {"source": "link_dir/inner.txt", "destination": "stolen.txt"}, "denied", "symbolic link"),
    ("symlink-dev-dir", "files.read", {"path": "devdir/null"}, "denied", "symbolic link"),
    ("symlink-dev-dir-write", "files.write", {"path": "devdir/null", "content": "x"}, "denied", "symbolic link"),
    # hard links and special files
    ("hardlink-state", "files.read", {"path": "statelink.txt"}, "denied", "hard-linked"),
    ("hardlink-copy", "files.copy", {"source": "hardlink.txt", "destination": "stolen.txt"}, "denied", "hard-linked"),
    ("fifo-copy", "files.copy", {"source": "fifo", "destination": "x"}, "denied", "not a regular file"),
    # deny globs, for every verb and form
    ("deny-search-path", "files.search", {"pattern": ".", "path": ".env"}, "denied", "policy.files.deny"),
    ("deny-edit", "files.edit", {"path": "server.pem", "old_text": "BEGIN", "new_text": "x"}, "denied", "policy.files.deny"),
    ("deny-idrsa-pub", "files.read", {"path": "keys/id_rsa.pub"}, "denied", "policy.files.deny"),
    ("deny-env-component", "files.write", {"path": ".env/notes.txt", "content": "x"}, "denied", "policy.files.deny"),
    ("deny-move-from", "files.move", {"source": ".env", "destination": "env.txt"}, "denied", "policy.files.deny"),
    ("deny-copy-from", "files.copy", {"source": "server.pem", "destination": "cert.txt"}, "denied", "policy.files.deny"),
    ("deny-abs-inside", "files.read", {"path": "WS/sub/.env"}, "denied", "policy.files.deny"),
    ("temp-read", "files.read", {"path": ".agent-legs-tmp-x"}, "denied", "temporary"),
    ("temp-read-case", "files.read", {"path": ".AGENT-LEGS-TMP-x"}, "denied", "temporary"),
    # deny globs ignore case (issue 13.7)
    ("deny-case-env", "files.read", {"path": ".ENV"}, "denied", "policy.files.deny['.env']"),
    ("deny-case-env-mixed", "files.read", {"path": "sub/.Env"}, "denied", "policy.files.deny"),
    ("deny-case-pem", "files.read", {"path": "server.PEM"}, "denied", "policy.files.deny['**/*.pem']"),
    ("deny-case-idrsa", "files.read", {"path": "keys/ID_RSA"}, "denied", "policy.files.deny['**/id_*']"),
    ("deny-case-idkey-dir", "files.read", {"path": "Keys/Id_Ed25519"}, "denied", "policy.files.deny"),
    ("deny-case-write", "files.write", {"path": "new/.ENV", "content": "x"}, "denied", "policy.files.deny"),
    ("deny-case-edit", "files.edit", {"path": "server.PEM", "old_text": "BEGIN", "new_text": "x"}, "denied", "policy.files.deny"),
    ("deny-case-search", "files.search", {"pattern": ".", "path": ".ENV"}, "denied", "policy.files.deny"),
    (
        "deny-case-list",
        "files.list",
        {"path": "SECRETS"},
        "denied",
        "policy.files.deny['secrets']",
        {"deny": ["SECRETS/**", "secrets"]},
    ),
    ("deny-case-move-from", "files.move", {"source": ".ENV", "destination": "env.txt"}, "denied", "policy.files.deny"),
    ("deny-case-move-to", "files.move", {"source": "ok.txt", "destination": "x.Pem"}, "denied", "policy.files.deny"),
    ("deny-case-copy-from", "files.copy", {"source": "server.PEM", "destination": "c.txt"}, "denied", "policy.files.deny"),
    ("deny-case-delete", "files.delete", {"path": "keys/ID_RSA"}, "denied", "policy.files.deny"),
    # a denied directory's contents keep their denial through a move (issue 13.8)
    (
        "deny-dir-contents-read",
        "files.read",
        {"path": "secrets/api.txt"},
        "denied",
        "policy.files.deny['secrets/**']",
        {"deny": ["secrets/**"]},
    ),
    (
        "deny-ancestor-read",
        "files.read",
        {"path": "secrets/deeper/db.txt"},
        "denied",
        "policy.files.deny['secrets/*']",
        {"deny": ["secrets/*"]},
    ),
    (
        "deny-move-dir-out",
        "files.move",
        {"source": "secrets", "destination": "public2"},
        "denied",
        "contains 'secrets/api.txt', which policy.files.deny['secrets/**']",
        {"deny": ["secrets/**"]},
    ),
    (
        "deny-move-dir-out-case",
        "files.move",
        {"source": "secrets", "destination": "public2"},
        "denied",
        "policy.files.deny['SECRETS/**']",
        {"deny": ["SECRETS/**"]},
    ),
    (
        "deny-move-dir-over",
        "files.move",
        {"source": "secrets", "destination": "public", "overwrite": True},
        "denied",
        "policy.files.deny['secrets/**']",
        {"deny": ["secrets/**"]},
    ),
    (
        "deny-move-dir-into-denied",
        "files.move",
        {"source": "public", "destination": "secrets2"},
        "denied",
        "would be denied by policy.files.deny['secrets2/**'] at the destination",
        {"deny": ["secrets2/**"]},
    ),
    (
        "deny-move-parent",
        "files.move",
        {"source": "keys", "destination": "k2"},
        "denied",
        "policy.files.deny['keys/*']",
        {"deny": ["keys/*"]},
    ),
    # limits
    ("oversize-append", "files.write", {"path": "ok.txt", "content": "x" * 999, "mode": "append"}, "invalid_input", "limit"),
    ("oversize-copy", "files.copy", {"source": "big.txt", "destination": "big2.txt"}, "invalid_input", "limit"),
    ("create-existing", "files.write", {"path": "ok.txt", "content": "x", "mode": "create"}, "invalid_input", "already exists"),
    # read-only policy
    *[
        (f"read-only-{name}", action, args, "denied", "policy.files.read_only", {"read_only": True})
        for name, action, args in [
            ("write", "files.write", {"path": "new.txt", "content": "x"}),
            ("append", "files.write", {"path": "ok.txt", "content": "x", "mode": "append"}),
            ("edit", "files.edit", {"path": "ok.txt", "old_text": "fine", "new_text": "x"}),
            ("delete", "files.delete", {"path": "ok.txt"}),
            ("move", "files.move", {"source": "ok.txt", "destination": "moved.txt"}),
            ("copy", "files.copy", {"source": "ok.txt", "destination": "copied.txt"}),
        ]
    ],
]


@pytest.mark.parametrize(
    ("action", "args", "etype", "text", "policy"),
    [(*a[1:5], a[5] if len(a) > 5 else {}) for a in ATTACKS],
    ids=[a[0] for a in ATTACKS],
)
def test_attack_is_refused_and_changes_nothing(world, action: str, args: dict, etype: str, text: str, policy: dict) -> None:
    ws, st, outside = world
    subst = {"OUTSIDE": str(outside), "STATE": str(st), "WS_SIBLING": str(ws) + "-sibling", "WS": str(ws)}
    args = {k: (_subst(v, subst) if isinstance(v, str) else v) for k, v in args.items()}
    before = snapshot(ws, st, outside)
    with Legs(workspace=ws, state_dir=st, policy={"files": {"max_write_bytes": 1000, **policy}}) as legs:
        r = legs.run(action, args)
    assert not r.ok, r.output
    assert r.error.type == etype, r.error
    assert text in r.error.message, r.error.message
    assert SECRET not in r.output and "API_KEY" not in r.output
    if etype == "denied":  # the message names the rule that denied
        assert "policy.files." in r.error.message or "workspace confinement" in r.error.message, r.error.message
    assert snapshot(ws, st, outside) == before


def _subst(value: str, subst: dict[str, str]) -> str:
    for key in sorted(subst, key=len, reverse=True):
        if value.startswith(key):
            return subst[key] + value[len(key) :]
    return value


def test_corpus_is_large_enough() -> None:
    assert len(ATTACKS) >= 40


def test_listing_hides_denied_and_never_follows_links(world) -> None:
    with _legs(world) as legs:
        r = legs.run("files.list", {"recursive": True})
    paths = {e["path"]: e["type"] for e in r.data["entries"]}
    assert ".env" not in paths and "sub/.env" not in paths and "server.pem" not in paths
    assert ".ENV" not in paths and "server.PEM" not in paths and "keys/ID_RSA" not in paths
    assert "Keys/Id_Ed25519" not in paths
    assert paths["link_dir"] == "symlink" and not any(p.startswith("link_dir/") for p in paths)
    assert not any(p.startswith("sub/escape/") for p in paths)


def test_search_skips_denied_and_links(world) -> None:
    with _legs(world) as legs:
        r = legs.run("files.search", {"pattern": "API_KEY|outside-secret|BEGIN"})
    assert r.data["matches"] == 0, r.output


def test_deny_matching_ignores_case_in_every_form(world) -> None:
    """Issue 13.7: the one matcher (``Workspace.denied_rule``, ``DenyList``) ignores case."""
    ws, st, _ = world
    workspace = Workspace(ws, FilesPolicy(), st)
    for path, rule in [
        (".ENV", ".env"),
        ("a/.eNv", ".env"),
        ("server.PEM", "**/*.pem"),
        ("keys/ID_RSA", "**/id_*"),
        ("X.KEY", "**/*.key"),
        ("a/.ENV/b.txt", ".env"),
        (str(ws / "K/Id_x"), "**/id_*"),
    ]:
        assert workspace.denied_rule(path) == rule, path
    assert workspace.denied_rule("notes.txt") is None
    assert sorted(p for p, _ in workspace.denied_paths()) == [
        ".ENV",
        ".env",
        "Keys/Id_Ed25519",
        "keys/ID_RSA",
        "keys/id_rsa",
        "server.PEM",
        "server.pem",
        "sub/.env",
    ]


def test_copy_of_a_directory_leaves_denied_contents_out_and_says_so(world) -> None:
    """Issue 13.8, copy: what is denied at the source (or would be at the destination) is never
    copied; the result counts what was left out, per rule."""
    ws, _, _ = world
    with _legs(world, deny=["secrets/**", "copies/*"]) as legs:
        r = legs.run("files.copy", {"source": "secrets", "destination": "public2"})
        assert r.ok, r.error
        assert r.data["files"] == 0 and r.data["denied"] == {"secrets/**": 2}
        assert "policy.files.deny['secrets/**']" in r.output
        assert legs.run("files.read", {"path": "public2/api.txt"}).error.type == "not_found"
        assert not (ws / "public2/api.txt").exists() and not (ws / "public2/deeper").exists()
        (ws / "public/cert.txt").write_text("fine")
        r = legs.run("files.copy", {"source": "public", "destination": "copies"})  # into a denied tree
        assert r.ok and r.data["files"] == 0 and r.data["denied"] == {"copies/*": 2}, r.output


def test_move_of_a_directory_keeps_denials_it_carries(world) -> None:
    """Moving a directory whose denied entries stay denied under the new name is allowed
    (a name-pattern like '.env' travels with the file); only a change of denial is refused."""
    ws, _, _ = world
    with _legs(world) as legs:
        r = legs.run("files.move", {"source": "sub", "destination": "sub2"})
        assert r.ok, r.error
        assert (ws / "sub2/.env").read_text() == "API_KEY=y"
        assert legs.run("files.read", {"path": "sub2/.env"}).error.type == "denied"
    with _legs(world, deny=["secrets/**"]) as legs:
        r = legs.run("files.move", {"source": "secrets", "destination": "public"})  # the exact case
        assert r.error.type == "denied" and "secrets/api.txt" in r.error.message
        assert "policy.files.deny['secrets/**']" in r.error.message, r.error.message
        assert legs.run("files.read", {"path": "public/api.txt"}).error.type == "not_found"
        assert (ws / "secrets/api.txt").exists()


def test_swapped_symlink_between_check_and_use(world) -> None:
    """A directory replaced by a symlink mid-operation is refused by the kernel (O_NOFOLLOW walk)."""
    ws, st, outside = world
    workspace = Workspace(ws, FilesPolicy(), st)
    (ws / "race").mkdir()
    (ws / "race/f.txt").write_text("inside")
    assert workspace.check("race/f.txt") == "race/f.txt"  # the check passes...
    (ws / "race/f.txt").unlink()
    (ws / "race").rmdir()
    os.symlink(outside / "dir", ws / "race")  # ...then the attacker swaps the directory
    with pytest.raises(ActionError) as exc:
        workspace.read_bytes("race/inner.txt")
    assert exc.value.type == "denied" and "symbolic link" in exc.value.message


def test_concurrent_swapping_never_leaks(world) -> None:
    """Race a thread flipping a directory <-> symlink against reads: never outside content."""
    ws, st, outside = world
    workspace = Workspace(ws, FilesPolicy(), st)
    (outside / "dir/flip.txt").write_text(SECRET)
    real = ws / "flip_real"
    real.mkdir()
    (real / "flip.txt").write_text("inside")
    stop = threading.Event()

    def flipper() -> None:
        target = ws / "flip"
        while not stop.is_set():
            try:
                os.symlink(outside / "dir", target)
                os.unlink(target)
                os.symlink("flip_real", target)  # even an inside link is refused
                os.unlink(target)
                os.rename(real, target)
                os.rename(target, real)
            except OSError:
                pass

    t = threading.Thread(target=flipper)
    t.start()
    try:
        for _ in range(2000):
            try:
                data = workspace.read_bytes("flip/flip.txt")
            except ActionError:
                continue
            assert data == b"inside"
    finally:
        stop.set()
        t.join()


def test_state_dir_inside_workspace_via_bind_is_unreachable(tmp_path: Path) -> None:
    ws, st = tmp_path / "ws", tmp_path / "st"
    ws.mkdir()
    st.mkdir()
    workspace = Workspace(ws, FilesPolicy(), st)
    # a hard case: the state dir's inode appearing inside the workspace (e.g. a rename by the operator)
    os.rename(st, ws / "moved_state")
    workspace.state_dir = (ws / "moved_state").resolve()
    with pytest.raises(ActionError) as exc:
        workspace.read_bytes("moved_state/x")
    assert exc.value.type == "denied" and "state directory" in exc.value.message
