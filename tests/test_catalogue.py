"""
everyskill.catalogue through the API, as the application connects: skills,
versions and users are created, changed and listed in the tenant's scope,
checked by the owner's view of the rows; bad input is refused naming its
fields (as the New* models refuse it, for the same reasons), duplicates are
conflicts naming the field (also when two scopes race), free text is
redacted, archiving keeps a skill's history and takes it out of the lists,
versions are numbered without gaps or repeats under concurrent publishers,
the application role cannot delete a skill, and another tenant's rows are
not found.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pydantic
import pytest
from piccolo.table import Table

from everyskill import catalogue, feedback, relations, usage
from everyskill.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    NotPermittedError,
    TenantScopeError,
    ValidationError,
    from_database_error,
)
from everyskill.rows import NewSkill, NewSkillVersion, NewUser
from everyskill.rules import NON_EMPTY
from everyskill.tenancy import tenant_scope, tenant_transaction
from tables import Skill, User
from tests.support import TenantRows, wait_until_blocked
from tests.test_aggregates import RECOUNT

# A token of GitHub's classic shape ("ghp_" and 36 letters and digits): the
# redactor must replace it wherever catalogue text holds it.
TOKEN = "ghp_" + "Vt3kQ9mZx2LpR7wNc5HsJ8dFy4GbK1eUo6Ai"
assert len(TOKEN) == 40


def as_values(row: Table) -> dict[str, Any]:
    return {column._meta.name: getattr(row, column._meta.name) for column in row._meta.columns}


async def skill_count(owner: asyncpg.Connection, tenant: TenantRows) -> int:
    return int(
        await owner.fetchval("SELECT count(*) FROM skills WHERE tenant_id = $1", tenant.tenant_id)
    )


# -- reading -------------------------------------------------------------------


async def test_a_skill_is_read_with_its_aggregates(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_down")
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
        await usage.record_measurement(
            skill_id=tenant.skill_id,
            model_name="claude-sonnet-4-5",
            input_tokens=1000,
            output_tokens=100,
        )
        skill = await catalogue.get_skill(tenant.skill_id)
        aggregates = await catalogue.skill_aggregates(tenant.skill_id)

    stored = await owner.fetchrow("SELECT * FROM skills WHERE id = $1", tenant.skill_id)
    recount = await owner.fetchrow(RECOUNT, tenant.skill_id)
    assert stored is not None and recount is not None
    assert skill.id == tenant.skill_id and skill.tenant_id == tenant.tenant_id
    assert skill.name == stored["name"]
    assert skill.total_feedback == aggregates.total_feedback == recount["total_feedback"] == 3
    assert aggregates.positive_feedback_pct == recount["positive_feedback_pct"] == 67
    assert (aggregates.feedback_thumbs_up, aggregates.feedback_thumbs_down) == (2, 1)
    assert aggregates.avg_token_cost_microcents == recount["avg_token_cost_microcents"]
    assert aggregates.costed_measurements == stored["costed_measurements"] == 2
    assert aggregates.measured_cost_microcents == stored["measured_cost_microcents"]


# Each call naming a row by id, with the kind of row it names.
BY_ID: list[tuple[Callable[[str], Awaitable[Any]], str, str]] = [
    (catalogue.get_skill, "skill_id", "skill"),
    (catalogue.skill_aggregates, "skill_id", "skill"),
    (catalogue.archive_skill, "skill_id", "skill"),
    (catalogue.unarchive_skill, "skill_id", "skill"),
    (lambda id: catalogue.update_skill(id, name="Taken over"), "skill_id", "skill"),
    (lambda id: catalogue.update_skill(id, slug="taken-over"), "skill_id", "skill"),
    (lambda id: catalogue.publish_version(id, content="Mine now."), "skill_id", "skill"),
    (catalogue.list_versions, "skill_id", "skill"),
    (catalogue.get_version, "version_id", "skill version"),
    (lambda id: catalogue.update_version(id, changelog="Mine now."), "version_id", "skill version"),
    (catalogue.get_user, "user_id", "user"),
    (lambda id: catalogue.update_user(id, name="Mallory"), "user_id", "user"),
    (lambda id: catalogue.update_user(id, email="mallory@example.com"), "user_id", "user"),
]


@pytest.mark.parametrize(("call", "id_field", "kind"), BY_ID)
async def test_another_tenants_row_is_not_found_and_left_alone(
    owner: asyncpg.Connection,
    tenant: TenantRows,
    other_tenant: TenantRows,
    call: Callable[[str], Awaitable[Any]],
    id_field: str,
    kind: str,
) -> None:
    target = getattr(other_tenant, id_field)

    async def rows() -> list[list[asyncpg.Record]]:
        return [
            await owner.fetch(
                f"SELECT * FROM {table} WHERE tenant_id = $1 ORDER BY id", other_tenant.tenant_id
            )
            for table in ("skills", "skill_versions", "users")
        ]

    before = await rows()
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotFoundError) as raised:
            await call(target)
        # A refusal before writing leaves the scope usable.
        await catalogue.get_skill(tenant.skill_id)
    assert (raised.value.kind, raised.value.id) == (kind, target)
    assert await rows() == before


@pytest.mark.parametrize("skill_id", ["", "  ", None, 42, "a\x00b"])
@pytest.mark.parametrize(
    "call",
    [catalogue.get_skill, catalogue.skill_aggregates, catalogue.archive_skill,
     catalogue.unarchive_skill, catalogue.list_versions,
     lambda id: catalogue.update_skill(id, name="x"),
     lambda id: catalogue.publish_version(id, content="x")],
)
async def test_a_bad_skill_id_is_refused_with_its_field(
    tenant: TenantRows, skill_id: object, call: Callable[[Any], Awaitable[Any]]
) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as raised:
            await call(skill_id)
    assert raised.value.field == "skill_id"


CALLS: list[Callable[[TenantRows], Awaitable[Any]]] = [
    lambda t: catalogue.get_skill(t.skill_id),
    lambda t: catalogue.list_skills(),
    lambda t: catalogue.create_skill(slug="no-scope", name="No scope"),
    lambda t: catalogue.update_skill(t.skill_id, name="No scope"),
    lambda t: catalogue.archive_skill(t.skill_id),
    lambda t: catalogue.unarchive_skill(t.skill_id),
    lambda t: catalogue.publish_version(t.skill_id, content="No scope."),
    lambda t: catalogue.list_versions(t.skill_id),
    lambda t: catalogue.get_version(t.version_id),
    lambda t: catalogue.update_version(t.version_id, changelog="No scope."),
    lambda t: catalogue.create_user(email="no-scope@example.com", name="No scope"),
    lambda t: catalogue.update_user(t.user_id, name="No scope"),
    lambda t: catalogue.get_user(t.user_id),
    lambda t: catalogue.list_users(),
    lambda t: catalogue.skill_ids_by_slug(["review-code"]),
    lambda t: catalogue.skill_ids_by_slug([]),
]


@pytest.mark.parametrize("call", CALLS)
async def test_every_call_needs_a_tenant_scope(
    owner: asyncpg.Connection, tenant: TenantRows, call: Callable[[TenantRows], Awaitable[Any]]
) -> None:
    before = await owner.fetch("SELECT * FROM skills WHERE tenant_id = $1", tenant.tenant_id)
    with pytest.raises(TenantScopeError):
        await call(tenant)
    assert await owner.fetch("SELECT * FROM skills WHERE tenant_id = $1", tenant.tenant_id) == before


async def test_slugs_map_to_the_tenants_skills_with_one_query(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    """Both tenants have a review-code (each its own); an archived skill's
    slug maps to it; another tenant's slug and a slug no skill has are left
    out alike; 10,000 slugs naming three skills are one SELECT."""
    elsewhere = await owner.fetchval(
        "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, 'only-elsewhere', 'Elsewhere')"
        " RETURNING id",
        other_tenant.tenant_id,
    )
    async with tenant_scope(tenant.tenant_id) as scope:
        archived = (await catalogue.create_skill(slug="old-review", name="Old review")).row
        await catalogue.archive_skill(archived.id)
        third = (await catalogue.create_skill(slug="write-tests", name="Write tests")).row
        queries: list[str] = []

        def log(record: Any) -> None:
            queries.append(record.query)

        scope.connection.add_query_logger(log)
        found = await catalogue.skill_ids_by_slug(
            ["review-code", "old-review", "only-elsewhere", "nowhere", "write-tests"] * 2_000
        )
        scope.connection.remove_query_logger(log)
        assert await catalogue.skill_ids_by_slug([]) == {}
    assert found == {"review-code": tenant.skill_id, "old-review": archived.id, "write-tests": third.id}
    assert len(queries) == 1 and queries[0].lstrip().upper().startswith("SELECT")
    async with tenant_scope(other_tenant.tenant_id):
        theirs = await catalogue.skill_ids_by_slug(["review-code", "only-elsewhere", "old-review"])
    assert theirs == {"review-code": other_tenant.skill_id, "only-elsewhere": elsewhere}


@pytest.mark.parametrize(
    ("slugs", "field"),
    [("review-code", "slugs"), (None, "slugs"), (["review-code", ""], "slugs[1]"),
     ([" "], "slugs[0]"), (["a", "b", 7], "slugs[2]"), (["a\x00b"], "slugs[0]")],
)
async def test_bad_slugs_to_look_up_are_refused_naming_them(
    tenant: TenantRows, slugs: Any, field: str
) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as raised:
            await catalogue.skill_ids_by_slug(slugs)
        # Refused before the database: the scope is still usable.
        assert await catalogue.skill_ids_by_slug(["review-code"]) == {"review-code": tenant.skill_id}
    assert raised.value.field == field


# -- skills ----------------------------------------------------------------------


async def test_a_skill_is_created_as_given(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        saved = await catalogue.create_skill(
            slug="  summarise-pr ",
            name=" Summarise a pull request ",
            description="Writes a short summary of a pull request.",
            author_id=tenant.user_id,
        )
    skill = saved.row
    stored = await owner.fetchrow("SELECT * FROM skills WHERE id = $1", skill.id)
    assert stored is not None
    assert dict(stored) == as_values(skill)
    assert (stored["tenant_id"], stored["slug"], stored["name"]) == (
        tenant.tenant_id, "summarise-pr", "Summarise a pull request",
    )
    assert stored["description"] == "Writes a short summary of a pull request."
    assert stored["author_id"] == tenant.user_id
    assert stored["archived_at"] is None and stored["total_feedback"] == 0
    assert saved.redactions == {}
    # What the API writes, the New* model of the row accepts.
    NewSkill.model_validate(as_values(skill))


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"slug": ""}, {"slug"}),
        ({"slug": "Review Code"}, {"slug"}),
        ({"slug": "review--code"}, {"slug"}),
        ({"slug": "-review"}, {"slug"}),
        ({"slug": "r" * 101}, {"slug"}),
        ({"slug": None}, {"slug"}),
        ({"name": ""}, {"name"}),
        ({"name": "   "}, {"name"}),
        ({"name": "n" * 201}, {"name"}),
        ({"name": 42}, {"name"}),
        ({"description": "d" * 100_001}, {"description"}),
        ({"description": "nul \x00 inside"}, {"description"}),
        ({"author_id": ""}, {"author_id"}),
        ({"slug": "Bad Slug", "name": ""}, {"slug", "name"}),
    ],
)
async def test_a_bad_skill_is_refused_naming_its_fields_and_nothing_is_written(
    owner: asyncpg.Connection, tenant: TenantRows, fields: dict[str, Any], bad: set[str]
) -> None:
    given = {"slug": "good-slug", "name": "Good name", **fields}
    before = await skill_count(owner, tenant)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as raised:
            await catalogue.create_skill(**given)
    assert {field for field, _reason in raised.value.problems} == bad
    assert await skill_count(owner, tenant) == before


@pytest.mark.parametrize(
    ("table", "column"),
    [(table, column) for table in (Skill, User) for column in NON_EMPTY[table]],
)
async def test_what_the_row_rules_refuse_the_api_refuses(
    tenant: TenantRows, table: type[Table], column: str
) -> None:
    """Every column everyskill.rules says must not be empty is refused empty,
    naming it, as the New* models and the database refuse it."""
    new_row = {Skill: NewSkill, User: NewUser}[table]
    valid = {Skill: {"slug": "some-slug", "name": "Some name"},
             User: {"email": "ada@example.com", "name": "Ada"}}[table]
    with pytest.raises(pydantic.ValidationError):
        new_row.model_validate({"tenant_id": tenant.tenant_id, **valid, column: ""})
    create = {Skill: catalogue.create_skill, User: catalogue.create_user}[table]
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as raised:
            await create(**{**valid, column: ""})  # type: ignore[operator]
    assert raised.value.field == column


# Input the New* models once accepted and the API refused, with the fields
# both must name.
REVIEWED: list[tuple[str, dict[str, Any], set[str]]] = [
    ("skill", {"slug": "Bad Slug!", "name": "   "}, {"slug", "name"}),
    ("user", {"email": "not an email", "name": "Ada"}, {"email"}),
    ("skill version", {"content": "   "}, {"content"}),
]


@pytest.mark.parametrize(("kind", "fields", "bad"), REVIEWED, ids=[kind for kind, _, _ in REVIEWED])
async def test_the_models_and_the_api_refuse_alike_with_the_same_reasons(
    owner: asyncpg.Connection, tenant: TenantRows, kind: str, fields: dict[str, Any], bad: set[str]
) -> None:
    """The catalogue's input rules (everyskill.rules.INPUT_RULES) refuse
    them in the API and in the model, with the same reason for each field
    (that the database would store them is tests/test_rows.py's check)."""
    model, row, write = {
        "skill": (NewSkill, {}, lambda: catalogue.create_skill(**fields)),
        "user": (NewUser, {}, lambda: catalogue.create_user(**fields)),
        "skill version": (
            NewSkillVersion,
            {"skill_id": tenant.skill_id, "version": 2},
            lambda: catalogue.publish_version(tenant.skill_id, **fields),
        ),
    }[kind]
    with pytest.raises(pydantic.ValidationError) as by_model:
        model.model_validate({"tenant_id": tenant.tenant_id, **row, **fields})

    async def counts() -> list[int]:
        return [
            await owner.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant.tenant_id)
            for table in ("skills", "users", "skill_versions")
        ]

    before = await counts()
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as by_api:
            await write()
    model_reasons = {str(error["loc"][0]): error["msg"] for error in by_model.value.errors()}
    assert model_reasons == dict(by_api.value.problems)
    assert set(model_reasons) == bad and all(model_reasons.values())
    assert await counts() == before


