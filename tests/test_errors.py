"""
everyskill.errors: the typed hierarchy, and database errors (raised by a real
PostgreSQL) turned into typed errors that name the field.
"""

from __future__ import annotations

import asyncpg
import pydantic
import pytest

from everyskill.errors import (
    ConflictError,
    DatabaseUnavailableError,
    EverySkillError,
    InvalidTransitionError,
    NotFoundError,
    NotPermittedError,
    TenantScopeError,
    ValidationError,
    check_id,
    from_database_error,
    storable,
    unstorable_input,
)
from everyskill.tenancy import tenant_transaction
from tests.support import TenantRows


def test_every_error_is_an_everyskill_error() -> None:
    for error in [
        ValidationError.of("field", "reason"),
        NotFoundError("skill", "s1"),
        TenantScopeError("no scope"),
        InvalidTransitionError("feedback", "f1", "dismissed", "implemented", ["accepted"]),
        ConflictError("raced"),
    ]:
        assert isinstance(error, EverySkillError)
        assert str(error)


def test_validation_error_lists_problems_without_values() -> None:
    class Model(pydantic.BaseModel):
        score: pydantic.conint(ge=1, le=10)  # type: ignore[valid-type]
        name: str

    with pytest.raises(pydantic.ValidationError) as raised:
        Model(score=99, name=7)  # type: ignore[arg-type]
    error = ValidationError.from_pydantic(raised.value)
    assert [field for field, _ in error.problems] == ["score", "name"]
    assert (error.field, "99" in str(error)) == ("score", False)
    with pytest.raises(ValueError):
        ValidationError([])


def test_not_found_lists_every_row_missing_and_names_the_first_few() -> None:
    alone = NotFoundError("skill", "s1", "skill_slug")
    assert alone.missing == (("s1", "skill_slug"),)
    assert str(alone) == "skill 's1' not found in this tenant (from skill_slug)"
    more = [(f"s{i}", f"items[{i}].skill_slug") for i in range(2, 10)]
    several = NotFoundError("skill", "s1", "items[1].skill_slug", more=more)
    assert several.missing == (("s1", "items[1].skill_slug"), *more)
    assert (several.id, several.field) == ("s1", "items[1].skill_slug")
    message = str(several)
    assert message.startswith("skill 's1' not found in this tenant (from items[1].skill_slug);")
    shown = [f"'s{i}' (from items[{i}].skill_slug)" for i in range(2, 2 + NotFoundError.SHOWN)]
    assert all(item in message for item in shown) and "'s7'" not in message
    assert message.endswith(f"and {len(more) - NotFoundError.SHOWN} more")


def test_invalid_transition_says_what_is_allowed() -> None:
    error = InvalidTransitionError("feedback", "f1", "dismissed", "implemented", ["accepted"])
    assert "dismissed" in str(error) and "only from accepted" in str(error)


async def raised_by(owner: asyncpg.Connection, sql: str, *args: object) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as raised:
        await owner.execute(sql, *args)
    return raised.value


async def test_database_errors_become_typed(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    missing = from_database_error(
        await raised_by(
            owner,
            "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment)"
            " VALUES ($1, 'no-such-skill', 'thumbs_up', 1)",
            tenant.tenant_id,
        )
    )
    assert isinstance(missing, NotFoundError)
    assert (missing.kind, missing.id, missing.field) == ("skill", "no-such-skill", "skill_id")

    check = from_database_error(
        await raised_by(owner, "UPDATE skill_feedback SET quality_score = 11 WHERE id = $1", tenant.feedback_id)
    )
    assert isinstance(check, ValidationError) and check.field == "quality_score"

    duplicate = from_database_error(
        await raised_by(
            owner,
            "INSERT INTO users (tenant_id, email, name) SELECT tenant_id, email, name FROM users WHERE id = $1",
            tenant.user_id,
        )
    )
    assert isinstance(duplicate, ConflictError)

    not_null = from_database_error(
        await raised_by(owner, "INSERT INTO skills (tenant_id, slug) VALUES ($1, 'x')", tenant.tenant_id)
    )
    assert isinstance(not_null, ValidationError) and not_null.field == "name"

    referenced = from_database_error(
        await raised_by(owner, "DELETE FROM users WHERE id = $1", tenant.user_id)
    )
    assert isinstance(referenced, ConflictError) and "still referenced" in str(referenced)

    syntax = await raised_by(owner, "SELEC 1")
    assert from_database_error(syntax) is None


async def test_privilege_errors(owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows) -> None:
    """Writing another tenant's row is a tenant scope error; any other missing
    privilege is a NotPermittedError naming the table."""
    async def as_application(sql: str, *args: object) -> asyncpg.PostgresError:
        with pytest.raises(asyncpg.PostgresError) as raised:
            async with tenant_transaction(owner, tenant.tenant_id):
                await owner.execute(sql, *args)
        return raised.value

    rls = await as_application(
        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment)"
        " VALUES ($1, $2, 'thumbs_up', 1)",
        other_tenant.tenant_id,
        other_tenant.skill_id,
    )
    assert isinstance(from_database_error(rls), TenantScopeError)
    plain = await as_application("INSERT INTO tenants (name, slug) VALUES ('x', 'x')")
    assert isinstance(plain, asyncpg.InsufficientPrivilegeError)
    typed = from_database_error(plain)
    assert isinstance(typed, NotPermittedError) and typed.table == "tenants"


def test_database_unavailable_says_what_was_written_and_whether_to_retry() -> None:
    cause = "ConnectionDoesNotExistError: connection was closed in the middle of operation"
    connect = DatabaseUnavailableError("connect", "FileNotFoundError: [Errno 2] No such file")
    call = DatabaseUnavailableError("call", cause)
    commit = DatabaseUnavailableError("commit", cause)
    for error in (connect, call, commit):
        assert isinstance(error, EverySkillError)
        assert error.cause in str(error)
    assert (connect.during, connect.outcome_unknown) == ("connect", False)
    assert "could not reach the database" in str(connect)
    assert "nothing was written" in str(connect) and "can be retried" in str(connect)

    assert (call.during, call.outcome_unknown) == ("call", False)
    assert "connection to the database was lost during the call" in str(call)
    assert "not committed" in str(call) and "nothing of it was written" in str(call)
    assert "can be retried" in str(call)

    # Lost during COMMIT: never claims that nothing was written.
    assert (commit.during, commit.outcome_unknown) == ("commit", True)
    assert "outcome is unknown" in str(commit) and "may or may not" in str(commit)
    assert "nothing" not in str(commit) and "not committed" not in str(commit)


@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b"])
def test_text_postgresql_cannot_store_is_refused_naming_its_field(text: str) -> None:
    assert not storable(text)
    with pytest.raises(ValidationError) as raised:
        check_id("run_id", text)
    assert raised.value.field == "run_id"
    assert "NUL" in raised.value.reason and text not in str(raised.value)
    named = unstorable_input({"skill_id": "fine", "models": ["ok", text]})
    assert named.field == "models"
    assert unstorable_input(None).field == "input"
    assert storable("plain text, ünïcode and emoji 🎉")
