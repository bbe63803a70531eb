"""Request/reply with the blockchain gateway over Kafka: the Airflow hook.

:class:`KafkaBlockchainHook` reads the Airflow connections (the Kafka provider's ``kafka``
connection and the ``blockchain_token`` one) and hands the requests to a
:class:`~.gateway_client.GatewayClient`, which holds the producer, the response reader and the
request/reply rules (PROTOCOL.md section 2) and knows nothing of Airflow.

The parts live beside it: the connection's settings (:mod:`.settings`), the Kafka clients
(:mod:`.kafka_clients`), the request engine (:mod:`.gateway_client`), the response reader and
the answers' matching and offsets vocabulary (:mod:`blockchain_provider.answer_matcher`), and
what a request comes to (:mod:`blockchain_provider.outcomes`).

The token is never logged, put in an exception or shown by ``repr``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook
from airflow.sdk import BaseHook
from confluent_kafka import Consumer, Producer

from blockchain_provider import protocol
from blockchain_provider.connection_form import ui_field_behaviour
from blockchain_provider.exceptions import (
    BlockchainConfigError,
    BlockchainGatewayError,
    BlockchainProtocolError,
    MalformedResponseError,
)
from blockchain_provider.hooks import kafka_clients
from blockchain_provider.hooks.gateway_client import READER_START_TIMEOUT, GatewayClient
from blockchain_provider.hooks.kafka_clients import TANSU_CONSUMER_DEFAULTS
from blockchain_provider.hooks.response_reader import ResponseReader
from blockchain_provider.hooks.settings import GatewaySettings, _mask, gateway_settings
from blockchain_provider.outcomes import Outcome
from blockchain_provider.request_kinds import ORDER, PARTNER, RequestKind, request_kind

log = logging.getLogger(__name__)


class KafkaBlockchainHook(BaseHook):
    """Request/reply with the blockchain gateway over Kafka.

    :param kafka_config_id: the Kafka provider's ``kafka`` connection (broker, TLS/SASL),
        defaults to ``kafka_default``.
    :param token_conn_id: the ``blockchain_token`` connection holding the token, defaults to
        ``blockchain_master``.
    :param timeout: seconds to wait for an answer; defaults to the connection's ``timeout``
        field, else 30.
    """

    conn_name_attr = "token_conn_id"
    default_conn_name = "blockchain_master"
    conn_type = "blockchain_token"
    hook_name = "Blockchain token"

    def __init__(
        self,
        kafka_config_id: str = KafkaBaseHook.default_conn_name,
        token_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.kafka_config_id = kafka_config_id
        self.token_conn_id = token_conn_id
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kafka_config_id={self.kafka_config_id!r}, token_conn_id={self.token_conn_id!r})"

    # ------------------------------------------------------------- connection
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Custom field behaviour of the ``blockchain_token`` connection form (declared once, in
        :mod:`blockchain_provider.connection_form`)."""
        return ui_field_behaviour()

    @cached_property
    def settings(self) -> GatewaySettings:
        """The ``blockchain_token`` connection's fields; the secrets are registered for masking."""
        return gateway_settings(self.get_connection(self.token_conn_id), self.token_conn_id, self._timeout)

    def get_conn(self) -> Producer:
        """The request producer (started on first use)."""
        self._ensure_started()
        producer = self.client.producer
        assert producer is not None
        return producer

    def test_connection(self) -> tuple[bool, str]:
        """Make a cheap authenticated request (one partner request) and report the outcome."""
        try:
            self.list_partner_requests(0, 1)
        except Exception as exc:
            return False, str(exc)
        finally:
            self.close()
        return True, "The gateway accepted the token."

    # -------------------------------------------------------------- lifecycle
    def new_response_consumer(
        self,
        defaults: Mapping[str, Any] | None = None,
        tansu_defaults: Mapping[str, Any] = TANSU_CONSUMER_DEFAULTS,
    ) -> Consumer:
        """A response consumer: *defaults* over :data:`.kafka_clients.CONSUMER_DEFAULTS`, and
        *tansu_defaults* over both when the broker is tansu; the connection's extra overrides them all."""
        return kafka_clients.new_response_consumer(
            self.kafka_config_id,
            broker=self._bootstrap_servers,
            response_topic=self.settings.topics.responses,
            probe_timeout=min(5.0, READER_START_TIMEOUT),
            defaults=defaults,
            tansu_defaults=tansu_defaults,
        )

    @cached_property
    def _bootstrap_servers(self) -> str:
        return kafka_clients.bootstrap_servers(self.kafka_config_id)

    @cached_property
    def gateway_id(self) -> str:
        """The gateway this hook talks to, as the MES remembers its creations
        (:func:`~blockchain_provider.protocol.gateway_identity`)."""
        return protocol.gateway_identity(
            self._bootstrap_servers, self.settings.public_key or self.token_conn_id
        )

    @cached_property
    def client(self) -> GatewayClient:
        """The request engine (:class:`.GatewayClient`), built on first use: ``call``, ``call_many``,
        ``send``, ``send_batch`` and ``answers_at`` are its own, documented there. The hook adds
        the connection, the conveniences below and :meth:`close`."""
        # built on first use, so a test or a DAG may set READER_START_TIMEOUT before
        return GatewayClient(
            self.settings,
            lambda: kafka_clients.new_producer(self.kafka_config_id),
            lambda: self.new_response_consumer(),
            broker=lambda: self._bootstrap_servers,
            conn_id=self.token_conn_id,
            lock_scope=self.kafka_config_id,
            reader_start_timeout=READER_START_TIMEOUT,
        )

    def _started_client(self) -> GatewayClient | None:
        return self.__dict__.get("client")

    @property
    def _reader(self) -> ResponseReader | None:
        """The response reader, while the hook is started."""
        client = self._started_client()
        return None if client is None else client.reader

    @property
    def _producer(self) -> Producer | None:
        """The request producer, while the hook is started."""
        client = self._started_client()
        return None if client is None else client.producer

    def _ensure_started(self) -> ResponseReader:
        return self.client.ensure_started()

    def close(self) -> None:
        """Stop the response reader and close the Kafka clients (:meth:`.GatewayClient.close`).

        Without request_id echo, after a request timed out this first waits for its late answer, at
        most the grace period (``late_answer_grace``): the task keeps the token's pool slot, so a
        request of another task cannot take that answer.
        """
        client = self._started_client()
        if client is not None:
            client.close()

    def __enter__(self) -> KafkaBlockchainHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- requests
    def request(
        self,
        topic: str,
        body: Mapping[str, Any] | None = None,
        *,
        header: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Outcome:
        """Send one request and return its answer.

        :param topic: the request topic's protocol name (``BLK_Part_Lst``, ...); the connection's
            topic overrides map it to the actual name.
        :param body: the request's body object, if it has one.
        :param header: header keys besides ``auth`` and ``request_id`` (``start``, ``limit``).
        :param timeout: seconds to wait for the answer; defaults to the connection's.
        :raises BlockchainGatewayError: the gateway answered ``error``.
        :raises BlockchainTimeoutError: no answer by the deadline.
        :raises BlockchainDeliveryError: the broker did not take the request.
        """
        return self.client.call(protocol.Call(topic, dict(header or {}), body), timeout=timeout)

    # ------------------------------------------------------------ conveniences
    def list_requests(self, kind: RequestKind | str, start: int = 0, limit: int = 10) -> list[dict[str, Any]]:
        """One page of the requests of *kind* (a :class:`RequestKind` or its name) addressed to
        this agent."""
        return self._page(protocol.list_call(request_kind(kind).list_topic, start, limit))

    def iter_requests(self, kind: RequestKind | str, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every request of *kind*, page by page until an empty page."""
        return self._iter_pages(request_kind(kind).list_topic, page_size)

    def answer_request(self, kind: RequestKind | str, request_id: str, accept: bool) -> str:
        """Accept (``True``) or reject request *request_id* of *kind*; return the gateway's
        confirmation."""
        return self.client.call(
            protocol.answer_call(request_kind(kind).answer_topic, request_id, accept)
        ).value

    def list_partner_requests(self, start: int = 0, limit: int = 10) -> list[dict[str, Any]]:
        """One page of partner requests (``BLK_Part_Lst``): :meth:`list_requests` of partner."""
        return self.list_requests(PARTNER, start, limit)

    def iter_partner_requests(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every partner request: :meth:`iter_requests` of partner."""
        return self.iter_requests(PARTNER, page_size)

    def answer_partner_request(self, partner_request_id: str, accept: bool) -> str:
        """Accept or reject a partner request: :meth:`answer_request` of partner."""
        return self.answer_request(PARTNER, partner_request_id, accept)

    def list_order_requests(self, start: int = 0, limit: int = 10) -> list[dict[str, Any]]:
        """One page of order requests (``BLK_Act_Lst``): :meth:`list_requests` of order."""
        return self.list_requests(ORDER, start, limit)

    def iter_order_requests(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every order request: :meth:`iter_requests` of order."""
        return self.iter_requests(ORDER, page_size)

    def answer_order_request(self, order_request_id: str, accept: bool) -> str:
        """Accept or reject an order request: :meth:`answer_request` of order."""
        return self.answer_request(ORDER, order_request_id, accept)

    def get_record_type(self, name: str) -> dict[str, Any] | None:
        """(optional read, ``BLK_Rty_Get``) The record type *name*, or ``None`` when the gateway does not
        know it. No flow needs it: the MES remembers what it created."""
        return self._get_or_none(protocol.record_type_get_call(name))

    def create_record_type(self, name: str, description: str, properties: list[dict[str, Any]]) -> str:
        """Create a record type (``BLK_Rty``); ``properties`` are ``{"name", "data_type", "dynamic"}``.
        Creating it again identically is confirmed, not refused."""
        return self.client.call(protocol.record_type_create_call(name, description, properties)).value

    def get_record(self, record_id: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        """(optional read, ``BLK_Rec_Get``) The record *record_id*, or ``None`` when it does not exist.

        :param timeout: seconds to wait for the answer; the connection's by default.
        """
        return self._get_or_none(protocol.record_get_call(record_id), timeout=timeout)

    def create_record(
        self, record_id: str, record_type: str, description: str, properties: Mapping[str, Any]
    ) -> str:
        """Create a non-dynamic record (written once); creating it again identically is confirmed."""
        return self.client.call(
            protocol.record_create_call(record_id, record_type, description, properties)
        ).value

    def create_dynamic_record(
        self,
        record_id: str,
        record_type: str,
        description: str,
        properties: Mapping[str, Any],
        password: str,
    ) -> protocol.ReporterCredentials:
        """Create a dynamic record and its reporter agent with *password*; return the reporter's
        public key and token (the token is registered for masking at once)."""
        call = protocol.record_create_call(
            record_id, record_type, description, properties, dynamic=True, password=password
        )
        _mask(password)
        outcome = self.client.call(call)
        if outcome.kind != "data":
            shown = " ".join(str(outcome.value).split())[:200]
            raise MalformedResponseError(
                f"The gateway answered the creation of dynamic record {record_id} with {outcome.kind} "
                f"{shown!r}, not data holding its reporter's public key and token: the record may exist "
                "with no reporter the MES knows, and sending it again cannot give one"
            )
        if isinstance(outcome.value, Mapping) and isinstance(outcome.value.get("token"), str):
            _mask(outcome.value["token"])
        return protocol.reporter_from_answer(outcome.value, record_id)

    def update_record(
        self, record_type: str, record_id: str, properties: Mapping[str, Any], *, token: str | None = None
    ) -> str:
        """Update dynamic properties of a record on its record type's topic, signed with *token* (the
        record's reporter's); the connection's token when ``None``."""
        return self.client.call(
            protocol.record_update_call(record_type, record_id, properties), token=token
        ).value

    def create_agent(self, name: str, password: str) -> tuple[str, str]:
        """Create an agent at the gateway; return ``(public_key, token)``. Both are secrets' neighbours:
        the token is registered for masking at once."""
        _mask(password)
        data = self.client.call(protocol.agent_create_call(name, password), secrets=(password,)).value
        return self._agent_answer(data, need_public_key=True)

    def get_token(self, public_key: str | None = None, password: str | None = None) -> str:
        """A fresh token for an existing agent; defaults to the connection's public key and password."""
        settings = self.settings
        public_key = public_key or settings.public_key
        if password is None and settings.agent_password is not None:
            password = settings.agent_password.reveal()
        if not public_key or not password:
            raise BlockchainConfigError(
                f"Connection {self.token_conn_id} needs its public key and agent password to get a token"
            )
        data = self.client.call(protocol.agent_token_call(public_key, password), secrets=(password,)).value
        return self._agent_answer(data, need_public_key=False)[1]

    @staticmethod
    def _agent_answer(data: Any, need_public_key: bool) -> tuple[str, str]:
        if not isinstance(data, Mapping) or not isinstance(data.get("token"), str) or not data["token"]:
            raise BlockchainProtocolError("The gateway's agent answer has no token")
        _mask(data["token"])
        public_key = data.get("public_key", "")
        if need_public_key:
            protocol.answered_public_key(public_key, "public key in the gateway's answer")
        return public_key, data["token"]

    def _get_or_none(self, call: protocol.Call, *, timeout: float | None = None) -> dict[str, Any] | None:
        try:
            return self.client.call(call, timeout=timeout).value
        except BlockchainGatewayError as exc:
            if protocol.is_not_found(exc.gateway_text):
                return None
            raise

    def _page(self, call: protocol.Call) -> list[dict[str, Any]]:
        value = self.client.call(call).value
        if not isinstance(value, list):
            raise BlockchainProtocolError(
                f"The gateway answered {call.topic} with {type(value).__name__}, not a list"
            )
        return value

    def _iter_pages(self, topic: str, page_size: int) -> Iterator[dict[str, Any]]:
        start: int | None = 0
        digest: str | None = None
        pages = 0
        while start is not None:
            page = self._page(protocol.list_call(topic, start, page_size))
            log.info("%s: read %d item(s) from position %d", topic, len(page), start)
            # a short page is not the end (a gateway may cap its pages): an empty one is, and so
            # are a page identical to the one before (a gateway that ignores start) and the cap
            turn = protocol.turn_page(start, page, digest, pages)
            if turn.ended_by is not None:
                log.warning("%s", protocol.listing_end_warning(topic, turn, start))
            if turn.ended_by != protocol.REPEATED_PAGE:
                yield from page
            start, digest, pages = turn.start, turn.digest, turn.pages
