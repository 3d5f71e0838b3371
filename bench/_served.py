"""A bench's server in a process of its own, and a ``Legs`` allowed to reach it.

In the benchmark's process a server would compete with the clients it serves for the GIL, so each bench
forks it; the server puts its port (or ports: the first is the one ``Legs`` may reach) on a queue once
listening. Killed, and the ``Legs`` closed, when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent_legs import Legs

__all__ = ["served_legs", "serving"]


@contextlib.contextmanager
def serving(serve: Callable[[Any], None]) -> Iterator[Any]:
    """``serve(queue)`` in a forked process: yields what it put on the queue (its port, or ports)."""
    queue: Any = multiprocessing.get_context("fork").Queue()
    proc = multiprocessing.get_context("fork").Process(target=serve, args=(queue,), daemon=True)
    proc.start()
    try:
        yield queue.get(timeout=30)
    finally:
        proc.kill()


@contextlib.contextmanager
def served_legs(serve: Callable[[Any], None]) -> Iterator[tuple[Legs, Any]]:
    """``serving(serve)`` and a ``Legs`` (its own workspace and state) whose policy allows the first port."""
    with serving(serve) as ports:
        port = ports if isinstance(ports, int) else ports[0]
        with (
            tempfile.TemporaryDirectory() as tmp,
            Legs(
                workspace=Path(tmp) / "ws",
                state_dir=Path(tmp) / "st",
                policy={"network": {"allow_hosts": [f"127.0.0.1:{port}"]}},
            ) as legs,
        ):
            yield legs, ports
