"""The catalogue: skills, their versions and the tenant's users, read and written.

Every function runs in the current tenant scope (see
:func:`everyskill.tenancy.tenant_scope`) through
:func:`~everyskill.tenancy.operation`: another tenant's row is not found, and
a call without a scope raises :class:`~everyskill.errors.TenantScopeError`.
An application writes the catalogue through these calls, never with SQL.

Contract
--------
- Reading: :func:`get_skill`, :func:`get_version` and :func:`get_user` return
  one row of the tenant or raise :class:`~everyskill.errors.NotFoundError`;
  :func:`get_skill` returns archived skills too (their history stays
  readable). :func:`skill_ids_by_slug` maps slugs to the ids of the
  tenant's skills with one query, however many slugs: a slug that names
  no skill of the tenant (another tenant's included) is left out of the
  answer, not an error, so that a caller naming skills by slug (the HTTP
  API's writes) can list every unknown one at once. An archived skill's
  slug maps to it, as its id names it (it keeps its slug, and feedback and
  measurements can still be recorded on it). Slugs are compared as given
  (no stripping: a read, like ids); each must be a non-empty string
  PostgreSQL can store (a :class:`~everyskill.errors.ValidationError` on
  ``slugs[i]`` otherwise); no slugs, no query. :func:`skill_aggregates` returns a skill's maintained
  aggregates as :class:`SkillAggregates`: columns of the skill's row, kept
  exact by the database on every write of feedback and measurements, so the
  read is one indexed row whatever the number of rows behind it.
- Lists come in keyset pages (:class:`~everyskill.pagination.Page`,
  ``limit`` and ``cursor`` as in :func:`~everyskill.pagination.fetch_page`):
  :func:`list_skills` and :func:`list_users` newest first;
  :func:`list_versions` a skill's versions, highest number first (its first
  page raises NotFoundError for a skill that is not the tenant's).
  :func:`list_skills` leaves archived skills out unless
  ``include_archived=True``; ``slug`` keeps only the skill of that slug
  (none or one: slugs are unique in the tenant), which is how a client that
  knows a skill by its name finds its row. The slug given is folded as
  stored slugs are written (:func:`folded_slug`: stripped, lowercase), so
  ``" Review-Code"`` finds ``review-code``; it must be a non-empty string
  PostgreSQL can store (a :class:`~everyskill.errors.ValidationError` on
  ``slug`` otherwise). Whoever resolves a slug a person typed (the HTTP
  API's ``skill_slug``) folds it the same way before
  :func:`skill_ids_by_slug`.
- Skills: :func:`create_skill` (``slug``, ``name``, optional ``description``
  and ``author_id``), :func:`update_skill` (only the fields given; ``None``
  clears ``description`` or ``author_id``), :func:`archive_skill` and
  :func:`unarchive_skill`. There is no delete: deleting a skill would erase
  its feedback, usage and cost history, and the application role may not.
  Archiving sets ``archived_at``; the skill leaves the lists and nothing
  else changes: its feedback, measurements, benchmark runs, versions and
  aggregates stay, it can still be read, renamed and unarchived, and
  feedback and measurements can still be recorded on it (a hook reporting
  the use of a skill someone just archived must not lose the report).
  Archiving an archived skill (or unarchiving one in use) changes nothing
  and returns it as it is, so a retry is harmless; ``archived_at`` keeps the
  time of the first archive.
- Versions: :func:`publish_version` adds a skill's next version (``content``,
  optional ``changelog`` and ``author_id``). The number is the skill's
  highest plus one, computed in the INSERT itself; the skill's row is locked
  first (``FOR NO KEY UPDATE``, until the scope ends), so concurrent
  publishers of one skill take turns and get consecutive numbers. (Other
  scopes' writes of that skill's row wait for the lock too, feedback and
  measurements included, as they update its aggregates: publish in a short
  scope.) A version of an archived skill is refused with
  :class:`~everyskill.errors.InvalidTransitionError` (unarchive it first).
  The API never changes a published version's content: feedback and
  benchmark runs name the version they were about, and changing its text
  would rewrite what they refer to; publish a new version instead.
  :func:`update_version` changes the changelog only.
- Users: :func:`create_user` (``email``, ``name``) and :func:`update_user`
  (only the fields given). Users have no deactivation: the table has no
  column for it.
- Input is checked before anything is written; a
  :class:`~everyskill.errors.ValidationError` names every bad field. The
  rules of slugs, names, emails, content and free text are
  :data:`everyskill.rules.INPUT_RULES`, which the ``New*`` models of
  :mod:`everyskill.rows` apply too: slugs are lowercase letters and digits
  in words joined by single hyphens (``review-code``), at most
  :data:`MAX_SLUG_LENGTH` characters; names are non-blank, at most
  :data:`MAX_NAME_LENGTH` characters; an email is ``local@domain`` without
  spaces, at most :data:`MAX_EMAIL_LENGTH` characters, its domain
  lowercased; free text is at most :data:`MAX_TEXT_LENGTH` characters;
  content is not blank; blank descriptions and changelogs are none. Ids,
  slugs, names and emails are stripped of surrounding whitespace, free text
  is kept as given, and text PostgreSQL cannot store is refused. These
  rules include the database's (:data:`everyskill.rules.NON_EMPTY`); the
  tests hold the API, the models and the database together.
  An update that gives no field is a ValidationError on ``input``.
- Free text (descriptions, version content, changelogs) and the names of
  skills and users (:data:`TEXT_FIELDS`) go through
  :func:`everyskill.redaction.redact_fields_async` before they are written;
  the :class:`~everyskill.rows.Saved` returned by the calls that write text
  counts what was replaced. Calls that write no free text return
  the row itself.
- Uniqueness: a skill's slug and a user's email are unique within the
  tenant (an archived skill keeps its slug). A duplicate is a
  :class:`~everyskill.errors.ConflictError` whose ``field`` is ``"slug"`` or
  ``"email"`` and whose message names the row that holds the value. A
  create finds the duplicate with ``INSERT ... ON CONFLICT DO NOTHING``,
  which is exact under concurrency and leaves the scope usable. An update
  reads first and refuses before writing; when another scope takes the
  value between that read and the write, the database refuses the write
  and the same ConflictError comes out, but, as for any call that fails in
  the database, the scope has ended (see :func:`everyskill.tenancy.operation`).
- An ``author_id`` that names no user of the tenant is a NotFoundError from
  the database, which ends the scope too. A skill or version named by id
  that is not the tenant's is a NotFoundError raised before writing.
- Client ids (:mod:`everyskill.client_ids`): :func:`create_skill`,
  :func:`publish_version` and :func:`create_user` take an optional ``id``,
  the client's UUID for the new row. A row the tenant already stored under
  it with the values given is a replay: nothing is written and the stored
  row comes back with ``Saved.replayed`` true (a version's number is not
  compared: the database chose it). Other values, or an id another tenant
  holds, are a :class:`~everyskill.errors.ConflictError` on ``id``; the
  latter says nothing about that row. The id is settled before the slug
  or email: a retried create whose first try went through is a replay,
  not a duplicate slug. A version's replay is looked up with the skill's
  lock, before the archive check: retrying a publication that went through
  returns it even if the skill was archived since.
- Each call writes with one statement; its reads only decide whether to
  write, or explain a refusal. It writes all of its row or nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Final

import asyncpg
import pydantic

from everyskill.client_ids import checked_id, differences, foreign, reused
from everyskill.columns import select_list
from everyskill.errors import (
    UNSTORABLE,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    ValidationError,
    check_id,
    storable,
)
from everyskill.pagination import DEFAULT_LIMIT, Filter, Page, check_limit, fetch_page
from everyskill.redaction import redact_fields_async
from everyskill.rows import RowT, Saved, row_from_record
from everyskill.rules import (
    INT4,
    MAX_EMAIL_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SLUG_LENGTH,
    MAX_TEXT_LENGTH,
    Content,
    Email,
    FreeText,
    Name,
    Slug,
)
from everyskill.tenancy import current_scope, operation
from tables import Skill, SkillVersion, User

__all__ = [
    "MAX_EMAIL_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_SLUG_LENGTH",
    "MAX_TEXT_LENGTH",
    "SkillAggregates",
    "TEXT_FIELDS",
    "archive_skill",
    "create_skill",
    "create_user",
    "get_skill",
    "get_user",
    "get_version",
    "list_skills",
    "list_users",
    "list_versions",
    "publish_version",
    "skill_aggregates",
    "folded_slug",
    "skill_ids_by_slug",
    "unarchive_skill",
    "update_skill",
    "update_user",
    "update_version",
]

#: Free text of the catalogue, redacted before it is written, by table.
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "skills": ("name", "description"),
    "skill_versions": ("content", "changelog"),
    "users": ("name",),
}


class _Unset(Enum):
    """A field not given to an update (None is a value: it clears)."""

    UNSET = "UNSET"


_UNSET: Final = _Unset.UNSET


###############################################################################
# Input: everyskill.rules.INPUT_RULES for the columns, and ids.


def _storable(value: str) -> str:
    if not storable(value):
        raise ValueError(UNSTORABLE)
    return value


_Id = Annotated[
    str,
    pydantic.StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    pydantic.AfterValidator(_storable),
]


class _Input(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class _NewSkill(_Input):
    slug: Slug
    name: Name
    description: FreeText | None = None
    author_id: _Id | None = None


class _SkillChanges(_Input):
    # Defaults are not validated: a field given as None is, and only the
    # nullable ones take it.
    slug: Slug = None  # type: ignore[assignment]
    name: Name = None  # type: ignore[assignment]
    description: FreeText | None = None
    author_id: _Id | None = None


class _NewVersion(_Input):
    skill_id: _Id
    content: Content
    changelog: FreeText | None = None
    author_id: _Id | None = None


class _VersionChanges(_Input):
    changelog: FreeText | None


class _NewUser(_Input):
    email: Email
    name: Name


class _UserChanges(_Input):
    email: Email = None  # type: ignore[assignment]
    name: Name = None  # type: ignore[assignment]


def _validated(model: type[_Input], fields: dict[str, Any]) -> dict[str, Any]:
    """The fields given (those not :data:`_UNSET`), validated by ``model``
    (blank free text read as none); or ValidationError with every problem."""
    given = {name: value for name, value in fields.items() if value is not _UNSET}
    try:
        values: dict[str, Any] = model(**given).model_dump(exclude_unset=True)
    except pydantic.ValidationError as error:
        raise ValidationError.from_pydantic(error) from None
    return values


async def _redacted(values: dict[str, Any], names: Sequence[str]) -> dict[str, int]:
    """Redact ``values``' fields ``names`` (those given) in place; the
    counts by kind. A name a marker made longer than a name may be is a
    ValidationError (a short secret becomes a longer marker)."""
    texts, redactions = await redact_fields_async(
        {name: values[name] for name in names if name in values}
    )
    values.update(texts)
    name = values.get("name")
    if redactions and isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
        raise ValidationError.of(
            "name",
            f"must be at most {MAX_NAME_LENGTH} characters once the secret in it is"
            " replaced by a marker: shorten it (and keep secrets out of names)",
        )
    return redactions


def _changes(model: type[_Input], fields: dict[str, Any]) -> dict[str, Any]:
    values = _validated(model, fields)
    if not values:
        raise ValidationError.of(
            "input", f"give at least one field to change: {', '.join(fields)}"
        )
    return values


###############################################################################
# Skills.


@dataclass(frozen=True)
class SkillAggregates:
    """A skill's aggregates, dismissed feedback aside.

    ``positive_feedback_pct`` is thumbs up out of thumbs up and down (None
    with no thumbs); ``avg_token_cost_microcents`` is the average cost of
    the measurements that have one (None without any).
    """

    skill_id: str
    total_feedback: int
    feedback_thumbs_up: int
    feedback_thumbs_down: int
    positive_feedback_pct: int | None
    costed_measurements: int
    measured_cost_microcents: int
    avg_token_cost_microcents: int | None


_AGGREGATES = """
SELECT id AS skill_id, total_feedback, feedback_thumbs_up, feedback_thumbs_down,
       positive_feedback_pct, costed_measurements, measured_cost_microcents,
       avg_token_cost_microcents
  FROM skills WHERE id = $1
