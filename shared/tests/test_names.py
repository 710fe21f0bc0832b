"""Names of people and organisations: what inputs refuse, and what mails make of any name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdap_shared.names import check_name, mail_text


@pytest.mark.parametrize(
    "name",
    [
        "Jean-Pierre",
        "O'Brien",
        "N\u2019Diaye",
        "Ève Dupont-Lefèvre",
        "J. R. R. Tolkien",
        "S.A.R.L. Habitat 76",
    ],
)
def test_real_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "Claire\nDurand",
        "Claire\rDurand",
        "Claire\tDurand",
        "Claire\x00",
        "Claire\u2028Durand",  # line separator
        "Claire\u202eerdnaxela",  # right-to-left override
        "Claire\u200b",  # zero-width space
        "https://evil.example",
        "voir evil.com",
        "www.evil.fr",
        "claire@evil.fr",
    ],
)
def test_line_breaks_controls_and_links_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="a name may not contain"):
        check_name(name)


def test_mail_text_defangs_what_got_through() -> None:
    assert mail_text("Jules\n\nhttps://evil.example/activate?token=FAKE") == (
        "Jules https evil. example activate token FAKE"
    )
    assert mail_text("Ève  N\u2019Diaye-Lefèvre") == "Ève N\u2019Diaye-Lefèvre"


@given(st.text(max_size=300))
def test_mail_text_never_makes_a_line_break_or_a_link(name: str) -> None:
    shown = mail_text(name)
    assert "\n" not in shown and "\r" not in shown and "://" not in shown and "@" not in shown
    assert "?" not in shown and "=" not in shown and len(shown) <= 100
    assert all(shown[i + 1] == " " for i, char in enumerate(shown[:-1]) if char == ".")
