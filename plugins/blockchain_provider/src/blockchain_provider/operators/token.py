"""Check that the gateway accepts a token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from airflow.sdk.exceptions import AirflowFailException

from blockchain_provider import protocol
from blockchain_provider.exceptions import BlockchainError, BlockchainGatewayError
from blockchain_provider.operators.base import BaseBlockchainOperator, Done, Step
from blockchain_provider.outcomes import Outcome


class CheckTokenOperator(BaseBlockchainOperator):
    """Make one cheap authenticated request (the first partner request) with the token of
    ``token_conn_id``; returns ``"accepted"``.

    A refusal fails the task at once, without retries (no retry can fix a refused token), with how
    to rotate it. No answer or a broker error fails it as any task fails (retried).
    """

    def first_step(self, context: Mapping[str, Any]) -> Step:
        return Step(protocol.list_call(protocol.PARTNER_LIST, 0, 1))

    def answered(self, context: Mapping[str, Any], state: dict[str, Any], outcome: Outcome) -> Done:
        return Done("accepted")

    def refused(self, context: Mapping[str, Any], state: dict[str, Any], error: BlockchainError) -> NoReturn:
        if isinstance(error, BlockchainGatewayError):
            raise AirflowFailException(
                f"The gateway refused the token of connection {self.token_conn_id}: {error.gateway_text}. "
                f"Rotate it: blockchain-provider token rotate --conn-id {self.token_conn_id}"
            )
        raise error