"""
_SKILL = select_list(Skill)


async def _get(table: type[RowT], kind: str, field: str, row_id: str) -> RowT:
    """The row of ``table`` with id ``row_id`` in the tenant, or NotFoundError."""
    check_id(field, row_id)
    async with operation() as scope:
        record = await scope.connection.fetchrow(
            f"SELECT {select_list(table)} FROM {table._meta.tablename} WHERE id = $1", row_id
        )
    if record is None:
        raise NotFoundError(kind, row_id)
    return row_from_record(table, record)


async def get_skill(skill_id: str) -> Skill:
    """One skill of the tenant (archived or not), aggregates included, or NotFoundError."""
    return await _get(Skill, "skill", "skill_id", skill_id)


def folded_slug(slug: str) -> str:
    """``slug`` as a stored slug is written: stripped of surrounding
    whitespace, lowercase (:data:`~everyskill.rules.Slug`). The same slug
    given with spaces or capitals folds to the stored one; a text that is no
    slug folds to one no skill has."""
    return slug.strip().lower()


async def skill_ids_by_slug(slugs: Iterable[str]) -> dict[str, str]:
    """The ids of the tenant's skills (archived ones too) with these slugs,
    by slug, read with one query; slugs that name no skill of the tenant are
    not in the answer. See the module's contract."""
    if isinstance(slugs, (str, bytes)) or not isinstance(slugs, Iterable):
        raise ValidationError.of("slugs", "must be a list of slugs, not one string")
    given = list(slugs)
    for index, slug in enumerate(given):
        check_id(f"slugs[{index}]", slug)
    distinct = list(dict.fromkeys(given))
    if not distinct:
        current_scope()  # a call without a scope is refused all the same
        return {}
    async with operation() as scope:
        # The unique key (tenant_id, slug) finds each; row-level security
        # keeps the lookup to the tenant's own skills.
        records = await scope.connection.fetch(
            "SELECT slug, id FROM skills WHERE slug = ANY($1::text[])", distinct
        )
    return {record["slug"]: record["id"] for record in records}


