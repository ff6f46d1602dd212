"""The catalogue routes: skills (with their aggregates), versions, users.

Contract
--------
Writes need ``catalogue:write``, reads ``read``. Each route calls one
function of :mod:`everyskill.catalogue`, whose rules apply (422 naming the
field; 409 for a slug or email already taken, naming it; 404 for an id that
is not the tenant's, another tenant's included):

- ``POST /v1/skills`` (:func:`~everyskill.catalogue.create_skill`, 201),
  ``GET /v1/skills`` (``include_archived``; ``slug``: only that skill),
  ``GET /v1/skills/{id}`` (the skill's row: its aggregates
  ``total_feedback``, ``positive_feedback_pct``,
  ``avg_token_cost_microcents`` and their counters included),
  ``PATCH /v1/skills/{id}`` (only the fields given; ``null`` clears
  ``description`` or ``author_id``), ``POST /v1/skills/{id}/archive`` and
  ``/unarchive`` (harmless when repeated).
- ``POST /v1/skills/{id}/versions`` (:func:`~everyskill.catalogue.publish_version`,
  201), ``GET /v1/skills/{id}/versions`` (highest number first),
  ``GET`` and ``PATCH /v1/skills/{id}/versions/{version_id}`` (the
  changelog only; a version of another skill is not found).
- ``POST /v1/users`` (201), ``GET /v1/users``, ``GET`` and ``PATCH /v1/users/{id}``.

Writes answer :class:`~everyskill.http_api.schemas.Written`. A skill, a
version and a user may be created with the client's own ``id`` (a UUID): a
retry of a create already stored with the same values answers 200 with the
stored row, ``replayed`` and ``Idempotent-Replayed: true``; an id another
tenant holds, or one stored with other values, is a 409 (field ``id``)
saying nothing about the other row. Every route but a version's ``PATCH``
(which reads the version first, in the same transaction) makes one
query-API call, in an autocommit tenant scope (the call is its own
transaction).
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Query, Response

from everyskill import catalogue
from everyskill.errors import NotFoundError
from everyskill.http_api.auth import CatalogueWriter, Reader
from everyskill.http_api.problems import ERROR_RESPONSES
from everyskill.http_api.schemas import (
    ClientId,
    create_responses,
    created,
    Limit,
    Page,
    page_json,
    row_json,
    SkillOut,
    SkillVersionOut,
    UserOut,
    Written,
    written,
)
from everyskill.pagination import DEFAULT_LIMIT
from everyskill.tenancy import tenant_scope

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)



class _Input(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class SkillIn(_Input):
    slug: str = pydantic.Field(description="Lowercase words joined by hyphens, unique in the tenant.")
    name: str
    description: str | None = None
    author_id: str | None = None
    id: ClientId


class SkillChanges(_Input):
    """The fields to change; those left out stay as they are."""

    slug: str = None  # type: ignore[assignment]
    name: str = None  # type: ignore[assignment]
    description: str | None = None
    author_id: str | None = None


class VersionIn(_Input):
    content: str
    changelog: str | None = None
    author_id: str | None = None
    id: ClientId


class VersionChanges(_Input):
    changelog: str | None


class UserIn(_Input):
    email: str
    name: str
    id: ClientId


class UserChanges(_Input):
    """The fields to change; those left out stay as they are."""

    email: str = None  # type: ignore[assignment]
    name: str = None  # type: ignore[assignment]


# -- skills -------------------------------------------------------------------------

@router.post(
    "/skills",
    status_code=201,
    response_model=Written[SkillOut],
    responses=create_responses(Written[SkillOut]),
    tags=["skills"],
    summary="Add a skill",
)
async def create_skill(key: CatalogueWriter, body: SkillIn, response: Response) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        saved = await catalogue.create_skill(**body.model_dump(exclude_unset=True))
    created(response, saved.replayed)
    return written(saved)


@router.get("/skills", response_model=Page[SkillOut], tags=["skills"], summary="List skills, newest first")
async def list_skills(
    key: Reader,
    include_archived: bool = False,
    slug: Annotated[
        str | None,
        Query(description="Only the skill of this slug (none or one): find a skill by its name."),
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        page = await catalogue.list_skills(
            include_archived=include_archived, slug=slug, limit=limit, cursor=cursor
        )
    return page_json(page)


@router.get(
    "/skills/{skill_id}",
    response_model=SkillOut,
    tags=["skills"],
    summary="Read a skill, its aggregates included",
)
async def get_skill(key: Reader, skill_id: str) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        return row_json(await catalogue.get_skill(skill_id))


@router.patch(
    "/skills/{skill_id}", response_model=Written[SkillOut], tags=["skills"], summary="Change a skill"
)
async def update_skill(key: CatalogueWriter, skill_id: str, body: SkillChanges) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        saved = await catalogue.update_skill(skill_id, **body.model_dump(exclude_unset=True))
    return written(saved)


@router.post(
    "/skills/{skill_id}/archive",
    response_model=Written[SkillOut],
    tags=["skills"],
    summary="Archive a skill (out of the lists, history kept)",
)
async def archive_skill(key: CatalogueWriter, skill_id: str) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        return written(await catalogue.archive_skill(skill_id))


@router.post(
    "/skills/{skill_id}/unarchive",
    response_model=Written[SkillOut],
    tags=["skills"],
    summary="Put an archived skill back in use",
)
async def unarchive_skill(key: CatalogueWriter, skill_id: str) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        return written(await catalogue.unarchive_skill(skill_id))


# -- versions -----------------------------------------------------------------------

@router.post(
    "/skills/{skill_id}/versions",
    status_code=201,
    response_model=Written[SkillVersionOut],
    responses=create_responses(Written[SkillVersionOut]),
    tags=["skill versions"],
    summary="Publish a skill's next version",
)
async def publish_version(
    key: CatalogueWriter, skill_id: str, body: VersionIn, response: Response
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        saved = await catalogue.publish_version(skill_id, **body.model_dump(exclude_unset=True))
    created(response, saved.replayed)
    return written(saved)


@router.get(
    "/skills/{skill_id}/versions",
    response_model=Page[SkillVersionOut],
    tags=["skill versions"],
    summary="List a skill's versions, highest first",
)
async def list_versions(
    key: Reader, skill_id: str, limit: Limit = DEFAULT_LIMIT, cursor: str | None = None
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        page = await catalogue.list_versions(skill_id, limit=limit, cursor=cursor)
    return page_json(page)


async def _version_of(skill_id: str, version_id: str) -> Any:
    version = await catalogue.get_version(version_id)
    if version.skill_id != skill_id:
        # The route names the skill: a version of another one is not there.
        raise NotFoundError("skill version", version_id)
    return version


@router.get(
    "/skills/{skill_id}/versions/{version_id}",
    response_model=SkillVersionOut,
    tags=["skill versions"],
    summary="Read a version of a skill",
)
async def get_version(key: Reader, skill_id: str, version_id: str) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        return row_json(await _version_of(skill_id, version_id))


@router.patch(
    "/skills/{skill_id}/versions/{version_id}",
    response_model=Written[SkillVersionOut],
    tags=["skill versions"],
    summary="Change a version's changelog (its content never changes)",
)
async def update_version(
    key: CatalogueWriter, skill_id: str, version_id: str, body: VersionChanges
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id):
        await _version_of(skill_id, version_id)
        saved = await catalogue.update_version(version_id, changelog=body.changelog)
    return written(saved)


# -- users --------------------------------------------------------------------------

@router.post(
    "/users",
    status_code=201,
    response_model=Written[UserOut],
    responses=create_responses(Written[UserOut]),
    tags=["users"],
    summary="Add a user",
)
async def create_user(key: CatalogueWriter, body: UserIn, response: Response) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        saved = await catalogue.create_user(**body.model_dump())
    created(response, saved.replayed)
    return written(saved)


@router.get("/users", response_model=Page[UserOut], tags=["users"], summary="List users, newest first")
async def list_users(
    key: Reader, limit: Limit = DEFAULT_LIMIT, cursor: str | None = None
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        return page_json(await catalogue.list_users(limit=limit, cursor=cursor))


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"], summary="Read a user")
async def get_user(key: Reader, user_id: str) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        return row_json(await catalogue.get_user(user_id))


@router.patch("/users/{user_id}", response_model=Written[UserOut], tags=["users"], summary="Change a user")
async def update_user(key: CatalogueWriter, user_id: str, body: UserChanges) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        return written(await catalogue.update_user(user_id, **body.model_dump(exclude_unset=True)))
