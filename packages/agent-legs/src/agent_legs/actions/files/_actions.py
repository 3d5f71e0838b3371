"""files.*: read, write, edit, list, search, move, copy and delete inside the workspace.

All disk access goes through ``Workspace`` (confinement, atomic writes, trash). The handlers are
plain syscalls, so they are ``inline``: they run on the caller's thread without the runtime hop.
Small operations run directly (a thread hop would cost more than a read); walks over trees
(recursive list, search, copy of a directory) run in a worker thread that checks a cancel flag
between files, so the runtime's deadline really stops them.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ..._context import ActionContext
from ..._errors import ActionError
from ..._matching import path_matcher
from ..._models import ActionOutput
from ..._registry import action
from ..._secrets import Redactor
from ._cancel import Cancel
from ._text import decode_text

try:  # ``regex`` can stop a catastrophic pattern (timeout=); ``re`` cannot be interrupted.
    import regex as _regex  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - regex is a dependency; keep working without it
    _regex = None

_MAX_LIST = 500
_MAX_MATCHES = 200
_MAX_LINE = 300
_MAX_ARTIFACTS = 100
_REGEX_LINE_TIMEOUT = 1.0  # seconds one line may take: more is catastrophic backtracking

T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadInput(_In):
    path: str = Field(description="File path relative to the workspace, e.g. 'notes/todo.md'.")
    offset: int = Field(0, ge=0, description="Number of lines to skip: 0 starts at the first line.")
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
    count: int = Field(1, ge=1, description="How many occurrences old_text must have; all of them are replaced.")


class ListInput(_In):
    path: str = Field(".", description="Directory relative to the workspace.")
    pattern: str | None = Field(None, description="Glob such as '*.csv' (matches names) or 'data/**/*.csv' (matches paths).")
    recursive: bool = Field(False, description="Include subdirectories.")


class SearchInput(_In):
    pattern: str = Field(description="Python regular expression, searched line by line.")
    path: str = Field(".", description="Directory (or file) to search, relative to the workspace.")
    glob: str | None = Field(None, description="Only files matching this glob: '*.py' matches names, 'src/**/*.py' paths.")


class MoveInput(_In):
    source: str = Field(description="Existing path relative to the workspace.")
    destination: str = Field(description="New path relative to the workspace (the full new name, not a folder).")
    overwrite: bool = Field(False, description="Replace the destination if it exists (the old one goes to the trash).")


class DeleteInput(_In):
    path: str = Field(description="Path relative to the workspace. Deleted items are recoverable from the trash.")
    recursive: bool = Field(False, description="Required to delete a non-empty directory.")


async def _threaded(fn: Callable[[threading.Event], T], what: str = "") -> T:
    """Run a tree walk in a worker thread; when the call is cancelled (deadline), the flag stops
    the walk at its next file instead of letting it run on unseen. A worker that had already
    passed its commit point (the final rename of a copy) completes: the call then says its
    effect may be in place, rather than "stopped, retry"."""
    cancel = Cancel()
    try:
        return await asyncio.to_thread(fn, cancel)
    except asyncio.CancelledError:
        if cancel.cancel():
            raise ActionError(
                "timeout",
                f"the deadline passed while {what} was being completed: it may be complete",
                hint="Check with files_list before repeating the call.",
            ) from None
        raise
    finally:
        cancel.set()


def _binary(rel: str, size: int) -> ActionError:
    return ActionError(
        "invalid_input",
        f"{rel!r} is a binary file ({size} bytes) or not UTF-8 text; files_read returns text only",
        hint="Inspect binary files with code_run (e.g. Python) instead.",
    )


def _lines(text: str) -> list[str]:
    """Lines with their endings, split on '\\n' only (as grep and editors count them)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


