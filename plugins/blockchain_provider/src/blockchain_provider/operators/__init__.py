"""One operator per BLK request."""

from blockchain_provider.operators.order import AnswerOrderRequestOperator, ListOrderRequestsOperator
from blockchain_provider.operators.partner import AnswerPartnerRequestOperator, ListPartnerRequestsOperator
from blockchain_provider.operators.record import (
    CreateRecordOperator,
    EnsureRecordTypeOperator,
    UpdateRecordOperator,
)

__all__ = [
    "AnswerOrderRequestOperator",
    "AnswerPartnerRequestOperator",
    "CreateRecordOperator",
    "EnsureRecordTypeOperator",
    "ListOrderRequestsOperator",
    "ListPartnerRequestsOperator",
    "UpdateRecordOperator",
]
