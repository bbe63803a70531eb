"""Operators for partner requests (ERP → MES "let us work together")."""

from __future__ import annotations

from blockchain_provider import protocol
from blockchain_provider.operators.base import BaseAnswerOperator, BaseListOperator


class ListPartnerRequestsOperator(BaseListOperator):
    """Read every partner request addressed to this agent (``BLK_Part_Lst``), page by page.

    :param page_size: items per request, defaults to 100.
    :param summary: return ``{"count", "by_status"}`` instead of the items, defaults to False.
    """

    list_topic = protocol.PARTNER_LIST


class AnswerPartnerRequestOperator(BaseAnswerOperator):
    """Accept or reject a partner request (``BLK_Part_Ans``); returns the gateway's confirmation.

    :param request_id: the partner request's id (32 hex); templated.
    :param decision: ``"accept"``/``"reject"`` or a boolean; templated.
    """

    answer_topic = protocol.PARTNER_ANSWER
    id_name = "partner request id"
