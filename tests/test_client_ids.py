"""
everyskill.client_ids, and the client ids of every create call of the query
API, as the application connects: the id's form, replays (the stored row,
nothing written, aggregates unchanged), a replay with other values, an id
another tenant holds (refused, revealing nothing), batches with some ids
replayed, and two concurrent calls with one new id. The owner connection
only prepares rows and checks what was stored.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pydantic
import pytest

from everyskill import benchmarks, catalogue, feedback, usage
from everyskill.client_ids import FOREIGN_ID, batch_ids, checked_id
from everyskill.http_api.schemas import CLIENT_ID_PATTERN, ClientId
from everyskill.errors import ConflictError, RunNotRunningError, TenantScopeError, ValidationError
from everyskill.rows import Saved
from everyskill.tenancy import tenant_scope
from tests.support import TenantRows, wait_until_blocked

SONNET = "claude-sonnet-4-5"


# -- the id's form --------------------------------------------------------------


def test_an_id_is_stored_in_its_canonical_form() -> None:
    given = "123E4567-E89B-42D3-A456-426614174000"
    assert checked_id(given) == "123e4567-e89b-42d3-a456-426614174000"
    assert checked_id(uuid.UUID(given)) == given.lower()
    assert checked_id(None) is None


def test_the_schema_pattern_accepts_exactly_the_ids_the_api_accepts() -> None:
    pattern = re.compile(CLIENT_ID_PATTERN)
    base = uuid.UUID("123e4567-e89b-42d3-a456-426614174000").int
    for version in range(16):
        for variant in range(16):  # the top 4 bits of the 17th hex digit
            value = base & ~(0xF << 76) & ~(0xF << 60) | version << 76 | variant << 60
            for text in (str(uuid.UUID(int=value)), str(uuid.UUID(int=value)).upper()):
                try:
                    accepted = checked_id(text) is not None
                except ValidationError:
                    accepted = False
                assert bool(pattern.fullmatch(text)) == accepted, (text, version, variant)
    for text in ("nope", "123e4567e89b42d3a456426614174000", "{123e4567-e89b-42d3-a456-426614174000}"):
        assert pattern.fullmatch(text) is None
    schema = pydantic.TypeAdapter(ClientId).json_schema()
    assert schema["anyOf"][0]["pattern"] == CLIENT_ID_PATTERN


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-a-uuid",
        "123e4567e89b42d3a456426614174000",  # no hyphens
        "{123e4567-e89b-42d3-a456-426614174000}",
        "urn:uuid:123e4567-e89b-42d3-a456-426614174000",
        " 123e4567-e89b-42d3-a456-426614174000",
        "123e4567-e89b-42d3-a456-42661417400g",
        "123e4567-e89b-42d3-a456-4266141740001",
        12345,
        b"123e4567-e89b-42d3-a456-426614174000",
    ],
)
def test_anything_but_a_hyphenated_uuid_is_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(ValidationError) as refused:
        checked_id(bad)
    assert refused.value.field == "id" and "UUID" in refused.value.reason
    with pytest.raises(ValidationError) as in_batch:
        batch_ids([None, bad], "measurements")
    assert in_batch.value.field == "measurements[1].id"


#: RFC 9562's examples (Appendix A) of the versions that are not random,
#: and the nil and max UUIDs, and a version 4 of another variant.
NOT_RANDOM = {
    "version 1": "c232ab00-9414-11ec-b3c8-9f6bdeced846",
    "version 3": "5df41881-3aed-3515-88a7-2f4a814cf09e",
    "version 5": "2ed6657d-e927-568b-95e1-2665a8aea6a2",
    "version 6": "1ec9414c-232a-6b00-b3c8-9f6bdeced846",
    "version 8": "2489e9ad-2ee2-8e00-8ec9-32d5f69181c0",
    "nil": "00000000-0000-0000-0000-000000000000",
    "max": "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "version 4, Microsoft's variant": "123e4567-e89b-42d3-c456-426614174000",
}


@pytest.mark.parametrize("kind", NOT_RANDOM)
def test_an_id_that_is_not_random_is_refused(kind: str) -> None:
    """Ids are global primary keys: one that can be guessed or derived could
    be taken first by another tenant."""
    with pytest.raises(ValidationError) as refused:
        checked_id(NOT_RANDOM[kind])
    assert refused.value.field == "id" and "random UUID" in refused.value.reason


def test_random_versions_4_and_7_are_accepted() -> None:
    v7 = "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"  # RFC 9562, Appendix A.6
    assert checked_id(v7) == v7
    assert checked_id(uuid.uuid4()) is not None


def test_an_id_given_twice_in_a_batch_names_both_items() -> None:
    first = str(uuid.uuid4())
    with pytest.raises(ValidationError) as refused:
        batch_ids([first, None, str(uuid.uuid4()), first.upper()], "results")
    assert refused.value.field == "results[3].id"
    assert "results[0]" in refused.value.reason


# -- one create call of each kind -------------------------------------------------

# Each create call: (table, call(tenant, id, variant)). ``variant`` changes
# one value the caller gives, for a replay with other content.
Call = Callable[[TenantRows, "str | None", int], Awaitable[Saved[Any]]]


def _feedback(t: TenantRows, id: str | None, variant: int) -> Awaitable[Saved[Any]]:
    return feedback.record_feedback(
        skill_id=t.skill_id, feedback_type="thumbs_up", comment=f"good {variant}", id=id
    )


def _measurement(t: TenantRows, id: str | None, variant: int) -> Awaitable[Saved[Any]]:
    return usage.record_measurement(
        skill_id=t.skill_id, model_name=SONNET, input_tokens=1000 + variant, output_tokens=10, id=id
    )


def _run(t: TenantRows, id: str | None, variant: int) -> Awaitable[Saved[Any]]:
    models = [SONNET, "gpt-4o"] if variant == 0 else [SONNET]
    return benchmarks.create_run(skill_id=t.skill_id, models=models, triggered_by=t.user_id, id=id)


def _result(t: TenantRows, id: str | None, variant: int) -> Awaitable[Saved[Any]]:
    return benchmarks.record_result(
        t.run_id,
        model_name=SONNET,
        model_provider="anthropic",
        test_case_index=7,
        quality_score=50 + variant,
        input_tokens=100,
        output_tokens=10,
        id=id,
    )


def _skill(t: TenantRows, id: str | None, variant: int) -> Awaitable[Saved[Any]]:
    return catalogue.create_skill(slug="retried", name=f"Retried {variant}", id=id)


def _version(t: TenantRows, id: str | None, variant: int) -> Awaitable[Saved[Any]]:
    return catalogue.publish_version(t.skill_id, content=f"Content {variant}", id=id)


def _user(t: TenantRows, id: str | None, variant: int) -> Awaitable[Saved[Any]]:
    return catalogue.create_user(email="retry@example.com", name=f"Retry {variant}", id=id)


CALLS: dict[str, tuple[str, Call]] = {
    "feedback": ("skill_feedback", _feedback),
    "measurement": ("token_measurements", _measurement),
    "run": ("benchmark_runs", _run),
    "result": ("benchmark_results", _result),
    "skill": ("skills", _skill),
    "version": ("skill_versions", _version),
    "user": ("users", _user),
}
# The sample row of each table that make_tenant gives a tenant.
SAMPLE = {
    "skill_feedback": "feedback_id",
    "token_measurements": "measurement_id",
    "benchmark_runs": "run_id",
    "benchmark_results": "result_id",
    "skills": "skill_id",
    "skill_versions": "version_id",
    "users": "user_id",
}

AGGREGATES = (
    "SELECT total_feedback, feedback_thumbs_up, positive_feedback_pct, costed_measurements,"
    " measured_cost_microcents, avg_token_cost_microcents FROM skills WHERE id = $1"
)
RECOUNT = """
SELECT (SELECT count(*) FROM skill_feedback WHERE skill_id = $1) AS feedback,
       (SELECT count(*) FROM skill_feedback WHERE skill_id = $1
          AND feedback_type = 'thumbs_up') AS up,
       (SELECT count(estimated_cost_microcents) FROM token_measurements
         WHERE skill_id = $1) AS costed,
       (SELECT coalesce(sum(estimated_cost_microcents), 0) FROM token_measurements
         WHERE skill_id = $1) AS cost
