"""Slack alerts whose text is shown as it is, never interpreted (needs the Slack provider)."""

from __future__ import annotations

from typing import Any

from airflow.providers.slack.notifications.slack import SlackNotifier

from blockchain_provider.notifications import alert_text, slack_escape


class EscapingSlackNotifier(SlackNotifier):
    """Slack's notifier, escaping the rendered text: what an alert quotes is shown, never interpreted.
    :func:`~blockchain_provider.notifications.alert_text` first, then Slack's own escaping."""

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        self.text = slack_escape(alert_text(str(self.text)))
