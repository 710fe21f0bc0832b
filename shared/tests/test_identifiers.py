from __future__ import annotations

import pytest

from cdap_shared.identifiers import is_nir


@pytest.mark.parametrize(
    "text",
    [
        "185057800608491",
        "1 85 05 78 006 084 91",  # as a carte Vitale prints it
        "269029934173285",
        "185052A12345633",  # Corsica: 2A counts as 19 in the key (97 - 1850519123456 mod 97)
        "185052B12345660",  # and 2B as 18
    ],
)
def test_a_nir_with_its_key_is_one(text: str) -> None:
    assert is_nir(text)


@pytest.mark.parametrize(
    "text",
    [
        "185057800608436",  # the key does not match
        "185057800608492",
        "18505780060849",  # one digit short
        "385057800608491",  # no sex 3
        "1.85.05.78.006.084.91",  # stdnum would take dots; a search field does not
        "185052C123456" + "00",  # no department 2C
        "",
    ],
)
def test_anything_else_is_not(text: str) -> None:
    assert not is_nir(text)
