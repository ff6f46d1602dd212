"""
Every column a person writes text into is redacted on every path that
writes it: the query API, the HTTP API and the admin.

The schema's text columns are walked: each is either text written by a
person (:data:`FREE_TEXT`: prose and names) or not (:data:`NOT_FREE_TEXT`,
with the reason); a new text column that is in neither fails the first
test, so it cannot be added without saying which. Then each path is walked
and driven:

- the query API: every public coroutine of the modules that write is a
  writer of free text (:data:`QUERY_API_WRITERS`), a writer of none (with
  the reason) or a reader; a new one fails until it is classified. Each
  writer is called with a secret in every text it takes, and the row it
  wrote is read back as the owner: no piece of the secret is stored. The
  writers together write every free-text column (but those only the admin
  writes);
- the HTTP API: its OpenAPI schema is walked, and every string a write
  route's body takes is classified (not free text) or driven
  (:data:`HTTP_WRITES`), a secret sent in it and the stored row read back;
- the admin: every table it edits is added to and edited through its
  endpoints with a secret in each free-text column, and the rows read back;
  the hooks that do it are checked too. A module that writes a free-text
  table with SQL of its own must call the redaction.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from piccolo.columns import Column, Text, Varchar
from piccolo.columns.column_types import Array
from piccolo.table import Table

import tables
from everyskill import api_keys, benchmarks, catalogue, feedback, pricing, usage
from everyskill.admin.guards import REDACTED_BY_HOOK, redacted_columns
from everyskill.admin.table_configs import TABLE_CONFIGS
from everyskill.errors import ValidationError
from everyskill.tenancy import tenant_scope
from tests.admin_client import Staff, add, save
from tests.http_support import Served, Tenant
from tests.support import TenantRows

PACKAGE = Path(__file__).resolve().parent.parent / "everyskill"

#: (table, column) -> what a person writes there.
FREE_TEXT: dict[tuple[str, str], str] = {
    ("tenants", "name"): "the tenant's name",
    ("users", "name"): "a person's name",
    ("skills", "name"): "the skill's name",
    ("api_keys", "name"): "what the key is for",
    ("skills", "description"): "what the skill does",
    ("skill_versions", "content"): "the skill's instructions",
    ("skill_versions", "changelog"): "what changed",
    ("skill_feedback", "comment"): "the feedback",
    ("skill_feedback", "suggested_content"): "a suggested rewrite",
    ("skill_feedback", "suggested_diff"): "a suggested diff",
    ("skill_feedback", "example_input"): "an example input",
    ("skill_feedback", "example_output"): "what the skill produced",
    ("skill_feedback", "expected_output"): "what was expected",
    ("skill_feedback", "review_notes"): "the reviewer's notes",
    ("model_prices", "note"): "where a price comes from",
    ("benchmark_runs", "error_message"): "why a run failed",
    ("benchmark_results", "input_used"): "a benchmark's input",
    ("benchmark_results", "output_produced"): "a model's output",
    ("benchmark_results", "expected_output"): "the expected output",
    ("benchmark_results", "quality_notes"): "a grader's notes",
    ("benchmark_results", "error_message"): "why a call failed",
}

ID = "an id"
ENUM = "one of a fixed set of values, checked by the database"
SLUG = "a slug or an email: a narrow format checked on every path, matched as typed"
MODEL = "a model's or vendor's identifier"
STAMP = "stamped by the application, not typed"

#: (table, column) -> why it is not free text.
NOT_FREE_TEXT: dict[tuple[str, str], str] = {
    ("tenants", "id"): ID,
    ("tenants", "slug"): SLUG,
    ("users", "id"): ID,
    ("users", "email"): SLUG,
    ("skills", "id"): ID,
    ("skills", "slug"): SLUG,
    ("skill_versions", "id"): ID,
    ("skill_feedback", "id"): ID,
    ("skill_feedback", "usage_event_id"): ID,
    ("skill_feedback", "feedback_type"): ENUM,
    ("skill_feedback", "status"): ENUM,
    ("skill_feedback", "source"): ENUM,
    ("skill_feedback", "reviewed_by_admin"): STAMP,
    ("model_prices", "id"): ID,
    ("model_prices", "model_provider"): MODEL,
    ("model_prices", "model_name"): MODEL,
    ("token_measurements", "id"): ID,
    ("token_measurements", "usage_event_id"): ID,
    ("token_measurements", "model_name"): MODEL,
    ("token_measurements", "model_provider"): MODEL,
    ("token_measurements", "source"): ENUM,
    ("benchmark_runs", "id"): ID,
    ("benchmark_runs", "status"): ENUM,
    ("benchmark_runs", "best_model"): MODEL,
    ("benchmark_runs", "cheapest_model"): MODEL,
    ("benchmark_runs", "models"): MODEL,
    ("benchmark_results", "id"): ID,
    ("benchmark_results", "model_name"): MODEL,
    ("benchmark_results", "model_provider"): MODEL,
    ("api_keys", "id"): ID,
    ("api_keys", "key_prefix"): "the key's first characters, drawn with it, not typed",
    ("api_keys", "scopes"): ENUM,
}

#: Tables the admin never adds to or edits (measurements), with the reason.
ADMIN_READ_ONLY = {
    "token_measurements": "measurements: the admin refuses to add or edit one",
    "benchmark_results": "measurements: the admin refuses to add or edit one",
    "api_keys": "keys are made by the admin's form, which calls api_keys.create_api_key",
}

#: Modules that write text of their own making, not a person's.
NOT_A_PERSON = {"sample_data.py": "the sample data, made by the program", "migration_sql.py": "DDL"}

SECRET = "ghp_" + "R8bQz4Lk2mN7pX9vT3wY6cH1jF5dS0aEuK4i"


def _tables() -> list[type[Table]]:
    return [
        value
        for value in vars(tables).values()
        if isinstance(value, type) and issubclass(value, Table) and value.__module__ == "tables"
    ]


def _is_text(column: Column) -> bool:
    if isinstance(column, Array):
        return isinstance(column.base_column, (Text, Varchar))
    return isinstance(column, (Text, Varchar))


def test_every_text_column_is_classified() -> None:
    found = {
        (table._meta.tablename, column._meta.name)
        for table in _tables()
        for column in table._meta.columns
        if _is_text(column)
    }
    assert not set(FREE_TEXT) & set(NOT_FREE_TEXT)
    unclassified = found - set(FREE_TEXT) - set(NOT_FREE_TEXT)
    assert not unclassified, f"say whether a person writes free text into {sorted(unclassified)}"
    assert not (set(FREE_TEXT) | set(NOT_FREE_TEXT)) - found, "a classified column is gone"


def test_the_admin_redacts_every_free_text_column_it_writes() -> None:
    configs = {config.table_class._meta.tablename: config for config in TABLE_CONFIGS}
    missing: list[str] = []
    for table_name, column in FREE_TEXT:
        if table_name in ADMIN_READ_ONLY:
            continue
        config = configs.get(table_name)
        if config is None:
            continue  # not in the admin
        if column not in redacted_columns(config.hooks or []):
            missing.append(f"{table_name}.{column}")
    assert not missing, f"the admin writes these unredacted: {missing}"


def test_tables_the_admin_does_not_write_refuse_writes() -> None:
    configs = {config.table_class._meta.tablename: config for config in TABLE_CONFIGS}
    for table_name in ADMIN_READ_ONLY:
        validators = configs[table_name].validators
        assert validators is not None and validators.post_single and validators.patch_single


@pytest.mark.parametrize(
    "table_name", sorted({table for table, _ in FREE_TEXT} - set(ADMIN_READ_ONLY))
)
async def test_the_admin_hooks_replace_a_secret(table_name: str) -> None:
    config = next(c for c in TABLE_CONFIGS if c.table_class._meta.tablename == table_name)
    columns = [column for table, column in FREE_TEXT if table == table_name]
    row = config.table_class(_ignore_missing=True)
    for column in columns:
        setattr(row, column, f"deploy with {SECRET} please")
    hooks = [
        hook
        for hook in config.hooks or []
        if hook.callable in REDACTED_BY_HOOK and hook.hook_type.name == "pre_save"
    ]
    assert hooks
    for hook in hooks:
        row = await hook.callable(row)
    for column in columns:
        assert getattr(row, column) == "deploy with [REDACTED:github_token] please", column
    patches = [
        hook
        for hook in config.hooks or []
        if hook.callable in REDACTED_BY_HOOK and hook.hook_type.name == "pre_patch"
    ]
    assert patches
    for hook in patches:
        values = {
            config.table_class._meta.get_column_by_name(column): f"x {SECRET}"
            for column in columns
        }
        patched = await hook.callable("some-id", values)
        assert all(value == "x [REDACTED:github_token]" for value in patched.values())


_WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE)\s+([a-z_]+)", re.IGNORECASE)


def test_the_query_api_redacts_where_it_writes_free_text() -> None:
    free_tables = {table for table, _ in FREE_TEXT}
    unredacted: list[str] = []
    for path in sorted([*PACKAGE.glob("*.py"), *PACKAGE.glob("admin/*.py")]):
        if path.name in NOT_A_PERSON:
            continue
        source = path.read_text()
        written = {match.group(1).lower() for match in _WRITE.finditer(source)} & free_tables
        if written and "redact" not in source:
            unredacted.append(f"{path.name} writes {sorted(written)}")
    assert not unredacted


# --------------------------------------------------------------------------
# Stored rows, read back as the owner.

MARKER = "[REDACTED:"


def _pieces(secret: str) -> set[str]:
    return {secret[i : i + 8] for i in range(len(secret) - 7)}


def _text(label: str) -> str:
    """A text with the secret in it, different for each column."""
    return f"{label}: deploy with {SECRET} please"


async def _assert_redacted(
    owner: asyncpg.Connection, table: str, row_id: str, written: set[str]
) -> None:
    """No free-text column of the row holds a piece of the secret, and each
    column in ``written`` holds a marker."""
    columns = sorted(column for t, column in FREE_TEXT if t == table)
    record = await owner.fetchrow(
        f"SELECT {', '.join(columns)} FROM {table} WHERE id = $1", row_id
    )
    assert record is not None, (table, row_id)
    leaks = {
        column: record[column]
        for column in columns
        if record[column] is not None and any(p in record[column] for p in _pieces(SECRET))
    }
    assert not leaks, f"{table} stores the secret in {leaks}"
    unmarked = {column for column in written if MARKER not in (record[column] or "")}
    assert not unmarked, f"{table}.{sorted(unmarked)} were written without a marker"


# --------------------------------------------------------------------------
# The query API.

#: (table, row id, the free-text columns given a secret), per row written.
Written = list[tuple[str, str, set[str]]]
Writer = Callable[[TenantRows], Awaitable[Written]]


async def _new_feedback(rows: TenantRows) -> str:
    saved = await feedback.record_feedback(
        skill_id=rows.skill_id, feedback_type="suggestion", suggested_content="Say more."
    )
    return saved.row.id


async def _running_run(rows: TenantRows) -> str:
    run = await benchmarks.create_run(
        skill_id=rows.skill_id, models=["claude-haiku-4-5"], triggered_by=rows.user_id
    )
    await benchmarks.start_run(run.row.id)
    return run.row.id


async def _create_skill(rows: TenantRows) -> Written:
    saved = await catalogue.create_skill(
        slug=f"s-{uuid.uuid4().hex[:8]}", name=_text("name"), description=_text("description")
    )
    return [("skills", saved.row.id, {"name", "description"})]


async def _update_skill(rows: TenantRows) -> Written:
    await catalogue.update_skill(rows.skill_id, name=_text("name"), description=_text("d"))
    return [("skills", rows.skill_id, {"name", "description"})]


async def _publish_version(rows: TenantRows) -> Written:
    saved = await catalogue.publish_version(
        rows.skill_id, content=_text("content"), changelog=_text("changelog")
    )
    return [("skill_versions", saved.row.id, {"content", "changelog"})]


async def _update_version(rows: TenantRows) -> Written:
    await catalogue.update_version(rows.version_id, changelog=_text("changelog"))
    return [("skill_versions", rows.version_id, {"changelog"})]


async def _create_user(rows: TenantRows) -> Written:
    saved = await catalogue.create_user(
        email=f"u{uuid.uuid4().hex[:8]}@example.com", name=_text("name")
    )
    return [("users", saved.row.id, {"name"})]


async def _update_user(rows: TenantRows) -> Written:
    await catalogue.update_user(rows.user_id, name=_text("name"))
    return [("users", rows.user_id, {"name"})]


FEEDBACK_TEXTS = set(feedback.FEEDBACK_TEXT_FIELDS)
#: The feedback types that take the free-text fields, between them all of them.
FEEDBACK_BY_TYPE = {
    "suggestion": {"comment", "suggested_content", "suggested_diff"},
    "training_example": {"comment", "example_input", "example_output", "expected_output"},
}
assert set().union(*FEEDBACK_BY_TYPE.values()) == FEEDBACK_TEXTS


async def _record_feedback(rows: TenantRows) -> Written:
    written: Written = []
    for kind, fields in FEEDBACK_BY_TYPE.items():
        saved = await feedback.record_feedback(
            skill_id=rows.skill_id, feedback_type=kind, **{name: _text(name) for name in fields}
        )
        written.append(("skill_feedback", saved.row.id, fields))
    return written


async def _review_feedback(rows: TenantRows) -> Written:
    feedback_id = await _new_feedback(rows)
    await feedback.review_feedback(
        feedback_id, reviewer_id=rows.user_id, decision="accepted", notes=_text("notes")
    )
    return [("skill_feedback", feedback_id, {"review_notes"})]


async def _mark_implemented(rows: TenantRows) -> Written:
    feedback_id = await _new_feedback(rows)
    await feedback.review_feedback(feedback_id, reviewer_id=rows.user_id, decision="accepted")
    await feedback.mark_implemented(feedback_id, reviewer_id=rows.user_id, notes=_text("notes"))
    return [("skill_feedback", feedback_id, {"review_notes"})]


async def _fail_run(rows: TenantRows) -> Written:
    run_id = await _running_run(rows)
    await benchmarks.fail_run(run_id, error_message=_text("error"))
    return [("benchmark_runs", run_id, {"error_message"})]


RESULT_TEXTS = set(benchmarks.RESULT_TEXT_FIELDS)


async def _record_result(rows: TenantRows) -> Written:
    run_id = await _running_run(rows)
    saved = await benchmarks.record_result(
        run_id,
        model_name="claude-haiku-4-5",
        model_provider="anthropic",
        test_case_index=0,
        **{name: _text(name) for name in RESULT_TEXTS},
    )
    return [("benchmark_results", saved.row.id, RESULT_TEXTS)]


async def _record_results(rows: TenantRows) -> Written:
    run_id = await _running_run(rows)
    saved = await benchmarks.record_results(
        run_id,
        [
            {
                "model_name": "claude-haiku-4-5",
                "model_provider": "anthropic",
                "test_case_index": index,
                **{name: _text(f"{name} {index}") for name in RESULT_TEXTS},
            }
            for index in range(2)
        ],
    )
    return [("benchmark_results", row_id, RESULT_TEXTS) for row_id in saved.ids]


async def _set_model_price(rows: TenantRows) -> Written:
    price = await pricing.set_model_price(
        "my-finetune",
        model_provider="openai",
        input_microcents_per_token=120,
        output_microcents_per_token=480,
        note=_text("note"),
    )
    return [("model_prices", price.id, {"note"})]


async def _create_api_key(rows: TenantRows) -> Written:
    created = await api_keys.create_api_key(rows.tenant_id, _text("name"), ["read"])
    return [("api_keys", created.info.id, {"name"})]


#: Every public coroutine of the query API that writes free text.
QUERY_API_WRITERS: dict[Callable[..., Any], Writer] = {
    catalogue.create_skill: _create_skill,
    catalogue.update_skill: _update_skill,
    catalogue.publish_version: _publish_version,
    catalogue.update_version: _update_version,
    catalogue.create_user: _create_user,
    catalogue.update_user: _update_user,
    feedback.record_feedback: _record_feedback,
    feedback.review_feedback: _review_feedback,
    feedback.mark_implemented: _mark_implemented,
    benchmarks.fail_run: _fail_run,
    benchmarks.record_result: _record_result,
    benchmarks.record_results: _record_results,
    pricing.set_model_price: _set_model_price,
    api_keys.create_api_key: _create_api_key,
}
NO_TEXT = "writes no text a person typed"
#: Public coroutines that write, but no free text.
WRITES_NO_FREE_TEXT: dict[Callable[..., Any], str] = {
    catalogue.archive_skill: NO_TEXT,
    catalogue.unarchive_skill: NO_TEXT,
    benchmarks.create_run: "model names and ids",
    benchmarks.start_run: NO_TEXT,
    benchmarks.complete_run: NO_TEXT,
    pricing.delete_model_price: NO_TEXT,
    usage.record_measurement: "numbers and identifiers",
    usage.record_measurements: "numbers and identifiers",
    api_keys.revoke_api_key: NO_TEXT,
    api_keys.create_api_key_command: "calls create_api_key",
    api_keys.revoke_api_key_command: NO_TEXT,
}
#: Public coroutines that only read.
READERS = {
    catalogue.get_skill, catalogue.skill_ids_by_slug, catalogue.skill_aggregates,
    catalogue.list_skills, catalogue.get_version, catalogue.list_versions, catalogue.get_user,
    catalogue.list_users, feedback.get_feedback, feedback.list_feedback,
    feedback.export_training_examples, feedback.training_example_page, benchmarks.get_run,
    benchmarks.list_runs, benchmarks.benchmarked_content, benchmarks.recorded_cases,
    benchmarks.run_summary, benchmarks.run_cost, pricing.get_model_price,
    pricing.list_model_prices, pricing.price_of, usage.get_measurement, usage.list_measurements,
    usage.usage_summary, usage.tenant_usage_totals, api_keys.list_api_keys, api_keys.resolve,
}
#: Writers that run as the owner, outside a tenant's scope (staff's calls).
OWNER_WRITERS = {api_keys.create_api_key}
#: Free-text columns no query API call writes, with the path that does.
ADMIN_ONLY = {("tenants", "name"): "tenants are made and named in the admin only"}


async def _write(function: Callable[..., Any], tenant: TenantRows) -> Written:
    """The rows ``function``'s writer wrote, in the tenant's scope or as the owner."""
    if function in OWNER_WRITERS:
        return await QUERY_API_WRITERS[function](tenant)
    async with tenant_scope(tenant.tenant_id):
        return await QUERY_API_WRITERS[function](tenant)


def test_every_public_coroutine_of_the_query_api_is_classified() -> None:
    found = {
        function
        for module in (catalogue, feedback, benchmarks, pricing, usage, api_keys)
        for name, function in vars(module).items()
        if not name.startswith("_")
        and inspect.iscoroutinefunction(function)
        and function.__module__ == module.__name__
    }
    classified = [set(QUERY_API_WRITERS), set(WRITES_NO_FREE_TEXT), READERS]
    assert all(not a & b for i, a in enumerate(classified) for b in classified[i + 1 :])
    unclassified = found - set().union(*classified)
    assert not unclassified, (
        "say whether these write free text: "
        + ", ".join(sorted(f"{f.__module__}.{f.__name__}" for f in unclassified))
    )
    assert not set().union(*classified) - found, "a classified function is gone"


async def test_the_query_api_writers_cover_every_free_text_column(
    tenant: TenantRows, owner: asyncpg.Connection
) -> None:
    covered: set[tuple[str, str]] = set()
    for function in QUERY_API_WRITERS:
        written = await _write(function, tenant)
        covered |= {(table, column) for table, _id, columns in written for column in columns}
    assert set(FREE_TEXT) - covered == set(ADMIN_ONLY)


@pytest.mark.parametrize(
    "function", list(QUERY_API_WRITERS), ids=lambda f: f"{f.__module__}.{f.__name__}"
)
async def test_a_query_api_writer_stores_no_secret(
    function: Callable[..., Any], tenant: TenantRows, owner: asyncpg.Connection
) -> None:
    written = await _write(function, tenant)
    assert written
    for table, row_id, columns in written:
        await _assert_redacted(owner, table, row_id, columns)


# --------------------------------------------------------------------------
# The HTTP API.

#: Strings a write route's body takes that are not free text (by name).
HTTP_NOT_FREE_TEXT = {
    "id": ID, "skill_id": ID, "skill_slug": SLUG, "skill_version_id": ID, "user_id": ID,
    "usage_event_id": ID, "reviewer_id": ID, "author_id": ID, "slug": SLUG, "email": SLUG,
    "feedback_type": ENUM, "source": ENUM, "decision": ENUM, "model_name": MODEL,
    "model_provider": MODEL, "models": MODEL, "triggered_by": ID,
}

HttpStep = Callable[[httpx.Client, TenantRows], Written]


def _created(response: httpx.Response) -> str:
    assert response.status_code in (200, 201), response.text
    row_id: str = response.json()["row"]["id"]
    return row_id


def _http_feedback(client: httpx.Client, rows: TenantRows) -> str:
    return _created(
        client.post(
            "/v1/feedback",
            json={"skill_id": rows.skill_id, "feedback_type": "suggestion",
                  "suggested_content": "Say more."},
        )
    )


def _http_run(client: httpx.Client, rows: TenantRows) -> str:
    run_id = _created(
        client.post(
            "/v1/benchmark-runs",
            json={"skill_id": rows.skill_id, "models": ["claude-haiku-4-5"],
                  "triggered_by": rows.user_id},
        )
    )
    assert client.post(f"/v1/benchmark-runs/{run_id}/start").status_code == 200
    return run_id


def _http_post_skill(client: httpx.Client, rows: TenantRows) -> Written:
    body = {"slug": f"s-{uuid.uuid4().hex[:8]}", "name": _text("name"),
            "description": _text("description")}
    return [("skills", _created(client.post("/v1/skills", json=body)), {"name", "description"})]


def _http_patch_skill(client: httpx.Client, rows: TenantRows) -> Written:
    body = {"name": _text("name"), "description": _text("description")}
    _created(client.patch(f"/v1/skills/{rows.skill_id}", json=body))
    return [("skills", rows.skill_id, {"name", "description"})]


def _http_post_version(client: httpx.Client, rows: TenantRows) -> Written:
    body = {"content": _text("content"), "changelog": _text("changelog")}
    response = client.post(f"/v1/skills/{rows.skill_id}/versions", json=body)
    return [("skill_versions", _created(response), {"content", "changelog"})]


def _http_patch_version(client: httpx.Client, rows: TenantRows) -> Written:
    response = client.patch(
        f"/v1/skills/{rows.skill_id}/versions/{rows.version_id}",
        json={"changelog": _text("changelog")},
    )
    _created(response)
    return [("skill_versions", rows.version_id, {"changelog"})]


def _http_post_user(client: httpx.Client, rows: TenantRows) -> Written:
    body = {"email": f"u{uuid.uuid4().hex[:8]}@example.com", "name": _text("name")}
    return [("users", _created(client.post("/v1/users", json=body)), {"name"})]


def _http_patch_user(client: httpx.Client, rows: TenantRows) -> Written:
    _created(client.patch(f"/v1/users/{rows.user_id}", json={"name": _text("name")}))
    return [("users", rows.user_id, {"name"})]


def _http_post_feedback(client: httpx.Client, rows: TenantRows) -> Written:
    written: Written = []
    for kind, fields in FEEDBACK_BY_TYPE.items():
        item = {"skill_id": rows.skill_id, "feedback_type": kind,
                **{name: _text(name) for name in fields}}
        single = client.post("/v1/feedback", json=item)
        batch = client.post("/v1/feedback", json={"items": [item, item]})
        assert batch.status_code == 201, batch.text
        written += [
            ("skill_feedback", row_id, fields)
            for row_id in [_created(single), *batch.json()["ids"]]
        ]
    return written


def _http_review(client: httpx.Client, rows: TenantRows) -> Written:
    feedback_id = _http_feedback(client, rows)
    response = client.post(
        f"/v1/feedback/{feedback_id}/review",
        json={"reviewer_id": rows.user_id, "decision": "accepted", "notes": _text("notes")},
    )
    _created(response)
    return [("skill_feedback", feedback_id, {"review_notes"})]


def _http_implemented(client: httpx.Client, rows: TenantRows) -> Written:
    feedback_id = _http_feedback(client, rows)
    _created(
        client.post(
            f"/v1/feedback/{feedback_id}/review",
            json={"reviewer_id": rows.user_id, "decision": "accepted"},
        )
    )
    response = client.post(
        f"/v1/feedback/{feedback_id}/implemented",
        json={"reviewer_id": rows.user_id, "notes": _text("notes")},
    )
    _created(response)
    return [("skill_feedback", feedback_id, {"review_notes"})]


def _http_fail(client: httpx.Client, rows: TenantRows) -> Written:
    run_id = _http_run(client, rows)
    response = client.post(
        f"/v1/benchmark-runs/{run_id}/fail", json={"error_message": _text("error")}
    )
    _created(response)
    return [("benchmark_runs", run_id, {"error_message"})]


def _http_results(client: httpx.Client, rows: TenantRows) -> Written:
    run_id = _http_run(client, rows)
    item = {"model_name": "claude-haiku-4-5", "model_provider": "anthropic",
            "test_case_index": 0, **{name: _text(name) for name in RESULT_TEXTS}}
    response = client.post(f"/v1/benchmark-runs/{run_id}/results", json={"items": [item]})
    assert response.status_code == 201, response.text
    return [("benchmark_results", row_id, RESULT_TEXTS) for row_id in response.json()["ids"]]


#: (method, route) -> a step that sends a secret in each free-text field of its body.
HTTP_WRITES: dict[tuple[str, str], tuple[HttpStep, set[str]]] = {
    ("post", "/skills"): (_http_post_skill, {"name", "description"}),
    ("patch", "/skills/{skill_id}"): (_http_patch_skill, {"name", "description"}),
    ("post", "/skills/{skill_id}/versions"): (_http_post_version, {"content", "changelog"}),
    ("patch", "/skills/{skill_id}/versions/{version_id}"): (_http_patch_version, {"changelog"}),
    ("post", "/users"): (_http_post_user, {"name"}),
    ("patch", "/users/{user_id}"): (_http_patch_user, {"name"}),
    ("post", "/feedback"): (_http_post_feedback, FEEDBACK_TEXTS),
    ("post", "/feedback/{feedback_id}/review"): (_http_review, {"notes"}),
    ("post", "/feedback/{feedback_id}/implemented"): (_http_implemented, {"notes"}),
    ("post", "/benchmark-runs/{run_id}/fail"): (_http_fail, {"error_message"}),
    ("post", "/benchmark-runs/{run_id}/results"): (_http_results, RESULT_TEXTS),
}


def _is_string(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    if "$ref" in schema:
        return _is_string(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    if schema.get("type") == "string" or (
        "enum" in schema and all(isinstance(value, str) for value in schema["enum"])
    ):
        return True
    if schema.get("type") == "array":
        return _is_string(schema.get("items", {}), components)
    return any(_is_string(option, components) for option in schema.get("anyOf", []))


def _string_fields(
    schema: dict[str, Any], components: dict[str, Any], seen: frozenset[str] = frozenset()
) -> set[str]:
    """The names of the string fields of a body, batches' items included."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return set() if name in seen else _string_fields(components[name], components, seen | {name})
    found: set[str] = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            found |= _string_fields(option, components, seen)
    if schema.get("type") == "array":
        found |= _string_fields(schema.get("items", {}), components, seen)
    for name, field_schema in schema.get("properties", {}).items():
        if _is_string(field_schema, components):
            found.add(name)
        found |= _string_fields(field_schema, components, seen)
    return found


