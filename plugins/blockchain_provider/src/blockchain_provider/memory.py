"""What the MES remembers of what it created on a gateway (PROTOCOL.md 3.3).

A record type is created once per gateway, not once per run: the caller keeps a memory of the
record types it created (the MES database), and the operators send a creation only for what it
does not know. The provider knows nothing of where the memory lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class RecordTypeMemory(Protocol):
    """The record types created on each gateway (named by
    :func:`~blockchain_provider.protocol.gateway_identity`)."""

    def created(self, gateway: str, name: str) -> bool:
        """Whether record type *name* is known to exist on *gateway*."""

    def remember(self, gateway: str, name: str) -> None:
        """Note that record type *name* exists on *gateway* (noting it twice is harmless)."""


#: What an operator is given: a memory, or a callable (or a dotted path to one) that returns one
#: when the task runs, so that no database is opened when a DAG is parsed.
RecordTypeMemorySource = RecordTypeMemory | Callable[[], RecordTypeMemory] | str