async def skill_aggregates(skill_id: str) -> SkillAggregates:
    """The skill's aggregates, or NotFoundError."""
    check_id("skill_id", skill_id)
    async with operation() as scope:
        record = await scope.connection.fetchrow(_AGGREGATES, skill_id)
    if record is None:
        raise NotFoundError("skill", skill_id)
    return SkillAggregates(**record)


async def list_skills(
    *,
    include_archived: bool = False,
    slug: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[Skill]:
    """The tenant's skills, newest first; archived ones only with
    ``include_archived``; only the one named ``slug`` when given."""
    if not isinstance(include_archived, bool):
        raise ValidationError.of("include_archived", "must be True or False")
    if slug is not None:
        if not isinstance(slug, str):
            raise ValidationError.of("slug", "must be a string (a skill's slug, e.g. review-code)")
        check_id("slug", slug)
    where = Filter()
    if not include_archived:
        where.add("archived_at IS NULL")
    where.equal("slug", None if slug is None else folded_slug(slug))
    async with operation() as scope:
        return await fetch_page(scope.connection, Skill, where, limit=limit, cursor=cursor)


def _slug_taken(slug_holder: str, archived: bool) -> ConflictError:
    hint = (
        " (it is archived: unarchive it, or give it another slug first)" if archived else ""
    )
    return ConflictError(
        f"slug: skill {slug_holder!r} of this tenant already has this slug{hint};"
        " choose another slug",
        field="slug",
    )


async def create_skill(
    *,
    slug: str,
    name: str,
    description: str | None = None,
    author_id: str | None = None,
    id: str | None = None,
) -> Saved[Skill]:
    """Add a skill to the catalogue; see the module's contract."""
    given_id = checked_id(id)
    values = _validated(
        _NewSkill,
        {"slug": slug, "name": name, "description": description, "author_id": author_id},
    )
    values.setdefault("description", None)
    redactions = await _redacted(values, TEXT_FIELDS["skills"])
    row_id = given_id or str(uuid.uuid4())
    given = {
        "slug": values["slug"],
        "name": values["name"],
        "description": values["description"],
        "author_id": values.get("author_id"),
    }
    async with operation(values) as scope:
        connection = scope.connection
        # No conflict target: a taken id and a taken slug both write nothing.
        record = await connection.fetchrow(
            f"""
            INSERT INTO skills (tenant_id, id, slug, name, description, author_id)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT DO NOTHING
            RETURNING {_SKILL}
            """,
            scope.tenant_id,
            row_id,
            *given.values(),
        )
        replayed = False
        if record is None and given_id is not None:
            record = await _replay(connection, Skill, "skill", row_id, given)
            replayed = record is not None
        if record is None:
            # Nothing was written: the slug is taken (by a committed row:
            # ON CONFLICT waits for a concurrent writer's outcome), or the
            # id is another tenant's.
            holder = await connection.fetchrow(
                "SELECT id, archived_at FROM skills WHERE slug = $1", values["slug"]
            )
            if holder is None:
                if given_id is not None:
                    raise foreign()
                raise ConflictError(
                    "slug: another skill had this slug when the skill was added; retry",
                    field="slug",
                )
            raise _slug_taken(holder["id"], holder["archived_at"] is not None)
    return Saved(row_from_record(Skill, record), redactions, replayed=replayed)


async def _replay(
    connection: asyncpg.Connection,
    table: type[RowT],
    kind: str,
    row_id: str,
    given: dict[str, Any],
) -> asyncpg.Record | None:
    """The tenant's row of ``table`` stored under ``row_id`` when it holds
    ``given`` (a replay); None when the tenant has no such row; a
    ConflictError when it holds other values."""
    record: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT {select_list(table)} FROM {table._meta.tablename} WHERE id = $1", row_id
    )
    if record is not None:
        differing = differences(record, given)
        if differing:
            raise reused(kind, row_id, differing)
    return record


