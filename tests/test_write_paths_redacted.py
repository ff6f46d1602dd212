"""
Every column a person writes free text into is redacted on every path that
writes it: the query API and the admin.

The schema's text columns are walked: each is either free text written by a
person (:data:`FREE_TEXT`) or not (:data:`NOT_FREE_TEXT`, with the reason);
a new text column that is in neither fails the first test, so it cannot be
added without saying which. Then, for each free-text column:

- the admin: its table's config redacts it when a row is added and when one
  is edited (:func:`everyskill.admin.guards.redacting`), and the hooks do
  replace a secret; or the admin does not write the table at all;
- the query API: every module of ``everyskill`` whose SQL inserts into or
  updates the column's table calls the redaction; ``set_model_price`` is
  tested end to end here (feedback and benchmarks in their own tests).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from piccolo.columns import Column, Text, Varchar
from piccolo.columns.column_types import Array
from piccolo.table import Table

import tables
from everyskill import pricing
from everyskill.admin.guards import REDACTED_BY_HOOK, redacted_columns
from everyskill.admin.table_configs import TABLE_CONFIGS
from everyskill.tenancy import tenant_scope
from tests.support import TenantRows

PACKAGE = Path(__file__).resolve().parent.parent / "everyskill"

#: (table, column) -> what a person writes there.
FREE_TEXT: dict[tuple[str, str], str] = {
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
NAME = "a name or identifier, shown and matched as typed: not prose"
MODEL = "a model's or vendor's identifier"
STAMP = "stamped by the application, not typed"

#: (table, column) -> why it is not free text.
NOT_FREE_TEXT: dict[tuple[str, str], str] = {
    ("tenants", "id"): ID,
    ("tenants", "name"): NAME,
    ("tenants", "slug"): NAME,
    ("users", "id"): ID,
    ("users", "email"): NAME,
    ("users", "name"): NAME,
    ("skills", "id"): ID,
    ("skills", "slug"): NAME,
    ("skills", "name"): NAME,
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
    ("api_keys", "name"): NAME,
    ("api_keys", "key_prefix"): "the key's first characters, drawn with it, not typed",
    ("api_keys", "scopes"): ENUM,
}

#: Tables the admin never adds to or edits (measurements), with the reason.
ADMIN_READ_ONLY = {
    "token_measurements": "measurements: the admin refuses to add or edit one",
    "benchmark_results": "measurements: the admin refuses to add or edit one",
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


async def test_set_model_price_redacts_its_note(tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        price = await pricing.set_model_price(
            "my-finetune",
            model_provider="openai",
            input_microcents_per_token=120,
            output_microcents_per_token=480,
            note=f"contract 2026-07, key {SECRET}",
        )
        assert price.note == "contract 2026-07, key [REDACTED:github_token]"
        stored = await pricing.get_model_price("my-finetune", model_provider="openai")
        assert stored.note == price.note
        await pricing.delete_model_price("my-finetune", model_provider="openai")