def test_every_string_a_write_route_takes_is_classified(api: Served) -> None:
    spec = httpx.get(f"{api.base}/v1/openapi.json").json()
    components = spec["components"]["schemas"]
    free: dict[tuple[str, str], set[str]] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in ("post", "put", "patch", "delete"):
                continue
            body = operation.get("requestBody", {}).get("content", {})
            schema = body.get("application/json", {}).get("schema")
            fields = _string_fields(schema, components) if schema else set()
            if fields - set(HTTP_NOT_FREE_TEXT):
                free[(method, path)] = fields - set(HTTP_NOT_FREE_TEXT)
    assert free == {route: fields for route, (_step, fields) in HTTP_WRITES.items()}


@pytest.mark.parametrize("route", list(HTTP_WRITES), ids=lambda r: f"{r[0]} {r[1]}")
async def test_an_http_write_stores_no_secret(
    route: tuple[str, str], api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    step, _fields = HTTP_WRITES[route]
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        written = step(client, api_a.rows)
    assert written
    for table, row_id, columns in written:
        await _assert_redacted(owner, table, row_id, columns)


# --------------------------------------------------------------------------
# The admin, through its endpoints.


ADMIN_TABLES = sorted({table for table, _ in FREE_TEXT} - set(ADMIN_READ_ONLY))


async def _admin_row(table: str, rows: TenantRows) -> str:
    """A row of ``table`` the admin may write every free-text column of."""
    if table == "benchmark_runs":  # the error message is written when a run fails
        async with tenant_scope(rows.tenant_id):
            return await _running_run(rows)
    row_id = {
        "tenants": rows.tenant_id, "users": rows.user_id, "skills": rows.skill_id,
        "skill_versions": rows.version_id, "skill_feedback": rows.feedback_id,
        "model_prices": rows.model_price_id,
    }[table]
    assert row_id is not None
    return row_id


async def _admin_columns(table: str, row_id: str, owner: asyncpg.Connection) -> set[str]:
    """The free-text columns of ``table`` a row may hold (feedback: by its type)."""
    columns = {column for t, column in FREE_TEXT if t == table}
    if table == "skill_feedback":
        kind = await owner.fetchval("SELECT feedback_type FROM skill_feedback WHERE id = $1", row_id)
        columns &= FEEDBACK_BY_TYPE.get(kind, set()) | {"review_notes"}
    return columns


@pytest.mark.parametrize("table_name", ADMIN_TABLES)
async def test_the_admin_stores_no_secret_on_edit(
    table_name: str, staff: Staff, tenant: TenantRows, owner: asyncpg.Connection
) -> None:
    row_id = await _admin_row(table_name, tenant)
    columns = await _admin_columns(table_name, row_id, owner)
    assert columns
    changes: dict[str, Any] = {c: _text(c) for c in columns}
    if table_name == "benchmark_runs":
        changes["status"] = "failed"
    response = await save(staff.client, table_name, row_id, **changes)
    assert response.status_code == 200, response.text
    await _assert_redacted(owner, table_name, row_id, columns)


def test_the_admin_edits_feedback_of_every_type_with_text() -> None:
    # The edit above writes the sample feedback's type; the adds below both.
    assert {kind for kind in ADMIN_NEW_ROWS if kind.startswith("skill_feedback")} == {
        f"skill_feedback {kind}" for kind in FEEDBACK_BY_TYPE
    }


def _new(table: str, columns: set[str], **fields: Any) -> tuple[str, dict[str, Any], set[str]]:
    return table, fields, columns


#: A row the admin's add form can save, per case: (table, fields, free-text columns).
ADMIN_NEW_ROWS: dict[str, Callable[[TenantRows], tuple[str, dict[str, Any], set[str]]]] = {
    "tenants": lambda rows: _new("tenants", {"name"}, slug=f"t-{uuid.uuid4().hex[:8]}"),
    "users": lambda rows: _new(
        "users", {"name"}, tenant_id=rows.tenant_id, email=f"u{uuid.uuid4().hex[:8]}@example.com"
    ),
    "skills": lambda rows: _new(
        "skills", {"name", "description"}, tenant_id=rows.tenant_id,
        slug=f"s-{uuid.uuid4().hex[:8]}",
    ),
    "skill_versions": lambda rows: _new(
        "skill_versions", {"content", "changelog"}, tenant_id=rows.tenant_id,
        skill_id=rows.skill_id, version=2,
    ),
    **{
        f"skill_feedback {kind}": (
            lambda rows, kind=kind, fields=fields: _new(
                "skill_feedback", fields | {"review_notes"}, tenant_id=rows.tenant_id,
                skill_id=rows.skill_id, feedback_type=kind,
            )
        )
        for kind, fields in FEEDBACK_BY_TYPE.items()
    },
    "model_prices": lambda rows: _new(
        "model_prices", {"note"}, tenant_id=rows.tenant_id, model_name="my-finetune",
        model_provider="openai", input_microcents_per_token=1, output_microcents_per_token=2,
    ),
}
#: Tables whose add form takes no free text, with the reason.
ADMIN_ADDS_NO_TEXT = {
    "benchmark_runs": "a run is added pending, and only a failed run has an error message",
}


@pytest.mark.parametrize("case", sorted(ADMIN_NEW_ROWS))
async def test_the_admin_stores_no_secret_on_add(
    case: str, staff: Staff, tenant: TenantRows, owner: asyncpg.Connection
) -> None:
    table_name, fields, columns = ADMIN_NEW_ROWS[case](tenant)
    response = await add(staff.client, table_name, **fields, **{c: _text(c) for c in columns})
    assert response.status_code == 201, response.text
    (created,) = response.json()
    await _assert_redacted(owner, table_name, created["id"], columns)


def test_every_table_the_admin_edits_is_added_to_here() -> None:
    added = {case.split()[0] for case in ADMIN_NEW_ROWS}
    assert not added & set(ADMIN_ADDS_NO_TEXT)
    assert added | set(ADMIN_ADDS_NO_TEXT) == set(ADMIN_TABLES)


async def test_a_name_a_marker_makes_too_long_is_refused(tenant: TenantRows) -> None:
    # A short secret becomes a longer marker: the name would pass its limit.
    name = "k" * 190 + " pwd=Xk9m2"
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await catalogue.create_skill(slug="long-name", name=name)
    assert refused.value.field == "name"
    with pytest.raises(ValidationError) as refused:
        await api_keys.create_api_key(tenant.tenant_id, "k" * 90 + " pwd=Xk9m2", ["read"])
    assert refused.value.field == "name"


def test_changing_a_users_name_over_http_reports_the_redaction(api: Served, api_a: Tenant) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        response = client.patch(
            f"/v1/users/{api_a.rows.user_id}", json={"name": f"Ann {SECRET}"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["redactions"] == {"github_token": 1}
    assert response.json()["row"]["name"] == "Ann [REDACTED:github_token]"