async def update_skill(
    skill_id: str,
    *,
    slug: str | _Unset = _UNSET,
    name: str | _Unset = _UNSET,
    description: str | None | _Unset = _UNSET,
    author_id: str | None | _Unset = _UNSET,
) -> Saved[Skill]:
    """Change the fields given of a skill (archived or not); see the module's contract."""
    check_id("skill_id", skill_id)
    values = _changes(
        _SkillChanges,
        {"slug": slug, "name": name, "description": description, "author_id": author_id},
    )
    redactions = await _redacted(values, TEXT_FIELDS["skills"])
    async with operation(values) as scope:
        connection = scope.connection
        if "slug" in values:
            found = await connection.fetchrow(
                """
                SELECT s.id, h.id AS holder, h.archived_at AS holder_archived_at
                  FROM skills s
                  LEFT JOIN skills h ON h.slug = $2 AND h.id <> s.id
                 WHERE s.id = $1
                """,
                skill_id,
                values["slug"],
            )
            if found is None:
                raise NotFoundError("skill", skill_id)
            if found["holder"] is not None:
                raise _slug_taken(found["holder"], found["holder_archived_at"] is not None)
        record = await _update(connection, "skills", _SKILL, skill_id, values)
    if record is None:
        raise NotFoundError("skill", skill_id)
    return Saved(row_from_record(Skill, record), redactions)


