"""Loopback ports for the services the project starts on its own."""

from __future__ import annotations

import socket
from contextlib import closing


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
