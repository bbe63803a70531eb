"""Playing the ERP: partner requests and orders sent to the MES agent, and demo data.

These act on the ledger database directly, as transactions signed by an ERP agent that is
created on first use and reused afterwards (found by name, checked by password). SQLite's WAL
mode and busy timeout make that safe beside a running gateway, which serves the new items to
the MES on its next list request.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway_sandbox.ledger import Ledger
from gateway_sandbox.validation import LedgerError, check_public_key, short

DEFAULT_ERP_NAME = "ERP"
#: Where the ERP agents' password comes from when none is given: this variable, else a password
#: generated once per ledger and kept beside it in ``<db>.erp-password`` (owner-only).
ERP_PASSWORD_ENV = "GATEWAY_SANDBOX_ERP_PASSWORD"
_GENERATED: dict[str, str] = {}

#: The demo ERP agents: name, and what happens to their partner requests.
DEMO_AGENTS = (
    "ACME Automotive ERP",
    "Borealis Plastics ERP",
    "Cobalt Logistics ERP",
)

#: (agent index, type, description, metadata, answer: True accept / False reject / None open)
DEMO_ORDERS: tuple[tuple[int, str, str, dict[str, Any], bool | None], ...] = (
    (
        0,
        "production",
        "Steering wheels for the spring model",
        {"Part": "steering wheel", "Size": 3, "Quantity": 250, "Special_Parameters": ["leather", "heated"]},
        None,
    ),
    (
        0,
        "production",
        "Dashboard panels, batch 7",
        {"Part": "dashboard panel", "Colour": "graphite", "Quantity": 120},
        True,
    ),
    (
        0,
        "rework",
        "Gear knobs with the operator's engraving",
        {"Part": "gear knob", "Quantity": 40, "Special_Parameters": ["engraving"]},
        False,
    ),
    (
        1,
        "production",
        "Bumper clips",
        {"Part": "bumper clip", "Material": "PA6", "Quantity": 5000},
        None,
    ),
    (
        1,
        "production",
        "Door handles, left and right",
        {"Part": "door handle", "Sides": ["left", "right"], "Quantity": 800},
        True,
    ),
)


def erp_password(ledger: Ledger) -> str:
    """The ERP agents' password: ``$GATEWAY_SANDBOX_ERP_PASSWORD``, else generated once per ledger."""
    configured = os.environ.get(ERP_PASSWORD_ENV, "")
    if configured:
        return configured
    if ledger.anchor_path is None:  # an in-memory ledger: one password per process
        return _GENERATED.setdefault(ledger.db_path, secrets.token_urlsafe(24))
    path = Path(ledger.db_path + ".erp-password")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


def erp_agent(ledger: Ledger, name: str = DEFAULT_ERP_NAME, password: str | None = None) -> str:
    """The public key of the agent called *name* whose password is *password* (default
    :func:`erp_password`); created if none is."""
    password = password or erp_password(ledger)
    for agent in ledger.agents(name=name):
        if ledger.check_password(agent["public_key"], password):
            return agent["public_key"]
    public_key, _token = ledger.create_agent(name, password)
    return public_key


def _receiver(ledger: Ledger, to: str) -> str:
    check_public_key(to, "receiving agent public key")
    if ledger.agent(to) is None:
        raise LedgerError(
            f"agent {short(to)} is not in this ledger: create the MES agent first (BLK_Agt create)"
        )
    return to


def send_partner_request(
    ledger: Ledger, to: str, *, name: str = DEFAULT_ERP_NAME, password: str | None = None
) -> str:
    """The ERP agent asks *to* to become partners; return the partner request id."""
    return ledger.create_partner_request(erp_agent(ledger, name, password), _receiver(ledger, to))


def send_order(
    ledger: Ledger,
    to: str,
    *,
    type: str,
    description: str,
    metadata: Mapping[str, Any] | None = None,
    files: Sequence[str] = (),
    name: str = DEFAULT_ERP_NAME,
    password: str | None = None,
) -> str:
    """The ERP agent sends an order request to its accepted partner *to*; return its id."""
    issuer = erp_agent(ledger, name, password)
    return ledger.create_order(issuer, _receiver(ledger, to), type, description, metadata, files)


def seed_demo(ledger: Ledger, to: str) -> dict[str, Any]:
    """Partner requests and orders addressed to *to* in mixed states, from three ERP agents.

    The receiver answers some of them (the ledger signs as it: it must be an agent of this
    ledger). Running it again for the same receiver creates nothing and returns what exists.
    """
    receiver = _receiver(ledger, to)
    demo_names = set(DEMO_AGENTS)
    existing = [
        item
        for item in ledger.partner_requests(receiver)
        if (ledger.agent(item["issuing_agent"]) or {}).get("name") in demo_names
    ]
    if existing:
        issuers = {item["issuing_agent"] for item in existing}
        orders = [o for o in ledger.orders(receiver) if o["issuing_agent"] in issuers]
        return {
            "created": False,
            "partner_requests": {item["partner_request_id"]: item["status"] for item in existing},
            "orders": {o["abs_action_id"]: o["status"] for o in orders},
        }
    agents = [erp_agent(ledger, name) for name in DEMO_AGENTS]
    partner_requests: dict[str, str] = {}
    orders: dict[str, str] = {}
    with ledger.transaction():
        # ACME and Borealis become partners; Cobalt is turned down once and asks again.
        for index, accept in ((0, True), (1, True), (2, False)):
            item_id = ledger.create_partner_request(agents[index], receiver)
            partner_requests[item_id] = ledger.answer_partner_request(receiver, item_id, accept)["status"]
        partner_requests[ledger.create_partner_request(agents[2], receiver)] = "OPEN"
        for index, type_, description, metadata, answer in DEMO_ORDERS:
            item_id = ledger.create_order(agents[index], receiver, type_, description, metadata)
            orders[item_id] = (
                "OPEN" if answer is None else ledger.answer_order(receiver, item_id, answer)["status"]
            )
    return {"created": True, "partner_requests": partner_requests, "orders": orders}
