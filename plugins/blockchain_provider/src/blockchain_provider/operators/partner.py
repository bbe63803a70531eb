"""Operators for partner requests (ERP → MES "let us work together")."""

from __future__ import annotations

from blockchain_provider.operators.requests import (
    AnswerRequestOperator,
    GetRequestOperator,
    ListRequestsOperator,
)
from blockchain_provider.request_kinds import PARTNER


class ListPartnerRequestsOperator(ListRequestsOperator):
    """Read every partner request addressed to this agent (``BLK_Part_Lst``), page by page.

    Returns ``{"count", "by_status", ...}``; the items go to *apply_function_batch* page by page.
    """

    kind = PARTNER


class GetPartnerRequestOperator(GetRequestOperator):
    """Find one partner request on ``BLK_Part_Lst``; fail when it is missing or not as required.

    :param request_id: the partner request's id, 32 lowercase hex; templated.
    """

    kind = PARTNER


class AnswerPartnerRequestOperator(AnswerRequestOperator):
    """Accept or reject a partner request (``BLK_Part_Ans``); returns the gateway's confirmation.

    :param request_id: the partner request's id, 32 lowercase hex; templated.
    :param decision: ``"accept"``/``"reject"`` or a boolean; templated.
    """

    kind = PARTNER