async def test_a_duplicate_slug_is_a_conflict_naming_the_field(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    before = await skill_count(owner, tenant)
    async with tenant_scope(tenant.tenant_id) as scope:
        with pytest.raises(ConflictError) as raised:
            await catalogue.create_skill(slug="review-code", name="Another review")
        # Nothing was written and the scope goes on.
        assert scope.failed is None
        created = await catalogue.create_skill(slug="review-code-2", name="Another review")
        with pytest.raises(ConflictError) as renamed:
            await catalogue.update_skill(created.row.id, slug="review-code")
        assert scope.failed is None
    assert raised.value.field == renamed.value.field == "slug"
    assert tenant.skill_id in str(raised.value) and tenant.skill_id in str(renamed.value)
    assert await skill_count(owner, tenant) == before + 1
    assert await owner.fetchval("SELECT slug FROM skills WHERE id = $1", created.row.id) == "review-code-2"
    # Slugs are unique per tenant: the other tenant has its own review-code.
    async with tenant_scope(other_tenant.tenant_id):
        taken_elsewhere = await catalogue.create_skill(slug="review-code-2", name="Same slug")
    assert taken_elsewhere.row.tenant_id == other_tenant.tenant_id


async def test_an_archived_skill_keeps_its_slug(tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        await catalogue.archive_skill(tenant.skill_id)
        with pytest.raises(ConflictError, match="archived") as raised:
            await catalogue.create_skill(slug="review-code", name="Fresh start")
        # Renaming the archived skill frees the slug.
        await catalogue.update_skill(tenant.skill_id, slug="review-code-old")
        fresh = await catalogue.create_skill(slug="review-code", name="Fresh start")
    assert raised.value.field == "slug"
    assert fresh.row.slug == "review-code"


async def test_a_skill_is_updated_in_the_fields_given_only(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        created = await catalogue.create_skill(
            slug="triage", name="Triage", description="Sorts issues.", author_id=tenant.user_id
        )
    async with tenant_scope(tenant.tenant_id):
        renamed = await catalogue.update_skill(created.row.id, name="Triage issues")
        cleared = await catalogue.update_skill(created.row.id, description=None, author_id=None)
        blank = await catalogue.update_skill(created.row.id, description="   ")
    assert (renamed.row.slug, renamed.row.name, renamed.row.description, renamed.row.author_id) == (
        "triage", "Triage issues", "Sorts issues.", tenant.user_id,
    )
    assert renamed.row.updated_at > created.row.updated_at
    assert (cleared.row.name, cleared.row.description, cleared.row.author_id) == (
        "Triage issues", None, None,
    )
    assert blank.row.description is None
    stored = await owner.fetchrow("SELECT * FROM skills WHERE id = $1", created.row.id)
    assert stored is not None and dict(stored) == as_values(blank.row)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "input"),
        ({"slug": None}, "slug"),
        ({"name": None}, "name"),
        ({"slug": "Not A Slug"}, "slug"),
        ({"name": " "}, "name"),
        ({"description": 7}, "description"),
    ],
)
async def test_a_bad_update_is_refused_naming_the_field(
    owner: asyncpg.Connection, tenant: TenantRows, fields: dict[str, Any], field: str
) -> None:
    before = await owner.fetchrow("SELECT * FROM skills WHERE id = $1", tenant.skill_id)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as raised:
            await catalogue.update_skill(tenant.skill_id, **fields)
    assert raised.value.field == field
    assert await owner.fetchrow("SELECT * FROM skills WHERE id = $1", tenant.skill_id) == before


