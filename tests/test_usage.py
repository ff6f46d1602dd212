"""
everyskill.usage through the API, as the application connects: recording one
measurement and batches (costs, token totals, validation, ids of other
tenants), the skills' cost aggregates, listing, and summaries checked against
sums computed here in Python. The owner connection only prepares rows and
checks what was really stored.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import math
import random
import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pydantic
import pytest

import tables
from everyskill import usage
from everyskill.errors import NotFoundError, TenantScopeError, ValidationError
from everyskill.pagination import encode_cursor
from everyskill.pricing import CostWarning, set_model_price
from everyskill.tenancy import tenant_scope
from everyskill.usage import MAX_BATCH, MeasurementInput, UsageSummary
from tests.support import TenantRows

UTC = datetime.timezone.utc
INT4_MAX = 2**31 - 1


async def count_measurements(owner: asyncpg.Connection, tenant: TenantRows) -> int:
    return int(
        await owner.fetchval(
            "SELECT count(*) FROM token_measurements WHERE tenant_id = $1", tenant.tenant_id
        )
    )


async def add_skill(owner: asyncpg.Connection, tenant: TenantRows, slug: str) -> str:
    return str(
        await owner.fetchval(
            "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, $2, $2) RETURNING id",
            tenant.tenant_id,
            slug,
        )
    )


async def stored(owner: asyncpg.Connection, measurement_id: str) -> asyncpg.Record:
    row = await owner.fetchrow("SELECT * FROM token_measurements WHERE id = $1", measurement_id)
    assert row is not None
    return row


# -- one measurement: cost and tokens ---------------------------------------------


@pytest.mark.parametrize(
    ("model", "cost"),
    [
        # $3 / $15 per MTok, cache reads $0.30, cache writes $3.75:
        # 1000*300 + 200*1500 + 5000*30 + 100*375
        ("claude-sonnet-4-5", 787_500),
        # $1 / $5 per MTok, cache reads $0.10, cache writes $1.25:
        # 1000*100 + 200*500 + 5000*10 + 100*125
        ("claude-haiku-4-5", 262_500),
    ],
)
async def test_the_cost_is_computed_from_the_price_table(
    owner: asyncpg.Connection, tenant: TenantRows, model: str, cost: int
) -> None:
    # The sample tenant has its own price for claude-sonnet-4-5: the table's applies without it.
    await owner.execute("DELETE FROM model_prices WHERE tenant_id = $1", tenant.tenant_id)
    async with tenant_scope(tenant.tenant_id):
        saved = await usage.record_measurement(
            skill_id=tenant.skill_id,
            model_name=model,
            input_tokens=1000,
            output_tokens=200,
            cache_read_tokens=5000,
            cache_write_tokens=100,
            latency_ms=640,
            user_id=tenant.user_id,
            usage_event_id="evt-1",
            source="api",
        )
    row = await stored(owner, saved.row.id)
    assert row["estimated_cost_microcents"] == cost
    assert row["total_tokens"] == 1000 + 5000 + 100 + 200
    assert row["tenant_id"] == tenant.tenant_id
    assert (row["model_provider"], row["model_name"], row["source"]) == ("anthropic", model, "api")
    assert (row["user_id"], row["usage_event_id"], row["latency_ms"]) == (
        tenant.user_id,
        "evt-1",
        640,
    )
    assert isinstance(saved.row, tables.TokenMeasurement)
    assert (saved.row.estimated_cost_microcents, saved.row.total_tokens) == (cost, 6300)
    assert saved.warnings == ()


async def test_long_prompts_are_priced_at_their_tier_counting_cache_tokens(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """Above 200k input tokens in all (cache tokens included) Sonnet 4.5 costs
    $6 / $22.50 per MTok, cache reads $0.60."""
    await owner.execute("DELETE FROM model_prices WHERE tenant_id = $1", tenant.tenant_id)
    async with tenant_scope(tenant.tenant_id):
        saved = await usage.record_measurement(
            skill_id=tenant.skill_id,
            model_name="claude-sonnet-4-5",
            input_tokens=150_000,
            cache_read_tokens=60_000,
            output_tokens=1_000,
        )
    assert saved.row.estimated_cost_microcents == 150_000 * 600 + 60_000 * 60 + 1_000 * 2250


async def test_a_given_cost_is_kept(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        known = await usage.record_measurement(
            skill_id=tenant.skill_id,
            model_name="claude-haiku-4-5",
            input_tokens=1000,
            output_tokens=200,
            estimated_cost_microcents=7,
        )
        unknown_model = await usage.record_measurement(
            skill_id=tenant.skill_id,
            model_name="house-model-1",
            model_provider="in-house",
            estimated_cost_microcents=0,
        )
    assert (await stored(owner, known.row.id))["estimated_cost_microcents"] == 7
    assert (await stored(owner, unknown_model.row.id))["estimated_cost_microcents"] == 0
    assert known.warnings == () and unknown_model.warnings == ()


@pytest.mark.parametrize(
    ("tokens", "total"),
    [
        ({"input_tokens": 10, "output_tokens": 5}, 15),
        ({"input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 100}, 115),
        ({"input_tokens": 10, "output_tokens": 5, "cache_write_tokens": 30}, 45),
        (
            {
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_read_tokens": 1,
                "cache_write_tokens": 2,
                "total_tokens": 18,
            },
            18,
        ),
        ({"input_tokens": 10}, None),
        ({"output_tokens": 5}, None),
        ({"total_tokens": 99}, 99),
        ({"input_tokens": 10, "total_tokens": 40}, 40),
        ({}, None),
    ],
)
async def test_total_tokens_is_derived_when_the_parts_are_known(
    owner: asyncpg.Connection, tenant: TenantRows, tokens: dict[str, Any], total: int | None
) -> None:
    async with tenant_scope(tenant.tenant_id):
        saved = await usage.record_measurement(
            skill_id=tenant.skill_id, model_name="claude-haiku-4-5", **tokens
        )
    assert (await stored(owner, saved.row.id))["total_tokens"] == total


@pytest.mark.parametrize(
    "tokens",
    [
        # Cache tokens left out of the total: the OpenAI convention, refused.
        {"input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 100, "total_tokens": 15},
        {"input_tokens": 10, "output_tokens": 5, "total_tokens": 16},
        {"input_tokens": 10, "cache_write_tokens": 50, "total_tokens": 40},
        {"input_tokens": INT4_MAX, "output_tokens": 1},
    ],
)
async def test_an_inconsistent_total_is_refused(
    owner: asyncpg.Connection, tenant: TenantRows, tokens: dict[str, Any]
) -> None:
    before = await count_measurements(owner, tenant)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await usage.record_measurement(
                skill_id=tenant.skill_id, model_name="claude-haiku-4-5", **tokens
            )
    assert refused.value.field == "total_tokens"
    if "total_tokens" in tokens:
        assert "cache" in refused.value.reason and "input_tokens" in refused.value.reason
    assert await count_measurements(owner, tenant) == before


async def test_names_are_stripped_and_the_model_still_priced(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        saved = await usage.record_measurement(
            skill_id=f" {tenant.skill_id} ",
            model_name="  claude-haiku-4-5 ",
            model_provider=" anthropic",
            source=" mcp ",
            input_tokens=1,
            output_tokens=1,
        )
    row = await stored(owner, saved.row.id)
    assert (row["skill_id"], row["model_name"], row["model_provider"], row["source"]) == (
        tenant.skill_id,
        "claude-haiku-4-5",
        "anthropic",
        "mcp",
    )
    assert row["estimated_cost_microcents"] == 100 + 500


# -- tenant prices ---------------------------------------------------------------


async def test_the_tenants_own_price_wins_and_another_tenants_does_not_apply(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    call: dict[str, Any] = {
        "model_name": "claude-haiku-4-5",
        "input_tokens": 1000,
        "output_tokens": 100,
        "cache_read_tokens": 10,
    }
    async with tenant_scope(other_tenant.tenant_id):
        await set_model_price(
            "claude-haiku-4-5", input_microcents_per_token=7, output_microcents_per_token=7
        )
        theirs = await usage.record_measurement(skill_id=other_tenant.skill_id, **call)
    async with tenant_scope(tenant.tenant_id):
        # The table's price: the other tenant's is not ours.
        table = await usage.record_measurement(skill_id=tenant.skill_id, **call)
        await set_model_price(
            "claude-haiku-4-5", input_microcents_per_token=200, output_microcents_per_token=1000
        )
        ours = await usage.record_measurement(skill_id=tenant.skill_id, **call)
        batch = await usage.record_measurements([{"skill_id": tenant.skill_id, **call}] * 3)
    # Cache reads at the table's cache-to-input ratio for Haiku ($0.10 / $1 =
    # 1/10) of the tenant's input rate, when the tenant's price has none.
    assert theirs.row.estimated_cost_microcents == 1000 * 7 + 100 * 7 + 7  # 10 × 0.7
    assert table.row.estimated_cost_microcents == 1000 * 100 + 100 * 500 + 10 * 10
    assert ours.row.estimated_cost_microcents == 1000 * 200 + 100 * 1000 + 10 * 20
    costs = await owner.fetch(
        "SELECT estimated_cost_microcents FROM token_measurements WHERE id = ANY($1)",
        list(batch.ids),
    )
    assert [row[0] for row in costs] == [300_200] * 3


async def test_the_sample_tenant_price_applies_to_its_model(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """make_tenant gives the tenant 250 / 1250 microcents for claude-sonnet-4-5."""
    async with tenant_scope(tenant.tenant_id):
        saved = await usage.record_measurement(
            skill_id=tenant.skill_id,
            model_name="claude-sonnet-4-5",
            input_tokens=1000,
            output_tokens=200,
        )
    assert saved.row.estimated_cost_microcents == 1000 * 250 + 200 * 1250


# -- no cost: NULL and a warning, never 0 -----------------------------------------


async def test_an_unknown_model_is_written_without_a_cost_and_with_a_warning(
    owner: asyncpg.Connection, tenant: TenantRows, caplog: pytest.LogCaptureFixture
) -> None:
    before = await count_measurements(owner, tenant)
    with caplog.at_level(logging.WARNING, logger="everyskill.usage"):
        async with tenant_scope(tenant.tenant_id):
            saved = await usage.record_measurement(
                skill_id=tenant.skill_id,
                model_name="no-such-model-9000",
                input_tokens=1000,
                output_tokens=200,
            )
    assert await count_measurements(owner, tenant) == before + 1
    row = await stored(owner, saved.row.id)
    assert row["estimated_cost_microcents"] is None and row["total_tokens"] == 1200
    (warning,) = saved.warnings
    assert isinstance(warning, CostWarning)
    assert (warning.model_provider, warning.model_name, warning.rows) == (
        "anthropic",
        "no-such-model-9000",
        1,
    )
    assert "no-such-model-9000" in caplog.text and "without a cost" in caplog.text


async def test_a_batch_reports_how_many_rows_of_each_model_have_no_cost(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    def row(model: str, **fields: Any) -> dict[str, Any]:
        return {"skill_id": tenant.skill_id, "model_name": model, **fields}

    rows = (
        [row("mystery-a", input_tokens=1, output_tokens=1)] * 3
        + [row("claude-haiku-4-5", input_tokens=1, output_tokens=1)] * 2
        + [row("mystery-b", model_provider="acme")] * 4
        # A known model without output tokens cannot be priced either.
        + [row("claude-haiku-4-5", input_tokens=5)]
    )
    async with tenant_scope(tenant.tenant_id):
        saved = await usage.record_measurements(rows)
    found = {
        (w.model_provider, w.model_name, w.rows)
        for w in saved.warnings
        if isinstance(w, CostWarning)
    }
    assert found == {
        ("anthropic", "mystery-a", 3),
        ("acme", "mystery-b", 4),
        ("anthropic", "claude-haiku-4-5", 1),
    }
    tokens_warning = next(
        w
        for w in saved.warnings
        if isinstance(w, CostWarning) and w.model_name == "claude-haiku-4-5"
    )
    assert "output_tokens" in tokens_warning.reason
    costs = await owner.fetch(
        "SELECT id, estimated_cost_microcents FROM token_measurements WHERE id = ANY($1)",
        list(saved.ids),
    )
    by_id = {row["id"]: row["estimated_cost_microcents"] for row in costs}
    assert [by_id[i] for i in saved.ids] == [None] * 3 + [600] * 2 + [None] * 5


# -- validation: refused before anything is written ------------------------------

BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"input_tokens": -1}, "input_tokens"),
    ({"output_tokens": -5}, "output_tokens"),
    ({"cache_read_tokens": -1}, "cache_read_tokens"),
    ({"cache_write_tokens": -1}, "cache_write_tokens"),
    ({"total_tokens": -1}, "total_tokens"),
    ({"estimated_cost_microcents": -1}, "estimated_cost_microcents"),
    ({"latency_ms": -1}, "latency_ms"),
    ({"input_tokens": INT4_MAX + 1}, "input_tokens"),
    ({"estimated_cost_microcents": 2**31}, "estimated_cost_microcents"),
    ({"input_tokens": True}, "input_tokens"),
    ({"latency_ms": False}, "latency_ms"),
    ({"output_tokens": 5.0}, "output_tokens"),
    ({"input_tokens": "10"}, "input_tokens"),
    ({"model_name": ""}, "model_name"),
    ({"model_name": "   "}, "model_name"),
    ({"model_name": None}, "model_name"),
    ({"model_provider": " "}, "model_provider"),
    ({"source": ""}, "source"),
    ({"skill_id": ""}, "skill_id"),
    ({"skill_id": None}, "skill_id"),
    ({"user_id": ""}, "user_id"),
    ({"usage_event_id": 12}, "usage_event_id"),
    ({"model_name": "m" * 201}, "model_name"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_FIELDS)
async def test_bad_input_is_refused_with_the_field_and_nothing_is_written(
    owner: asyncpg.Connection, tenant: TenantRows, fields: dict[str, Any], field: str
) -> None:
    before = await count_measurements(owner, tenant)
    arguments = {"skill_id": tenant.skill_id, "model_name": "claude-haiku-4-5", **fields}
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await usage.record_measurement(**arguments)
    assert field in [name for name, _ in refused.value.problems]
    assert refused.value.reason
    assert await count_measurements(owner, tenant) == before


@pytest.mark.parametrize(
    ("fields", "field"), BAD_FIELDS + [({"colour": "blue"}, "colour"), ({"id": "mine"}, "id")]
)
async def test_a_bad_row_refuses_the_whole_batch_naming_the_row(
    owner: asyncpg.Connection, tenant: TenantRows, fields: dict[str, Any], field: str
) -> None:
    before = await count_measurements(owner, tenant)
    good: dict[str, Any] = {
        "skill_id": tenant.skill_id,
        "model_name": "claude-haiku-4-5",
        "input_tokens": 1,
        "output_tokens": 1,
    }
    rows = [dict(good) for _ in range(50)]
    rows[37] = {**good, **fields}
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await usage.record_measurements(rows)
    assert f"measurements[37].{field}" in [name for name, _ in refused.value.problems]
    assert all(name.startswith("measurements[37]") for name, _ in refused.value.problems)
    assert await count_measurements(owner, tenant) == before


async def test_every_problem_of_a_batch_is_reported_up_to_a_limit(tenant: TenantRows) -> None:
    rows = [{"skill_id": tenant.skill_id, "model_name": "m", "input_tokens": -1}] * 50
    rows += [
        {
            "skill_id": tenant.skill_id,
            "model_name": "m",
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": 3,
        }
    ]
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await usage.record_measurements(rows)
    problems = refused.value.problems
    assert [name for name, _ in problems[:3]] == [
        "measurements[0].input_tokens",
        "measurements[1].input_tokens",
        "measurements[2].input_tokens",
    ]
    assert len(problems) == 21 and problems[-1] == (
        "measurements",
        "and 30 more problems not listed",
    )
    # Only rows that pass the type checks reach the total check.
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await usage.record_measurements(rows[-1:] * 2)
    assert [name for name, _ in refused.value.problems] == [
        "measurements[0].total_tokens",
        "measurements[1].total_tokens",
    ]


@pytest.mark.parametrize(
    ("batch", "words"),
    [
        ([], "empty"),
        ({"skill_id": "s", "model_name": "m"}, "list"),
        ("not a batch", "list"),
        (42, "list"),
        (itertools.repeat({"skill_id": "s", "model_name": "m"}), "split"),
        (({"skill_id": "s", "model_name": "m"} for _ in range(MAX_BATCH + 1)), "split"),
    ],
)
async def test_a_batch_is_a_non_empty_list_of_at_most_max_batch_rows(
    owner: asyncpg.Connection, tenant: TenantRows, batch: Any, words: str
) -> None:
    before = await count_measurements(owner, tenant)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await usage.record_measurements(batch)
    assert refused.value.field == "measurements" and words in refused.value.reason
    assert await count_measurements(owner, tenant) == before


async def test_a_row_that_is_not_a_mapping_is_refused(tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await usage.record_measurements(
                [{"skill_id": tenant.skill_id, "model_name": "m"}, ("skill", "m")]  # type: ignore[list-item]
            )
    assert refused.value.field == "measurements[1]"


def test_measurement_input_is_strict() -> None:
    row = MeasurementInput(skill_id=" s ", model_name="m", input_tokens=3)
    assert (row.skill_id, row.model_provider, row.source, row.output_tokens) == (
        "s",
        "anthropic",
        "hook",
        None,
    )
    bad_fields: list[dict[str, Any]] = [
        {"input_tokens": True},
        {"input_tokens": 1.0},
        {"colour": 1},
        {"model_name": ""},
    ]
    for bad in bad_fields:
        with pytest.raises(pydantic.ValidationError):
            MeasurementInput(**{"skill_id": "s", "model_name": "m", **bad})


# -- ids of the tenant -------------------------------------------------------------


@pytest.mark.parametrize(
    "reference", ["unknown skill", "other skill", "other user", "unknown user"]
)
async def test_ids_not_of_the_tenant_are_not_found_and_nothing_is_written(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows, reference: str
) -> None:
    field, value = {
        "unknown skill": ("skill_id", "no-such-skill"),
        "other skill": ("skill_id", other_tenant.skill_id),
        "other user": ("user_id", other_tenant.user_id),
        "unknown user": ("user_id", "no-such-user"),
    }[reference]
    good: dict[str, Any] = {
        "skill_id": tenant.skill_id,
        "user_id": tenant.user_id,
        "model_name": "claude-haiku-4-5",
    }
    before = await count_measurements(owner, tenant)
    others_before = await count_measurements(owner, other_tenant)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotFoundError) as missing:
            await usage.record_measurement(**{**good, field: value})
        assert (missing.value.id, missing.value.field) == (value, field)
        assert missing.value.kind == field.removesuffix("_id")

        rows = [dict(good) for _ in range(20)]
        rows[13][field] = value
        with pytest.raises(NotFoundError) as missing:
            await usage.record_measurements(rows)
        assert (missing.value.id, missing.value.field) == (value, f"measurements[13].{field}")
        assert "measurements[13]" in str(missing.value) and value in str(missing.value)
        # The scope is still usable: the ids were found missing by a read,
        # before anything was written.
        await usage.record_measurement(**good)
    assert await count_measurements(owner, tenant) == before + 1
    assert await count_measurements(owner, other_tenant) == others_before


async def test_a_database_error_in_the_middle_of_a_batch_writes_nothing(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """A rule only the database knows (a CHECK added here for the test) fails
    row 1,500 of 2,000 while the statement runs: no row stays, the skill's
    aggregates are untouched, and the scope goes on past its savepoint."""
    skill = await add_skill(owner, tenant, "db-failure")
    rows = [
        {
            "skill_id": skill,
            "model_name": "claude-haiku-4-5",
            "input_tokens": 10,
            "output_tokens": 1,
            "latency_ms": 100,
        }
        for _ in range(2000)
    ]
    rows[1500]["latency_ms"] = 4242
    before = await count_measurements(owner, tenant)
    await owner.execute(
        "ALTER TABLE token_measurements ADD CONSTRAINT token_measurements_test_latency_check"
        " CHECK (latency_ms <> 4242) NOT VALID"
    )
    try:
        async with tenant_scope(tenant.tenant_id) as scope:
            with pytest.raises(ValidationError) as refused:
                async with scope.savepoint():
                    await usage.record_measurements(rows)
            assert "token_measurements_test_latency_check" in refused.value.reason
            saved = await usage.record_measurements(rows[:2])
    finally:
        await owner.execute(
            "ALTER TABLE token_measurements DROP CONSTRAINT token_measurements_test_latency_check"
        )
    assert await count_measurements(owner, tenant) == before + 2
    aggregates = await owner.fetchrow(
        "SELECT costed_measurements, measured_cost_microcents FROM skills WHERE id = $1", skill
    )
    assert aggregates is not None
    assert tuple(aggregates) == (2, 2 * (10 * 100 + 1 * 500))
    assert saved.count == 2


# -- batches -------------------------------------------------------------------------


async def test_a_batch_of_2000_rows_is_written_by_one_statement_in_input_order(
    owner: asyncpg.Connection, tenant: TenantRows, monkeypatch: pytest.MonkeyPatch
) -> None:
    await owner.execute("DELETE FROM model_prices WHERE tenant_id = $1", tenant.tenant_id)
    second_skill = await add_skill(owner, tenant, "second")
    models = ["claude-haiku-4-5", "claude-sonnet-4-5"]
    rates = {"claude-haiku-4-5": (100, 500, 10, 125), "claude-sonnet-4-5": (300, 1500, 30, 375)}
    rows: list[dict[str, Any] | MeasurementInput] = []
    for i in range(2000):
        row: dict[str, Any] = {
            "skill_id": (tenant.skill_id, second_skill)[i % 2],
            "model_name": models[(i // 2) % 2],
            "input_tokens": 100 + i,
            "output_tokens": 10 + i % 7,
            "cache_read_tokens": (i * 37) % 1000 if i % 3 else None,
            "cache_write_tokens": i % 5 or None,
            "latency_ms": 200 + (i * 13) % 700,
            "user_id": tenant.user_id if i % 4 else None,
            "usage_event_id": f"evt-{i}",
        }
        if i % 10 == 0:
            row["estimated_cost_microcents"] = i
        # Typed rows and mappings mix.
        rows.append(MeasurementInput(**row) if i % 9 == 0 else row)

    # No Piccolo row object per row.
    made = 0
    original = tables.TokenMeasurement.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal made
        made += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(tables.TokenMeasurement, "__init__", counting)
    before = await count_measurements(owner, tenant)
    async with tenant_scope(tenant.tenant_id):
        saved = await usage.record_measurements(rows)
    monkeypatch.undo()
    assert made == 0
    assert saved.count == 2000 and len(set(saved.ids)) == 2000
    assert all(uuid.UUID(i).version == 4 for i in saved.ids)
    assert saved.warnings == ()
    assert await count_measurements(owner, tenant) == before + 2000

    records = await owner.fetch(
        "SELECT *, xmin::text AS tx, cmin::text AS command FROM token_measurements"
        " WHERE id = ANY($1)",
        list(saved.ids),
    )
    # Inserted by one command of one transaction.
    assert len({(r["tx"], r["command"]) for r in records}) == 1
    by_id = {r["id"]: r for r in records}
    for i, (measurement_id, given) in enumerate(zip(saved.ids, rows)):
        row = given.model_dump() if isinstance(given, MeasurementInput) else given
        got = by_id[measurement_id]
        assert got["usage_event_id"] == f"evt-{i}"
        for name in (
            "skill_id",
            "model_name",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "latency_ms",
            "user_id",
        ):
            assert got[name] == row[name], (i, name)
        cache_read, cache_write = row["cache_read_tokens"] or 0, row["cache_write_tokens"] or 0
        assert (
            got["total_tokens"]
            == row["input_tokens"] + row["output_tokens"] + cache_read + cache_write
        )
        rate_in, rate_out, rate_read, rate_write = rates[row["model_name"]]
        expected = row.get("estimated_cost_microcents")
        if expected is None:
            expected = (
                row["input_tokens"] * rate_in
                + row["output_tokens"] * rate_out
                + cache_read * rate_read
                + cache_write * rate_write
            )
        assert got["estimated_cost_microcents"] == expected, i
        assert (got["model_provider"], got["source"], got["tenant_id"]) == (
            "anthropic",
            "hook",
            tenant.tenant_id,
        )


async def test_skill_aggregates_match_a_recount_after_batches(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    near_max = INT4_MAX - 1
    second = await add_skill(owner, tenant, "aggregated")
    batches: list[list[dict[str, Any]]] = [
        [{"skill_id": second, "model_name": "x", "estimated_cost_microcents": near_max}] * 3
        + [
            {
                "skill_id": tenant.skill_id,
                "model_name": "claude-haiku-4-5",
                "input_tokens": 3,
                "output_tokens": 1,
            }
        ]
        * 5,
        [{"skill_id": second, "model_name": "unknown-model", "input_tokens": 3, "output_tokens": 1}]
        * 4
        + [{"skill_id": second, "model_name": "x", "estimated_cost_microcents": 1}],
        [{"skill_id": tenant.skill_id, "model_name": "x", "estimated_cost_microcents": 12_345}] * 2,
    ]
    async with tenant_scope(tenant.tenant_id):
        for batch in batches:
            await usage.record_measurements(batch)

    for skill in (tenant.skill_id, second):
        recount = await owner.fetchrow(
            "SELECT count(estimated_cost_microcents) AS costed,"
            " coalesce(sum(estimated_cost_microcents), 0) AS total,"
            " array_agg(estimated_cost_microcents) FILTER (WHERE estimated_cost_microcents IS NOT NULL) AS costs"
            " FROM token_measurements WHERE skill_id = $1",
            skill,
        )
        aggregates = await owner.fetchrow(
            "SELECT costed_measurements, measured_cost_microcents, avg_token_cost_microcents"
            " FROM skills WHERE id = $1",
            skill,
        )
        assert recount is not None and aggregates is not None
        costs = recount["costs"]
        assert aggregates["costed_measurements"] == recount["costed"] == len(costs)
        assert aggregates["measured_cost_microcents"] == recount["total"] == sum(costs)
        average = (Decimal(sum(costs)) / len(costs)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        assert aggregates["avg_token_cost_microcents"] == int(average)
    second_total = await owner.fetchval(
        "SELECT measured_cost_microcents FROM skills WHERE id = $1", second
    )
    assert second_total == 3 * near_max + 1 > INT4_MAX


# -- reading -------------------------------------------------------------------------


async def insert_measurements(
    owner: asyncpg.Connection, tenant_id: str, rows: Sequence[dict[str, Any]]
) -> list[str]:
    """Insert rows as the owner (created_at included); return their ids."""
    ids = []
    for row in rows:
        columns = ["tenant_id", *row]
        ids.append(
            await owner.fetchval(
                f"INSERT INTO token_measurements ({', '.join(columns)})"
                f" VALUES ({', '.join(f'${n}' for n in range(1, len(columns) + 1))}) RETURNING id",
                tenant_id,
                *row.values(),
            )
        )
    return ids


async def test_get_measurement(tenant: TenantRows, other_tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        row = await usage.get_measurement(tenant.measurement_id)
        assert isinstance(row, tables.TokenMeasurement)
        assert (row.id, row.skill_id, row.total_tokens, row.estimated_cost_microcents) == (
            tenant.measurement_id,
            tenant.skill_id,
            1200,
            600_000,
        )
        with pytest.raises(NotFoundError) as missing:
            await usage.get_measurement(other_tenant.measurement_id)
        assert missing.value.id == other_tenant.measurement_id
        with pytest.raises(ValidationError):
            await usage.get_measurement("")


async def test_listing_filters_and_pages_newest_first(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    second = await add_skill(owner, tenant, "listed")
    start = datetime.datetime(2025, 5, 1, 12, tzinfo=UTC)
    specs = [
        # (skill, provider, model, user, minutes after start)
        (tenant.skill_id, "anthropic", "claude-haiku-4-5", tenant.user_id, 0),
        (second, "anthropic", "claude-haiku-4-5", None, 1),
        (tenant.skill_id, "openai", "gpt-4o", tenant.user_id, 2),
        (second, "openai", "gpt-4o", None, 3),
        (tenant.skill_id, "anthropic", "claude-sonnet-4-5", None, 4),
        (tenant.skill_id, "anthropic", "claude-sonnet-4-5", None, 4),  # same moment
        (second, "anthropic", "claude-haiku-4-5", tenant.user_id, 5),
    ]
    rows = [
        {
            "skill_id": s,
            "model_provider": p,
            "model_name": m,
            "user_id": u,
            "created_at": start + datetime.timedelta(minutes=minutes),
        }
        for s, p, m, u, minutes in specs
    ]
    ids = await insert_measurements(owner, tenant.tenant_id, rows)
    await insert_measurements(
        owner,
        other_tenant.tenant_id,
        [
            {
                "skill_id": other_tenant.skill_id,
                "model_name": "claude-haiku-4-5",
                "created_at": start,
            }
        ],
    )
    window: dict[str, Any] = {"since": start, "until": start + datetime.timedelta(hours=1)}
    newest_first = sorted(
        range(len(rows)), key=lambda i: (rows[i]["created_at"], ids[i]), reverse=True
    )

    async def listed(**filters: Any) -> list[str]:
        async with tenant_scope(tenant.tenant_id):
            page = await usage.list_measurements(**{**window, **filters})
        assert page.next_cursor is None
        return [row.id for row in page.items]

    def expected(keep: Any) -> list[str]:
        return [ids[i] for i in newest_first if keep(rows[i])]

    assert await listed() == expected(lambda r: True)
    assert await listed(skill_id=second) == expected(lambda r: r["skill_id"] == second)
    assert await listed(model_name="gpt-4o") == expected(lambda r: r["model_name"] == "gpt-4o")
    assert await listed(model_provider="anthropic") == expected(
        lambda r: r["model_provider"] == "anthropic"
    )
    assert await listed(user_id=tenant.user_id) == expected(
        lambda r: r["user_id"] == tenant.user_id
    )
    assert await listed(skill_id=second, model_name="claude-haiku-4-5") == expected(
        lambda r: r["skill_id"] == second and r["model_name"] == "claude-haiku-4-5"
    )
    assert await listed(until=start + datetime.timedelta(minutes=2)) == [ids[1], ids[0]]
    assert await listed(since=start + datetime.timedelta(minutes=5)) == [ids[6]]
    assert await listed(skill_id=other_tenant.skill_id) == []

    seen: list[str] = []
    cursor = None
    async with tenant_scope(tenant.tenant_id):
        while True:
            page = await usage.list_measurements(**window, limit=2, cursor=cursor)
            assert len(page.items) <= 2
            seen += [row.id for row in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert seen == expected(lambda r: True)


@pytest.mark.parametrize(
    "arguments",
    [
        {"limit": 0},
        {"limit": 501},
        {"cursor": "not-a-cursor"},
        {"cursor": encode_cursor("skill_feedback", datetime.datetime.now(UTC), "x")},
        {"since": datetime.datetime(2026, 1, 1)},
        {"until": "2026-01-01"},
        {"model_name": ""},
        {"skill_id": " "},
        {"user_id": 3},
    ],
)
async def test_listing_refuses_bad_arguments(tenant: TenantRows, arguments: dict[str, Any]) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await usage.list_measurements(**arguments)
    assert refused.value.field == next(iter(arguments))


# -- summaries -----------------------------------------------------------------------


def percentile_cont(values: Sequence[int], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between neighbours."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def test_percentile_cont_matches_statistics_inclusive_quantiles() -> None:
    values = [random.Random(3).randrange(1000) for _ in range(37)]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    assert percentile_cont(values, 0.5) == pytest.approx(cuts[49])
    assert percentile_cont(values, 0.95) == pytest.approx(cuts[94])
    assert percentile_cont([5], 0.95) == 5 and percentile_cont([], 0.5) is None


SUMMARY_START = datetime.datetime(2025, 3, 1, tzinfo=UTC)
SUMMARY_WINDOW: dict[str, Any] = {
    "since": SUMMARY_START,
    "until": SUMMARY_START + datetime.timedelta(days=6),
}
MODELS = [
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-sonnet-4-5"),
    ("openai", "gpt-4o"),
]


async def summary_rows(
    owner: asyncpg.Connection, tenant: TenantRows
) -> tuple[list[dict[str, Any]], str]:
    """Measurements over five days, at hours that fall on other days in
    Berlin and Los Angeles, with missing counts, costs and latencies, and
    costs and tokens whose sums exceed 32 bits. Inserted by the owner."""
    second = await add_skill(owner, tenant, "summarised")
    pick = random.Random(42)
    rows: list[dict[str, Any]] = []
    for i in range(120):
        provider, model = MODELS[pick.randrange(3)]
        input_tokens = pick.choice([None, pick.randrange(5000)])
        output_tokens = pick.choice([None, pick.randrange(900), pick.randrange(900)])
        cache_read = pick.choice([None, pick.randrange(20_000)])
        cache_write = pick.choice([None, pick.randrange(3000)])
        total = None
        if input_tokens is not None and output_tokens is not None:
            total = input_tokens + output_tokens + (cache_read or 0) + (cache_write or 0)
        rows.append(
            {
                "skill_id": pick.choice([tenant.skill_id, second]),
                "model_provider": provider,
                "model_name": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_tokens": cache_read,
                "cache_write_tokens": cache_write,
                "total_tokens": total,
                "estimated_cost_microcents": pick.choice(
                    [None, pick.randrange(10**6), pick.randrange(10**6)]
                ),
                "latency_ms": pick.choice([None, pick.randrange(5000), pick.randrange(5000)]),
                # Hours 23 and 0-7 UTC are another day in Berlin or Los Angeles.
                "created_at": SUMMARY_START
                + datetime.timedelta(
                    days=pick.randrange(5), hours=pick.choice([0, 5, 7, 12, 22, 23]), minutes=30
                ),
            }
        )
    # Near the 32-bit limit: the sums need 64 bits.
    for _ in range(3):
        rows.append(
            {
                "skill_id": second,
                "model_provider": "anthropic",
                "model_name": "claude-haiku-4-5",
                "input_tokens": INT4_MAX - 10,
                "output_tokens": 10,
                "total_tokens": INT4_MAX,
                "estimated_cost_microcents": INT4_MAX - 1,
                "latency_ms": INT4_MAX,
                "created_at": SUMMARY_START + datetime.timedelta(days=2, hours=23, minutes=30),
            }
        )
    await insert_measurements(owner, tenant.tenant_id, rows)
    return rows, second


def expected_summaries(
    rows: Iterable[dict[str, Any]], by: Iterable[str], time_zone: str = "UTC"
) -> list[UsageSummary]:
    """What usage_summary should say, computed here row by row."""
    zone = ZoneInfo(time_zone)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        key = (
            row["skill_id"] if "skill" in by else None,
            row["model_provider"] if "model" in by else None,
            row["model_name"] if "model" in by else None,
            row["created_at"].astimezone(zone).date() if "day" in by else None,
        )
        groups[key].append(row)
    if not groups:
        groups[(None, None, None, None)] = []

    def total(members: list[dict[str, Any]], name: str) -> int:
        return sum(row.get(name) or 0 for row in members)

    summaries = [
        UsageSummary(
            skill_id=skill,
            model_provider=provider,
            model_name=model,
            day=day,
            calls=len(members),
            input_tokens=total(members, "input_tokens"),
            output_tokens=total(members, "output_tokens"),
            cache_read_tokens=total(members, "cache_read_tokens"),
            cache_write_tokens=total(members, "cache_write_tokens"),
            total_tokens=total(members, "total_tokens"),
            cost_microcents=total(members, "estimated_cost_microcents"),
            costed_calls=sum(row.get("estimated_cost_microcents") is not None for row in members),
            p50_latency_ms=percentile_cont(
                [r["latency_ms"] for r in members if r.get("latency_ms") is not None], 0.5
            ),
            p95_latency_ms=percentile_cont(
                [r["latency_ms"] for r in members if r.get("latency_ms") is not None], 0.95
            ),
        )
        for (skill, provider, model, day), members in groups.items()
    ]
    return sorted(
        summaries,
        key=lambda s: (
            s.day or datetime.date.min,
            s.skill_id or "",
            s.model_provider or "",
            s.model_name or "",
        ),
    )


def assert_same(got: list[UsageSummary], wanted: list[UsageSummary]) -> None:
    assert len(got) == len(wanted)
    for mine, theirs in zip(got, wanted):
        assert isinstance(mine, UsageSummary)
        exact = {k: v for k, v in vars(mine).items() if not k.endswith("latency_ms")}
        assert exact == {k: v for k, v in vars(theirs).items() if not k.endswith("latency_ms")}
        for name in ("p50_latency_ms", "p95_latency_ms"):
            if getattr(theirs, name) is None:
                assert getattr(mine, name) is None
            else:
                assert getattr(mine, name) == pytest.approx(getattr(theirs, name), rel=1e-12)


GROUPINGS = [by for size in range(4) for by in itertools.combinations(usage.SUMMARY_KEYS, size)]


@pytest.mark.parametrize("time_zone", ["UTC", "Europe/Berlin", "America/Los_Angeles"])
async def test_summaries_by_every_grouping_match_python(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows, time_zone: str
) -> None:
    rows, _second = await summary_rows(owner, tenant)
    # Another tenant's rows in the same days never count.
    await insert_measurements(
        owner,
        other_tenant.tenant_id,
        [
            {
                "skill_id": other_tenant.skill_id,
                "model_name": "claude-haiku-4-5",
                "input_tokens": 7,
                "estimated_cost_microcents": 5,
                "latency_ms": 1,
                "created_at": SUMMARY_START + datetime.timedelta(hours=30),
            }
        ],
    )
    async with tenant_scope(tenant.tenant_id):
        for by in GROUPINGS:
            got = await usage.usage_summary(by=by, time_zone=time_zone, **SUMMARY_WINDOW)
            assert_same(got, expected_summaries(rows, by, time_zone))
            # The order of the keys given does not matter.
            assert (
                await usage.usage_summary(
                    by=tuple(reversed(by)), time_zone=time_zone, **SUMMARY_WINDOW
                )
                == got
            )
    assert other_tenant.skill_id not in {s.skill_id for s in got}


async def test_day_buckets_follow_the_time_zone(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    late = datetime.datetime(2025, 3, 1, 23, 30, tzinfo=UTC)
    await insert_measurements(
        owner,
        tenant.tenant_id,
        [
            {"skill_id": tenant.skill_id, "model_name": "m", "input_tokens": 1, "created_at": late},
            {
                "skill_id": tenant.skill_id,
                "model_name": "m",
                "input_tokens": 2,
                "created_at": late + datetime.timedelta(hours=6),
            },
        ],
    )
    window: dict[str, Any] = {
        "since": late - datetime.timedelta(days=1),
        "until": late + datetime.timedelta(days=1),
    }

    async def days(time_zone: str) -> list[tuple[datetime.date | None, int]]:
        async with tenant_scope(tenant.tenant_id):
            summaries = await usage.usage_summary(by=("day",), time_zone=time_zone, **window)
        return [(s.day, s.input_tokens) for s in summaries]

    # 23:30 UTC is 00:30 the next day in Berlin; 05:30 UTC is the evening before in Los Angeles.
    assert await days("UTC") == [(datetime.date(2025, 3, 1), 1), (datetime.date(2025, 3, 2), 2)]
    assert await days("Europe/Berlin") == [(datetime.date(2025, 3, 2), 3)]
    assert await days("America/Los_Angeles") == [(datetime.date(2025, 3, 1), 3)]


async def test_summary_filters(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    rows, second = await summary_rows(owner, tenant)
    async with tenant_scope(tenant.tenant_id):
        by_skill = await usage.usage_summary(by=("model",), skill_id=second, **SUMMARY_WINDOW)
        by_model = await usage.usage_summary(
            by=("skill", "day"), model_name="gpt-4o", **SUMMARY_WINDOW
        )
        narrow = await usage.usage_summary(
            by=("skill",),
            since=SUMMARY_START + datetime.timedelta(days=1),
            until=SUMMARY_START + datetime.timedelta(days=2, hours=12),
        )
        nothing = await usage.usage_summary(
            by=("skill",), model_name="no-such-model", **SUMMARY_WINDOW
        )
    assert_same(
        by_skill, expected_summaries([r for r in rows if r["skill_id"] == second], ("model",))
    )
    assert_same(
        by_model,
        expected_summaries([r for r in rows if r["model_name"] == "gpt-4o"], ("skill", "day")),
    )
    in_range = [
        r
        for r in rows
        if SUMMARY_START + datetime.timedelta(days=1)
        <= r["created_at"]
        < SUMMARY_START + datetime.timedelta(days=2, hours=12)
    ]
    assert_same(narrow, expected_summaries(in_range, ("skill",)))
    assert nothing == []


async def test_sums_do_not_overflow_32_bits(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    rows, second = await summary_rows(owner, tenant)
    async with tenant_scope(tenant.tenant_id):
        (summary,) = await usage.usage_summary(by=("skill",), skill_id=second, **SUMMARY_WINDOW)
    mine = [r for r in rows if r["skill_id"] == second]
    assert (
        summary.cost_microcents
        == sum(r["estimated_cost_microcents"] or 0 for r in mine)
        > 3 * 10**9
    )
    assert summary.input_tokens > 3 * 10**9 and summary.total_tokens > 3 * 10**9
    assert summary.p95_latency_ms is not None and summary.p95_latency_ms > 10**9


async def test_tenant_totals(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    rows, _second = await summary_rows(owner, tenant)
    async with tenant_scope(other_tenant.tenant_id):
        await usage.record_measurement(
            skill_id=other_tenant.skill_id,
            model_name="claude-haiku-4-5",
            input_tokens=10,
            output_tokens=10,
        )
    everything = [
        dict(r)
        for r in await owner.fetch(
            "SELECT * FROM token_measurements WHERE tenant_id = $1", tenant.tenant_id
        )
    ]
    assert len(everything) == len(rows) + 1  # and the sample row
    async with tenant_scope(tenant.tenant_id):
        totals = await usage.tenant_usage_totals()
        window = await usage.tenant_usage_totals(**SUMMARY_WINDOW)
        empty = await usage.tenant_usage_totals(
            since=datetime.datetime(2000, 1, 1, tzinfo=UTC),
            until=datetime.datetime(2000, 1, 2, tzinfo=UTC),
        )
        assert await usage.usage_summary(by=(), **SUMMARY_WINDOW) == [window]
    assert_same([totals], expected_summaries(everything, ()))
    assert_same([window], expected_summaries(rows, ()))
    assert totals.calls == len(rows) + 1 and totals.skill_id is None and totals.day is None
    assert empty == UsageSummary(
        skill_id=None,
        model_provider=None,
        model_name=None,
        day=None,
        calls=0,
        input_tokens=0,
        output_tokens=0,
        cache_read_tokens=0,
        cache_write_tokens=0,
        total_tokens=0,
        cost_microcents=0,
        costed_calls=0,
        p50_latency_ms=None,
        p95_latency_ms=None,
    )


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"by": ("skill", "colour")}, "by"),
        ({"by": ("week",)}, "by"),
        ({"by": 3}, "by"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({"time_zone": ""}, "time_zone"),
        ({"time_zone": "../../etc/passwd"}, "time_zone"),
        ({"since": datetime.datetime(2025, 1, 1)}, "since"),
        ({"skill_id": ""}, "skill_id"),
        ({"model_name": " "}, "model_name"),
    ],
)
async def test_summary_refuses_bad_arguments(
    tenant: TenantRows, arguments: dict[str, Any], field: str
) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await usage.usage_summary(**arguments)
    assert refused.value.field == field


async def test_a_single_key_may_be_given_as_a_string(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        assert await usage.usage_summary(by="skill") == await usage.usage_summary(by=["skill"])


# -- scope and isolation ---------------------------------------------------------------


async def test_every_function_needs_a_scope(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    before = await count_measurements(owner, tenant)
    row: dict[str, Any] = {"skill_id": tenant.skill_id, "model_name": "claude-haiku-4-5"}
    with pytest.raises(TenantScopeError, match="tenant_scope"):
        await usage.record_measurement(**row)
    with pytest.raises(TenantScopeError):
        await usage.record_measurements([row])
    with pytest.raises(TenantScopeError):
        await usage.get_measurement(tenant.measurement_id)
    with pytest.raises(TenantScopeError):
        await usage.list_measurements()
    with pytest.raises(TenantScopeError):
        await usage.usage_summary()
    with pytest.raises(TenantScopeError):
        await usage.tenant_usage_totals()
    assert await count_measurements(owner, tenant) == before


async def test_another_tenants_measurements_never_appear(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    async with tenant_scope(other_tenant.tenant_id):
        theirs = await usage.record_measurements(
            [
                {
                    "skill_id": other_tenant.skill_id,
                    "model_name": "claude-haiku-4-5",
                    "input_tokens": 5,
                    "output_tokens": 5,
                }
            ]
            * 5
        )
    async with tenant_scope(tenant.tenant_id):
        ours = await usage.record_measurements(
            [
                {
                    "skill_id": tenant.skill_id,
                    "model_name": "claude-haiku-4-5",
                    "input_tokens": 1,
                    "output_tokens": 1,
                }
            ]
            * 2
        )
        listed: list[str] = []
        cursor = None
        while True:
            page = await usage.list_measurements(limit=500, cursor=cursor)
            listed += [row.id for row in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        summaries = await usage.usage_summary()
        totals = await usage.tenant_usage_totals()
        for measurement_id in theirs.ids:
            with pytest.raises(NotFoundError):
                await usage.get_measurement(measurement_id)
    own = await count_measurements(owner, tenant)
    assert set(listed).isdisjoint(set(theirs.ids) | {other_tenant.measurement_id})
    assert set(ours.ids) | {tenant.measurement_id} <= set(listed) and len(listed) == own
    assert {s.skill_id for s in summaries} == {tenant.skill_id}
    assert totals.calls == sum(s.calls for s in summaries) == own


@pytest.mark.parametrize(
    "time_zone",
    ["America", "Europe", "Etc", "x" * 300, "../../etc/passwd", "Nowhere/Zone", "", " ",
     "a\x00b", "\ud800", "Europe/" + "y" * 5000],
)
async def test_every_bad_time_zone_is_refused_naming_it(
    tenant: TenantRows, time_zone: str
) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await usage.usage_summary(by="day", time_zone=time_zone)
    assert refused.value.field == "time_zone"


@pytest.mark.parametrize(
    ("name", "text"),
    [("since", "0001-01-01T00:00:00+14:00"), ("until", "9999-12-31T23:59:59-14:00")],
)
async def test_bounds_past_the_calendar_are_refused_naming_them(
    tenant: TenantRows, name: str, text: str
) -> None:
    moment = datetime.datetime.fromisoformat(text)
    async with tenant_scope(tenant.tenant_id):
        for call in (usage.usage_summary, usage.list_measurements):
            with pytest.raises(ValidationError) as refused:
                await call(**{name: moment})  # type: ignore[operator]
            assert refused.value.field == name
