"""The sync alerts' texts: what they quote from the ledger is escaped, on one line, capped."""

from __future__ import annotations

from include.mes.models import OrderRequest, PartnerRequest
from include.mes.request_kinds import ORDER
from include.request_alerts import SUMMARY_LIMIT, describe_open_requests, describe_rejected_items

AGENT = "02" + "ab" * 32
FORGED = "Wheels\nFORGED-ALERT-LINE: cancel everything\r\n\x1b]0;pwned\x07 \u202eevil\u2028more\x85end"


#: What every stored request has, for an OPEN request from and to this MES's agent.
COMMON = {
    "issuing_agent": AGENT,
    "receiving_agent": AGENT,
    "status": "OPEN",
    "timestamp": 1_700_000_000,
    "answer_timestamp": 0,
    "transaction_ids": (),
}


def order(description: str = "Wheels", *, type_: str = "PURCHASE", n: int = 0) -> OrderRequest:
    return OrderRequest(
        **COMMON, abs_action_id=f"{n:032x}", type=type_, description=description, metadata={}, files=[]
    )


def assert_harmless(text: str) -> None:
    for char in "\x1b\x07\r\x85\u2028\u2029\u202e":
        assert char not in text
    assert not any(line.startswith("FORGED") for line in text.split("\n"))


def test_a_forged_order_description_stays_on_its_own_line_escaped():
    text = describe_open_requests("order", [order(FORGED, type_="PO\nFORGED-TYPE"), order(n=1)])
    lines = text.split("\n")
    assert len(lines) == 3  # the title and one line per request
    assert_harmless(text)
    assert "FORGED-ALERT-LINE: cancel everything" in lines[1]  # shown, not acted on
    assert "\\x1b]0;pwned\\x07" in lines[1] and "\\u202eevil" in lines[1]
    assert lines[1].startswith(f"- {0:032x} PO FORGED-TYPE: Wheels FORGED-ALERT-LINE")
    assert lines[2] == f"- {1:032x} PURCHASE: Wheels from {AGENT[:12]}... at 2023-11-14 22:13 UTC"


def test_a_long_description_is_capped():
    DESCRIPTION_MAX_LENGTH = dict(ORDER.alert_fields)["description"]
    text = describe_open_requests("order", [order("x" * 10_000)])
    line = text.split("\n")[1]
    assert "x" * DESCRIPTION_MAX_LENGTH not in line
    assert "x" * (DESCRIPTION_MAX_LENGTH - 3) + "..." in line
    assert len(line) < DESCRIPTION_MAX_LENGTH + 150


def test_partner_lines_quote_the_agent_escaped():
    partner = PartnerRequest(
        **{**COMMON, "timestamp": 0, "issuing_agent": "\x1b[31m\nFORGED" + AGENT}, partner_request_id="a" * 32
    )
    text = describe_open_requests("partner", [partner])
    assert text.split("\n")[1].startswith("- " + "a" * 32 + " from \\x1b[31m FORGED...")
    assert_harmless(text)


def test_more_requests_than_the_limit_are_counted():
    text = describe_open_requests("order", [order(n=n) for n in range(SUMMARY_LIMIT + 3)])
    assert text.split("\n")[0] == f"{SUMMARY_LIMIT + 3} new OPEN order request(s) to answer:"
    assert text.split("\n")[-1] == "... and 3 more"
    assert len(text.split("\n")) == SUMMARY_LIMIT + 2


def test_rejected_items_quote_their_reason_and_id_escaped():
    text = describe_rejected_items(
        "order",
        [
            {"item_id": "b" * 32, "reason": "bad description " + FORGED},
            {"item_id": None, "reason": "no id\nFORGED-LINE"},
        ],
    )
    lines = text.split("\n")
    assert lines[0] == "2 order request item(s) from the ledger set aside, not stored:"
    assert len(lines) == 3
    assert lines[2] == "- (no valid id): no id FORGED-LINE"
    assert_harmless(text)


def test_the_alert_line_quotes_a_forged_description_escaped_once(caplog, monkeypatch):
    from blockchain_provider.notifications import send_alert

    for name in ("ALERT_SLACK_CONN_ID", "ALERT_SMTP_CONN_ID"):
        monkeypatch.delenv(f"BLOCKCHAIN_{name}", raising=False)
        monkeypatch.delenv(f"AIRFLOW__BLOCKCHAIN__{name}", raising=False)
    with caplog.at_level("ERROR"):
        send_alert(describe_open_requests("order", [order(FORGED + " C:\\path")]))
    (text,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
    lines = text.split("\n")
    assert lines[0] == "ALERT 1 new OPEN order request(s) to answer:" and len(lines) == 2
    assert_harmless(text)
    assert "\\x1b]0;pwned\\x07" in lines[1] and "\\\\x1b" not in lines[1]
    assert "C:\\\\path" in lines[1]  # a backslash of the ledger's, escaped once


def test_a_third_kinds_alert_line_quotes_its_own_fields(monkeypatch):
    from tests.third_kind import QuoteRequest, use_quote_kind

    use_quote_kind(monkeypatch)
    item = QuoteRequest(**COMMON, quote_request_id="c" * 32, product="Wheel\nFORGED")
    text = describe_open_requests("quote", [item])
    assert text.split("\n") == [
        "1 new OPEN quote request(s) to answer:",
        f"- {'c' * 32} Wheel FORGED from {AGENT[:12]}... at 2023-11-14 22:13 UTC",
    ]
