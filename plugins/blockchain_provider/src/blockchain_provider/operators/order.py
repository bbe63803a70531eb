"""Operators for order requests (ERP → MES "produce this")."""

from __future__ import annotations

from blockchain_provider import protocol
from blockchain_provider.operators.base import BaseAnswerOperator, BaseListOperator


class ListOrderRequestsOperator(BaseListOperator):
    """Read every order request addressed to this agent (``BLK_Act_Lst``), page by page.

    :param page_size: items per request, defaults to 100.
    :param summary: return ``{"count", "by_status"}`` instead of the items, defaults to False.
    """

    list_topic = protocol.ORDER_LIST


class AnswerOrderRequestOperator(BaseAnswerOperator):
    """Accept or reject an order request (``BLK_Act_Ans``); returns the gateway's confirmation.

    :param request_id: the order's id (``abs_action_id``, 32 hex); templated.
    :param decision: ``"accept"``/``"reject"`` or a boolean; templated.
    """

    answer_topic = protocol.ORDER_ANSWER
    id_name = "order request id"
