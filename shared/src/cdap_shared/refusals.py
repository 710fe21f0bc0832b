"""The refusals a service's rules raise, pure (no HTTP), and the one table from their kinds to HTTP.

A service's `domain.py` subclasses these kinds in its own words (its docstrings say what each covers
there) and adds kinds of its own; its `web.PROBLEMS` is `REFUSALS` plus those, installed by
`cdap_shared.problems.install_error_table`, which answers a refusal by the nearest class it names.
"""

from __future__ import annotations


class Refused(Exception):
    """A command the rules do not allow: a machine-readable `reason` and a sentence for people.

    The subclass says which kind of refusal it is; the HTTP edge maps each kind to a status. `members`
    are further facts a client can act on (e.g. the password rules a new password breaks).
    """

    def __init__(self, reason: str, detail: str, **members: object) -> None:
        super().__init__(detail)
        self.reason = reason
        self.members = members


class NotPermitted(Refused):
    """Not for this caller."""


class Unknown(Refused):
    """No such thing (or none the caller may learn of)."""


class Conflict(Refused):
    """Not now: the thing's state does not allow it."""


class Invalid(Refused):
    """Not as asked: the input breaks a rule."""


# Refusal kind -> (status, title), for `install_error_table`.
REFUSALS: dict[type[Exception], tuple[int, str]] = {
    NotPermitted: (403, "Forbidden"),
    Unknown: (404, "Not found"),
    Conflict: (409, "Conflict"),
    Invalid: (422, "Invalid request"),
}
