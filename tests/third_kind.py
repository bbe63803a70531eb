"""A third kind of request, declared in the test tree as a deployment declares one (README,
"Adding a request kind"): quote requests, listed on ``BLK_Quo_Lst`` and answered on
``BLK_Quo_Ans``, each with a ``product`` of its own.

The provider side is :data:`QUOTE`, which a deployment adds to ``LEDGER_KINDS`` of
``include/mes/request_kinds.py`` (the tuple ``[blockchain] request_kinds`` names); the MES side is
:data:`STORED_QUOTE`: its table, row builder and model. Nothing else declares the kind.
"""

from __future__ import annotations

import functools
import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from blockchain_provider import request_kinds as provider_request_kinds
from blockchain_provider.request_kinds import RequestKind
from include.mes import request_kinds as mes_request_kinds
from include.mes import schema
from include.mes.models import InvalidRequestItemError, StoredRequest, request_row
from include.mes.request_kinds import STORED_KINDS, StoredKind

QUOTE = RequestKind("quote", "BLK_Quo_Lst", "BLK_Quo_Ans", "quote_request_id", "quote request")

#: The table of quote requests (in a metadata of the test's own): the product, and what every kind has.
quote_requests = schema.request_table(
    "quote_requests", sa.MetaData(), "quote_request_id", sa.Column("product", sa.Text, nullable=False)
)


@dataclass(frozen=True, kw_only=True)
class QuoteRequest(StoredRequest):
    """A quote request as last synced: which product the partner asks a price for."""

    quote_request_id: str
    product: str


def quote_request_row(item: object, index: int = 0) -> dict[str, Any]:
    """The fields every request has, and the product (a text of 1 to 200 characters)."""
    row = request_row("quote request", "quote_request_id", item, index)
    product = item.get("product")  # type: ignore[union-attr]
    if not isinstance(product, str) or not 1 <= len(product) <= 200:
        raise InvalidRequestItemError(f"Invalid quote request #{index}: field product is not a text of 1-200")
    row["product"] = product
    return row


STORED_QUOTE = StoredKind(
    "quote",
    quote_requests,
    QuoteRequest,
    quote_request_row,
    alert_fields=(("product", 60),),
    page_columns=("product",),
)

#: The DAG file a deployment writes for the kind: the two shapes every kind has.
QUOTE_DAGS = textwrap.dedent(
    '''
    """Quote requests: a sync every 15 minutes and a manual answer (Airflow DAGs)."""

    from blockchain_common.factories import answer_dag, sync_dag

    blockchain_quote_sync = sync_dag("quote", doc_md=__doc__)
    blockchain_quote_answer = answer_dag("quote", doc_md=__doc__)
    '''
)


def use_quote_kind(
    monkeypatch: pytest.MonkeyPatch, engine: sa.Engine | None = None, topic_prefix: str | None = None
) -> None:
    """Declare the kind for this test as the README says: in ``LEDGER_KINDS``, which the
    provider's option names as in docker-compose.yaml, in the MES's stored kinds, (on
    *engine*) its table and (with *topic_prefix*) its topics' names on the token connection the
    environment defines, as the test's other topics are named."""
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__REQUEST_KINDS", "include.mes.request_kinds.LEDGER_KINDS")
    monkeypatch.setattr(mes_request_kinds, "LEDGER_KINDS", (*mes_request_kinds.LEDGER_KINDS, QUOTE))
    monkeypatch.setitem(STORED_KINDS, "quote", STORED_QUOTE)
    # the kinds the option names are read once per process: for this test, from caches of its own
    for cached in ("_kinds", "_by_topic"):
        function = getattr(provider_request_kinds, cached)
        monkeypatch.setattr(
            provider_request_kinds, cached, functools.lru_cache(maxsize=4)(function.__wrapped__)
        )
    if engine is not None:
        quote_requests.metadata.create_all(engine)
    if topic_prefix is not None:
        connection = json.loads(os.environ["AIRFLOW_CONN_BLOCKCHAIN_MASTER"])
        topics = json.loads(connection["extra"]["topics"])
        topics.update({topic: topic_prefix + topic for topic in (QUOTE.list_topic, QUOTE.answer_topic)})
        connection["extra"]["topics"] = json.dumps(topics)
        monkeypatch.setenv("AIRFLOW_CONN_BLOCKCHAIN_MASTER", json.dumps(connection))


def write_quote_dags(folder: Path) -> Path:
    """The kind's DAG file in *folder*; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "blockchain_quote.py").write_text(QUOTE_DAGS)
    return folder
