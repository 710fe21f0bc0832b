"""The authorization tables' completeness check (`cdap_testing.authz_table`) finds both kinds of gap."""

from __future__ import annotations

from cdap_testing.authz_table import coverage_gaps

DOCUMENT = {
    "paths": {
        "/v1/users/{user_id}/suspend": {"post": {}},
        "/v1/me": {"get": {}},
        "/health": {"get": {}},  # not under /v1: no row needed
    }
}


def test_a_complete_table_has_no_gap() -> None:
    rows = [("POST", "/v1/users/{user}/suspend"), ("GET", "/v1/me")]
    assert coverage_gaps(DOCUMENT, rows) == ([], [])


def test_an_endpoint_without_a_row_and_a_row_without_an_endpoint_are_both_reported() -> None:
    rows = [("POST", "/v1/users/42/suspend"), ("GET", "/v1/nope"), ("DELETE", "/v1/me")]
    assert coverage_gaps(DOCUMENT, rows) == (["GET /v1/me"], ["DELETE /v1/me", "GET /v1/nope"])
