"""Stop on ``SIGTERM`` as on Ctrl-C, for the scripts that start services (the benchmarks).

A script that starts brokers, a sandbox or a whole stack stops them in a ``finally`` block, which
Ctrl-C (``KeyboardInterrupt``) runs but a plain ``SIGTERM`` (``timeout``, ``kill``, a CI job that
is cancelled) does not: Python dies at once and every service started in a session of its own is
left running. :func:`stop_on_termination` makes ``SIGTERM`` and ``SIGHUP`` raise
``KeyboardInterrupt`` in the main thread, once: further signals are ignored while the script stops
what it started.
"""

from __future__ import annotations

import signal
from typing import Any

__all__ = ["TERMINATING_SIGNALS", "stop_on_termination"]

#: The signals that stop a script as Ctrl-C does.
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: Any) -> None:
    # the stop has its own time limits: a second signal must not cut it short
    for ignored in (signal.SIGINT, *TERMINATING_SIGNALS):
        signal.signal(ignored, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_termination() -> None:
    """From now on, ``SIGTERM`` and ``SIGHUP`` raise ``KeyboardInterrupt`` as Ctrl-C does (call it
    from the main thread, before the first service starts)."""
    for signum in TERMINATING_SIGNALS:
        signal.signal(signum, _interrupt)
