"""Names of people and organisations: what an input may carry, and how a mail may show one.

A name ends up in mails with one-time links, so it must not be able to pose as text of its own: no line
breaks or other control/format characters (a bidi override reorders what the reader sees), nothing that
reads as a link or an address. Every API that takes a name validates it with `PersonName` /
`OrganisationName` (a 422 otherwise); mails still pass names through `mail_text`, which cannot produce a
line break or a link, for names stored before the rule existed or arriving by event.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

# Unicode categories refused anywhere in a name: controls (newlines, tabs, NUL), format characters (bidi
# overrides, zero-width), line/paragraph separators, private use, surrogates, unassigned.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
# What reads as a link or an address: a scheme, "www.", an @, or a dot glued between a word and two
# letters ("evil.com"). Initials ("J. R.") and "S.A.R.L." are not caught: their dots are followed by a
# space or by a single letter.
_LINK_LIKE = re.compile(r"://|www\.|@|\w\.[^\W\d_]{2,}", re.IGNORECASE)
# In mails, a name keeps letters, marks, digits, spaces and the punctuation real names use.
_MAIL_PUNCTUATION = frozenset(" '\u2019-.")  # \u2019: the typographic apostrophe
MAIL_NAME_LENGTH = 100


def check_name(value: str) -> str:
    """`value` unchanged if it may be a person's or an organisation's name; `ValueError` saying why not."""
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in value):
        raise ValueError("a name may not contain line breaks or control characters")
    if _LINK_LIKE.search(value):
        raise ValueError("a name may not contain a web address, an e-mail address or '://'")
    return value


PersonName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(check_name)
]
OrganisationName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(check_name)
]


def mail_text(name: str) -> str:
    """`name` as plain mail text that cannot break a line nor form a link or an address.

    Anything but letters, marks, digits, apostrophes, hyphens and dots becomes a space (so no `:`, `/`,
    `?`, `=` or `@` survives), a dot is always followed by a space (no `evil.com`, no `www.`), runs of
    spaces collapse.
    """
    kept = "".join(
        char if unicodedata.category(char)[0] in "LMN" or char in _MAIL_PUNCTUATION else " "
        for char in unicodedata.normalize("NFC", name)
    )
    return " ".join(kept.replace(".", ". ").split())[:MAIL_NAME_LENGTH]