async def _update(
    connection: asyncpg.Connection,
    table: str,
    returning: str,
    row_id: str,
    values: dict[str, Any],
) -> asyncpg.Record | None:
    """``UPDATE table SET <values> WHERE id = row_id RETURNING ...``; the
    column names are this module's own (the input models' fields)."""
    names = list(values)
    assignments = ", ".join(f"{name} = ${index}" for index, name in enumerate(names, start=2))
    record: asyncpg.Record | None = await connection.fetchrow(
        f"UPDATE {table} SET {assignments} WHERE id = $1 RETURNING {returning}",
        row_id,
        *(values[name] for name in names),
    )
    return record


async def archive_skill(skill_id: str) -> Skill:
    """Archive a skill: out of the lists, its history kept. Harmless when archived."""
    return await _set_archived(skill_id, "coalesce(archived_at, now())")


async def unarchive_skill(skill_id: str) -> Skill:
    """Put an archived skill back in use (in the lists). Harmless when in use."""
    return await _set_archived(skill_id, "NULL")


async def _set_archived(skill_id: str, value: str) -> Skill:
    check_id("skill_id", skill_id)
    async with operation() as scope:
        record = await scope.connection.fetchrow(
            f"UPDATE skills SET archived_at = {value} WHERE id = $1 RETURNING {_SKILL}",
            skill_id,
        )
    if record is None:
        raise NotFoundError("skill", skill_id)
    return row_from_record(Skill, record)


