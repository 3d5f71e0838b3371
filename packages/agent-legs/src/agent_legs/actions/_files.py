"""files.*: read, write, edit, list, search, move, copy and delete inside the workspace.

All disk access goes through ``Workspace`` (confinement, atomic writes, trash). The handlers are
plain syscalls, so they are ``inline``: they run on the caller's thread without the runtime hop.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .._context import ActionContext
from .._errors import ActionError
from .._models import ActionOutput
from .._registry import action
from .._workspace import glob_to_regex

_MAX_LIST = 500
_MAX_MATCHES = 200
_MAX_LINE = 300
_BINARY_SNIFF = 8192


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadInput(_In):
    path: str = Field(description="File path relative to the workspace, e.g. 'notes/todo.md'.")
    offset: int = Field(0, ge=0, description="First line to return (0-based).")
    limit: int | None = Field(None, ge=1, description="Maximum number of lines to return; default: as many as fit.")


class WriteInput(_In):
    path: str = Field(description="File path relative to the workspace; parent directories are created.")
    content: str = Field(description="The complete text to write.")
    mode: Literal["overwrite", "append", "create"] = Field(
        "overwrite", description="'overwrite' replaces, 'append' adds to the end, 'create' fails if the file exists."
    )


class EditInput(_In):
    path: str = Field(description="File path relative to the workspace.")
    old_text: str = Field(min_length=1, description="Exact text to replace (include enough context to be unique).")
    new_text: str = Field(description="Replacement text.")
    count: int = Field(1, ge=1, description="How many occurrences must be replaced.")


class ListInput(_In):
    path: str = Field(".", description="Directory relative to the workspace.")
    pattern: str | None = Field(None, description="Glob on names (or relative paths when recursive), e.g. '*.csv'.")
    recursive: bool = Field(False, description="Include subdirectories.")


class SearchInput(_In):
    pattern: str = Field(description="Python regular expression searched line by line.")
    path: str = Field(".", description="Directory (or file) to search, relative to the workspace.")
    glob: str | None = Field(None, description="Only files whose relative path matches this glob, e.g. '**/*.py'.")


class MoveInput(_In):
    source: str = Field(description="Existing path relative to the workspace.")
    destination: str = Field(description="New path relative to the workspace.")
    overwrite: bool = Field(False, description="Replace the destination if it exists.")


class DeleteInput(_In):
    path: str = Field(description="Path relative to the workspace. Deleted items are recoverable from the trash.")
    recursive: bool = Field(False, description="Required to delete a non-empty directory.")


def _decode(data: bytes, rel: str) -> str:
    if b"\x00" in data[:_BINARY_SNIFF]:
        raise _binary(rel, len(data))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _binary(rel, len(data)) from None


def _binary(rel: str, size: int) -> ActionError:
    return ActionError(
        "invalid_input",
        f"{rel!r} is a binary file ({size} bytes); files_read returns text only",
        hint="Inspect binary files with code_run (e.g. Python) instead.",
    )


@action(
    "files.read",
    description="""Read a text file from the workspace. Use offset/limit (in lines) to page through
    long files; the result says where to continue.""",
    read_only=True,
    inline=True,
)
async def files_read(ctx: ActionContext, args: ReadInput) -> ActionOutput:
    ws = ctx.workspace
    rel = ws.check(args.path)
    max_bytes = ctx.policy.files.max_read_bytes
    data, size = ws.read_head(rel, max_bytes)
    text = _decode(data, rel)
    lines = text.splitlines(keepends=True)
    budget = ctx.settings.max_output_chars - 200
    end = len(lines) if args.limit is None else min(len(lines), args.offset + args.limit)
    out, used, i = [], 0, args.offset
    while i < end and used + len(lines[i]) <= budget:
        out.append(lines[i])
        used += len(lines[i])
        i += 1
    body = "".join(out)
    notes = []
    if i < len(lines):
        notes.append(f"[lines {args.offset}-{i - 1} of {len(lines)}; call files_read with offset={i} for more]")
    if size > len(data):
        notes.append(f"[file is {size} bytes; only the first {len(data)} bytes are readable "
                     "(policy.files.max_read_bytes)]")
    if args.offset and args.offset >= len(lines):
        notes.append(f"[offset {args.offset} is past the end: the file has {len(lines)} lines]")
    output = body + ("\n" if notes and body and not body.endswith("\n") else "") + "\n".join(notes)
    return ActionOutput(
        output=output,
        data={"path": rel, "size": size, "offset": args.offset, "lines_returned": len(out),
              "total_lines": len(lines), "next_offset": i if i < len(lines) else None,
              "truncated": size > len(data)},
    )


@action(
    "files.write",
    description="""Write a text file in the workspace (atomic; parent directories are created).
    mode: 'overwrite' (default), 'append' or 'create' (fails if the file exists).""",
    inline=True,
)
async def files_write(ctx: ActionContext, args: WriteInput) -> ActionOutput:
    artifact = ctx.workspace.write_bytes(args.path, args.content.encode("utf-8"), mode=args.mode)
    verb = {"overwrite": "Wrote", "append": "Appended to", "create": "Created"}[args.mode]
    return ActionOutput(output=f"{verb} {artifact.path} ({artifact.size} bytes)",
                        data={"path": artifact.path, "size": artifact.size, "mode": args.mode},
                        artifacts=[artifact])


@action(
    "files.edit",
    description="""Replace exact text in a workspace file. old_text must match exactly (whitespace
    included) and occur exactly `count` times; otherwise nothing changes and the error says why.""",
    inline=True,
)
async def files_edit(ctx: ActionContext, args: EditInput) -> ActionOutput:
    ws = ctx.workspace
    rel = ws.check(args.path, write=True)
    text = _decode(ws.read_bytes(rel, max_bytes=ctx.policy.files.max_write_bytes), rel)
    found = text.count(args.old_text)
    if found == 0:
        close = difflib.get_close_matches(args.old_text.strip().splitlines()[0] if args.old_text.strip() else "",
                                          text.splitlines(), n=1, cutoff=0.5)
        raise ActionError("invalid_input", f"old_text was not found in {rel!r}; nothing changed",
                          hint=f"Closest line: {close[0]!r}" if close else "Read the file first with files_read.")
    if found != args.count:
        raise ActionError(
            "invalid_input",
            f"old_text occurs {found} times in {rel!r} but count={args.count}; nothing changed",
            hint="Add surrounding context to old_text to make it unique, or set count to the number of occurrences."
            if found > args.count else "Lower count to the number of occurrences.",
        )
    new = text.replace(args.old_text, args.new_text, args.count)
    artifact = ws.write_bytes(rel, new.encode("utf-8"))
    return ActionOutput(output=f"Replaced {found} occurrence(s) in {rel}",
                        data={"path": rel, "replacements": found, "size": artifact.size}, artifacts=[artifact])


@action(
    "files.list",
    description="""List a workspace directory: type, size and path of each entry. Optional glob
    `pattern` and `recursive`. Symbolic links are shown but never followed.""",
    read_only=True,
    inline=True,
)
async def files_list(ctx: ActionContext, args: ListInput) -> ActionOutput:
    ws = ctx.workspace
    rel = ws.check(args.path)
    entry = ws.stat(rel)
    if entry.kind == "symlink":
        raise ActionError("denied", f"{rel!r} is a symbolic link; links are not followed",
                          rule="workspace confinement (symlink)")
    if entry.kind != "dir":
        raise ActionError("invalid_input", f"{rel!r} is not a directory", hint="Use files_read to read a file.")
    rx = glob_to_regex(args.pattern) if args.pattern else None
    prefix = "" if rel == "." else rel + "/"
    rows: list[dict[str, object]] = []
    more = 0
    for e in ws.iter_entries(rel, recursive=args.recursive):
        name = e.path[len(prefix):]
        if rx is not None and not (rx.match(name) or rx.match(name.rsplit("/", 1)[-1])):
            continue
        if len(rows) >= _MAX_LIST:
            more += 1
            continue
        rows.append({"path": e.path, "type": e.kind, "size": e.size})
    lines = [f"{r['type']:<7} {r['size']:>10}  {r['path']}{'/' if r['type'] == 'dir' else ''}" for r in rows]
    if more:
        lines.append(f"[{more} more entries not shown; narrow with pattern or path]")
    return ActionOutput(output="\n".join(lines) if lines else f"{rel}: no entries",
                        data={"path": rel, "entries": rows, "more": more})


@action(
    "files.search",
    description="""Search workspace text files for a regular expression. Returns 'path:line: text'
    for each match (capped); `glob` filters files, e.g. '**/*.md'.""",
    read_only=True,
    inline=True,
)
async def files_search(ctx: ActionContext, args: SearchInput) -> ActionOutput:
    try:
        rx = re.compile(args.pattern)
    except re.error as exc:
        raise ActionError("invalid_input", f"invalid regular expression: {exc}") from None
    ws = ctx.workspace
    rel = ws.check(args.path)
    file_rx = glob_to_regex(args.glob) if args.glob else None
    deadline = time.monotonic() + ctx.timeout_s

    def scan() -> tuple[list[str], int, int]:
        entry = ws.stat(rel)
        paths = [entry.path] if entry.kind == "file" else [
            e.path for e in ws.iter_entries(rel, recursive=True) if e.kind == "file"
        ]
        hits: list[str] = []
        total = scanned = 0
        for path in paths:
            if file_rx is not None and not file_rx.match(path):
                continue
            if time.monotonic() > deadline:
                break
            try:
                data, _size = ws.read_head(path, ctx.policy.files.max_read_bytes)
            except ActionError:
                continue
            if b"\x00" in data[:_BINARY_SNIFF]:
                continue
            scanned += 1
            for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                if rx.search(line):
                    total += 1
                    if len(hits) < _MAX_MATCHES:
                        hits.append(f"{path}:{n}: {line[:_MAX_LINE]}")
        return hits, total, scanned

    hits, total, scanned = await asyncio.to_thread(scan)
    output = "\n".join(hits) if hits else f"no matches in {scanned} file(s)"
    if total > len(hits):
        output += f"\n[{total - len(hits)} more matches not shown; narrow the pattern, path or glob]"
    return ActionOutput(output=output, data={"matches": total, "files_searched": scanned, "shown": len(hits)})


@action(
    "files.move",
    description="Move or rename a file or directory inside the workspace.",
    inline=True,
)
async def files_move(ctx: ActionContext, args: MoveInput) -> ActionOutput:
    dst = ctx.workspace.move(args.source, args.destination, overwrite=args.overwrite)
    return ActionOutput(output=f"Moved {ctx.workspace.check(args.source)} to {dst}",
                        data={"source": ctx.workspace.check(args.source), "destination": dst})


@action(
    "files.copy",
    description="Copy a file or directory inside the workspace.",
    inline=True,
)
async def files_copy(ctx: ActionContext, args: MoveInput) -> ActionOutput:
    artifacts = ctx.workspace.copy(args.source, args.destination, overwrite=args.overwrite)
    dst = ctx.workspace.check(args.destination)
    return ActionOutput(output=f"Copied {ctx.workspace.check(args.source)} to {dst} ({len(artifacts)} file(s))",
                        data={"destination": dst, "files": len(artifacts)}, artifacts=artifacts)


@action(
    "files.delete",
    description="""Delete a file or directory (recursive=true for a non-empty directory). Deleted
    items go to a trash outside the workspace and can be recovered by the operator.""",
    inline=True,
)
async def files_delete(ctx: ActionContext, args: DeleteInput) -> ActionOutput:
    rel = ctx.workspace.check(args.path, write=True)
    ctx.workspace.delete(rel, recursive=args.recursive)
    return ActionOutput(output=f"Deleted {rel} (recoverable from the trash)", data={"path": rel, "recoverable": True})
