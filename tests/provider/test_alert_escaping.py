"""Alerts quote exception texts and order descriptions: nothing quoted becomes markup."""

from __future__ import annotations

import jinja2
import pytest

from blockchain_provider import notifications

HOSTILE = '<a href="http://x">click</a> & <!channel> <@U123|boss> </pre><script>1</script>\nSubject: x'


@pytest.fixture
def channels(monkeypatch):
    monkeypatch.setenv("BLOCKCHAIN_ALERT_SLACK_CONN_ID", "slack_alerts")
    monkeypatch.setenv("BLOCKCHAIN_ALERT_SMTP_CONN_ID", "smtp_alerts")
    monkeypatch.setenv("BLOCKCHAIN_ALERT_EMAIL_TO", "ops@example.com")


def rendered(message_template: str, context: dict) -> dict[str, object]:
    out = {}
    for notifier in notifications.alert_notifiers(message_template):
        notifier.render_template_fields(context)
        out[type(notifier).__name__] = notifier
    return out


def test_slack_text_escapes_what_it_quotes(channels):
    slack = next(
        n
        for name, n in rendered("{{ alert_message }}", {"alert_message": HOSTILE}).items()
        if "Slack" in name
    )
    assert "<" not in slack.text and ">" not in slack.text
    assert "&lt;!channel&gt;" in slack.text and "&amp;" in slack.text


def test_email_html_escapes_what_it_quotes_and_the_subject_is_one_line(channels):
    mail = next(
        n for name, n in rendered("{{ alert_message }}", {"alert_message": HOSTILE}).items() if "Smtp" in name
    )
    assert "<a href" not in mail.html_content and "<script>" not in mail.html_content
    assert "&lt;script&gt;" in mail.html_content
    assert "\n" not in mail.subject and "\r" not in mail.subject
    assert len(mail.subject) <= 200


def test_the_failure_alert_escapes_the_exception(channels):
    context = {
        "exception": ValueError(HOSTILE),
        "ti": type("TI", (), {"task_id": "t", "try_number": 1})(),
        "dag": type("D", (), {"dag_id": "d", "render_template_as_native_obj": False})(),
        "run_id": "r",
    }
    for notifier in notifications.failure_notifiers():
        notifier.render_template_fields(context, jinja_env=jinja2.Environment())
        text = getattr(notifier, "text", None) or notifier.html_content
        assert "<script>" not in text and "<!channel>" not in text
