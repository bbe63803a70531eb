"""The operators of the BLK requests: lists, answers, record types, records, reporters, token check."""

from blockchain_provider.operators.order import (
    AnswerOrderRequestOperator,
    GetOrderRequestOperator,
    ListOrderRequestsOperator,
)
from blockchain_provider.operators.partner import (
    AnswerPartnerRequestOperator,
    GetPartnerRequestOperator,
    ListPartnerRequestsOperator,
)
from blockchain_provider.operators.record import (
    CreateRecordOperator,
    CreateRecordsOperator,
    EnsureRecordTypeOperator,
    UpdateRecordOperator,
)
from blockchain_provider.operators.reporter import UpdateDynamicRecordOperator
from blockchain_provider.operators.requests import (
    AnswerRequestOperator,
    GetRequestOperator,
    ListRequestsOperator,
)
from blockchain_provider.operators.token import CheckTokenOperator
from blockchain_provider.operators.update_queue import (
    ClaimedUpdates,
    DynamicRecordUpdate,
    PendingUpdate,
    QueueBusy,
    ReporterStore,
    UpdateQueue,
)

__all__ = [
    "AnswerOrderRequestOperator",
    "AnswerPartnerRequestOperator",
    "AnswerRequestOperator",
    "CheckTokenOperator",
    "ClaimedUpdates",
    "CreateRecordOperator",
    "CreateRecordsOperator",
    "DynamicRecordUpdate",
    "EnsureRecordTypeOperator",
    "GetOrderRequestOperator",
    "GetPartnerRequestOperator",
    "GetRequestOperator",
    "ListOrderRequestsOperator",
    "ListPartnerRequestsOperator",
    "ListRequestsOperator",
    "PendingUpdate",
    "QueueBusy",
    "ReporterStore",
    "UpdateDynamicRecordOperator",
    "UpdateQueue",
    "UpdateRecordOperator",
]