###############################################################################
# Versions.

_VERSION = select_list(SkillVersion)


async def get_version(version_id: str) -> SkillVersion:
    """One skill version of the tenant, or NotFoundError."""
    return await _get(SkillVersion, "skill version", "version_id", version_id)


async def list_versions(
    skill_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[SkillVersion]:
    """A skill's versions, highest number first, in keyset pages."""
    check_id("skill_id", skill_id)
    check_limit(limit)
    below = None
    if cursor is not None:
        # The cursor is the version number the previous page ended with.
        if (
            not isinstance(cursor, str)
            or not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 10)
            or not 1 <= int(cursor) <= INT4[1]
        ):
            raise ValidationError.of(
                "cursor", "is not the next_cursor of a previous page of this list"
            )
        below = int(cursor)
    async with operation() as scope:
        connection = scope.connection
        if cursor is None and not await connection.fetchval(
            "SELECT EXISTS (SELECT FROM skills WHERE id = $1)", skill_id
        ):
            raise NotFoundError("skill", skill_id, "skill_id")
        records = await connection.fetch(
            f"""
            SELECT {_VERSION} FROM skill_versions
             WHERE skill_id = $1 AND ($2::integer IS NULL OR version < $2)
             ORDER BY version DESC
             LIMIT $3
            """,
            skill_id,
            below,
            limit + 1,
        )
    items = [row_from_record(SkillVersion, record) for record in records[:limit]]
    next_cursor = str(items[-1].version) if len(records) > limit else None
    return Page(items=items, next_cursor=next_cursor)


async def publish_version(
    skill_id: str,
    *,
    content: str,
    changelog: str | None = None,
    author_id: str | None = None,
    id: str | None = None,
) -> Saved[SkillVersion]:
    """Publish the skill's next version; see the module's contract."""
    given_id = checked_id(id)
    values = _validated(
        _NewVersion,
        {
            "skill_id": skill_id,
            "content": content,
            "changelog": changelog,
            "author_id": author_id,
        },
    )
    texts, redactions = await redact_fields_async(
        {"content": values["content"], "changelog": values.get("changelog")}
    )
    skill_id = values["skill_id"]
    row_id = given_id or str(uuid.uuid4())
    given = {
        "skill_id": skill_id,
        "content": texts["content"],
        "changelog": texts["changelog"],
        "author_id": values.get("author_id"),
    }
    async with operation(values) as scope:
        connection = scope.connection
        # Publishers of one skill take turns here; the INSERT that follows
        # reads the versions committed before its turn came. Whether the
        # tenant stored a version under the id given comes with it (a replay).
        skill = await connection.fetchrow(
            """
            SELECT archived_at,
                   EXISTS (SELECT FROM skill_versions WHERE id = $2) AS stored
              FROM skills WHERE id = $1 FOR NO KEY UPDATE
            """,
            skill_id,
            given_id,
        )
        if skill is None:
            raise NotFoundError("skill", skill_id, "skill_id")
        if skill["stored"]:
            record = await _replay(connection, SkillVersion, "skill version", row_id, given)
            if record is None:  # deleted since (by staff: the application deletes none)
                raise ConflictError(
                    f"skill version {row_id!r} was deleted while this call read it: retry",
                    field="id",
                )
            return Saved(row_from_record(SkillVersion, record), redactions, replayed=True)
        if skill["archived_at"] is not None:
            refused = InvalidTransitionError(
                "skill", skill_id, "archived", "given a new version", ["in use"]
            )
            refused.args = (
                f"skill {skill_id!r} is archived: unarchive it before publishing a version",
            )
            raise refused
        record = await connection.fetchrow(
            f"""
            INSERT INTO skill_versions
                   (tenant_id, id, skill_id, version, content, changelog, author_id)
            VALUES ($1, $2, $3,
                    (SELECT coalesce(max(version), 0) + 1 FROM skill_versions WHERE skill_id = $3),
                    $4, $5, $6)
            ON CONFLICT (id) DO NOTHING
            RETURNING {_VERSION}
            """,
            scope.tenant_id,
            row_id,
            *given.values(),
        )
        if record is None:
            # The id was taken since the read above: by this tenant (a
            # concurrent replay) or by another.
            record = await _replay(connection, SkillVersion, "skill version", row_id, given)
            if record is None:
                raise foreign()
            return Saved(row_from_record(SkillVersion, record), redactions, replayed=True)
    return Saved(row_from_record(SkillVersion, record), redactions)


