"""files.read / files.write against LangChain's FileManagementToolkit and plain Python (same files).

``plain_python_atomic_write`` is the floor of our write's guarantee, by hand: a temporary file,
``fdatasync``, ``rename`` over the target and ``fsync`` of the directory (what ``files.write`` does
on disk, without validation, policy, confinement, span, log or guard).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from agent_legs import Legs

from ._stats import alternate, ratio


def _atomic_write(directory: Path, name: str, data: bytes) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp = f".tmp-{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        try:
            os.write(fd, data)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
    finally:
        os.close(dfd)


def run(iterations: int) -> dict[str, Any]:
    from langchain_community.agent_toolkits import FileManagementToolkit

    with tempfile.TemporaryDirectory() as tmp:
        ws, st, lc_root = Path(tmp) / "ws", Path(tmp) / "st", Path(tmp) / "lc"
        ws.mkdir()
        lc_root.mkdir()
        text = "".join(f"line {i}: some text for the benchmark\n" for i in range(40))  # ~1.5 KB
        (ws / "notes.txt").write_text(text)
        (lc_root / "notes.txt").write_text(text)
        tools = {t.name: t for t in FileManagementToolkit(root_dir=str(lc_root)).get_tools()}
        lc_read, lc_write = tools["read_file"], tools["write_file"]
        with Legs(workspace=ws, state_dir=st) as legs:
            read = alternate(
                {
                    "agent_legs_files_read": lambda: legs.run("files.read", {"path": "notes.txt"}),
                    "langchain_read_file": lambda: lc_read.invoke({"file_path": "notes.txt"}),
                    "plain_python_read": (ws / "notes.txt").read_text,
                },
                iterations,
            )
            write = alternate(
                {
                    "agent_legs_files_write": lambda: legs.run("files.write", {"path": "out.txt", "content": text}),
                    "langchain_write_file": lambda: lc_write.invoke({"file_path": "out.txt", "text": text}),
                    "plain_python_write": lambda: (ws / "plain.txt").write_text(text),
                    "plain_python_atomic_write": lambda: _atomic_write(ws, "atomic.txt", text.encode()),
                },
                iterations,
            )
    return {
        "read": read,
        "write": write,
        "ratios": {
            "read_vs_langchain": ratio(read["agent_legs_files_read"], read["langchain_read_file"]),
            "write_vs_langchain": ratio(write["agent_legs_files_write"], write["langchain_write_file"]),
            "write_vs_atomic_floor": ratio(write["agent_legs_files_write"], write["plain_python_atomic_write"]),
        },
        "notes": "agent-legs includes validation, policy, one span, one flushed log line; its write fsyncs "
        "(file and directory) and renames atomically, LangChain's does neither.",
        "targets": {
            "files.read p50 <= LangChain read_file": read["agent_legs_files_read"]["p50_us"]
            <= read["langchain_read_file"]["p50_us"],
            "files.write p50 <= 2x LangChain write_file": write["agent_legs_files_write"]["p50_us"]
            <= 2 * write["langchain_write_file"]["p50_us"],
        },
    }
