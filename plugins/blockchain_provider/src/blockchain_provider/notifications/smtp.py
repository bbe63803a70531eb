"""E-mail alerts whose body is shown as it is, never interpreted (needs the SMTP provider)."""

from __future__ import annotations

from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

from blockchain_provider.notifications import alert_text, email_html, email_subject


class EscapingSmtpNotifier(SmtpNotifier):
    """SMTP's notifier, escaping the rendered body as HTML and making the subject one plain line."""

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        self.subject = email_subject(alert_text(str(self.subject)))
        self.html_content = email_html(alert_text(str(self.html_content)))
