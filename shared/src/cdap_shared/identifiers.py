"""French identifiers that more than one service checks: the NIR (numéro de sécurité sociale)."""

from __future__ import annotations

import re

from stdnum.fr import nir as stdnum_nir

NIR_PATTERN = r"^[12]\s?\d{2}\s?\d{2}\s?(\d{2}|2[AB])\s?\d{3}\s?\d{3}\s?\d{2}$"
"""A NIR's shape: sex, year, month, department (Corsica's 2A/2B), commune, order, key; a space
allowed between the groups, as it is printed on a carte Vitale."""

_NIR = re.compile(NIR_PATTERN)


def is_nir(text: str) -> bool:
    """True when `text` has a NIR's shape and its two-digit key matches the 13 characters before it
    (python-stdnum: 97 - body mod 97, Corsica's 2A/2B counted as 19/18)."""
    # The shape first: stdnum would also accept dots, or a body the search cannot match.
    return bool(_NIR.fullmatch(text)) and stdnum_nir.is_valid(text)
