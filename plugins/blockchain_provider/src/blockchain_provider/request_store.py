"""Where the "Blockchain requests" page reads the requests a deployment stored.

The provider keeps no request store of its own: the sync DAGs of a deployment store what they
read from the gateway wherever that deployment keeps its data. The page reads them through a
:class:`RequestStore` that the deployment implements and names in Airflow's configuration::

    [blockchain]
    request_store = my_package.my_module.MyRequestStore

(or ``AIRFLOW__BLOCKCHAIN__REQUEST_STORE``; see :mod:`blockchain_provider.configured`). The API
server builds it once per process, on the page's first request.

The page's answer and sync DAGs are configured the same way (:func:`answer_dag_id`,
:func:`sync_dag_id`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from blockchain_provider.configured import check_interface, configured_object, option

#: Defaults of the page's DAG ids, ``{kind}`` being the request kind's name.
DEFAULT_ANSWER_DAG_ID = "blockchain_{kind}_answer"
DEFAULT_SYNC_DAG_ID = "blockchain_{kind}_sync"


@runtime_checkable
class RequestStore(Protocol):
    """The stored requests of one deployment, as the page reads them.

    *kind* is a name of :func:`blockchain_provider.request_kinds.request_kinds` (``partner``,
    ``order`` or a configured kind's); an item is the deployment's model of that kind, as the sync
    stored it: it has the attributes every request has (``status``, ``issuing_agent``,
    ``receiving_agent``, ``timestamp``, ``answer_timestamp``) and the kind's id field.

    A store may also have ``columns(kind) -> Sequence[str]``: the attributes of a *kind* item the
    page shows as the kind's own columns, in order (for orders: type, description, metadata).
    Without it, the page shows none: it never shows an attribute the store did not name.
    Both methods raise :class:`ValueError` for a kind, status or request id they refuse; the
    page answers 422 with its message, which must therefore say what was refused and nothing
    secret.
    """

    def request_page(
        self, kind: str, status: str | None = None, *, offset: int = 0, limit: int = 25
    ) -> tuple[int, Sequence[Any]]:
        """How many *kind* requests there are (with *status*, only those) and the page of them
        from *offset*, at most *limit*, newest first."""
        ...

    def request(self, kind: str, request_id: str) -> Any | None:
        """The stored *kind* request with this id, whatever its status, or ``None``."""
        ...


def page_columns(store: RequestStore, kind: str) -> list[str]:
    """The *kind* attributes the page shows as columns: what the store's optional
    ``columns(kind)`` names, else none."""
    columns = getattr(store, "columns", None)
    return [str(name) for name in columns(kind)] if callable(columns) else []


def answer_dag_id(kind: str) -> str:
    """The DAG that answers a *kind* request (``[blockchain] answer_dag_id``)."""
    return str(option("answer_dag_id", DEFAULT_ANSWER_DAG_ID)).format(kind=kind)


def sync_dag_id(kind: str) -> str:
    """The DAG that syncs the *kind* requests (``[blockchain] sync_dag_id``)."""
    return str(option("sync_dag_id", DEFAULT_SYNC_DAG_ID)).format(kind=kind)


_building = threading.Lock()


@functools.lru_cache(maxsize=1)
def _built(path: str | None) -> RequestStore:
    store = configured_object("request_store", "RequestStore", path)
    check_interface("request_store", store, RequestStore, "request_page and request")
    return store


def configured_request_store() -> RequestStore:
    """The store ``[blockchain] request_store`` names, built once per process (per configured
    path).

    :raises ConfiguredObjectError: not configured, not importable, or not a store.
    """
    path = option("request_store")
    with _building:  # the page's first requests may come at once: one store, one engine
        return _built(path)


def reset_request_store() -> None:
    """Forget the built store: after its option changed, or anything the store itself reads once
    (its database connection)."""
    _built.cache_clear()
