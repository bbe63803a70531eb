"""Paging through stored requests (the Blockchain requests page), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from include.mes.repository import MesRepository
from tests.include.test_mes_repository import hex32, order, partner


def test_pages_are_newest_first_and_count_the_filtered_total(repo: MesRepository) -> None:
    repo.upsert_partner_requests(
        [
            partner(hex32(n), "OPEN" if n % 3 else "ACCEPTED", timestamp=1_700_000_000 + n)
            for n in range(1, 11)
        ]
    )
    total, first = repo.request_page("partner", offset=0, limit=4)
    assert total == 10
    assert [item.partner_request_id for item in first] == [hex32(n) for n in (10, 9, 8, 7)]
    total, last = repo.request_page("partner", offset=8, limit=4)
    assert [item.partner_request_id for item in last] == [hex32(2), hex32(1)]
    total, accepted = repo.request_page("partner", "ACCEPTED", offset=0, limit=10)
    assert total == 3 and [item.partner_request_id for item in accepted] == [hex32(9), hex32(6), hex32(3)]
    assert repo.request_page("partner", "REJECTED") == (0, [])


def test_order_pages_carry_the_order_fields(repo: MesRepository) -> None:
    repo.upsert_order_requests([order(hex32(1), description="<b>bold</b>", metadata={"Part": "knob"})])
    total, (item,) = repo.request_page("order")
    assert total == 1
    assert (item.abs_action_id, item.description, item.metadata) == (
        hex32(1),
        "<b>bold</b>",
        {"Part": "knob"},
    )
    assert repo.request_page("partner") == (0, [])


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        (("action",), {}, "kind"),
        (("partner", "open"), {}, "status"),
        (("partner",), {"offset": -1}, "offset"),
        (("partner",), {"limit": 0}, "limit"),
        (("partner",), {"limit": True}, "limit"),
    ],
)
def test_bad_arguments_are_refused_naming_them(
    repo: MesRepository, args: tuple, kwargs: dict, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        repo.request_page(*args, **kwargs)
