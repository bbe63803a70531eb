"""The characters a unit's status and process name may hold: the generated table is Unicode's."""

from __future__ import annotations

import re
import unicodedata

import pytest

from include.mes import visible_text
from include.mes.models import validate_process_name, validate_unit_status


def refused_by_table(code: int) -> bool:
    return re.search(visible_text.PROCESS_NAME_PATTERN, chr(code)) is None


def test_the_table_refuses_exactly_the_refused_categories():
    categories = {code: unicodedata.category(chr(code)) for code in range(0x110000)}
    wrong = [
        f"U+{code:04X} {category}"
        for code, category in categories.items()
        if refused_by_table(code) != (category in visible_text.REFUSED_CATEGORIES)
    ]
    if unicodedata.unidata_version == visible_text.UNICODE_VERSION:
        assert wrong == []
    else:  # a later Unicode assigns characters the table still refuses as unassigned
        assert all(refused_by_table(int(entry[2:].split()[0], 16)) for entry in wrong)


@pytest.mark.parametrize(
    "status", ["\u200b", "\ufeff", "\u3164", "\u115f\u1160", "\u2800", " \ufe0f ", "\u180e", "\u2060"]
)
def test_a_status_of_nothing_visible_is_refused(status):
    with pytest.raises(ValueError, match="visible"):
        validate_unit_status(status)


@pytest.mark.parametrize(
    "text", ["a\u2028b", "a\u2029", "\u202eabc", "\u2066x\u2069", "x\ue000", "x\U0010fffd", "x\u0378"]
)
def test_layout_and_private_characters_are_refused_anywhere(text):
    with pytest.raises(ValueError, match="Invalid status"):
        validate_unit_status(text)
    with pytest.raises(ValueError, match="Invalid process name"):
        validate_process_name(text)


@pytest.mark.parametrize(
    "text", ["Parado \u2013 manutenção", "Läuft 😀 (Schicht A)", "停止中", "ä", "a\u0301"]
)
def test_real_text_is_accepted(text):
    assert validate_unit_status(text) == text
    assert validate_process_name(text) == text
