"""
everyskill.pagination: cursors round-trip, refuse what they did not make, and
the limit is bounded. (Paging through real rows is tested with the API in
test_feedback and test_relations.)
"""

from __future__ import annotations

import datetime

import pytest

from everyskill.errors import ValidationError
from everyskill.pagination import MAX_LIMIT, Filter, check_limit, decode_cursor, encode_cursor


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
