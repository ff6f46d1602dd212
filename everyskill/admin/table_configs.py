"""How each table appears in the admin.

Contract
--------
- :data:`TABLE_CONFIGS` registers every table of the schema, grouped in the
  menu (:data:`CATALOGUE`, :data:`FEEDBACK`, :data:`USAGE`,
  :data:`BENCHMARKS`, :data:`ACCESS`), newest rows first.
- The HTTP API's keys are listed read-only (tenant, name, prefix, scopes,
  expiry, last use, revocation): their hashes are never shown, and no row
  is added, edited or deleted here. Keys are created and revoked with the
  admin's forms Create API key and Revoke API key
  (:mod:`everyskill.admin.api_key_forms`) or with ``piccolo everyskill
  create_api_key`` and ``revoke_api_key`` (:mod:`everyskill.api_keys`).
- Lists show short columns only (no free text: it is read on the row's
  page), with the aggregates of a skill and the best and cheapest model of
  a benchmark run. Filters cover tenant, skill, type, status, source, model
  and dates. Foreign keys show the row they point at (its readable name) and
  link to it; a row's page links to the rows that reference it.
- Edits go through the guards of :mod:`everyskill.admin.guards`: ids,
  tenants, creation times, what a row records (a feedback's author and
  source, the skill of a version or a run) and what PostgreSQL maintains (a
  skill's aggregates, a run's picks and stamps) cannot be edited; rows added
  get a new id and are created at the save; PUT is refused; token
  measurements and benchmark results cannot be added or edited; text is
  redacted. Feedback is reviewed in its edit form
  (:mod:`everyskill.admin.review`).
- Timestamps are edited to the millisecond, the precision they are stored
  in, so that saving a form never rounds a stored time.
"""

from __future__ import annotations

from collections.abc import Sequence

from piccolo.columns import Column, Timestamptz
from piccolo.table import Table
from piccolo_admin.endpoints import TableConfig
from piccolo_api.crud.endpoints import OrderBy, PiccoloCRUD
from piccolo_api.crud.hooks import Hook
from piccolo_api.crud.validators import Validators
from starlette.exceptions import HTTPException
from starlette.requests import Request

from everyskill.admin.guards import (
    created_now,
    fixed_columns,
    measurement_validators,
    redacting,
    refuse_put,
)
from everyskill.admin.review import review_hooks
from tables import (
    ApiKey,
    BenchmarkResult,
    BenchmarkRun,
    ModelPrice,
    Skill,
    SkillFeedback,
    SkillVersion,
    Tenant,
    TokenMeasurement,
    User,
)

__all__ = ["ACCESS", "BENCHMARKS", "CATALOGUE", "FEEDBACK", "TABLE_CONFIGS", "USAGE"]

CATALOGUE = "Catalogue"
FEEDBACK = "Feedback"
USAGE = "Usage and cost"
BENCHMARKS = "Benchmarks"
ACCESS = "API access"

RECORDED = "is when the row was recorded; it cannot be edited"
TENANT = "is the tenant the row belongs to; it cannot be moved to another tenant"
IDENTITY = "is the row's id; it cannot be edited"
MAINTAINED = "is maintained by PostgreSQL from the skill's feedback and measurements"
LIFE_CYCLE = "is set by the run's life cycle: change the status instead"


def _config(
    table: type[Table],
    menu_group: str,
    *,
    fixed: dict[Column, str] | None = None,
    hooks: Sequence[Hook] = (),
    validators: Validators | None = None,
    order_by: list[OrderBy] | None = None,
    **options: object,
) -> TableConfig:
    """A table's config with what every table shares: its id, tenant and
    creation time fixed (a row added gets a new id, created now), no PUT,
    timestamps to the millisecond, newest first (then by id)."""
    meta = table._meta
    names = {column._meta.name for column in meta.columns}
    always: dict[Column, str] = {meta.primary_key: IDENTITY}
    if "tenant_id" in names:
        always[meta.get_column_by_name("tenant_id")] = TENANT
    if "created_at" in names:
        always[meta.get_column_by_name("created_at")] = RECORDED
    # PiccoloCRUD groups hooks with itertools.groupby, unsorted: a type's hooks
    # must be next to each other, or all but the last run of them are lost.
    # The sort is stable, so each type's hooks keep their order.
    all_hooks = sorted(
        [created_now(table), fixed_columns(table, {**always, **(fixed or {})}), *hooks],
        key=lambda hook: hook.hook_type.value,
    )
    checks = validators or Validators()
    checks.put_single = [refuse_put, *checks.put_single]
    # Newest first, ties broken by id: a stable order for paging, and the
    # order of the (..., created_at DESC, id DESC) indexes, so that a list
    # filtered by tenant, skill or run is read from its own index rather
    # than from the newest rows of every tenant.
    newest_first = [
        OrderBy(meta.get_column_by_name("created_at"), ascending=False),
        OrderBy(meta.primary_key, ascending=False),
    ]
    return TableConfig(
        table,
        menu_group=menu_group,
        hooks=all_hooks,
        validators=checks,
        time_resolution={
            column: 0.001 for column in meta.columns if isinstance(column, Timestamptz)
        },
        order_by=order_by or newest_first,
        **options,  # type: ignore[arg-type]
    )


