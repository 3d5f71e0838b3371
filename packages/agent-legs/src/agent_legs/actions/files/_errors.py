"""The files family's typed errors: resource failures of the host, denials, and changes made but not durable.

* ``resource_error`` maps an ``OSError`` that is a condition of the host (disk full, quota, permissions,
  file too large, out of descriptors, read-only file system, I/O error, name too long) to an
  ``ActionError`` with a message and a hint for the model; ``classified`` applies it to a public
  ``Workspace`` method (or generator), so such conditions never surface as "internal error" and the log
  gets no traceback.
* ``after_commit``: a rename happened but the directory could not be flushed; the message says the change
  is in place (never "retry": repeating would act twice).

Invariants: messages never claim "nothing changed" (only the caller knows that); an ``OSError`` that is
not a resource condition passes through unchanged (it is a bug, reported as one).
"""

from __future__ import annotations

import errno
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..._errors import ActionError

__all__ = ["CONFINED", "ExistsError", "after_commit", "classified", "denied", "resource_error"]

CONFINED = "workspace confinement"
"""The rule named by every confinement refusal (escapes, links, special files, the state directory)."""

_F = TypeVar("_F", bound=Callable[..., Any])
_DISK_FULL_HINT = (
    "Free space in the workspace (delete files that are no longer needed) or ask the operator "
    "for more; repeating the call will fail the same way until then."
)


class ExistsError(ActionError):
    """The target of a no-clobber write exists (``save_unique`` tries the next name)."""


def denied(message: str, rule: str) -> ActionError:
    return ActionError("denied", message, rule=rule)


def resource_error(exc: OSError, verb: str, rel: str | None = None, *, disk: str = "the workspace's disk") -> ActionError | None:
    """A typed error for a file-system resource failure (disk full, permissions, file too large,
    out of file descriptors, read-only file system, I/O error), or None for other errors.

    These are conditions of the host, not bugs: the model gets a clear message and a hint, the
    log no traceback. Messages never claim nothing changed: the caller knows that, this does not."""
    what = f"cannot {verb}" + (f" {rel!r}" if rel else "")
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        why = f"{disk} is full" if code == errno.ENOSPC else f"{disk} quota is used up"
        return ActionError("failed", f"{what}: {why} ({errno.errorcode[code]})", hint=_DISK_FULL_HINT)
    if code in (errno.EACCES, errno.EPERM):
        return ActionError(
            "denied",
            f"{what}: the file system's permissions forbid it ({errno.errorcode[code]})",
            rule="file system permissions",
            hint="The operator's file permissions protect this path; use another one.",
        )
    if code == errno.EFBIG:
        return ActionError(
            "failed",
            f"{what}: the file is too large for the workspace's file system (EFBIG)",
            hint="Write smaller files (split the content).",
        )
    if code in (errno.EMFILE, errno.ENFILE):
        return ActionError(
            "unavailable",
            f"{what}: too many open files on the host ({errno.errorcode[code]})",
            retryable=True,
            hint="A temporary shortage of the host; try again shortly.",
        )
    if code == errno.EROFS:
        return ActionError(
            "failed",
            f"{what}: the workspace's file system is mounted read-only (EROFS)",
            hint="Only reading is possible; ask the operator if writing is needed.",
        )
    if code == errno.EIO:
        return ActionError(
            "failed",
            f"{what}: an I/O error on the workspace's disk (EIO)",
            hint="The disk reports errors; ask the operator to check it.",
        )
    if code == errno.ENAMETOOLONG:
        return ActionError("invalid_input", f"{what}: a name is too long for the workspace's file system")
    return None


def classified(verb: str) -> Callable[[_F], _F]:
    """Turn resource ``OSError``s of a public method (or generator) into typed ``ActionError``s."""

    def deco(fn: _F) -> _F:
        def convert(exc: OSError, args: tuple[Any, ...]) -> BaseException:
            rel = args[1] if len(args) > 1 and isinstance(args[1], str) else None
            return resource_error(exc, verb, rel) or exc

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen(*args: Any, **kwargs: Any) -> Iterator[Any]:
                try:
                    yield from fn(*args, **kwargs)
                except OSError as exc:
                    converted = convert(exc, args)
                    if converted is exc:
                        raise
                    raise converted from None

            return gen  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except OSError as exc:
                converted = convert(exc, args)
                if converted is exc:
                    raise
                raise converted from None

        return wrapper  # type: ignore[return-value]

    return deco


def after_commit(rel: str, done: str, exc: OSError) -> ActionError:
    """The change was made (rename done) but could not be made durable: say so, never "retry"."""
    return ActionError(
        "failed",
        f"{rel!r} was {done}, but the directory could not be flushed to disk "
        f"({exc.strerror}): the change is in place now but may not survive a crash of the host",
        hint="Check the result (files_read / files_list) before repeating the call.",
    )
