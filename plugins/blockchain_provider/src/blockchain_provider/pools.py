"""Airflow pools that serialise the requests of one token.

The original gateway does not echo request ids, so answers are told apart by token alone and a
token may have one request in flight. The hook enforces that within a process; a one-slot pool
per token enforces it across workers. ``blockchain-provider pools ensure`` creates the pools.

The records' reporters that a master creates each sign with a token of their own: their requests
need not queue behind the master's. They run in a pool of their own, whose slots bound how many
reporters have a request in flight at once; what keeps one reporter to one request at a time is
the caller's lock on the record's queue (one task at a time per record, see
:class:`~blockchain_provider.operators.update_queue.UpdateQueue`), not the pool.
"""

from __future__ import annotations

#: Slots of a reporters' pool when it is created: records updated side by side.
DEFAULT_REPORTER_SLOTS = 16


def pool_name(token_conn_id: str = "blockchain_master") -> str:
    """The pool of the requests made with the token of connection *token_conn_id*."""
    return f"{token_conn_id}_requests"


def reporter_pool_name(token_conn_id: str = "blockchain_master") -> str:
    """The pool of the requests signed by the reporters that the agent of *token_conn_id* created."""
    return f"{token_conn_id}_reporter_requests"
