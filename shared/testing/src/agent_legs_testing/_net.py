from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers that need their port up front)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
