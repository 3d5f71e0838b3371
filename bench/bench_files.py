"""files.read / files.write against LangChain's FileManagementToolkit and plain Python (same files)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from agent_legs import Legs

from ._stats import alternate, ratio


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
                },
                iterations,
            )
    return {
        "read": read,
        "write": write,
        "ratios": {
            "read_vs_langchain": ratio(read["agent_legs_files_read"], read["langchain_read_file"]),
            "write_vs_langchain": ratio(write["agent_legs_files_write"], write["langchain_write_file"]),
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
