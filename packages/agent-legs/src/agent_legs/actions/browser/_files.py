"""Files between the browser and the workspace: downloads in, uploads out.

Invariants:

* Downloads land in the workspace only (``downloads/<sanitised name>``, through the workspace's
  ``save_unique``: never overwriting a file, never outside the root), each at most
  ``policy.browser.max_download_bytes``. A local browser's download in progress is cancelled as soon
  as its partial file passes the limit (a watcher polls Chromium's download directory), not after it
  filled the disk; a remote browser's download is streamed to a temp file, checked, then copied.
  Every temp file and Chromium's copy are deleted whatever happens.
* What happened to each download (saved, refused, failed) is an event of the session, reported by the
  next result; the saved files are that result's artifacts.
* Uploads are read from the workspace only, through its checks (no ``..``, nothing outside, no
  symlinks, never the state directory), all of them before any is attached, together at most
  ``policy.browser.max_upload_bytes``; the browser gets the bytes, never a path. One refused path
  attaches nothing.

Threat model: a hostile page starts huge or many downloads, or names them to escape the workspace
(``../``, absolute paths, dot files): the name is sanitised and the size capped. A compromised model
names files outside the workspace (or secrets in the state directory) to upload them to a page: the
workspace refuses them, and uploads only go to pages the egress policy allows anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._context import ActionContext
from ..._errors import ActionError
from ..._models import Artifact
from ._deadline import remaining
from ._session import BrowserSession

if TYPE_CHECKING:
    from ..._runtime import Runtime

__all__ = ["Downloads", "await_downloads", "read_uploads"]


class Downloads:
    """The browser's downloads in progress, and where a local Chromium writes them (``directory``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.directory: Path | None = None  # a local browser's download directory (ours to delete)
        self.remote = False  # the files are on the browser's machine
        self._pending: dict[Any, BrowserSession] = {}  # downloads in progress
        self._watcher: asyncio.Task[None] | None = None

    def reset(self) -> None:
        """Forget the downloads of a browser that is gone, and delete its download directory."""
        self._pending.clear()
        self.remove_directory()

    def remove_directory(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def save(self, s: BrowserSession, download: Any) -> None:
        """Downloads land in the workspace only, size-limited, never overwriting a file."""
        limit = self.runtime.policy.browser.max_download_bytes
        self._pending[download] = s
        if self.directory is not None and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.ensure_future(self._watch(limit))
        tmp: Path | None = None
        try:
            failure = await download.failure()
            if download in s.refused:
                s.events.append(
                    f"download {download.suggested_filename!r} refused: larger than "
                    f"policy.browser.max_download_bytes ({limit} bytes); it was cancelled"
                )
                return
            if failure:
                s.events.append(f"download {download.suggested_filename!r} failed: {failure}")
                return
            if self.remote:  # the file is on the browser's machine: stream it here first
                fd, name = tempfile.mkstemp(prefix="agent-legs-download-")
                os.close(fd)
                tmp = Path(name)
                await download.save_as(tmp)
                path = tmp
            else:
                path = Path(await download.path())
            size = (await asyncio.to_thread(os.stat, path)).st_size
            if size > limit:
                s.events.append(
                    f"download {download.suggested_filename!r} refused: {size} bytes is over "
                    f"policy.browser.max_download_bytes ({limit})"
                )
                return
            safe = "".join(c if c.isalnum() or c in "-_. " else "_" for c in download.suggested_filename)[:120]
            data = await asyncio.to_thread(path.read_bytes)
            artifact = await asyncio.to_thread(
                self.runtime.workspace.save_unique, f"downloads/{safe.strip(' .') or 'download'}", data
            )
            s.saved.append(artifact)
            s.events.append(f"downloaded {download.url} to {artifact.path} ({artifact.size} bytes)")
        except Exception as exc:
            s.events.append(f"download failed: {exc}")
        finally:
            self._pending.pop(download, None)
            s.refused.discard(download)
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            with contextlib.suppress(Exception):
                await download.delete()

    async def _watch(self, limit: int) -> None:
        """Cancel a download as soon as its partial file passes the size limit (not after it filled the disk)."""
        directory = self.directory
        while self._pending and directory is not None:
            await asyncio.sleep(0.1)
            sizes = await asyncio.to_thread(_file_sizes, directory)
            if any(size > limit for size in sizes):
                # Chromium names partial files by its own ids, which Playwright does not expose: cancel what is
                # in progress (all but the rarest cases: one download at a time).
                for download, s in list(self._pending.items()):
                    s.refused.add(download)
                    with contextlib.suppress(Exception):
                        await download.cancel()
                await asyncio.to_thread(_remove_large, directory, limit)


def _file_sizes(directory: Path) -> list[int]:
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        return [e.stat().st_size for e in it if e.is_file(follow_symlinks=False)]
    return []


def _remove_large(directory: Path, limit: int) -> None:
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        for e in it:
            if e.is_file(follow_symlinks=False) and e.stat().st_size > limit:
                Path(e.path).unlink(missing_ok=True)


async def await_downloads(ctx: ActionContext, s: BrowserSession, wait_for_start: bool) -> list[Artifact]:
    """The session's downloads finished (within the call's deadline): the files saved since the last call."""
    if wait_for_start and not s.downloads:  # a click may start a download a moment later
        for _ in range(10):
            await asyncio.sleep(0.05)
            if s.downloads:
                break
    if s.downloads:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(remaining(ctx.policy.browser.timeout_s)):
                await asyncio.gather(*s.downloads)
        s.downloads.clear()
    saved, s.saved = s.saved, []
    return saved


async def read_uploads(ctx: ActionContext, selector: str, value: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The files ``value`` names (workspace paths, one per line) for a file input: Playwright's file payloads
    and the checked paths."""
    files = []
    uploaded: list[str] = []
    paths = [p.strip() for p in value.splitlines() if p.strip()]
    if not paths:
        raise ActionError(
            "invalid_input",
            f"{selector} is a file input: give a workspace file path to upload (several: one per line)",
        )
    limit, total = ctx.policy.browser.max_upload_bytes, 0
    for rel in paths:
        # Uploads come from the workspace only: read through its checks (no '..', nothing outside, no
        # symlinks, never the state directory) and hand the browser the bytes, never a path. Every
        # file is read before any is attached: one refused path uploads nothing.
        try:
            content = await asyncio.to_thread(ctx.workspace.read_bytes, rel, max_bytes=limit - total)
        except ActionError as exc:
            over = " (policy.browser.max_upload_bytes, all files together)" if "over the limit" in exc.message else ""
            raise ActionError(
                exc.type,
                f"cannot upload {rel!r}: {exc.message}{over}; nothing was attached",
                rule=exc.rule,
                hint=exc.hint or "Uploads take files inside the workspace (paths relative to it); see files_list.",
            ) from None
        total += len(content)
        name = rel.rsplit("/", 1)[-1]
        files.append({"name": name, "mimeType": mimetypes.guess_type(name)[0] or "application/octet-stream", "buffer": content})
        uploaded.append(ctx.workspace.check(rel))
    return files, uploaded