tenant_config = _config(
    Tenant,
    CATALOGUE,
    hooks=redacting(Tenant.name),
    visible_filters=[Tenant.name, Tenant.slug, Tenant.created_at],
)
user_config = _config(
    User,
    CATALOGUE,
    hooks=redacting(User.name),
    visible_filters=[User.tenant_id, User.email, User.created_at],
)
skill_config = _config(
    Skill,
    CATALOGUE,
    fixed={
        Skill.total_feedback: MAINTAINED,
        Skill.positive_feedback_pct: MAINTAINED,
        Skill.avg_token_cost_microcents: MAINTAINED,
        Skill.feedback_thumbs_up: MAINTAINED,
        Skill.feedback_thumbs_down: MAINTAINED,
        Skill.costed_measurements: MAINTAINED,
        Skill.measured_cost_microcents: MAINTAINED,
        Skill.updated_at: "is stamped by PostgreSQL when the skill changes",
    },
    visible_columns=[
        Skill.name,
        Skill.tenant_id,
        Skill.slug,
        Skill.total_feedback,
        Skill.positive_feedback_pct,
        Skill.avg_token_cost_microcents,
        Skill.average_rating,
        Skill.updated_at,
        Skill.archived_at,
    ],
    hooks=redacting(Skill.name, Skill.description),
    link_column=Skill.name,
    visible_filters=[
        Skill.tenant_id, Skill.name, Skill.slug, Skill.author_id, Skill.created_at,
        Skill.archived_at,
    ],
)
skill_version_config = _config(
    SkillVersion,
    CATALOGUE,
    fixed={SkillVersion.skill_id: "is the skill the version belongs to; it cannot be moved"},
    hooks=redacting(SkillVersion.content, SkillVersion.changelog),
    exclude_visible_columns=[SkillVersion.content, SkillVersion.changelog],
    visible_filters=[SkillVersion.tenant_id, SkillVersion.skill_id, SkillVersion.created_at],
)
skill_feedback_config = _config(
    SkillFeedback,
    FEEDBACK,
    fixed={
        SkillFeedback.user_id: "is who gave the feedback; it cannot be edited",
        SkillFeedback.source: "is where the feedback came from; it cannot be edited",
    },
    hooks=review_hooks(),
    visible_columns=[
        SkillFeedback.id,
        SkillFeedback.skill_id,
        SkillFeedback.feedback_type,
        SkillFeedback.status,
        SkillFeedback.source,
        SkillFeedback.sentiment,
        SkillFeedback.quality_score,
        SkillFeedback.tenant_id,
        SkillFeedback.reviewed_by_admin,
        SkillFeedback.created_at,
    ],
    visible_filters=[
        SkillFeedback.tenant_id,
        SkillFeedback.skill_id,
        SkillFeedback.feedback_type,
        SkillFeedback.status,
        SkillFeedback.source,
        SkillFeedback.user_id,
        SkillFeedback.reviewed_by_admin,
        SkillFeedback.created_at,
        SkillFeedback.reviewed_at,
    ],
)
token_measurement_config = _config(
    TokenMeasurement,
    USAGE,
    validators=measurement_validators(
        "Token measurements",
        "They are recorded by the application (everyskill.usage); a wrong one can be deleted.",
    ),
    visible_columns=[
        TokenMeasurement.id,
        TokenMeasurement.skill_id,
        TokenMeasurement.model_name,
        TokenMeasurement.model_provider,
        TokenMeasurement.total_tokens,
        TokenMeasurement.estimated_cost_microcents,
        TokenMeasurement.latency_ms,
        TokenMeasurement.source,
        TokenMeasurement.tenant_id,
        TokenMeasurement.created_at,
    ],
    visible_filters=[
        TokenMeasurement.tenant_id,
        TokenMeasurement.skill_id,
        TokenMeasurement.model_name,
        TokenMeasurement.model_provider,
        TokenMeasurement.source,
        TokenMeasurement.created_at,
    ],
)
model_price_config = _config(
    ModelPrice,
    USAGE,
    fixed={ModelPrice.updated_at: "is stamped by PostgreSQL when the price changes"},
    hooks=redacting(ModelPrice.note),
    visible_columns=[
        ModelPrice.id,
        ModelPrice.tenant_id,
        ModelPrice.model_provider,
        ModelPrice.model_name,
        ModelPrice.input_microcents_per_token,
        ModelPrice.output_microcents_per_token,
        ModelPrice.updated_at,
    ],
    visible_filters=[ModelPrice.tenant_id, ModelPrice.model_provider, ModelPrice.model_name],
    order_by=[OrderBy(ModelPrice.model_provider), OrderBy(ModelPrice.model_name)],
)
benchmark_run_config = _config(
    BenchmarkRun,
    BENCHMARKS,
    fixed={
        BenchmarkRun.skill_id: "is the skill the run measured; it cannot be moved",
        BenchmarkRun.best_model: LIFE_CYCLE,
        BenchmarkRun.best_quality_score: LIFE_CYCLE,
        BenchmarkRun.cheapest_model: LIFE_CYCLE,
        BenchmarkRun.cheapest_cost_microcents: LIFE_CYCLE,
        BenchmarkRun.started_at: LIFE_CYCLE,
        BenchmarkRun.completed_at: LIFE_CYCLE,
    },
    hooks=redacting(BenchmarkRun.error_message),
    visible_columns=[
        BenchmarkRun.id,
        BenchmarkRun.skill_id,
        BenchmarkRun.status,
        BenchmarkRun.models,
        BenchmarkRun.best_model,
        BenchmarkRun.best_quality_score,
        BenchmarkRun.cheapest_model,
        BenchmarkRun.cheapest_cost_microcents,
        BenchmarkRun.tenant_id,
        BenchmarkRun.created_at,
    ],
    visible_filters=[
        BenchmarkRun.tenant_id,
        BenchmarkRun.skill_id,
        BenchmarkRun.status,
        BenchmarkRun.best_model,
        BenchmarkRun.cheapest_model,
        BenchmarkRun.created_at,
    ],
)
benchmark_result_config = _config(
    BenchmarkResult,
    BENCHMARKS,
    validators=measurement_validators(
        "Benchmark results",
        "They are recorded by the benchmark runner (everyskill.benchmark_runner).",
        undeletable="delete the benchmark run they belong to.",
    ),
    visible_columns=[
        BenchmarkResult.id,
        BenchmarkResult.benchmark_run_id,
        BenchmarkResult.model_name,
        BenchmarkResult.test_case_index,
        BenchmarkResult.quality_score,
        BenchmarkResult.matches_expected,
        BenchmarkResult.estimated_cost_microcents,
        BenchmarkResult.latency_ms,
        BenchmarkResult.tenant_id,
        BenchmarkResult.created_at,
    ],
    visible_filters=[
        BenchmarkResult.tenant_id,
        BenchmarkResult.benchmark_run_id,
        BenchmarkResult.model_name,
        BenchmarkResult.model_provider,
        BenchmarkResult.matches_expected,
        BenchmarkResult.created_at,
    ],
)


