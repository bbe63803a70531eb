"""Alerts for the blockchain DAGs: by Slack or e-mail when configured, else an error log line.

Configuration is by ``[blockchain]`` options (or the environment variables of 0.2.0,
``BLOCKCHAIN_ALERT_*``), read when a DAG is parsed or an alert is sent:

* ``alert_slack_conn_id`` (+ optional ``alert_slack_channel``): a Slack API or webhook
  connection;
* ``alert_smtp_conn_id`` + ``alert_email_to`` (comma-separated): an SMTP connection and its
  recipients.

Both may be set. With neither, alerts are ``ERROR`` lines in the task (or triggerer) log, which
the Airflow UI shows with the failed run.

Whatever the channel, the text goes through :func:`alert_text` first: each of its lines is
quoted by :func:`blockchain_provider.quoting.quote` (control characters escaped, no line break
of its own, capped), so a quoted order description or exception cannot start a line of its own
or reach a terminal as an escape sequence. Slack messages are sent with link unfurling off.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseNotifier

from blockchain_provider.configured import option
from blockchain_provider.quoting import quote

log = logging.getLogger(__name__)


class LogNotifier(BaseNotifier):
    """Writes the alert as one ``ERROR`` log line.

    :param message: the alert's text (templated).
    """

    template_fields = ("message",)

    def __init__(self, message: str = "{{ dag.dag_id }} failed") -> None:
        super().__init__()
        self.message = message

    def notify(self, context: Mapping[str, Any]) -> None:
        log.error("ALERT %s", alert_text(self.message))


#: The longest line, and the most lines, of an alert.
ALERT_LINE_MAX_LENGTH = 1000
ALERT_MAX_LINES = 40


def alert_text(text: str) -> str:
    """*text* as an alert sends it: at most :data:`ALERT_MAX_LINES` lines (split on line feeds
    only), each quoted (:func:`~blockchain_provider.quoting.quote`, at most
    :data:`ALERT_LINE_MAX_LENGTH` characters): any other line break is a space, control
    characters are escaped. Backslashes are kept: the ledger text the lines quote was quoted
    (escaped) when the alert was written."""
    lines = str(text).split("\n")
    kept = [quote(line, ALERT_LINE_MAX_LENGTH, backslash=False) for line in lines[:ALERT_MAX_LINES]]
    if len(lines) > ALERT_MAX_LINES:
        kept.append(f"... {len(lines) - ALERT_MAX_LINES} more line(s)")
    return "\n".join(kept)


#: The longest e-mail subject an alert gets (the whole text is in the body).
SUBJECT_MAX_LENGTH = 200


def slack_escape(text: str) -> str:
    """*text* as Slack shows it literally: ``&``, ``<`` and ``>`` escaped, so a quoted exception or
    order description cannot become a link, a mention (``<!channel>``) or other markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def email_subject(text: str) -> str:
    """One line of at most :data:`SUBJECT_MAX_LENGTH` characters: no header can be added."""
    line = " ".join(text.split())
    return line if len(line) <= SUBJECT_MAX_LENGTH else line[: SUBJECT_MAX_LENGTH - 3] + "..."


def email_html(text: str) -> str:
    """*text* as HTML that shows it literally, line breaks kept."""
    return '<pre style="white-space: pre-wrap">' + html.escape(text) + "</pre>"


def _slack_notifier(**kwargs: Any) -> BaseNotifier:
    from blockchain_provider.notifications.slack import EscapingSlackNotifier

    # a link in a quoted text is not fetched by Slack to build a preview
    return EscapingSlackNotifier(unfurl_links=False, unfurl_media=False, **kwargs)


def _smtp_notifier(**kwargs: Any) -> BaseNotifier:
    from blockchain_provider.notifications.smtp import EscapingSmtpNotifier

    return EscapingSmtpNotifier(**kwargs)


def alert_notifiers(message: str) -> list[BaseNotifier]:
    """The notifiers the options configure, each sending *message* (a Jinja template)."""
    notifiers: list[BaseNotifier] = []
    slack_conn_id = option("alert_slack_conn_id")
    if slack_conn_id:
        channel = option("alert_slack_channel")
        notifiers.append(
            _slack_notifier(
                slack_conn_id=slack_conn_id, text=message, **({"channel": channel} if channel else {})
            )
        )
    smtp_conn_id = option("alert_smtp_conn_id")
    recipients = option("alert_email_to")
    if smtp_conn_id and recipients:
        notifiers.append(
            _smtp_notifier(
                smtp_conn_id=smtp_conn_id,
                to=[r.strip() for r in recipients.split(",") if r.strip()],
                subject="[MES blockchain] " + message,
                html_content=message,
            )
        )
    return notifiers or [LogNotifier(message)]


def failure_notifiers() -> list[BaseNotifier]:
    """``on_failure_callback`` of every blockchain DAG: names the DAG, task, run and error."""
    return alert_notifiers(
        "Task {{ ti.task_id }} of {{ dag.dag_id }} failed in run {{ run_id }} "
        "(try {{ ti.try_number }}): "
        # the exception on the alert's one line: its own line breaks are spaces
        "{{ exception | default('see the task log', true) | string | replace('\\n', ' ') }}"
    )


def send_alert(message: str, context: Mapping[str, Any] | None = None) -> None:
    """Send *message* (plain text, not a template) through the configured channels now."""
    for notifier in alert_notifiers("{{ alert_message }}"):
        notifier(dict(context or {}, alert_message=message))


async def deadline_missed(context: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
    """Deadline alert callback (runs in the triggerer): the run has not finished in time."""
    dag_id = kwargs.get("dag_id") or (context or {}).get("dag_run", {}).get("dag_id", "?")
    message = kwargs.get("message") or f"{dag_id} has not finished by its deadline"
    log.error("ALERT %s", alert_text(message))
    if option("alert_slack_conn_id") or option("alert_smtp_conn_id"):
        from asgiref.sync import sync_to_async

        await sync_to_async(send_alert)(message)
