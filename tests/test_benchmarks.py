"""
everyskill.benchmarks through the API, as the application connects: creating
runs, every step of the life cycle (and every step that makes no sense),
recording results (checks, costs, redaction, batches that are all or
nothing), the picks PostgreSQL makes on completion, the per-model summary, a
completion racing a writer of results, and tenant isolation. The owner
connection only prepares rows and checks what was really stored.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from everyskill import benchmarks, pricing, usage
from everyskill.benchmarks import ModelSummary, ResultInput
from everyskill.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    RunNotRunningError,
    TenantScopeError,
    ValidationError,
)
from everyskill.pricing import CostWarning
from everyskill.tenancy import tenant_scope
from tests.support import TenantRows, make_tenant, wait_until_blocked

# A fake AWS access key of the documented example shape, for redaction.
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLQ"
SONNET = "claude-sonnet-4-5"
GPT = "gpt-4o"


async def count_runs(owner: asyncpg.Connection, tenant: TenantRows) -> int:
    return int(
        await owner.fetchval(
            "SELECT count(*) FROM benchmark_runs WHERE tenant_id = $1", tenant.tenant_id
        )
    )


async def count_results(owner: asyncpg.Connection, run_id: str) -> int:
    return int(
        await owner.fetchval(
            "SELECT count(*) FROM benchmark_results WHERE benchmark_run_id = $1", run_id
        )
    )


async def run_row(owner: asyncpg.Connection, run_id: str) -> asyncpg.Record:
    row = await owner.fetchrow("SELECT * FROM benchmark_runs WHERE id = $1", run_id)
    assert row is not None
    return row


async def new_run(
    tenant: TenantRows, models: list[str], *, status: str = "running"
) -> str:
    """A run of the tenant's skill over ``models``, brought to ``status`` by the API."""
    async with tenant_scope(tenant.tenant_id):
        run = (await benchmarks.create_run(
            skill_id=tenant.skill_id, models=models, triggered_by=tenant.user_id
        )).row
        if status in ("running", "completed"):
            await benchmarks.start_run(run.id)
        if status == "completed":
            await benchmarks.complete_run(run.id)
        if status == "failed":
            await benchmarks.fail_run(run.id, error_message="stopped by the test")
    return str(run.id)


def result(model: str, case: int, **fields: Any) -> dict[str, Any]:
    return {"model_name": model, "model_provider": "test", "test_case_index": case, **fields}


# -- creating runs ----------------------------------------------------------------


async def test_a_run_is_created_pending_with_its_models(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        run = (await benchmarks.create_run(
            skill_id=tenant.skill_id,
            models=[f"  {SONNET} ", GPT],
            triggered_by=tenant.user_id,
            skill_version_id=tenant.version_id,
        )).row
    row = await run_row(owner, run.id)
    assert row["tenant_id"] == tenant.tenant_id
    assert (row["status"], row["models"]) == ("pending", [SONNET, GPT])
    assert (row["skill_id"], row["skill_version_id"], row["triggered_by"]) == (
        tenant.skill_id,
        tenant.version_id,
        tenant.user_id,
    )
    assert row["started_at"] is None and row["completed_at"] is None
    assert row["best_model"] is None and row["error_message"] is None
    assert run.status == "pending" and run.models == [SONNET, GPT]


@pytest.mark.parametrize(
    "models",
    [[], [SONNET, SONNET], [SONNET, f" {SONNET} "], [SONNET, "   "], [""], SONNET, [SONNET, 3],
     ["m" * 201], [f"m{i}" for i in range(101)]],
    ids=["empty", "duplicate", "duplicate-after-strip", "blank", "empty-name", "one-string",
         "not-a-string", "too-long", "too-many"],
)
async def test_bad_models_are_refused_and_nothing_is_written(
    owner: asyncpg.Connection, tenant: TenantRows, models: Any
) -> None:
    before = await count_runs(owner, tenant)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await benchmarks.create_run(
                skill_id=tenant.skill_id, models=models, triggered_by=tenant.user_id
            )
    assert refused.value.field == "models" and refused.value.reason
    assert await count_runs(owner, tenant) == before


@pytest.mark.parametrize("reference", ["skill_id", "skill_version_id", "triggered_by"])
async def test_rows_of_another_tenant_are_not_found(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows, reference: str
) -> None:
    before = await count_runs(owner, tenant)
    other = {
        "skill_id": other_tenant.skill_id,
        "skill_version_id": other_tenant.version_id,
        "triggered_by": other_tenant.user_id,
    }[reference]
    arguments: dict[str, Any] = {
        "skill_id": tenant.skill_id,
        "triggered_by": tenant.user_id,
        reference: other,
    }
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotFoundError) as missing:
            await benchmarks.create_run(models=[SONNET], **arguments)
    assert missing.value.id == other
    assert await count_runs(owner, tenant) == before


