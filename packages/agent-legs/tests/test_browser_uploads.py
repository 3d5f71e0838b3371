"""browser.fill on an <input type=file>: uploads come from the workspace only, checked like files.read.

A refused path (``..``, absolute outside, a symlink out, the state directory, too large) is an error that
says so, and nothing is attached: the form, submitted afterwards, carries no file. An allowed file's exact
bytes reach the site's upload handler.
"""

from __future__ import annotations

import os

import pytest
from test_browser import nav

from agent_legs import Legs

SECRET = b"STATE-SECRET-never-uploaded"


@pytest.fixture
def upload(dirs, website, tmp_path):
    ws, st = dirs
    (ws / "docs").mkdir()
    (ws / "docs/cv.pdf").write_bytes(b"%PDF-1.4 my cv\x00\xff\x01 binary tail")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(SECRET)
    (st / "secret.txt").write_bytes(SECRET)
    os.symlink(outside, ws / "link-out.txt")  # a file symlink leading out
    os.symlink(st, ws / "statedir")  # a directory symlink into the state directory
    (ws / "big.bin").write_bytes(b"x" * 2000)
    (ws / "SERVER.PEM").write_bytes(SECRET)  # policy.files.deny ignores case (issue 13.7)
    with Legs(workspace=ws, state_dir=st, policy=website.policy(max_upload_bytes=1000)) as legs:
        assert nav(legs, website.site.url("/upload")).ok
        yield legs, ws, st, outside


def _posted(website):
    (posted,) = [x for x in website.site.requests if x.path == "/uploaded"]
    return posted.body


@pytest.mark.parametrize(
    "value",
    [
        "../outside.txt",
        "docs/../../outside.txt",
        "{outside}",
        "{state}/secret.txt",
        "link-out.txt",
        "statedir/secret.txt",
        "big.bin",
        "missing.txt",
        "docs/cv.pdf\n../outside.txt",
        "/etc/passwd",
        "~/.bashrc",
        "SERVER.PEM",
    ],
)
def test_refused_paths_attach_nothing(upload, website, value) -> None:
    legs, _, st, outside = upload
    value = value.format(outside=outside, state=st)
    r = legs.run("browser.fill", {"selector": "#file", "value": value})
    assert not r.ok and r.error.type in ("denied", "invalid_input", "not_found"), r
    assert r.error.message.startswith("cannot upload ") and "nothing was attached" in r.error.message, r.error
    # the form still works, and carries no file at all
    r = legs.run("browser.fill", {"selector": "#note", "value": "after", "submit": True})
    assert r.ok and "Uploaded" in r.output
    body = _posted(website)
    assert b'filename=""' in body and SECRET not in body and b"PDF" not in body and b"root:" not in body


def test_workspace_file_bytes_reach_the_upload_form(upload, website) -> None:
    legs, ws, *_ = upload
    r = nav(legs, website.site.url("/upload"))
    assert "input[file] `#file`" in r.output and "file inputs take workspace paths" in r.output
    r = legs.run("browser.fill", {"selector": "#file", "value": str(ws / "docs/cv.pdf")})  # absolute inside: ok
    assert r.ok and r.data["uploaded"] == ["docs/cv.pdf"], r
    r = legs.run("browser.fill", {"selector": "#file", "value": "docs/cv.pdf", "submit": True})
    assert r.ok and "Uploaded" in r.output and r.data["uploaded"] == ["docs/cv.pdf"], r
    body = _posted(website)
    assert b'filename="cv.pdf"' in body and b"Content-Type: application/pdf" in body
    assert b"%PDF-1.4 my cv\x00\xff\x01 binary tail" in body  # the exact bytes, binary included


def test_empty_value_for_a_file_input_is_invalid(upload) -> None:
    legs, *_ = upload
    r = legs.run("browser.fill", {"selector": "#file", "value": "  \n "})
    assert r.error.type == "invalid_input" and "workspace file path" in r.error.message


def test_upload_cap_counts_all_files_of_one_call(upload) -> None:
    """policy.browser.max_upload_bytes (1,000 here) caps the files of one call together, not each one."""
    legs, ws, *_ = upload
    (ws / "part1.bin").write_bytes(b"1" * 600)
    (ws / "part2.bin").write_bytes(b"2" * 600)
    r = legs.run("browser.fill", {"selector": "#file", "value": "part1.bin\npart2.bin"})
    assert r.error.type == "invalid_input" and "max_upload_bytes" in r.error.message, r.error
    assert "'part2.bin'" in r.error.message and "nothing was attached" in r.error.message