async def test_an_author_of_another_tenant_is_not_found(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    before = await skill_count(owner, tenant)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotFoundError) as raised:
            await catalogue.create_skill(slug="stolen", name="Stolen", author_id=other_tenant.user_id)
    assert (raised.value.kind, raised.value.id, raised.value.field) == (
        "user", other_tenant.user_id, "author_id",
    )
    assert await skill_count(owner, tenant) == before


async def test_free_text_is_redacted_before_it_is_stored(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        created = await catalogue.create_skill(
            slug="deploy", name="Deploy", description=f"Clone with {TOKEN} first."
        )
        updated = await catalogue.update_skill(
            created.row.id, description=f"Then push with token {TOKEN}."
        )
        version = await catalogue.publish_version(
            created.row.id,
            content=f"export GITHUB_TOKEN={TOKEN}\ngit push",
            changelog=f"Uses {TOKEN} now.",
        )
        changed = await catalogue.update_version(version.row.id, changelog=f"Fixed {TOKEN}.")
    for saved in (created, updated, changed):
        assert saved.redactions == {"github_token": 1}
    assert version.redactions == {"github_token": 2}
    texts = [
        await owner.fetchval("SELECT description FROM skills WHERE id = $1", created.row.id),
        *await owner.fetchrow(
            "SELECT content, changelog FROM skill_versions WHERE id = $1", version.row.id
        ),
    ]
    assert all(TOKEN not in text and "[REDACTED:github_token]" in text for text in texts)
    assert texts[0] == "Then push with token [REDACTED:github_token]."
    assert texts[1] == "export GITHUB_TOKEN=[REDACTED:github_token]\ngit push"
    assert texts[2] == "Fixed [REDACTED:github_token]."
    assert TOKEN not in repr([created, updated, version, changed])


async def test_skills_are_listed_newest_first_in_pages(tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        made = [
            (await catalogue.create_skill(slug=f"paged-{n}", name=f"Paged {n}")).row.id
            for n in range(3)
        ]
        first = await catalogue.list_skills(limit=2)
        assert first.next_cursor is not None
        rest = await catalogue.list_skills(limit=2, cursor=first.next_cursor)
        with pytest.raises(ValidationError) as bad_cursor:
            await catalogue.list_skills(cursor="not-a-cursor")
        with pytest.raises(ValidationError) as bad_flag:
            await catalogue.list_skills(include_archived="yes")  # type: ignore[arg-type]
    listed = [skill.id for skill in first.items + rest.items]
    assert rest.next_cursor is None
    # Created in one scope, they share created_at: all four are there, once.
    assert sorted(listed) == sorted([*made, tenant.skill_id])
    assert (bad_cursor.value.field, bad_flag.value.field) == ("cursor", "include_archived")


async def test_a_skill_is_found_by_its_slug(tenant: TenantRows, other_tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        made = (await catalogue.create_skill(slug="find-me", name="Find me")).row
        found = await catalogue.list_skills(slug="find-me")
        spaced = await catalogue.list_skills(slug="  Find-Me ")
        missing = await catalogue.list_skills(slug="no-such-skill")
        await catalogue.archive_skill(made.id)
        archived_hidden = await catalogue.list_skills(slug="find-me")
        archived_shown = await catalogue.list_skills(slug="find-me", include_archived=True)
        with pytest.raises(ValidationError) as bad:
            await catalogue.list_skills(slug=7)  # type: ignore[arg-type]
        unstorable: list[tuple[str | None, bool]] = []
        for slug in ("find\x00me", "find-\ud800", "  "):
            with pytest.raises(ValidationError) as refused:
                await catalogue.list_skills(slug=slug)
            unstorable.append((refused.value.field, "NUL" in str(refused.value)))
    async with tenant_scope(other_tenant.tenant_id):
        # The other tenant has a skill "review-code" too: each finds its own.
        theirs = await catalogue.list_skills(slug="review-code")
        not_theirs = await catalogue.list_skills(slug="find-me", include_archived=True)
    assert [skill.id for skill in found.items] == [made.id] and found.next_cursor is None
    assert [skill.id for skill in spaced.items] == [made.id]
    assert missing.items == [] and archived_hidden.items == []
    assert [skill.id for skill in archived_shown.items] == [made.id]
    assert [skill.id for skill in theirs.items] == [other_tenant.skill_id]
    assert not_theirs.items == []
    assert bad.value.field == "slug"
    assert unstorable == [("slug", True), ("slug", True), ("slug", False)]
    # Folded as stored slugs are written, the same function the writes use.
    assert catalogue.folded_slug("  Find-Me ") == "find-me"


# -- archiving -------------------------------------------------------------------


async def test_archiving_keeps_the_history_and_takes_the_skill_out_of_lists(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        await feedback.record_feedback(
            skill_id=tenant.skill_id, feedback_type="bug_report", comment="Misses renames."
        )
        await usage.record_measurement(
            skill_id=tenant.skill_id, model_name="claude-sonnet-4-5",
            input_tokens=500, output_tokens=50,
        )
    history = {
        table: await owner.fetch(f"SELECT * FROM {table} WHERE skill_id = $1 ORDER BY id", tenant.skill_id)
        for table in ("skill_feedback", "token_measurements", "benchmark_runs", "skill_versions")
    }
    aggregates_before = await owner.fetchrow(RECOUNT, tenant.skill_id)

    async with tenant_scope(tenant.tenant_id):
        archived = await catalogue.archive_skill(tenant.skill_id)
        listed = await catalogue.list_skills()
        everything = await catalogue.list_skills(include_archived=True)
        read = await catalogue.get_skill(tenant.skill_id)
        aggregates = await catalogue.skill_aggregates(tenant.skill_id)
        its_feedback = await relations.feedback_of_skill(tenant.skill_id)
        its_measurements = await relations.measurements_of_skill(tenant.skill_id)
        again = await catalogue.archive_skill(tenant.skill_id)

    assert archived.archived_at is not None
    assert again.archived_at == archived.archived_at  # archiving twice changes nothing
    assert tenant.skill_id not in {skill.id for skill in listed.items}
    assert tenant.skill_id in {skill.id for skill in everything.items}
    assert read.archived_at == archived.archived_at
    for table, rows in history.items():
        assert await owner.fetch(
            f"SELECT * FROM {table} WHERE skill_id = $1 ORDER BY id", tenant.skill_id
        ) == rows, table
    assert {row.id for row in its_feedback.items} == {row["id"] for row in history["skill_feedback"]}
    assert {row.id for row in its_measurements.items} == {row["id"] for row in history["token_measurements"]}
    assert aggregates.total_feedback == aggregates_before["total_feedback"] == len(history["skill_feedback"])
    assert aggregates.costed_measurements == len(history["token_measurements"])


async def test_an_archived_skill_still_takes_feedback_and_measurements(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """A hook reporting the use of a skill someone just archived: the report
    is kept (and counted), not lost."""
    async with tenant_scope(tenant.tenant_id):
        await catalogue.archive_skill(tenant.skill_id)
        saved = await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_down")
        measured = await usage.record_measurement(
            skill_id=tenant.skill_id, model_name="claude-sonnet-4-5",
            input_tokens=10, output_tokens=5, source="hook",
        )
    recount = await owner.fetchrow(RECOUNT, tenant.skill_id)
    stored = await owner.fetchrow("SELECT * FROM skills WHERE id = $1", tenant.skill_id)
    assert stored is not None and recount is not None
    assert await owner.fetchval("SELECT count(*) FROM skill_feedback WHERE id = $1", saved.row.id) == 1
    assert await owner.fetchval("SELECT count(*) FROM token_measurements WHERE id = $1", measured.row.id) == 1
    assert stored["total_feedback"] == recount["total_feedback"] == 2
    assert stored["archived_at"] is not None


async def test_unarchiving_puts_the_skill_back(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        await catalogue.archive_skill(tenant.skill_id)
        back = await catalogue.unarchive_skill(tenant.skill_id)
        again = await catalogue.unarchive_skill(tenant.skill_id)
        listed = await catalogue.list_skills()
    assert back.archived_at is None and again.archived_at is None
    assert tenant.skill_id in {skill.id for skill in listed.items}
    assert await owner.fetchval("SELECT archived_at FROM skills WHERE id = $1", tenant.skill_id) is None


async def test_the_application_cannot_delete_a_skill(
    app_connection: asyncpg.Connection, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_connection, tenant.tenant_id) as db:
            await db.execute("DELETE FROM skills WHERE id = $1", tenant.skill_id)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotPermittedError) as refused:
            await Skill.delete().where(Skill.id == tenant.skill_id)
    assert (refused.value.table, refused.value.privilege) == ("skills", "DELETE")
    assert "archived" in str(refused.value)
    assert await owner.fetchval("SELECT count(*) FROM skills WHERE id = $1", tenant.skill_id) == 1
    assert await owner.fetchval(
        "SELECT count(*) FROM skill_feedback WHERE skill_id = $1", tenant.skill_id
    ) == 1
    assert not hasattr(catalogue, "delete_skill")


# -- versions --------------------------------------------------------------------


async def test_versions_are_numbered_in_turn_and_listed_highest_first(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        second = await catalogue.publish_version(
            tenant.skill_id, content="Review the diff; flag renames.", author_id=tenant.user_id
        )
        third = await catalogue.publish_version(
            tenant.skill_id, content="Review the diff; flag renames and moves.",
            changelog="Moves too.",
        )
        first_page = await catalogue.list_versions(tenant.skill_id, limit=2)
        assert first_page.next_cursor is not None
        last_page = await catalogue.list_versions(
            tenant.skill_id, limit=2, cursor=first_page.next_cursor
        )
        read = await catalogue.get_version(third.row.id)
        bad_cursors = []
        for cursor in ("latest", "-1", "0", "99999999999", "２"):
            with pytest.raises(ValidationError) as bad_cursor:
                await catalogue.list_versions(tenant.skill_id, cursor=cursor)
            bad_cursors.append(bad_cursor.value.field)
    assert (second.row.version, third.row.version) == (2, 3)
    assert [v.version for v in first_page.items + last_page.items] == [3, 2, 1]
    assert last_page.next_cursor is None
    assert (read.content, read.changelog, read.skill_id) == (
        "Review the diff; flag renames and moves.", "Moves too.", tenant.skill_id,
    )
    assert second.row.author_id == tenant.user_id and second.row.changelog is None
    assert bad_cursors == ["cursor"] * 5
    stored = await owner.fetchrow("SELECT * FROM skill_versions WHERE id = $1", third.row.id)
    assert stored is not None and dict(stored) == as_values(third.row)
    NewSkillVersion.model_validate(as_values(third.row))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"content": ""}, "content"),
        ({"content": " \n "}, "content"),
        ({"content": None}, "content"),
        ({"content": "c" * 100_001}, "content"),
        ({"content": "ok", "changelog": "\x00"}, "changelog"),
        ({"content": "ok", "author_id": 5}, "author_id"),
    ],
)
async def test_a_bad_version_is_refused_naming_the_field(
    owner: asyncpg.Connection, tenant: TenantRows, fields: dict[str, Any], field: str
) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as raised:
            await catalogue.publish_version(tenant.skill_id, **fields)
    assert raised.value.field == field
    assert await owner.fetchval(
        "SELECT count(*) FROM skill_versions WHERE skill_id = $1", tenant.skill_id
    ) == 1


async def test_an_archived_skill_gets_no_new_version(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id) as scope:
        await catalogue.archive_skill(tenant.skill_id)
        with pytest.raises(InvalidTransitionError, match="unarchive") as raised:
            await catalogue.publish_version(tenant.skill_id, content="Too late.")
        assert scope.failed is None
        await catalogue.unarchive_skill(tenant.skill_id)
        published = await catalogue.publish_version(tenant.skill_id, content="Back again.")
    assert (raised.value.kind, raised.value.current) == ("skill", "archived")
    assert published.row.version == 2
    assert await owner.fetchval(
        "SELECT count(*) FROM skill_versions WHERE skill_id = $1", tenant.skill_id
    ) == 2


async def test_a_versions_changelog_changes_and_its_content_does_not(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        changed = await catalogue.update_version(tenant.version_id, changelog="First release.")
        cleared = await catalogue.update_version(tenant.version_id, changelog="  ")
        with pytest.raises(ValidationError) as raised:
            await catalogue.update_version(tenant.version_id, changelog=3)  # type: ignore[arg-type]
    assert changed.row.changelog == "First release." and cleared.row.changelog is None
    assert changed.row.content == cleared.row.content == "Review the diff."
    assert raised.value.field == "changelog"
    stored = await owner.fetchrow("SELECT * FROM skill_versions WHERE id = $1", tenant.version_id)
    assert stored is not None and dict(stored) == as_values(cleared.row)


# -- users -----------------------------------------------------------------------


async def test_users_are_created_read_updated_and_listed(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        user = (await catalogue.create_user(email="  Grace.Hopper@Navy.MIL ", name=" Grace ")).row
        renamed = (await catalogue.update_user(user.id, name="Grace Hopper")).row
        moved = (await catalogue.update_user(user.id, email="grace@example.org")).row
        read = await catalogue.get_user(user.id)
        listed = await catalogue.list_users()
    # The domain is case-insensitive and lowercased; the local part is kept.
    assert (user.email, user.name, user.tenant_id) == ("Grace.Hopper@navy.mil", "Grace", tenant.tenant_id)
    assert (renamed.email, renamed.name) == ("Grace.Hopper@navy.mil", "Grace Hopper")
    assert (moved.email, moved.name) == ("grace@example.org", "Grace Hopper")
    assert as_values(read) == as_values(moved)
    assert {row.id for row in listed.items} == {user.id, tenant.user_id}
    stored = await owner.fetchrow("SELECT * FROM users WHERE id = $1", user.id)
    assert stored is not None and dict(stored) == as_values(moved)
    NewUser.model_validate(as_values(moved))


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"email": "not-an-email"}, {"email"}),
        ({"email": "two words@example.com"}, {"email"}),
        ({"email": "a@b@example.com"}, {"email"}),
        ({"email": "@example.com"}, {"email"}),
        ({"email": "x" * 250 + "@example.com"}, {"email"}),
        ({"email": None}, {"email"}),
        ({"name": ""}, {"name"}),
        ({"name": "\t"}, {"name"}),
        ({"email": "", "name": ""}, {"email", "name"}),
    ],
)
async def test_a_bad_user_is_refused_naming_its_fields(
    owner: asyncpg.Connection, tenant: TenantRows, fields: dict[str, Any], bad: set[str]
) -> None:
    before = await owner.fetchval("SELECT count(*) FROM users WHERE tenant_id = $1", tenant.tenant_id)
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as raised:
            await catalogue.create_user(**{"email": "ok@example.com", "name": "Ok", **fields})
        with pytest.raises(ValidationError) as raised_on_update:
            await catalogue.update_user(tenant.user_id, **fields)
    assert {field for field, _reason in raised.value.problems} == bad
    assert {field for field, _reason in raised_on_update.value.problems} == bad
    assert await owner.fetchval("SELECT count(*) FROM users WHERE tenant_id = $1", tenant.tenant_id) == before