async def test_a_version_of_another_skill_is_refused(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    second_skill = await owner.fetchval(
        "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, 'other', 'Other') RETURNING id",
        tenant.tenant_id,
    )
    before = await count_runs(owner, tenant)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotFoundError) as missing:
            await benchmarks.create_run(
                skill_id=second_skill,
                models=[SONNET],
                triggered_by=tenant.user_id,
                skill_version_id=tenant.version_id,
            )
    assert missing.value.kind == "skill version"
    assert await count_runs(owner, tenant) == before


async def test_the_api_needs_a_scope(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    before = await count_runs(owner, tenant)
    with pytest.raises(TenantScopeError):
        await benchmarks.create_run(
            skill_id=tenant.skill_id, models=[SONNET], triggered_by=tenant.user_id
        )
    with pytest.raises(TenantScopeError):
        await benchmarks.record_result(
            tenant.run_id, model_name=SONNET, model_provider="anthropic", test_case_index=5
        )
    assert await count_runs(owner, tenant) == before
    assert await count_results(owner, tenant.run_id) == 1


# -- the life cycle -----------------------------------------------------------------


async def test_start_then_complete_stamps_each_step(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    run_id = await new_run(tenant, [SONNET], status="pending")
    async with tenant_scope(tenant.tenant_id):
        started = await benchmarks.start_run(run_id)
    row = await run_row(owner, run_id)
    assert row["status"] == "running" and row["started_at"] is not None
    assert row["completed_at"] is None
    assert (started.status, started.started_at) == ("running", row["started_at"])

    async with tenant_scope(tenant.tenant_id):
        completed = await benchmarks.complete_run(run_id)
    row = await run_row(owner, run_id)
    assert row["status"] == "completed"
    assert row["completed_at"] is not None and row["completed_at"] >= row["started_at"]
    assert row["started_at"] == started.started_at
    assert (completed.status, completed.completed_at) == ("completed", row["completed_at"])


@pytest.mark.parametrize("start", [False, True], ids=["from-pending", "from-running"])
async def test_fail_needs_a_message_and_stamps(
    owner: asyncpg.Connection, tenant: TenantRows, start: bool
) -> None:
    run_id = await new_run(tenant, [SONNET], status="running" if start else "pending")
    async with tenant_scope(tenant.tenant_id):
        for bad in ["", "   ", "x" * (benchmarks.MAX_ERROR_LENGTH + 1)]:
            with pytest.raises(ValidationError) as refused:
                await benchmarks.fail_run(run_id, error_message=bad)
            assert refused.value.field == "error_message"
        assert (await run_row(owner, run_id))["status"] == ("running" if start else "pending")
        failed = await benchmarks.fail_run(
            run_id, error_message=f"the provider refused key {AWS_KEY}"
        )
    row = await run_row(owner, run_id)
    assert row["status"] == "failed" and row["completed_at"] is not None
    assert (row["started_at"] is not None) == start
    assert row["error_message"].startswith("the provider refused key ")
    assert AWS_KEY not in row["error_message"]
    assert "[REDACTED:aws_access_key]" in row["error_message"]
    assert failed.error_message == row["error_message"]


INVALID = [
    ("running", "start"),
    ("completed", "start"),
    ("failed", "start"),
    ("pending", "complete"),
    ("completed", "complete"),
    ("failed", "complete"),
    ("completed", "fail"),
    ("failed", "fail"),
]


@pytest.mark.parametrize(("state", "step"), INVALID)
async def test_steps_that_make_no_sense_are_refused_and_change_nothing(
    owner: asyncpg.Connection, tenant: TenantRows, state: str, step: str
) -> None:
    run_id = await new_run(tenant, [SONNET], status=state)
    before = dict(await run_row(owner, run_id))
    wanted, allowed_from = {
        "start": ("running", ("pending",)),
        "complete": ("completed", ("running",)),
        "fail": ("failed", ("pending", "running")),
    }[step]
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(InvalidTransitionError) as refused:
            if step == "start":
                await benchmarks.start_run(run_id)
            elif step == "complete":
                await benchmarks.complete_run(run_id)
            else:
                await benchmarks.fail_run(run_id, error_message="again")
    error = refused.value
    assert (error.kind, error.id, error.current, error.wanted) == (
        "benchmark run", run_id, state, wanted,
    )
    assert error.allowed_from == allowed_from
    assert dict(await run_row(owner, run_id)) == before


async def test_steps_of_an_unknown_run_are_not_found(tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        for step in (benchmarks.start_run, benchmarks.complete_run, benchmarks.get_run):
            with pytest.raises(NotFoundError) as missing:
                await step("no-such-run")
            assert missing.value.kind == "benchmark run"
        with pytest.raises(NotFoundError):
            await benchmarks.fail_run("no-such-run", error_message="x")


async def test_get_and_list_runs(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    pending = await new_run(tenant, [SONNET], status="pending")
    completed = await new_run(tenant, [SONNET], status="completed")
    failed = await new_run(tenant, [GPT], status="failed")
    second_skill = await owner.fetchval(
        "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, 'two', 'Two') RETURNING id",
        tenant.tenant_id,
    )
    async with tenant_scope(tenant.tenant_id):
        elsewhere = (await benchmarks.create_run(
            skill_id=second_skill, models=[GPT], triggered_by=tenant.user_id
        )).row
        assert (await benchmarks.get_run(completed)).status == "completed"
        everything = await benchmarks.list_runs(limit=500)
        of_skill: list[str] = []
        cursor = None
        while True:
            page = await benchmarks.list_runs(skill_id=tenant.skill_id, limit=2, cursor=cursor)
            assert len(page.items) <= 2
            of_skill += [run.id for run in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        by_status = {
            status: [run.id for run in (await benchmarks.list_runs(status=status)).items]
            for status in ("pending", "running", "completed", "failed")
        }
        with pytest.raises(ValidationError) as refused:
            await benchmarks.list_runs(status="done")
        assert refused.value.field == "status"
    # Newest first: the fixture's run, then the ones made here in order.
    assert of_skill == [failed, completed, pending, tenant.run_id]
    assert [run.id for run in everything.items] == [elsewhere.id, *of_skill]
    assert by_status == {
        "pending": [elsewhere.id, pending],
        "running": [tenant.run_id],
        "completed": [completed],
        "failed": [failed],
    }


async def test_benchmarked_content_is_the_pinned_or_latest_version(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    await owner.execute(
        "INSERT INTO skill_versions (tenant_id, skill_id, version, content)"
        " VALUES ($1, $2, 2, 'Review the diff, kindly.')",
        tenant.tenant_id,
        tenant.skill_id,
    )
    async with tenant_scope(tenant.tenant_id):
        pinned = (await benchmarks.create_run(
            skill_id=tenant.skill_id,
            models=[SONNET],
            triggered_by=tenant.user_id,
            skill_version_id=tenant.version_id,
        )).row
        assert await benchmarks.benchmarked_content(pinned.id) == "Review the diff."
        assert await benchmarks.benchmarked_content(tenant.run_id) == "Review the diff, kindly."


# -- recording results --------------------------------------------------------------


@pytest.mark.parametrize("state", ["pending", "completed", "failed"])
async def test_results_are_recorded_only_while_the_run_runs(
    owner: asyncpg.Connection, tenant: TenantRows, state: str
) -> None:
    run_id = await new_run(tenant, [SONNET], status=state)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(RunNotRunningError) as refused:
            await benchmarks.record_result(
                run_id, model_name=SONNET, model_provider="anthropic", test_case_index=0
            )
        with pytest.raises(InvalidTransitionError):
            await benchmarks.record_results(run_id, [result(SONNET, 1)])
    error = refused.value
    assert (error.current, error.wanted, error.allowed_from) == (
        state, "record results", ("running",),
    )
    assert "only while" in str(error)
    assert await count_results(owner, run_id) == 0


async def test_a_result_names_a_model_of_the_run(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await benchmarks.record_result(
                tenant.run_id, model_name="gpt-5", model_provider="openai", test_case_index=1
            )
        with pytest.raises(ValidationError) as in_batch:
            await benchmarks.record_results(
                tenant.run_id, [result(SONNET, 1), result(GPT, 1), result("gpt-5", 1)]
            )
    assert refused.value.field == "model_name"
    assert SONNET in refused.value.reason and GPT in refused.value.reason
    assert [field for field, _ in in_batch.value.problems] == ["results[2].model_name"]
    assert await count_results(owner, tenant.run_id) == 1


async def test_a_refused_batch_lists_every_bad_item_at_once(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """Types, ranges, the run's models and ids given twice, in one error."""
    same = "0b8a2f4e-6c1d-4e9a-9b3c-5d7e8f901234"
    rows = [
        result("nope", 1),
        result(SONNET, 2, quality_score=500),
        result(SONNET, 3, id=same),
        result(GPT, 4, id=same),
        result(SONNET, 5, input_tokens="many"),
    ]
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await benchmarks.record_results(tenant.run_id, rows)
    assert [name for name, _ in refused.value.problems] == [
        "results[0].model_name",
        "results[1].quality_score",
        "results[3].id",
        "results[4].input_tokens",
    ]
    assert await count_results(owner, tenant.run_id) == 1


async def test_a_result_recorded_twice_is_a_conflict(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """The fixture's run already has gpt-4o on test case 0."""
    async with tenant_scope(tenant.tenant_id) as scope:
        with pytest.raises(ConflictError):
            async with scope.savepoint():
                await benchmarks.record_result(
                    tenant.run_id, model_name=GPT, model_provider="openai", test_case_index=0
                )
        # A batch with a row that conflicts writes none of its rows.
        with pytest.raises(ConflictError):
            async with scope.savepoint():
                await benchmarks.record_results(
                    tenant.run_id, [result(SONNET, 0), result(SONNET, 1), result(GPT, 0)]
                )
        # After the savepoints the scope goes on; the same case of the other
        # model is fine.
        saved = await benchmarks.record_result(
            tenant.run_id, model_name=SONNET, model_provider="anthropic", test_case_index=0
        )
    assert await count_results(owner, tenant.run_id) == 2
    assert saved.row.model_name == SONNET


async def test_a_batch_naming_a_case_twice_is_refused(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await benchmarks.record_results(
                tenant.run_id, [result(SONNET, 1), result(GPT, 1), result(SONNET, 1)]
            )
    assert refused.value.field == "results[2].test_case_index"
    assert "results[0]" in refused.value.reason
    assert await count_results(owner, tenant.run_id) == 1


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"quality_score": 101}, "quality_score"),
        ({"quality_score": -1}, "quality_score"),
        ({"quality_score": "90"}, "quality_score"),
        ({"input_tokens": -1}, "input_tokens"),
        ({"latency_ms": 2**31}, "latency_ms"),
        ({"matches_expected": "yes"}, "matches_expected"),
        ({"model_provider": " "}, "model_provider"),
        ({"test_case_index": -1}, "test_case_index"),
        ({"colour": "red"}, "colour"),
        ({"input_tokens": 10, "output_tokens": 5, "total_tokens": 14}, "total_tokens"),
        ({"error_message": "e" * (benchmarks.MAX_ERROR_LENGTH + 1)}, "error_message"),
    ],
)
async def test_a_bad_row_of_a_batch_is_named_and_nothing_is_written(
    owner: asyncpg.Connection, tenant: TenantRows, bad: dict[str, Any], field: str
) -> None:
    rows = [result(SONNET, case, quality_score=50) for case in range(1, 4)]
    rows.append({**result(GPT, 3), **bad})
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await benchmarks.record_results(tenant.run_id, rows)
        if field != "colour":  # not a parameter of record_result at all
            with pytest.raises(ValidationError) as alone:
                await benchmarks.record_result(tenant.run_id, **{**result(GPT, 3), **bad})
            assert alone.value.field == field
    assert [name for name, _ in refused.value.problems] == [f"results[3].{field}"]
    assert await count_results(owner, tenant.run_id) == 1


async def test_a_batch_is_written_in_one_go_with_ids_in_input_order(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    rows: list[Any] = [result(SONNET, case, quality_score=case * 10) for case in (3, 1, 2)]
    rows.append(ResultInput(model_name=GPT, model_provider="openai", test_case_index=7))
    async with tenant_scope(tenant.tenant_id):
        saved = await benchmarks.record_results(tenant.run_id, rows)
        with pytest.raises(ValidationError) as empty:
            await benchmarks.record_results(tenant.run_id, [])
    assert saved.count == 4 and empty.value.field == "results"
    stored = {
        r["id"]: (r["model_name"], r["test_case_index"], r["quality_score"], r["tenant_id"])
        for r in await owner.fetch(
            "SELECT * FROM benchmark_results WHERE id = ANY($1::text[])", list(saved.ids)
        )
    }
    assert [stored[id] for id in saved.ids] == [
        (SONNET, 3, 30, tenant.tenant_id),
        (SONNET, 1, 10, tenant.tenant_id),
        (SONNET, 2, 20, tenant.tenant_id),
        (GPT, 7, None, tenant.tenant_id),
    ]


async def test_total_tokens_are_derived_and_checked(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        derived = await benchmarks.record_result(
            tenant.run_id, model_name=SONNET, model_provider="anthropic", test_case_index=1,
            input_tokens=1000, output_tokens=200, cache_read_tokens=100, cache_write_tokens=10,
        )
        consistent = await benchmarks.record_result(
            tenant.run_id, model_name=SONNET, model_provider="anthropic", test_case_index=2,
            input_tokens=10, output_tokens=5, total_tokens=15,
        )
        kept = await benchmarks.record_result(
            tenant.run_id, model_name=SONNET, model_provider="anthropic", test_case_index=3,
            output_tokens=5, total_tokens=99,
        )
        with pytest.raises(ValidationError) as refused:
            await benchmarks.record_result(
                tenant.run_id, model_name=SONNET, model_provider="anthropic",
                test_case_index=4, input_tokens=10, output_tokens=5, cache_read_tokens=1,
                total_tokens=15,
            )
    assert refused.value.field == "total_tokens" and "16" in refused.value.reason
    totals = [derived.row.total_tokens, consistent.row.total_tokens, kept.row.total_tokens]
    assert totals == [1310, 15, 99]
    stored = await owner.fetchval(
        "SELECT total_tokens FROM benchmark_results WHERE id = $1", derived.row.id
    )
    assert stored == 1310


async def test_costs_come_from_the_price_table(owner: asyncpg.Connection, engine: Any) -> None:
    """Without tenant prices: claude-sonnet-4-5 is $3/$15 per Mtok (300/1500
    microcents per token, cache reads 30, writes 375), gpt-4o $2.50/$10
    (250/1000)."""
    tenant = await make_tenant(owner, "prices", model_price=False)
    async with tenant_scope(tenant.tenant_id):
        sonnet = await benchmarks.record_result(
            tenant.run_id, model_name=SONNET, model_provider="anthropic", test_case_index=0,
            input_tokens=1000, output_tokens=200,
        )
        cached = await benchmarks.record_result(
            tenant.run_id, model_name=SONNET, model_provider="anthropic", test_case_index=1,
            input_tokens=1000, output_tokens=200, cache_read_tokens=100, cache_write_tokens=10,
        )
        batch = await benchmarks.record_results(
            tenant.run_id,
            [
                {**result(GPT, 1), "model_provider": "openai",
                 "input_tokens": 1000, "output_tokens": 200},
                {**result(GPT, 2), "model_provider": "openai",
                 "input_tokens": 1000, "output_tokens": 200, "estimated_cost_microcents": 7},
            ],
        )
    assert sonnet.row.estimated_cost_microcents == 1000 * 300 + 200 * 1500 == 600_000
    assert cached.row.estimated_cost_microcents == 600_000 + 100 * 30 + 10 * 375 == 606_750
    costs = [
        await owner.fetchval(
            "SELECT estimated_cost_microcents FROM benchmark_results WHERE id = $1", id
        )
        for id in batch.ids
    ]
    assert costs == [1000 * 250 + 200 * 1000, 7] == [450_000, 7]
    assert sonnet.warnings == () and batch.warnings == ()


async def test_the_tenant_price_wins(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    """The fixture's tenant pays 250/1250 for claude-sonnet-4-5."""
    async with tenant_scope(tenant.tenant_id):
        await pricing.set_model_price(
            GPT, model_provider="openai",
            input_microcents_per_token=100, output_microcents_per_token=400,
        )
        sonnet = await benchmarks.record_result(
            tenant.run_id, model_name=SONNET, model_provider="anthropic", test_case_index=1,
            input_tokens=1000, output_tokens=200,
        )
        gpt = await benchmarks.record_result(
            tenant.run_id, model_name=GPT, model_provider="openai", test_case_index=1,
            input_tokens=1000, output_tokens=200,
        )
    assert sonnet.row.estimated_cost_microcents == 1000 * 250 + 200 * 1250
    assert gpt.row.estimated_cost_microcents == 1000 * 100 + 200 * 400


async def test_an_unknown_model_is_recorded_without_a_cost_and_a_warning(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    run_id = await new_run(tenant, ["my-local-model"])
    async with tenant_scope(tenant.tenant_id):
        one = await benchmarks.record_result(
            run_id, model_name="my-local-model", model_provider="local", test_case_index=0,
            input_tokens=10, output_tokens=5,
        )
        batch = await benchmarks.record_results(
            run_id,
            [
                {**result("my-local-model", case), "model_provider": "local",
                 "input_tokens": 10, "output_tokens": 5}
                for case in (1, 2)
            ],
        )
        failed_call = await benchmarks.record_result(
            run_id, model_name="my-local-model", model_provider="local", test_case_index=3,
            error_message="TimeoutError: no answer",
        )
    assert one.row.estimated_cost_microcents is None
    assert [type(w) for w in one.warnings] == [CostWarning]
    warning = one.warnings[0]
    assert isinstance(warning, CostWarning)
    assert (warning.model_name, warning.model_provider, warning.rows) == (
        "my-local-model", "local", 1,
    )
    assert len(batch.warnings) == 1
    assert isinstance(batch.warnings[0], CostWarning) and batch.warnings[0].rows == 2
    assert failed_call.warnings == () and failed_call.row.estimated_cost_microcents is None
    costs = await owner.fetch(
        "SELECT estimated_cost_microcents FROM benchmark_results WHERE benchmark_run_id = $1",
        run_id,
    )
    assert [row[0] for row in costs] == [None] * 4


async def test_secrets_in_results_are_redacted(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        saved = await benchmarks.record_result(
            tenant.run_id, model_name=SONNET, model_provider="anthropic", test_case_index=1,
            input_used="Summarise the config.",
            output_produced=f"Use aws_access_key_id = {AWS_KEY} to deploy.",
        )
        batch = await benchmarks.record_results(
            tenant.run_id,
            [
                result(SONNET, 2, quality_notes=f"leaked {AWS_KEY}"),
                result(GPT, 2, error_message=f"auth failed for {AWS_KEY}"),
            ],
        )
    stored = await owner.fetchrow(
        "SELECT input_used, output_produced FROM benchmark_results WHERE id = $1", saved.row.id
    )
    assert stored is not None
    assert stored["input_used"] == "Summarise the config."
    assert AWS_KEY not in stored["output_produced"]
    assert "[REDACTED:aws_access_key]" in stored["output_produced"]
    assert saved.redactions == {"aws_access_key": 1}
    assert batch.redactions == {"aws_access_key": 2}
    texts = await owner.fetch(
        "SELECT quality_notes, error_message FROM benchmark_results WHERE id = ANY($1::text[])",
        list(batch.ids),
    )
    assert all(AWS_KEY not in (row[0] or "") + (row[1] or "") for row in texts)


# -- picks and summary --------------------------------------------------------------


async def test_completion_picks_best_and_cheapest_by_the_rules(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """Worked by hand (averages ignore NULLs):

    ======  =================  =================  ==========================
    model   quality            cost               note
    ======  =================  =================  ==========================
    a       90, 79 -> 84.5     100, 200 -> 150
    b       84, 85, - -> 84.5  100, 141, - -> 120.5  ties a on quality: cheaper
    c       60, 60 -> 60       60, 61 -> 60.5
    d       70, 70 -> 70       61, 60 -> 60.5     ties c on cost: better
    e       -, - -> none       60, 61 -> 60.5     ties on cost, no quality: last
    f       40 -> 40           - -> none          no cost: not cheapest
    ======  =================  =================  ==========================

    Best is b, 84.5 rounded half away from zero: 85. Cheapest is d, 60.5: 61.
    """
    run_id = await new_run(tenant, ["a", "b", "c", "d", "e", "f"])
    rows = [
        result("a", 0, quality_score=90, estimated_cost_microcents=100),
        result("a", 1, quality_score=79, estimated_cost_microcents=200),
        result("b", 0, quality_score=84, estimated_cost_microcents=100),
        result("b", 1, quality_score=85, estimated_cost_microcents=141),
        result("b", 2, error_message="timed out"),
        result("c", 0, quality_score=60, estimated_cost_microcents=60),
        result("c", 1, quality_score=60, estimated_cost_microcents=61),
        result("d", 0, quality_score=70, estimated_cost_microcents=61),
        result("d", 1, quality_score=70, estimated_cost_microcents=60),
        result("e", 0, estimated_cost_microcents=60),
        result("e", 1, estimated_cost_microcents=61),
        result("f", 0, quality_score=40),
    ]
    async with tenant_scope(tenant.tenant_id):
        await benchmarks.record_results(run_id, rows)
        completed = await benchmarks.complete_run(run_id)
    row = await run_row(owner, run_id)
    picks = (row["best_model"], row["best_quality_score"], row["cheapest_model"],
             row["cheapest_cost_microcents"])
    assert picks == ("b", 85, "d", 61)
    assert (completed.best_model, completed.best_quality_score, completed.cheapest_model,
            completed.cheapest_cost_microcents) == picks


async def test_completion_without_results_picks_nothing(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    run_id = await new_run(tenant, [SONNET, GPT])
    async with tenant_scope(tenant.tenant_id):
        completed = await benchmarks.complete_run(run_id)
    row = await run_row(owner, run_id)
    assert row["status"] == "completed"
    assert [row[name] for name in ("best_model", "best_quality_score", "cheapest_model",
                                   "cheapest_cost_microcents")] == [None] * 4
    assert completed.best_model is None and completed.cheapest_model is None


async def test_run_summary_matches_a_hand_computation(tenant: TenantRows) -> None:
    """Model x: latencies 100, 200, 300, 400, 1000 -> average 400; p95 by
    linear interpolation: position 0.95 * (5 - 1) = 3.8, so 400 + 0.8 *
    (1000 - 400) = 880. Qualities 80, 90, -, 70, 100 -> 85. Matches True,
    False, -, True, True -> 3 of 4 judged = 0.75. Costs 10, 20, -, 30, 45
    -> 26.25 on average, 105 in all (the error's unknown cost is not a 0 in
    the average). One error, and no answer without a score. Model y: one
    result, none of it measured: an answer without a score, costing 0.
    Model z: no result at all. The models' costs add up to the run's."""
    run_id = await new_run(tenant, ["x", "y", "z"])
    x = [
        (100, 80, True, 10, None),
        (200, 90, False, 20, None),
        (300, None, None, None, "boom"),
        (400, 70, True, 30, None),
        (1000, 100, True, 45, None),
    ]
    rows = [
        result("x", case, latency_ms=latency, quality_score=quality, matches_expected=match,
               estimated_cost_microcents=cost, error_message=error)
        for case, (latency, quality, match, cost, error) in enumerate(x)
    ]
    rows.append(result("y", 0, estimated_cost_microcents=0))
    async with tenant_scope(tenant.tenant_id):
        await benchmarks.record_results(run_id, rows)
        summary = await benchmarks.run_summary(run_id)
        with pytest.raises(NotFoundError):
            await benchmarks.run_summary("no-such-run")
        spent = await benchmarks.run_cost(run_id)
    assert summary == [
        ModelSummary("x", 5, 85.0, 0.75, 400.0, pytest.approx(880.0), 26.25, 1, 105, 0),  # type: ignore[arg-type]
        ModelSummary("y", 1, None, None, None, None, 0.0, 0, 0, 1),
        ModelSummary("z", 0, None, None, None, None, None, 0, None, 0),
    ]
    assert sum(m.cost_microcents or 0 for m in summary) == spent.results_microcents == 105


# -- a completion racing a writer ----------------------------------------------------




async def test_a_completion_waits_for_a_writer_and_includes_its_result(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """A writer has recorded a result but not committed; a completion started
    then waits for it and its picks include that result. A result recorded
    after the completion is refused."""
    run_id = await new_run(tenant, ["slow", "late"])
    async with tenant_scope(tenant.tenant_id):
        await benchmarks.record_result(
            run_id, model_name="slow", model_provider="test", test_case_index=0,
            quality_score=50, estimated_cost_microcents=100,
        )
    recorded = asyncio.Event()
    may_commit = asyncio.Event()

    async def writer() -> None:
        async with tenant_scope(tenant.tenant_id):
            await benchmarks.record_result(
                run_id, model_name="late", model_provider="test", test_case_index=0,
                quality_score=90, estimated_cost_microcents=40,
            )
            recorded.set()
            await may_commit.wait()

    async def completer() -> Any:
        await recorded.wait()
        async with tenant_scope(tenant.tenant_id):
            return await benchmarks.complete_run(run_id)

    writing = asyncio.create_task(writer())
    completing = asyncio.create_task(completer())
    await recorded.wait()
    await wait_until_blocked(owner)
    assert not completing.done()
    assert await owner.fetchval("SELECT status FROM benchmark_runs WHERE id = $1", run_id) == "running"
    may_commit.set()
    await writing
    completed = await asyncio.wait_for(completing, timeout=10)
    assert (completed.best_model, completed.best_quality_score) == ("late", 90)
    assert (completed.cheapest_model, completed.cheapest_cost_microcents) == ("late", 40)

    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(RunNotRunningError):
            await benchmarks.record_result(
                run_id, model_name="late", model_provider="test", test_case_index=1
            )
    # The database refuses it to every writer, not only to the API.
    with pytest.raises(asyncpg.CheckViolationError, match="only while it runs"):
        await owner.execute(
            "INSERT INTO benchmark_results (tenant_id, benchmark_run_id, model_name,"
            " model_provider, test_case_index) VALUES ($1, $2, 'late', 'test', 1)",
            tenant.tenant_id,
            run_id,
        )
    assert await count_results(owner, run_id) == 2


# -- isolation ----------------------------------------------------------------------


async def test_another_tenant_cannot_see_or_touch_the_run(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    before = dict(await run_row(owner, tenant.run_id))
    async with tenant_scope(other_tenant.tenant_id):
        for call in (
            benchmarks.get_run,
            benchmarks.start_run,
            benchmarks.complete_run,
            benchmarks.run_summary,
            benchmarks.benchmarked_content,
            benchmarks.recorded_cases,
        ):
            with pytest.raises(NotFoundError):
                await call(tenant.run_id)
        with pytest.raises(NotFoundError):
            await benchmarks.fail_run(tenant.run_id, error_message="mine now")
        with pytest.raises(NotFoundError):
            await benchmarks.record_result(
                tenant.run_id, model_name=SONNET, model_provider="anthropic", test_case_index=9
            )
        with pytest.raises(NotFoundError):
            await benchmarks.record_results(tenant.run_id, [result(SONNET, 9)])
        listed = await benchmarks.list_runs(limit=500)
    assert tenant.run_id not in [run.id for run in listed.items]
    assert [run.id for run in listed.items] == [other_tenant.run_id]
    assert dict(await run_row(owner, tenant.run_id)) == before
    assert await count_results(owner, tenant.run_id) == 1


async def test_the_picks_of_another_tenants_run_cannot_be_asked_for(
    tenant: TenantRows, other_tenant: TenantRows
) -> None:
    """benchmark_run_picks runs as the owner (no row-level security), so the
    application role may not call it: it would read any tenant's results."""
    async with tenant_scope(tenant.tenant_id):
        await benchmarks.record_results(tenant.run_id, [result(SONNET, 4)])
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="benchmark_run_picks"):
        async with tenant_scope(other_tenant.tenant_id) as scope:
            await scope.connection.fetchrow("SELECT * FROM benchmark_run_picks($1)", tenant.run_id)


async def test_a_completion_computes_the_picks_as_the_owner_from_the_runs_results_only(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    """The picks read the results without row-level security: only the
    run's own results (the other tenant's run has a better, cheaper model)."""
    async with tenant_scope(other_tenant.tenant_id):
        await benchmarks.record_results(
            other_tenant.run_id,
            [result(GPT, 7, quality_score=100, estimated_cost_microcents=1)],
        )
    async with tenant_scope(tenant.tenant_id):
        await benchmarks.record_results(
            tenant.run_id, [result(SONNET, 4, quality_score=60, estimated_cost_microcents=900)]
        )
        completed = await benchmarks.complete_run(tenant.run_id)
    expected = await owner.fetchrow("SELECT * FROM benchmark_run_picks($1)", tenant.run_id)
    assert expected is not None
    assert (
        completed.best_model,
        completed.best_quality_score,
        completed.cheapest_model,
        completed.cheapest_cost_microcents,
    ) == tuple(expected)
    assert completed.best_quality_score != 100 and completed.cheapest_cost_microcents != 1


async def test_recorded_cases(tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        await benchmarks.record_results(tenant.run_id, [result(SONNET, 2), result(GPT, 5)])
        assert await benchmarks.recorded_cases(tenant.run_id) == {
            (GPT, 0), (SONNET, 2), (GPT, 5),
        }


async def test_a_temporary_table_cannot_stand_in_for_the_runs(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """The rules' functions have a fixed search_path: a session's temporary
    benchmark_runs, claiming a completed run is running, changes nothing.
    The application may not create one at all; the owner may, and then
    writes as the application role in the same session."""
    async with tenant_scope(tenant.tenant_id):
        await benchmarks.complete_run(tenant.run_id)
    with pytest.raises(asyncpg.CheckViolationError, match="results are recorded only while"):
        async with owner.transaction():
            await owner.execute(
                "CREATE TEMP TABLE benchmark_runs ON COMMIT DROP AS"
                " SELECT id, 'running'::text AS status, ARRAY['zzz'] AS models"
                " FROM public.benchmark_runs WHERE id = $1",
                tenant.run_id,
            )
            await owner.execute(
                "SELECT set_config('role', 'everyskill_app', true),"
                " set_config('app.current_tenant_id', $1, true)",
                tenant.tenant_id,
            )
            await owner.execute(
                "INSERT INTO public.benchmark_results"
                " (tenant_id, benchmark_run_id, model_name, model_provider, test_case_index)"
                " VALUES ($1, $2, 'zzz', 'x', 9)",
                tenant.tenant_id,
                tenant.run_id,
            )
    assert await owner.fetchval(
        "SELECT count(*) FROM benchmark_results WHERE benchmark_run_id = $1", tenant.run_id
    ) == 1


# -- a run's cost ----------------------------------------------------------------------


async def test_a_runs_cost_is_its_results_and_its_scoring_measurements(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    """Results: 1,000 and 2,500 microcents given, one unpriced (tokens, an
    unknown model), one failed call without tokens (not billed). Scoring:
    the run's measurements of its skill with source api (700 and an
    unpriced one); measurements with the run's id but another source or
    skill, or of another tenant, are not the run's."""
    run_id = await new_run(tenant, [SONNET, "house-model"])
    async with tenant_scope(tenant.tenant_id):
        empty = await benchmarks.run_cost(run_id)
        await benchmarks.record_results(run_id, [
            result(SONNET, 0, input_tokens=10, output_tokens=2, estimated_cost_microcents=1_000),
            result(SONNET, 1, input_tokens=10, output_tokens=2, estimated_cost_microcents=2_500),
            result("house-model", 0, input_tokens=10, output_tokens=2),
            result("house-model", 1, error_message="timed out"),
        ])
        other_skill = await owner.fetchval(
            "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, 'other', 'Other') RETURNING id",
            tenant.tenant_id,
        )
        await usage.record_measurements([
            {"skill_id": tenant.skill_id, "model_name": SONNET, "source": "api",
             "usage_event_id": run_id, "input_tokens": 1, "output_tokens": 1,
             "estimated_cost_microcents": 700},
            {"skill_id": tenant.skill_id, "model_name": "house-model", "source": "api",
             "usage_event_id": run_id, "input_tokens": 1, "output_tokens": 1},
            {"skill_id": tenant.skill_id, "model_name": SONNET, "source": "hook",
             "usage_event_id": run_id, "input_tokens": 1, "output_tokens": 1,
             "estimated_cost_microcents": 50_000},
            {"skill_id": other_skill, "model_name": SONNET, "source": "api",
             "usage_event_id": run_id, "input_tokens": 1, "output_tokens": 1,
             "estimated_cost_microcents": 60_000},
        ])
    async with tenant_scope(other_tenant.tenant_id):
        await usage.record_measurement(
            skill_id=other_tenant.skill_id, model_name=SONNET, source="api",
            usage_event_id=run_id, input_tokens=1, output_tokens=1,
            estimated_cost_microcents=70_000,
        )
        with pytest.raises(NotFoundError):
            await benchmarks.run_cost(run_id)
    async with tenant_scope(tenant.tenant_id):
        spent = await benchmarks.run_cost(run_id)
    assert empty == benchmarks.RunCost(0, 0, 0, 0, 0) and empty.total_microcents == 0
    assert spent == benchmarks.RunCost(
        results_microcents=3_500, judging_microcents=700, judgements=2,
        unpriced_results=1, unpriced_judgements=1,
    )
    assert spent.total_microcents == 4_200