@action(
    "files.read",
    description="""Read a text file from the workspace. Long files are returned in pages: use
    offset (lines to skip) and limit (lines) to continue where the result says.""",
    read_only=True,
    inline=True,
)
async def files_read(ctx: ActionContext, args: ReadInput) -> ActionOutput:
    rel, data, size = ctx.workspace.read_file(args.path, ctx.policy.files.max_read_bytes)
    text = decode_text(data, complete=size <= len(data))
    if text is None:
        raise _binary(rel, size)
    # Scrub the whole text before it is cut into pages and long lines (and its tail if the read stopped
    # at the byte cap): a secret straddling a cut must not leave its prefix behind.
    text = ctx.redactor.text(text, cut=size > len(data))
    lines = _lines(text)
    budget = max(ctx.settings.max_output_chars - 300, 100)
    end = len(lines) if args.limit is None else min(len(lines), args.offset + args.limit)
    out: list[str] = []
    used, i = 0, args.offset
    while i < end and used + len(lines[i]) <= budget:
        out.append(lines[i])
        used += len(lines[i])
        i += 1
    notes = []
    if not out and i < end:  # one line longer than the whole output: show its start
        out.append(lines[i][:budget])
        notes.append(f"[line {i + 1} is {len(lines[i])} characters; only the first {budget} are shown]")
        i += 1
    if i < len(lines):
        notes.append(f"[lines {args.offset + 1}-{i} of {len(lines)}; call files_read with offset={i} to continue]")
    if size > len(data):
        notes.append(f"[the file is {size} bytes; only the first {len(data)} bytes are readable (policy.files.max_read_bytes)]")
    if args.offset and args.offset >= len(lines):
        notes.append(f"[offset {args.offset} is past the end: the file has {len(lines)} lines]")
    body = "".join(out)
    if not body and not notes:
        notes.append("[empty file]")
    output = body + ("\n" if notes and body and not body.endswith("\n") else "") + "\n".join(notes)
    return ActionOutput(
        output=output,
        data={
            "path": rel,
            "size": size,
            "offset": args.offset,
            "lines_returned": len(out),
            "total_lines": len(lines),
            "next_offset": i if i < len(lines) else None,
            "truncated": size > len(data),
        },
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
    return ActionOutput(
        output=f"{verb} {artifact.path} ({artifact.size} bytes)",
        data={"path": artifact.path, "size": artifact.size, "mode": args.mode},
        artifacts=[artifact],
    )


def _line_numbers(text: str, needle: str, limit: int = 5) -> list[int]:
    found: list[int] = []
    start = 0
    while len(found) < limit and (pos := text.find(needle, start)) != -1:
        found.append(text.count("\n", 0, pos) + 1)
        start = pos + 1
    return found


def _not_found_hint(text: str, old: str) -> str:
    squash = re.compile(r"\s+")
    if squash.sub(" ", old).strip() and squash.sub(" ", old).strip() in squash.sub(" ", text):
        return (
            "old_text matches only if whitespace is ignored (indentation, tabs or line endings "
            "differ): copy it exactly from files_read output."
        )
    first = next((ln.strip() for ln in old.splitlines() if ln.strip()), "")
    lines = text.splitlines()[:20_000]  # difflib is quadratic-ish: bound the work on huge files
    close = difflib.get_close_matches(first, [ln.strip() for ln in lines], n=1, cutoff=0.5) if first else []
    if close:
        n = next(i for i, ln in enumerate(lines, 1) if ln.strip() == close[0])
        return f"The closest line is line {n}: {close[0][:_MAX_LINE]!r}. Read the file and copy old_text exactly."
    return "Read the file with files_read and copy old_text exactly."


@action(
    "files.edit",
    description="""Replace exact text in a workspace file. old_text must match exactly (whitespace
    included) and occur exactly `count` times; otherwise nothing changes and the error says why.""",
    inline=True,
)
async def files_edit(ctx: ActionContext, args: EditInput) -> ActionOutput:
    ws = ctx.workspace
    rel = ws.check(args.path, write=True)
    data = ws.read_bytes(args.path, max_bytes=ctx.policy.files.max_write_bytes)
    text = decode_text(data)
    if text is None:
        raise _binary(rel, len(data))
    found = text.count(args.old_text)
    if found == 0:
        raise ActionError(
            "invalid_input", f"old_text was not found in {rel!r}; nothing changed", hint=_not_found_hint(text, args.old_text)
        )
    if found != args.count:
        at = ", ".join(map(str, _line_numbers(text, args.old_text)))
        raise ActionError(
            "invalid_input",
            f"old_text occurs {found} times in {rel!r} (starting at lines {at}{', ...' if found > 5 else ''}) "
            f"but count={args.count}; nothing changed",
            hint="Add surrounding lines to old_text to make it unique, or set count to the number of occurrences."
            if found > args.count
            else f"Set count={found} to replace all of them.",
            data={"occurrences": found},
        )
    new = text.replace(args.old_text, args.new_text, args.count)
    artifact = ws.write_bytes(args.path, new.encode("utf-8"))
    line = _line_numbers(text, args.old_text, 1)[0]
    return ActionOutput(
        output=f"Replaced {found} occurrence(s) in {rel} (first at line {line})",
        data={"path": rel, "replacements": found, "size": artifact.size, "first_line": line},
        artifacts=[artifact],
    )


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
        raise ActionError("denied", f"{rel!r} is a symbolic link; links are not followed", rule="workspace confinement (symlink)")
    if entry.kind != "dir":
        raise ActionError("invalid_input", f"{rel!r} is not a directory", hint="Use files_read to read a file.")
    prefix = "" if rel == "." else rel + "/"
    match = path_matcher(args.pattern) if args.pattern else None

    def collect(cancel: threading.Event | None) -> tuple[list[dict[str, Any]], int]:
        rows: list[dict[str, Any]] = []
        more = 0
        for e in ws.iter_entries(rel, recursive=args.recursive, cancel=cancel):
            if match is not None and not match(e.path[len(prefix) :]):
                continue
            if len(rows) >= _MAX_LIST:
                more += 1
                continue
            rows.append({"path": e.path, "type": e.kind, "size": e.size})
        return rows, more

    rows, more = await _threaded(collect) if args.recursive else collect(None)
    lines = [f"{r['type']:<7} {r['size']:>10}  {r['path']}{'/' if r['type'] == 'dir' else ''}" for r in rows]
    if more:
        lines.append(f"[{more} more entries not shown; narrow with pattern or path]")
    if not lines:
        lines.append(f"{rel}: no entries match {args.pattern!r}" if args.pattern else f"{rel}: empty directory")
    return ActionOutput(output="\n".join(lines), data={"path": rel, "entries": rows, "more": more})


def _compile(pattern: str) -> Any:
    try:
        if _regex is not None:
            return _regex.compile(pattern, _regex.VERSION0)
        return re.compile(pattern)
    except (re.error, getattr(_regex, "error", re.error)) as exc:
        raise ActionError(
            "invalid_input",
            f"invalid regular expression: {exc}",
            hint="Python regex syntax; escape literal characters such as ( [ . with a backslash.",
        ) from None


def _snippet(line: str, start: int) -> str:
    if len(line) <= _MAX_LINE:
        return line
    begin = max(0, min(start - 80, len(line) - _MAX_LINE))
    return ("…" if begin else "") + line[begin : begin + _MAX_LINE] + ("…" if begin + _MAX_LINE < len(line) else "")


def _scrubbed_snippet(redactor: Redactor, rx: Any, line: str, start: int) -> str:
    """The snippet of a line scrubbed of secrets first: a secret at the snippet's edge must not leave a part."""
    scrubbed = redactor.text(line)
    if scrubbed != line:  # the match moved (or was inside a secret): find it again in the scrubbed line
        try:
            again = rx.search(scrubbed, timeout=_REGEX_LINE_TIMEOUT) if _regex is not None else rx.search(scrubbed)
        except TimeoutError:
            again = None
        start = again.start() if again is not None else min(start, len(scrubbed))
    return _snippet(scrubbed, start)


@action(
    "files.search",
    description="""Search workspace text files for a regular expression, line by line. Returns
    'path:line: text' for each match (capped); `glob` filters files, e.g. '*.md'.""",
    read_only=True,
    inline=True,
)
async def files_search(ctx: ActionContext, args: SearchInput) -> ActionOutput:
    rx = _compile(args.pattern)
    ws = ctx.workspace
    rel = ws.check(args.path)
    match = path_matcher(args.glob) if args.glob else None
    max_bytes = ctx.policy.files.max_read_bytes
    budget = max(ctx.settings.max_output_chars - 300, 100)
    deadline = time.monotonic() + ctx.timeout_s

    def scan(cancel: threading.Event) -> dict[str, Any]:
        hits: list[str] = []
        used = total = scanned = 0
        partial: list[str] = []
        for path, data, size in ws.iter_files(rel, max_bytes, match=match, cancel=cancel):
            text = decode_text(data, complete=size <= len(data))
            if text is None:
                continue
            scanned += 1
            if size > len(data):
                partial.append(path)
            for n, line in enumerate(text.split("\n"), 1):
                if _regex is not None:
                    try:
                        m = rx.search(line, timeout=min(_REGEX_LINE_TIMEOUT, max(deadline - time.monotonic(), 0.01)))
                    except TimeoutError:
                        raise ActionError(
                            "invalid_input",
                            f"the pattern is too slow on {path}:{n} (catastrophic backtracking)",
                            hint="Simplify the regular expression (avoid nested quantifiers such as (a+)+).",
                        ) from None
                else:
                    m = rx.search(line)
                if m is None:
                    continue
                total += 1
                if len(hits) >= _MAX_MATCHES:
                    continue
                hit = f"{path}:{n}: {_scrubbed_snippet(ctx.redactor, rx, line.rstrip(chr(13)), m.start())}"
                if used + len(hit) < budget:
                    hits.append(hit)
                    used += len(hit) + 1
        return {"hits": hits, "total": total, "scanned": scanned, "partial": partial}

    r = await _threaded(scan)
    hits, total = r["hits"], r["total"]
    output = "\n".join(hits) if hits else f"no matches in {r['scanned']} file(s)"
    if total > len(hits):
        output += f"\n[{total - len(hits)} more matches not shown; narrow the pattern, path or glob]"
    if r["partial"]:
        output += f"\n[{len(r['partial'])} file(s) searched only in their first {max_bytes} bytes (policy.files.max_read_bytes)]"
    return ActionOutput(
        output=output,
        data={"matches": total, "files_searched": r["scanned"], "shown": len(hits), "partially_searched": r["partial"][:20]},
    )


@action(
    "files.move",
    description="""Move or rename a file or directory inside the workspace. destination is the
    full new path (to move 'a.txt' into 'docs', use 'docs/a.txt').""",
    inline=True,
)
async def files_move(ctx: ActionContext, args: MoveInput) -> ActionOutput:
    ws = ctx.workspace
    dst = ws.move(args.source, args.destination, overwrite=args.overwrite)
    src = ws.check(args.source)
    return ActionOutput(output=f"Moved {src} to {dst}", data={"source": src, "destination": dst})


@action(
    "files.copy",
    description="""Copy a file or directory inside the workspace. destination is the full new path.
    Symbolic links and special files are not copied.""",
    inline=True,
)
async def files_copy(ctx: ActionContext, args: MoveInput) -> ActionOutput:
    ws = ctx.workspace
    src, dst = ws.check(args.source), ws.check(args.destination, write=True)
    if ws.stat(src).kind == "dir":
        result = await _threaded(
            lambda cancel: ws.copy(src, args.destination, overwrite=args.overwrite, cancel=cancel),
            f"the copy of {src!r} to {dst!r}",
        )
    else:
        result = ws.copy(src, args.destination, overwrite=args.overwrite)
    n = len(result.artifacts)
    output = f"Copied {src} to {dst} ({n} file{'s' if n != 1 else ''})"
    if result.skipped:
        shown = ", ".join(result.skipped[:10]) + (", ..." if len(result.skipped) > 10 else "")
        output += f"; not copied (links, special or hard-linked files): {shown}"
    if result.denied:
        rules = ", ".join(f"{count} by policy.files.deny[{pattern!r}]" for pattern, count in result.denied.items())
        output += f"; left out because denied paths are never copied: {rules}"
    return ActionOutput(
        output=output,
        data={"source": src, "destination": dst, "files": n, "skipped": result.skipped[:100], "denied": result.denied},
        artifacts=result.artifacts[:_MAX_ARTIFACTS],
    )


@action(
    "files.delete",
    description="""Delete a file or directory (recursive=true for a non-empty directory). Deleted
    items go to a trash outside the workspace and can be recovered by the operator.""",
    inline=True,
)
async def files_delete(ctx: ActionContext, args: DeleteInput) -> ActionOutput:
    rel = ctx.workspace.check(args.path, write=True)
    trash_id = ctx.workspace.delete(args.path, recursive=args.recursive)
    return ActionOutput(
        output=f"Deleted {rel} (recoverable from the trash, id {trash_id})",
        data={"path": rel, "recoverable": True, "trash_id": trash_id},
    )
