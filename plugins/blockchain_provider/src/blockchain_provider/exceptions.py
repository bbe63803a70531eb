"""Errors raised by the blockchain provider. None of them ever carries a token or a password."""

from __future__ import annotations


class BlockchainError(Exception):
    """Base class of every error raised by this provider."""


class BlockchainConfigError(BlockchainError, ValueError):
    """A connection or argument is missing or invalid; the message names it."""


class InvalidIdentifierError(BlockchainConfigError):
    """An identifier (public key, request id, record id) does not have its documented format."""


class BlockchainProtocolError(BlockchainError, ValueError):
    """The gateway broke the protocol: an answer of the wrong shape (a list topic answered with a
    non-list, an agent answer without a token or public key, a malformed identifier in an answer).

    Not a :class:`BlockchainConfigError`: nothing in the connection or the arguments can fix it.
    A ``ValueError`` still, as the answer's value is what is wrong.
    """


class MalformedResponseError(BlockchainProtocolError):
    """A ``BLK_Res`` value is none of the protocol's encodings; it is skipped, never fatal to a wait."""


class BlockchainBrokerError(BlockchainError):
    """The Kafka broker could not be reached or did not answer; the message names it."""


class BlockchainDeliveryError(BlockchainBrokerError):
    """A request could not be delivered to its topic: nothing was sent, or the broker did not confirm it."""

    def __init__(self, message: str, *, topic: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.topic = topic
        self.request_id = request_id


class BlockchainGatewayError(BlockchainError):
    """The gateway answered ``error``; the message carries the gateway's text."""

    def __init__(self, message: str, *, topic: str, request_id: str, gateway_text: str) -> None:
        super().__init__(message)
        self.topic = topic
        self.request_id = request_id
        self.gateway_text = gateway_text


class BlockchainTimeoutError(BlockchainError, TimeoutError):
    """No answer came by the deadline; the message names the topic and the request id.

    ``token_held``: the token stays blocked for the request's late answer (no request_id echo).
    """

    token_held: bool = False

    def __init__(self, message: str, *, topic: str, request_id: str, timeout: float) -> None:
        super().__init__(message)
        self.topic = topic
        self.request_id = request_id
        self.timeout = timeout