async def test_a_duplicate_email_is_a_conflict_naming_the_field(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    email = await owner.fetchval("SELECT email FROM users WHERE id = $1", tenant.user_id)
    async with tenant_scope(tenant.tenant_id) as scope:
        with pytest.raises(ConflictError) as on_create:
            await catalogue.create_user(email=email, name="Ada again")
        other = (await catalogue.create_user(email="lin@example.com", name="Lin")).row
        with pytest.raises(ConflictError) as on_update:
            await catalogue.update_user(other.id, email=email)
        assert scope.failed is None
    assert on_create.value.field == on_update.value.field == "email"
    assert tenant.user_id in str(on_create.value) and email not in str(on_create.value)
    assert await owner.fetchval("SELECT email FROM users WHERE id = $1", other.id) == "lin@example.com"
    # Unique within a tenant: another tenant may have the same address.
    async with tenant_scope(other_tenant.tenant_id):
        elsewhere = (await catalogue.create_user(email=email, name="Ada elsewhere")).row
    assert elsewhere.email == email


# -- concurrency -----------------------------------------------------------------


async def hold_then_race(
    owner: asyncpg.Connection,
    tenant: TenantRows,
    first: Callable[[], Awaitable[Any]],
    second: Callable[[], Awaitable[Any]],
    after_second: Callable[[], Awaitable[Any]] | None = None,
) -> tuple[Any, asyncio.Task[Any]]:
    """``first`` runs in a scope that stays open until ``second``, in another
    scope, waits for a lock it holds; then the first scope commits. Returns
    the first result and the second's task (with ``after_second`` run in
    its scope afterwards)."""
    done = asyncio.Event()
    may_commit = asyncio.Event()

    async def one() -> Any:
        async with tenant_scope(tenant.tenant_id):
            result = await first()
            done.set()
            await may_commit.wait()
        return result

    async def two() -> Any:
        await done.wait()
        async with tenant_scope(tenant.tenant_id):
            result = await second()
            if after_second is not None:
                await after_second()
        return result

    task_one = asyncio.create_task(one())
    task_two = asyncio.create_task(two())
    await done.wait()
    await wait_until_blocked(owner)
    may_commit.set()
    return await task_one, task_two


async def test_concurrent_publishers_get_consecutive_versions(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    first, second = await hold_then_race(
        owner, tenant,
        lambda: catalogue.publish_version(tenant.skill_id, content="From the first publisher."),
        lambda: catalogue.publish_version(tenant.skill_id, content="From the second publisher."),
    )
    assert (first.row.version, (await second).row.version) == (2, 3)
    assert [r["version"] for r in await owner.fetch(
        "SELECT version FROM skill_versions WHERE skill_id = $1 ORDER BY version", tenant.skill_id
    )] == [1, 2, 3]


async def test_two_creators_of_one_slug_one_wins_the_other_gets_a_conflict(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """The loser waited for the winner's commit; its scope goes on (nothing
    failed in the database)."""
    won, lost = await hold_then_race(
        owner, tenant,
        lambda: catalogue.create_skill(slug="contested", name="Winner"),
        lambda: catalogue.create_skill(slug="contested", name="Loser"),
    )
    with pytest.raises(ConflictError) as raised:
        await lost
    assert raised.value.field == "slug" and won.row.id in str(raised.value)
    assert await owner.fetchval(
        "SELECT name FROM skills WHERE tenant_id = $1 AND slug = 'contested'", tenant.tenant_id
    ) == "Winner"


async def test_a_rename_racing_a_rename_to_the_same_slug_is_a_conflict(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """Both read the slug as free; the database refuses the second write: a
    ConflictError naming the field, and the second scope has ended."""
    async with tenant_scope(tenant.tenant_id):
        other = (await catalogue.create_skill(slug="to-rename", name="To rename")).row

    async def second() -> ConflictError:
        with pytest.raises(ConflictError) as raised:
            await catalogue.update_skill(other.id, slug="both-want-this")
        with pytest.raises(TenantScopeError):
            await catalogue.get_skill(other.id)
        return raised.value

    _won, lost = await hold_then_race(
        owner, tenant,
        lambda: catalogue.update_skill(tenant.skill_id, slug="both-want-this"),
        second,
    )
    conflict = await lost
    assert conflict.field == "slug"
    assert await owner.fetchval("SELECT slug FROM skills WHERE id = $1", tenant.skill_id) == "both-want-this"
    assert await owner.fetchval("SELECT slug FROM skills WHERE id = $1", other.id) == "to-rename"
    # Once the winner has committed, the read finds it: refused before writing.
    async with tenant_scope(tenant.tenant_id) as scope:
        with pytest.raises(ConflictError) as read_first:
            await catalogue.update_skill(other.id, slug="both-want-this")
        assert scope.failed is None
    assert read_first.value.field == "slug" and tenant.skill_id in str(read_first.value)


@pytest.mark.parametrize(
    ("statement", "row", "field"),
    [
        ("INSERT INTO skills (tenant_id, slug, name)"
         " SELECT tenant_id, slug, name FROM skills WHERE id = $1", "skill_id", "slug"),
        ("INSERT INTO users (tenant_id, email, name)"
         " SELECT tenant_id, email, name FROM users WHERE id = $1", "user_id", "email"),
        ("INSERT INTO skill_versions (tenant_id, skill_id, version, content)"
         " SELECT tenant_id, skill_id, version, content FROM skill_versions WHERE id = $1",
         "version_id", "version"),
    ],
)
async def test_a_duplicate_the_database_finds_names_the_field(
    app_connection: asyncpg.Connection, tenant: TenantRows, statement: str, row: str, field: str
) -> None:
    """As the application role, under row-level security (PostgreSQL leaves
    the key's values out of the error): the typed error still names the field."""
    with pytest.raises(asyncpg.UniqueViolationError) as raised:
        async with tenant_transaction(app_connection, tenant.tenant_id) as db:
            await db.execute(statement, getattr(tenant, row))
    typed = from_database_error(raised.value)
    assert isinstance(typed, ConflictError) and typed.field == field
    assert f"choose another {field}" in str(typed)