def _refuse_key_writes(piccolo_crud: PiccoloCRUD, request: Request) -> None:
    raise HTTPException(
        status_code=405,
        detail=(
            "API keys are not edited as rows: create one with the form Create API key"
            " (the key is shown once) or piccolo everyskill create_api_key; revoke one"
            " with the form Revoke API key or piccolo everyskill revoke_api_key PREFIX."
        ),
    )


api_key_config = _config(
    ApiKey,
    ACCESS,
    validators=Validators(
        post_single=[_refuse_key_writes],
        put_single=[_refuse_key_writes],
        patch_single=[_refuse_key_writes],
        delete_single=[_refuse_key_writes],
        delete_all=[_refuse_key_writes],
    ),
    visible_columns=[
        ApiKey.tenant_id,
        ApiKey.name,
        ApiKey.key_prefix,
        ApiKey.scopes,
        ApiKey.expires_at,
        ApiKey.last_used_at,
        ApiKey.revoked_at,
        ApiKey.created_at,
    ],
    visible_filters=[
        ApiKey.tenant_id,
        ApiKey.name,
        ApiKey.key_prefix,
        ApiKey.revoked_at,
        ApiKey.expires_at,
        ApiKey.created_at,
    ],
)

#: Every table of the schema, as the admin shows it.
TABLE_CONFIGS = [
    tenant_config,
    user_config,
    skill_config,
    skill_version_config,
    skill_feedback_config,
    token_measurement_config,
    model_price_config,
    benchmark_run_config,
    benchmark_result_config,
    api_key_config,
]