"""


async def count(owner: asyncpg.Connection, table: str, tenant: TenantRows) -> int:
    return int(
        await owner.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant.tenant_id)
    )


async def assert_aggregates_exact(owner: asyncpg.Connection, skill_id: str) -> None:
    kept = await owner.fetchrow(AGGREGATES, skill_id)
    recount = await owner.fetchrow(RECOUNT, skill_id)
    assert (kept["total_feedback"], kept["feedback_thumbs_up"]) == (
        recount["feedback"],
        recount["up"],
    )
    assert (kept["costed_measurements"], kept["measured_cost_microcents"]) == (
        recount["costed"],
        recount["cost"],
    )


@pytest.mark.parametrize("kind", sorted(CALLS))
async def test_a_replay_returns_the_stored_row_and_writes_nothing(
    owner: asyncpg.Connection, tenant: TenantRows, kind: str
) -> None:
    table, call = CALLS[kind]
    row_id = str(uuid.uuid4())
    async with tenant_scope(tenant.tenant_id):
        first = await call(tenant, row_id.upper(), 0)
    assert first.replayed is False and first.row.id == row_id
    rows = await count(owner, table, tenant)
    aggregates = await owner.fetchrow(AGGREGATES, tenant.skill_id)
    stored = await owner.fetchrow(f"SELECT * FROM {table} WHERE id = $1", row_id)

    async with tenant_scope(tenant.tenant_id) as scope:
        again = await call(tenant, row_id, 0)
        assert scope.failed is None
    assert again.replayed is True
    assert again.row.to_dict() == first.row.to_dict()
    assert await count(owner, table, tenant) == rows
    assert await owner.fetchrow(AGGREGATES, tenant.skill_id) == aggregates
    assert await owner.fetchrow(f"SELECT * FROM {table} WHERE id = $1", row_id) == stored
    await assert_aggregates_exact(owner, tenant.skill_id)


@pytest.mark.parametrize("kind", sorted(CALLS))
async def test_a_replay_with_other_values_is_a_conflict_on_the_id(
    owner: asyncpg.Connection, tenant: TenantRows, kind: str
) -> None:
    table, call = CALLS[kind]
    row_id = str(uuid.uuid4())
    async with tenant_scope(tenant.tenant_id):
        await call(tenant, row_id, 0)
    rows = await count(owner, table, tenant)
    async with tenant_scope(tenant.tenant_id) as scope:
        with pytest.raises(ConflictError) as refused:
            await call(tenant, row_id, 1)
        assert scope.failed is None  # refused before writing: the scope goes on
    assert refused.value.field == "id"
    assert "different content" in str(refused.value)
    assert await count(owner, table, tenant) == rows


@pytest.mark.parametrize("kind", sorted(CALLS))
async def test_another_tenants_id_is_refused_revealing_nothing(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows, kind: str
) -> None:
    table, call = CALLS[kind]
    theirs = getattr(other_tenant, SAMPLE[table])
    # A second row of the other tenant, of another kind and content.
    second = await owner.fetchval(
        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, comment)"
        " VALUES ($1, $2, 'bug_report', 'secret plans') RETURNING id",
        other_tenant.tenant_id,
        other_tenant.skill_id,
    )
    before = await owner.fetchrow(f"SELECT * FROM {table} WHERE id = $1", theirs)
    rows = await count(owner, table, tenant)
    messages = []
    for foreign_id in (theirs, second if table == "skill_feedback" else theirs.upper()):
        async with tenant_scope(tenant.tenant_id) as scope:
            with pytest.raises(ConflictError) as refused:
                await call(tenant, foreign_id, 0)
            assert scope.failed is None
        assert refused.value.field == "id"
        messages.append(str(refused.value))
    assert messages[0] == messages[1] == f"id: {FOREIGN_ID}"
    assert await owner.fetchrow(f"SELECT * FROM {table} WHERE id = $1", theirs) == before
    assert await count(owner, table, tenant) == rows


@pytest.mark.parametrize("kind", sorted(CALLS))
async def test_a_bad_id_is_refused_before_anything_is_written(
    owner: asyncpg.Connection, tenant: TenantRows, kind: str
) -> None:
    table, call = CALLS[kind]
    rows = await count(owner, table, tenant)
    async with tenant_scope(tenant.tenant_id) as scope:
        with pytest.raises(ValidationError) as refused:
            await call(tenant, "42", 0)
        assert scope.failed is None
    assert refused.value.field == "id"
    assert await count(owner, table, tenant) == rows


async def test_a_slug_taken_under_a_new_id_is_still_a_slug_conflict(tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ConflictError) as refused:
            await catalogue.create_skill(slug="review-code", name="Again", id=str(uuid.uuid4()))
    assert refused.value.field == "slug"


async def test_a_publication_retried_after_the_skill_was_archived_is_a_replay(
    tenant: TenantRows,
) -> None:
    row_id = str(uuid.uuid4())
    async with tenant_scope(tenant.tenant_id):
        first = await catalogue.publish_version(tenant.skill_id, content="Two", id=row_id)
        await catalogue.archive_skill(tenant.skill_id)
        again = await catalogue.publish_version(tenant.skill_id, content="Two", id=row_id)
    assert again.replayed and again.row.version == first.row.version


# -- batches --------------------------------------------------------------------------


def _measurements(t: TenantRows, ids: list[str | None], cost: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "skill_id": t.skill_id,
            "model_name": SONNET,
            "input_tokens": 100 * (index + 1),
            "output_tokens": 10,
            **({"estimated_cost_microcents": cost + index} if cost else {}),
            **({"id": row_id} if row_id is not None else {}),
        }
        for index, row_id in enumerate(ids)
    ]


async def test_a_measurement_batch_writes_the_new_rows_and_replays_the_stored(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    ids: list[str | None] = [str(uuid.uuid4()) for _ in range(4)]
    async with tenant_scope(tenant.tenant_id):
        first = await usage.record_measurements(_measurements(tenant, ids[:2]))
    assert first.replayed == () and first.count == 2 and list(first.ids) == ids[:2]
    rows = await count(owner, "token_measurements", tenant)

    batch = ids[:2] + ids[2:] + [None]
    async with tenant_scope(tenant.tenant_id):
        second = await usage.record_measurements(_measurements(tenant, batch))
    assert second.replayed == tuple(ids[:2])
    assert second.count == 3 and second.ids[:4] == tuple(ids)
    assert await count(owner, "token_measurements", tenant) == rows + 3
    await assert_aggregates_exact(owner, tenant.skill_id)

    async with tenant_scope(tenant.tenant_id):
        third = await usage.record_measurements(_measurements(tenant, batch[:4]))
    assert third.replayed == tuple(ids) and third.count == 0
    assert await count(owner, "token_measurements", tenant) == rows + 3
    await assert_aggregates_exact(owner, tenant.skill_id)


async def test_a_batch_replay_with_other_values_is_refused_before_writing(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    stored = str(uuid.uuid4())
    async with tenant_scope(tenant.tenant_id):
        await usage.record_measurements(_measurements(tenant, [stored]))
    rows = await count(owner, "token_measurements", tenant)
    changed = _measurements(tenant, [str(uuid.uuid4()), stored])
    changed[1]["input_tokens"] = 1  # row 0 of the first batch had 100
    async with tenant_scope(tenant.tenant_id) as scope:
        with pytest.raises(ConflictError) as refused:
            await usage.record_measurements(changed)
        assert scope.failed is None
    assert refused.value.field == "measurements[1].id"
    assert await count(owner, "token_measurements", tenant) == rows


async def test_a_batch_naming_another_tenants_id_writes_nothing(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    rows = await count(owner, "token_measurements", tenant)
    aggregates = await owner.fetchrow(AGGREGATES, tenant.skill_id)
    theirs = await owner.fetchrow(
        "SELECT * FROM token_measurements WHERE id = $1", other_tenant.measurement_id
    )
    batch = _measurements(tenant, [str(uuid.uuid4()), other_tenant.measurement_id], cost=500)
    with pytest.raises(ConflictError) as refused:
        async with tenant_scope(tenant.tenant_id) as scope:
            try:
                await usage.record_measurements(batch)
            finally:
                # The first row was written by the statement: the scope ends,
                # and nothing of it is committed.
                assert scope.failed is not None
    assert refused.value.field == "measurements[1].id"
    assert str(refused.value) == f"measurements[1].id: {FOREIGN_ID}"
    assert await count(owner, "token_measurements", tenant) == rows
    assert await owner.fetchrow(AGGREGATES, tenant.skill_id) == aggregates
    assert (
        await owner.fetchrow("SELECT * FROM token_measurements WHERE id = $1", theirs["id"])
        == theirs
    )


async def test_a_scope_that_goes_on_after_a_refused_batch_commits_nothing(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    rows = await count(owner, "token_measurements", tenant)
    with pytest.raises(TenantScopeError):
        async with tenant_scope(tenant.tenant_id):
            await usage.record_measurement(skill_id=tenant.skill_id, model_name=SONNET)
            with pytest.raises(ConflictError):
                await usage.record_measurements(
                    _measurements(tenant, [None, other_tenant.measurement_id])
                )
    assert await count(owner, "token_measurements", tenant) == rows


async def test_a_result_batch_replays_stored_ids(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]

    def results(chosen: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "id": row_id,
                "model_name": SONNET,
                "model_provider": "anthropic",
                "test_case_index": ids.index(row_id) + 10,
                "quality_score": 90,
            }
            for row_id in chosen
        ]

    async with tenant_scope(tenant.tenant_id):
        first = await benchmarks.record_results(tenant.run_id, results(ids[:1]))
        second = await benchmarks.record_results(tenant.run_id, results(ids))
    assert first.replayed == () and second.replayed == (ids[0],) and second.count == 2
    assert await count(owner, "benchmark_results", tenant) == 1 + 3
    with pytest.raises(ValidationError) as twice:
        async with tenant_scope(tenant.tenant_id):
            await benchmarks.record_results(
                tenant.run_id, [*results([ids[1]]), {**results([ids[2]])[0], "id": ids[1]}]
            )
    assert twice.value.field == "results[1].id"


async def test_results_retried_after_the_run_completed_are_replays(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """A runner whose answer was lost retries after the run completed: the
    results it stored come back as replays; a result never stored is
    refused, as any result of a run that is not running."""
    stored, new = str(uuid.uuid4()), str(uuid.uuid4())
    result = {"model_name": SONNET, "model_provider": "anthropic", "quality_score": 80}
    async with tenant_scope(tenant.tenant_id):
        await benchmarks.record_results(
            tenant.run_id, [{**result, "id": stored, "test_case_index": 40}]
        )
        await benchmarks.complete_run(tenant.run_id)
    async with tenant_scope(tenant.tenant_id):
        again = await benchmarks.record_result(
            tenant.run_id, id=stored, test_case_index=40, **result
        )
    assert again.replayed and again.row.id == stored
    with pytest.raises(RunNotRunningError):
        async with tenant_scope(tenant.tenant_id):
            await benchmarks.record_results(
                tenant.run_id,
                [{**result, "id": stored, "test_case_index": 40},
                 {**result, "id": new, "test_case_index": 41}],
            )
    assert await owner.fetchval("SELECT count(*) FROM benchmark_results WHERE id = $1", new) == 0


# -- concurrency ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["feedback", "measurement", "skill", "result"])
@pytest.mark.parametrize("first_commits", [True, False])
async def test_two_concurrent_calls_with_one_new_id_store_one_row(
    owner: asyncpg.Connection, tenant: TenantRows, kind: str, first_commits: bool
) -> None:
    """The second call's INSERT waits for the first's transaction: after a
    commit it is a replay, after a rollback it writes the row itself."""
    table, call = CALLS[kind]
    row_id = str(uuid.uuid4())
    rows = await count(owner, table, tenant)
    written = asyncio.Event()
    release = asyncio.Event()

    async def first() -> Saved[Any]:
        async with tenant_scope(tenant.tenant_id):
            saved = await call(tenant, row_id, 0)
            written.set()
            await release.wait()
            if not first_commits:
                raise RuntimeError("the first writer gives up")
        return saved

    async def second() -> Saved[Any]:
        await written.wait()
        async with tenant_scope(tenant.tenant_id):
            return await call(tenant, row_id, 0)

    first_task = asyncio.create_task(first())
    second_task = asyncio.create_task(second())
    await written.wait()
    await wait_until_blocked(owner)
    release.set()
    if first_commits:
        one, two = await asyncio.gather(first_task, second_task)
        assert (one.replayed, two.replayed) == (False, True)
        assert one.row.to_dict() == two.row.to_dict()
    else:
        with pytest.raises(RuntimeError):
            await first_task
        two = await second_task
        assert two.replayed is False
    assert await count(owner, table, tenant) == rows + 1
    await assert_aggregates_exact(owner, tenant.skill_id)