async def update_version(version_id: str, *, changelog: str | None) -> Saved[SkillVersion]:
    """Change a version's changelog (None or blank clears it). Its content is
    immutable: publish a new version to change it."""
    check_id("version_id", version_id)
    values = _validated(_VersionChanges, {"changelog": changelog})
    texts, redactions = await redact_fields_async({"changelog": values["changelog"]})
    async with operation() as scope:
        record = await _update(scope.connection, "skill_versions", _VERSION, version_id, texts)
    if record is None:
        raise NotFoundError("skill version", version_id)
    return Saved(row_from_record(SkillVersion, record), redactions)


###############################################################################
# Users.

_USER = select_list(User)


async def get_user(user_id: str) -> User:
    """One user of the tenant, or NotFoundError."""
    return await _get(User, "user", "user_id", user_id)


async def list_users(*, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page[User]:
    """The tenant's users, newest first."""
    async with operation() as scope:
        return await fetch_page(scope.connection, User, Filter(), limit=limit, cursor=cursor)


def _email_taken(holder: str) -> ConflictError:
    return ConflictError(
        f"email: user {holder!r} of this tenant already has this email address",
        field="email",
    )


async def create_user(*, email: str, name: str, id: str | None = None) -> Saved[User]:
    """Add a user to the tenant; see the module's contract."""
    given_id = checked_id(id)
    values = _validated(_NewUser, {"email": email, "name": name})
    redactions = await _redacted(values, TEXT_FIELDS["users"])
    row_id = given_id or str(uuid.uuid4())
    given = {"email": values["email"], "name": values["name"]}
    async with operation(values) as scope:
        connection = scope.connection
        # No conflict target: a taken id and a taken email both write nothing.
        record = await connection.fetchrow(
            f"""
            INSERT INTO users (tenant_id, id, email, name) VALUES ($1, $2, $3, $4)
            ON CONFLICT DO NOTHING
            RETURNING {_USER}
            """,
            scope.tenant_id,
            row_id,
            values["email"],
            values["name"],
        )
        replayed = False
        if record is None and given_id is not None:
            record = await _replay(connection, User, "user", row_id, given)
            replayed = record is not None
        if record is None:
            holder = await connection.fetchval(
                "SELECT id FROM users WHERE email = $1", values["email"]
            )
            if holder is None:
                if given_id is not None:
                    raise foreign()
                raise ConflictError(
                    "email: another user had this email address when the user was added;"
                    " retry",
                    field="email",
                )
            raise _email_taken(holder)
    return Saved(row_from_record(User, record), redactions, replayed=replayed)


async def update_user(
    user_id: str, *, email: str | _Unset = _UNSET, name: str | _Unset = _UNSET
) -> Saved[User]:
    """Change the fields given of a user; see the module's contract."""
    check_id("user_id", user_id)
    values = _changes(_UserChanges, {"email": email, "name": name})
    redactions = await _redacted(values, TEXT_FIELDS["users"])
    async with operation(values) as scope:
        connection = scope.connection
        if "email" in values:
            found = await connection.fetchrow(
                """
                SELECT u.id, h.id AS holder
                  FROM users u LEFT JOIN users h ON h.email = $2 AND h.id <> u.id
                 WHERE u.id = $1
                """,
                user_id,
                values["email"],
            )
            if found is None:
                raise NotFoundError("user", user_id)
            if found["holder"] is not None:
                raise _email_taken(found["holder"])
        record = await _update(connection, "users", _USER, user_id, values)
    if record is None:
        raise NotFoundError("user", user_id)
    return Saved(row_from_record(User, record), redactions)
