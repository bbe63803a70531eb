"""Alerts quote exception texts and order descriptions: nothing quoted becomes markup."""

from __future__ import annotations

import jinja2
import pytest

from blockchain_provider import notifications

HOSTILE = '<a href="http://x">click</a> & <!channel> <@U123|boss> </pre><script>1</script>\nSubject: x'


@pytest.fixture
def channels(monkeypatch):
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__ALERT_SLACK_CONN_ID", "slack_alerts")
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__ALERT_SMTP_CONN_ID", "smtp_alerts")
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__ALERT_EMAIL_TO", "ops@example.com")


def rendered(message_template: str, context: dict) -> dict[str, object]:
    out = {}
    for notifier in notifications.alert_notifiers(message_template):
        notifier.render_template_fields(context)
        out[type(notifier).__name__] = notifier
    return out


def failure_alert_texts(exception: BaseException) -> list[str]:
    """What each failure alert's channel sends for a task that failed with *exception*."""
    context = {
        "exception": exception,
        "ti": type("TI", (), {"task_id": "t", "try_number": 1})(),
        "dag": type("D", (), {"dag_id": "d", "render_template_as_native_obj": False})(),
        "run_id": "r",
    }
    texts = []
    for notifier in notifications.failure_notifiers():
        notifier.render_template_fields(context, jinja_env=jinja2.Environment())
        texts.append(getattr(notifier, "text", None) or notifier.html_content)
    return texts


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
    for text in failure_alert_texts(ValueError(HOSTILE)):
        assert "<script>" not in text and "<!channel>" not in text


FORGED = "Wheels\nFORGED-ALERT-LINE: cancel everything\x1b]0;pwned\x07 \u202e\r\u2028x"


def test_slack_is_sent_without_link_unfurling(channels):
    slack = next(
        n for n in notifications.alert_notifiers("{{ alert_message }}") if "Slack" in type(n).__name__
    )
    assert slack.unfurl_links is False and slack.unfurl_media is False


def test_every_channel_escapes_control_characters_and_caps_lines(channels):
    by_name = rendered("{{ alert_message }}", {"alert_message": "title\n" + FORGED + "y" * 5000})
    slack, mail = by_name["EscapingSlackNotifier"], by_name["EscapingSmtpNotifier"]
    for text in (slack.text, mail.html_content, mail.subject):
        for char in "\x1b\x07\r\u2028\u202e":
            assert char not in text
        assert "\\x1b]0;pwned\\x07" in text
    assert "y" * notifications.ALERT_LINE_MAX_LENGTH not in slack.text


def test_the_alert_log_line_escapes_what_it_quotes(caplog, monkeypatch):
    for name in ("ALERT_SLACK_CONN_ID", "ALERT_SMTP_CONN_ID"):
        monkeypatch.delenv(f"BLOCKCHAIN_{name}", raising=False)
        monkeypatch.delenv(f"AIRFLOW__BLOCKCHAIN__{name}", raising=False)
    with caplog.at_level("ERROR"):
        notifications.send_alert("2 new OPEN order request(s):\n- " + FORGED)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("ALERT")]
    text = record.getMessage()
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text
    assert text.split("\n") == [
        "ALERT 2 new OPEN order request(s):",
        "- Wheels",  # a line break of the alert itself: the forged text was quoted unescaped
        "FORGED-ALERT-LINE: cancel everything\\x1b]0;pwned\\x07 \\u202e x",
    ]


def test_the_failure_alert_keeps_the_exception_on_its_line(channels):
    for text in failure_alert_texts(ValueError("boom\nFORGED-ALERT-LINE\x1b[2J")):
        assert "\n" not in text.replace('<pre style="white-space: pre-wrap">', "")
        assert "boom FORGED-ALERT-LINE\\x1b[2J" in text
