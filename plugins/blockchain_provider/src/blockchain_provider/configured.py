"""The provider's ``[blockchain]`` options, and the deployment's objects they name.

What the provider needs from the deployment that installs it (where stored requests are read,
where reporters are kept) it gets through small interfaces the deployment implements and names
by a dotted path in Airflow's configuration (``airflow.cfg``, or ``AIRFLOW__BLOCKCHAIN__*``). A
configuration option rather than an entry point: the implementation is the deployment's own code,
usually beside its DAGs and not an installed distribution, and an operator sets and changes it
the way they set every other Airflow option. The options are declared in ``get_provider_info``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: The configuration section of the provider's options.
SECTION = "blockchain"


@dataclass(frozen=True)
class Option:
    """One ``[blockchain]`` option, as ``get_provider_info`` declares it.

    :param description: what it sets (one paragraph).
    :param example: a value, shown by ``airflow config list``.
    :param default: its value when unset; ``{`` and ``}`` are doubled in the declaration, as
        Airflow formats a provider's default with its own variables.
    :param environment: the environment variable read when the option is unset (the name 0.2.0
        read it from), if any.
    """

    description: str
    example: str | None = None
    default: str | None = None
    environment: str | None = None

    def declared(self) -> dict[str, Any]:
        """The option in ``get_provider_info``'s ``config`` section."""
        default = self.default
        return {
            "description": self.description + "\n",
            "version_added": None,
            "type": "string",
            "example": self.example,
            "default": None if default is None else default.replace("{", "{{").replace("}", "}}"),
        }


#: Every option of the provider's.
OPTIONS: dict[str, Option] = {
    "request_store": Option(
        "Dotted path to the deployment's RequestStore (a class or callable taking no argument; see "
        "blockchain_provider.request_store): where the page reads the requests the sync DAGs "
        "stored. Unset, the page answers 503 and says so.",
        example="my_deployment.requests.MyRequestStore",
    ),
    "reporter_registry": Option(
        "Dotted path to the deployment's ReporterRegistry (a class or callable taking no argument; "
        "see blockchain_provider.reporter_registry): the reporters `blockchain-provider reporters` "
        "lists and rotates, and whose tokens the triggerer reads.",
        example="my_deployment.reporters.MyReporterRegistry",
    ),
    "request_kinds": Option(
        "Comma-separated dotted paths, each to a RequestKind or to a tuple or list of them (see "
        "blockchain_provider.request_kinds): the kinds of request the deployment's gateway lists "
        "besides partner requests and orders. Every Airflow component must see the same value.",
        example="my_deployment.kinds.QUOTE",
    ),
    "answer_dag_id": Option(
        "The DAG the page triggers to answer a request; {kind} is the request kind's name.",
        default="blockchain_{kind}_answer",
    ),
    "sync_dag_id": Option(
        "The DAG the page triggers to sync the requests; {kind} is the request kind's name.",
        default="blockchain_{kind}_sync",
    ),
    "token_conn_id": Option(
        "The token connection whose agent the page answers for: a request addressed to its public "
        "key can be accepted or rejected there. Default: blockchain_master.",
        example="blockchain_master",
        environment="BLOCKCHAIN_TOKEN_CONN_ID",
    ),
    "ui_airflow_api_url": Option(
        "Where the page calls Airflow's REST API, when not on the API server's own socket (a proxy, "
        "another host name).",
        example="http://127.0.0.1:8080/api/v2",
        environment="BLOCKCHAIN_UI_AIRFLOW_API_URL",
    ),
    "ui_airflow_api_ca": Option(
        "The CA bundle an https ui_airflow_api_url is verified against. Default: the system's.",
        example="/opt/airflow/certs/ca.pem",
        environment="BLOCKCHAIN_UI_AIRFLOW_API_CA",
    ),
    "alert_slack_conn_id": Option(
        "A Slack API or webhook connection that alerts are sent to (besides the task log).",
        example="slack_api_default",
        environment="BLOCKCHAIN_ALERT_SLACK_CONN_ID",
    ),
    "alert_slack_channel": Option(
        "The Slack channel of the alerts, where the connection does not name one.",
        example="mes-alerts",
        environment="BLOCKCHAIN_ALERT_SLACK_CHANNEL",
    ),
    "alert_smtp_conn_id": Option(
        "An SMTP connection that alerts are e-mailed through, to alert_email_to.",
        example="smtp_default",
        environment="BLOCKCHAIN_ALERT_SMTP_CONN_ID",
    ),
    "alert_email_to": Option(
        "Comma-separated recipients of the e-mailed alerts.",
        example="ops@example.com",
        environment="BLOCKCHAIN_ALERT_EMAIL_TO",
    ),
}


class ConfiguredObjectError(RuntimeError):
    """An object an option names cannot be built: not configured, not importable, or not what the
    option asks for. The message names the option."""


def option(key: str, default: str | None = None) -> str | None:
    """``[blockchain] <key>``, stripped; else the option's environment variable (``BLOCKCHAIN_<KEY>``,
    where it has one); *default* when both are unset or blank."""
    from airflow.configuration import conf

    value = conf.get(SECTION, key, fallback=None)
    if not (isinstance(value, str) and value.strip()):
        environment = OPTIONS[key].environment if key in OPTIONS else None
        value = os.environ.get(environment) if environment else None
    return value.strip() if isinstance(value, str) and value.strip() else default


def configured_object(key: str, what: str, path: str | None = None) -> Any:
    """Build the object that ``[blockchain] <key>`` (or *path*, read from it already) names: a
    dotted path to a class, or any callable, taking no argument. *what* names the interface in
    the errors. An error of the build itself is reported by its type only: a database's error
    text may carry connection details."""
    from airflow.sdk.module_loading import import_string

    path = path or option(key)
    if path is None:
        raise ConfiguredObjectError(
            f"No {what} is configured: set [{SECTION}] {key} (AIRFLOW__{SECTION.upper()}__{key.upper()}) "
            f"to the dotted path of the deployment's {what} class"
        )
    try:
        factory = import_string(path)
    except ImportError as exc:
        raise ConfiguredObjectError(f"[{SECTION}] {key} {path!r} cannot be imported: {exc}") from None
    try:
        return factory()
    except Exception as exc:
        log.exception("[%s] %s %r could not be built", SECTION, key, path)
        raise ConfiguredObjectError(
            f"[{SECTION}] {key} {path!r} could not be built: {type(exc).__name__} (see the log)"
        ) from None


def check_interface(key: str, built: Any, interface: type, methods: str) -> None:
    """Refuse *built* unless it has the methods of *interface* (a runtime-checkable protocol)."""
    if not isinstance(built, interface):
        raise ConfiguredObjectError(
            f"[{SECTION}] {key} {option(key)!r} built a {type(built).__name__}, which has no {methods} methods"
        )
