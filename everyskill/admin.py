"""Admin configuration: the Piccolo Admin review interface for platform staff.

Contract
--------
- :func:`create_app` returns the ASGI app: Piccolo Admin with every table of
  the schema registered, grouped in the menu (catalogue, feedback, usage and
  cost, benchmarks), newest rows first. Login is required (Piccolo's session
  auth, ``piccolo_user`` table); the connection pool opens with the app and
  closes with it.
- The admin connects as the owner, so it sees every tenant.
- :func:`ensure_admin_user` makes sure an active admin login exists: with
  ``EVERYSKILL_ADMIN_USERNAME`` and ``EVERYSKILL_ADMIN_PASSWORD`` set, that user
  (created, or its password reset); otherwise a user ``admin`` whose random
  password is generated once and kept in ``.everyskill/admin-credentials.json``
  (outside git, mode 0600; ``EVERYSKILL_ADMIN_CREDENTIALS`` names another
  file). There is never a fixed default password.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from piccolo.apps.user.tables import BaseUser
from piccolo.engine import engine_finder
from piccolo_admin.endpoints import TableConfig, create_admin
from piccolo_api.crud.endpoints import OrderBy
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from tables import (
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

DEFAULT_CREDENTIALS_FILE = (
    Path(__file__).resolve().parent.parent / ".everyskill" / "admin-credentials.json"
)


def credentials_file() -> Path:
    """Where a generated admin password is kept (``EVERYSKILL_ADMIN_CREDENTIALS``)."""
    configured = os.environ.get("EVERYSKILL_ADMIN_CREDENTIALS")
    return Path(configured) if configured else DEFAULT_CREDENTIALS_FILE

CATALOGUE = "Catalogue"
FEEDBACK = "Feedback"
USAGE = "Usage and cost"
BENCHMARKS = "Benchmarks"

tenant_config = TableConfig(
    Tenant,
    menu_group=CATALOGUE,
    order_by=[OrderBy(Tenant.created_at, ascending=False)],
)
user_config = TableConfig(
    User,
    menu_group=CATALOGUE,
    visible_filters=[User.tenant_id, User.email],
    order_by=[OrderBy(User.created_at, ascending=False)],
)
skill_config = TableConfig(
    Skill,
    menu_group=CATALOGUE,
    visible_columns=[
        Skill.id,
        Skill.tenant_id,
        Skill.name,
        Skill.slug,
        Skill.total_feedback,
        Skill.positive_feedback_pct,
        Skill.avg_token_cost_microcents,
        Skill.created_at,
    ],
    visible_filters=[Skill.tenant_id, Skill.name, Skill.slug, Skill.author_id],
    order_by=[OrderBy(Skill.created_at, ascending=False)],
)
skill_version_config = TableConfig(
    SkillVersion,
    menu_group=CATALOGUE,
    exclude_visible_columns=[SkillVersion.content, SkillVersion.changelog],
    visible_filters=[SkillVersion.tenant_id, SkillVersion.skill_id],
    order_by=[OrderBy(SkillVersion.created_at, ascending=False)],
)
skill_feedback_config = TableConfig(
    SkillFeedback,
    menu_group=FEEDBACK,
    visible_columns=[
        SkillFeedback.id,
        SkillFeedback.tenant_id,
        SkillFeedback.skill_id,
        SkillFeedback.feedback_type,
        SkillFeedback.status,
        SkillFeedback.source,
        SkillFeedback.quality_score,
        SkillFeedback.created_at,
    ],
    visible_filters=[
        SkillFeedback.tenant_id,
        SkillFeedback.skill_id,
        SkillFeedback.feedback_type,
        SkillFeedback.status,
        SkillFeedback.source,
        SkillFeedback.created_at,
    ],
    order_by=[OrderBy(SkillFeedback.created_at, ascending=False)],
)
token_measurement_config = TableConfig(
    TokenMeasurement,
    menu_group=USAGE,
    visible_columns=[
        TokenMeasurement.id,
        TokenMeasurement.tenant_id,
        TokenMeasurement.skill_id,
        TokenMeasurement.model_name,
        TokenMeasurement.total_tokens,
        TokenMeasurement.cache_read_tokens,
        TokenMeasurement.estimated_cost_microcents,
        TokenMeasurement.latency_ms,
        TokenMeasurement.created_at,
    ],
    visible_filters=[
        TokenMeasurement.tenant_id,
        TokenMeasurement.skill_id,
        TokenMeasurement.model_name,
        TokenMeasurement.source,
        TokenMeasurement.created_at,
    ],
    order_by=[OrderBy(TokenMeasurement.created_at, ascending=False)],
)
model_price_config = TableConfig(
    ModelPrice,
    menu_group=USAGE,
    visible_columns=[
        ModelPrice.id,
        ModelPrice.tenant_id,
        ModelPrice.model_provider,
        ModelPrice.model_name,
        ModelPrice.input_microcents_per_token,
        ModelPrice.output_microcents_per_token,
        ModelPrice.updated_at,
    ],
    visible_filters=[
        ModelPrice.tenant_id,
        ModelPrice.model_provider,
        ModelPrice.model_name,
    ],
    order_by=[OrderBy(ModelPrice.model_provider), OrderBy(ModelPrice.model_name)],
)
benchmark_run_config = TableConfig(
    BenchmarkRun,
    menu_group=BENCHMARKS,
    visible_columns=[
        BenchmarkRun.id,
        BenchmarkRun.tenant_id,
        BenchmarkRun.skill_id,
        BenchmarkRun.status,
        BenchmarkRun.best_model,
        BenchmarkRun.cheapest_model,
        BenchmarkRun.created_at,
    ],
    visible_filters=[
        BenchmarkRun.tenant_id,
        BenchmarkRun.skill_id,
        BenchmarkRun.status,
        BenchmarkRun.created_at,
    ],
    order_by=[OrderBy(BenchmarkRun.created_at, ascending=False)],
)
benchmark_result_config = TableConfig(
    BenchmarkResult,
    menu_group=BENCHMARKS,
    visible_columns=[
        BenchmarkResult.id,
        BenchmarkResult.benchmark_run_id,
        BenchmarkResult.model_name,
        BenchmarkResult.test_case_index,
        BenchmarkResult.quality_score,
        BenchmarkResult.matches_expected,
        BenchmarkResult.estimated_cost_microcents,
        BenchmarkResult.latency_ms,
    ],
    visible_filters=[
        BenchmarkResult.tenant_id,
        BenchmarkResult.benchmark_run_id,
        BenchmarkResult.model_name,
        BenchmarkResult.matches_expected,
    ],
    order_by=[OrderBy(BenchmarkResult.created_at, ascending=False)],
)

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
]


def create_app(*, production: bool = False) -> ASGIApp:
    """The admin as an ASGI app, with the database pool tied to its lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = engine_finder()
        assert engine is not None, "piccolo_conf.py defines no engine"
        await engine.start_connection_pool()  # type: ignore[no-untyped-call]
        try:
            yield
        finally:
            await engine.close_connection_pool()  # type: ignore[no-untyped-call]

    admin = create_admin(
        tables=TABLE_CONFIGS,
        site_name="EverySkill admin",
        production=production,
        auto_include_related=False,
    )
    return Starlette(routes=[Mount("/", admin)], lifespan=lifespan)


