"""Serving the console with uvicorn: ``serve`` (the command) and ``ConsoleServer`` (a thread, for tests).

Invariants: the host is checked first (loopback unless ``allow_remote``); shutdown ends the live feed's
connections within a few seconds (``timeout_graceful_shutdown``) instead of waiting for browsers.
"""

from __future__ import annotations

import threading
import time

import uvicorn
from starlette.applications import Starlette

from ._app import create_app
from ._config import ConsoleConfig, check_host

__all__ = ["ConsoleServer", "serve"]


def _server(config: ConsoleConfig, allow_remote: bool) -> tuple[uvicorn.Server, Starlette]:
    problem = check_host(config.host, allow_remote)
    if problem is not None:
        raise ValueError(problem)
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,
            server_header=False,
        )
    )
    return server, app


def serve(config: ConsoleConfig, allow_remote: bool = False) -> None:
    """Run the console until interrupted (Ctrl-C)."""
    _server(config, allow_remote)[0].run()


class ConsoleServer:
    """The console in a background thread: ``start()`` returns once it accepts connections."""

    def __init__(self, config: ConsoleConfig, allow_remote: bool = False) -> None:
        self.config = config
        self.server, self.app = _server(config, allow_remote)
        self.thread = threading.Thread(target=self.server.run, name="agent-legs-console", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    def start(self, timeout: float = 30) -> ConsoleServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the console did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.app.state.stopping.set()
        self.server.should_exit = True
        self.thread.join(15)

    def __enter__(self) -> ConsoleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
