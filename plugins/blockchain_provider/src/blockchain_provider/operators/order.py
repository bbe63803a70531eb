"""Operators for order requests (ERP → MES "produce this")."""

from __future__ import annotations

from blockchain_provider.operators.requests import (
    AnswerRequestOperator,
    GetRequestOperator,
    ListRequestsOperator,
)
from blockchain_provider.request_kinds import ORDER


class ListOrderRequestsOperator(ListRequestsOperator):
    """Read every order request addressed to this agent (``BLK_Act_Lst``), page by page.

    Returns ``{"count", "by_status", ...}``; the items go to *apply_function_batch* page by page.
    """

    kind = ORDER


class GetOrderRequestOperator(GetRequestOperator):
    """Find one order request on ``BLK_Act_Lst``; fail when it is missing or not as required.

    :param request_id: the order's id (``abs_action_id``), 32 lowercase hex; templated.
    """

    kind = ORDER


class AnswerOrderRequestOperator(AnswerRequestOperator):
    """Accept or reject an order request (``BLK_Act_Ans``); returns the gateway's confirmation.

    :param request_id: the order's id (``abs_action_id``), 32 lowercase hex; templated.
    :param decision: ``"accept"``/``"reject"`` or a boolean; templated.
    """

    kind = ORDER
