"""Airflow pools that serialise the requests of one token.

The original gateway does not echo request ids, so answers are told apart by token alone and a
token may have one request in flight. The hook enforces that within a process; a one-slot pool
per token enforces it across workers. ``blockchain-provider pools ensure`` creates the pool.
"""

from __future__ import annotations


def pool_name(token_conn_id: str = "blockchain_master") -> str:
    """The pool of the requests made with the token of connection *token_conn_id*."""
    return f"{token_conn_id}_requests"
