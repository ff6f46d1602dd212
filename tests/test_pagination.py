"""
everyskill.pagination: cursors round-trip, refuse what they did not make, and
the limit is bounded. (Paging through real rows is tested with the API in
test_feedback and test_relations.)
"""

from __future__ import annotations

import base64
import datetime

import pytest

from everyskill.errors import ValidationError
from everyskill.pagination import (
    MAX_LIMIT,
    Filter,
    check_limit,
    check_moment,
    decode_cursor,
    encode_cursor,
)


def test_a_cursor_round_trips() -> None:
    moment = datetime.datetime(2026, 11, 25, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc)
    cursor = encode_cursor("skill_feedback", moment, "id-1")
    assert decode_cursor("skill_feedback", cursor) == (moment, "id-1")


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "bm90IGpzb24", encode_cursor("token_measurements", datetime.datetime.now(datetime.timezone.utc), "x")],
)
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(ValidationError) as refused:
        decode_cursor("skill_feedback", cursor)
    assert refused.value.field == "cursor"


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, True, 2.5])
def test_limits_are_bounded(limit: object) -> None:
    with pytest.raises(ValidationError):
        check_limit(limit)  # type: ignore[arg-type]
    assert check_limit(MAX_LIMIT) == MAX_LIMIT


def test_filters_are_parameters_not_text() -> None:
    where = Filter().equal("status", "x'; DROP TABLE skills; --").equal("source", None)
    where.add("created_at BETWEEN {} AND {}", 1, 2)
    assert where.sql() == "status = $1 AND created_at BETWEEN $2 AND $3"
    assert where.arguments == ["x'; DROP TABLE skills; --", 1, 2]


def _raw_cursor(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 3000 + b"]" * 3000,  # deeper than the JSON parser goes
        b"[" * 100_000,
        b'["skill_feedback","0001-01-01T00:00:00+14:00","x"]',  # before year 1 in UTC
        b'["skill_feedback","9999-12-31T23:59:59-14:00","x"]',  # after year 9999 in UTC
        b'["skill_feedback","2026-01-01T00:00:00","x"]',  # no time zone
        b'["skill_feedback","2026-01-01T00:00:00+00:00",5]',
        b'["skill_feedback",7,"x"]',
        b'{"a":1,"b":2,"c":3}',
        b'["skill_feedback","2026-01-01T00:00:00+00:00","x",' + b"1" * 5000 + b"]",
        b"\xff\xfe",
    ],
)
def test_crafted_cursors_are_refused_naming_the_cursor(payload: bytes) -> None:
    with pytest.raises(ValidationError) as refused:
        decode_cursor("skill_feedback", _raw_cursor(payload))
    assert refused.value.field == "cursor"


@pytest.mark.parametrize(
    "text",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-01-01T00:00:00"],
)
@pytest.mark.parametrize("name", ["since", "until"])
def test_bounds_outside_utc_or_without_a_zone_are_refused_naming_the_field(
    text: str, name: str
) -> None:
    moment = datetime.datetime.fromisoformat(text)
    bounds = {"since": None, "until": None, name: moment}
    with pytest.raises(ValidationError) as refused:
        Filter().created_between(bounds["since"], bounds["until"])
    assert refused.value.field == name


@pytest.mark.parametrize(
    "text",
    ["0001-01-01T14:00:00+14:00", "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59-00:00",
     "9999-12-31T09:59:59-14:00"],
)
def test_bounds_at_the_calendar_limits_are_taken(text: str) -> None:
    moment = datetime.datetime.fromisoformat(text)
    where = Filter().created_between(moment, moment)
    assert where.arguments == [moment, moment]
    assert check_moment("since", moment) is moment