@dataclass(frozen=True)
class AdminLogin:
    """How to log in to the admin; ``password`` is None when it was not made here."""

    username: str
    password: str | None
    source: str


async def ensure_admin_user() -> AdminLogin:
    """Make sure an active admin user exists, and say how to log in."""
    username = os.environ.get("EVERYSKILL_ADMIN_USERNAME", "").strip()
    password = os.environ.get("EVERYSKILL_ADMIN_PASSWORD", "")
    if username and password:
        await _create_or_reset(username, password)
        return AdminLogin(username, None, "EVERYSKILL_ADMIN_PASSWORD")
    if username or password:
        raise ValueError(
            "Set both EVERYSKILL_ADMIN_USERNAME and EVERYSKILL_ADMIN_PASSWORD, or neither."
        )

    path = credentials_file()
    stored = _read_stored_credentials(path)
    if stored and await BaseUser.login(stored["username"], stored["password"]):
        return AdminLogin(stored["username"], stored["password"], str(path))

    username, password = "admin", secrets.token_urlsafe(18)
    await _create_or_reset(username, password)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"username": username, "password": password}, handle)
    return AdminLogin(username, password, str(path))


def _read_stored_credentials(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and {"username", "password"} <= data.keys():
        return {"username": str(data["username"]), "password": str(data["password"])}
    return None


async def _create_or_reset(username: str, password: str) -> None:
    existing = await BaseUser.objects().get(BaseUser.username == username)
    if existing is None:
        await BaseUser.create_user(
            username=username,
            password=password,
            email=f"{username}@admin.invalid",
            active=True,
            admin=True,
            superuser=True,
        )
        return
    await BaseUser.update_password(username, password)
    await BaseUser.update(
        {BaseUser.active: True, BaseUser.admin: True}
    ).where(BaseUser.id == existing.id)
