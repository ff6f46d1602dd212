"""
The write API under random input, valid and invalid, drawn by Hypothesis and
called in tenant scopes against PostgreSQL, as the application calls it:
feedback (recording, review, implementation), token measurements (one, and
batches mixing good and bad rows) and benchmark runs (creation, life cycle,
results one by one and in batches). Inputs range over wrong types, numbers
out of range, unknown enum values, missing or misplaced fields, padded,
blank and over-long ids and text, ids of no row and of the other tenant's
rows, and text holding secrets, alongside valid values.

For every call:

- the only error that comes out is an EverySkillError, and it is the one the
  contract names for that input and the rows there are; a valid call
  succeeds;
- a refused call writes nothing: it is caught inside its scope, which then
  commits, and every table's row count for both tenants, every feedback
  item's review state, every run's life-cycle state and results, and every
  skill's aggregates are exactly as before. A call that succeeds adds
  exactly its rows (a batch of N adds N) and changes exactly its row;
- afterwards every skill's aggregates equal a recount from the rows
  (``assert_exact`` of the aggregate tests), and so do the counters behind
  them (thumbs up and down, costed measurements and their cost sum);
- no secret given in free text is stored.

Text PostgreSQL cannot store (a NUL character, a lone surrogate) is left out
of the random text above and checked on its own, last: each write refuses it
with a ValidationError, as any other invalid input.
"""

from __future__ import annotations

import reprlib
import types
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pydantic
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from everyskill import benchmarks, feedback, usage
from everyskill.errors import (
    AlreadyReviewedError,
    ConflictError,
    EverySkillError,
    InvalidTransitionError,
    NotFoundError,
    RunNotRunningError,
    ValidationError,
)
from everyskill.tenancy import tenant_scope
from tables import FeedbackSource, FeedbackStatus, FeedbackType
from tests.redaction_corpus import secret_cases
from tests.support import TenantRows
from tests.test_aggregates import assert_exact

# Hypothesis runs every example of a test on the test's tenants (function
# fixtures, made once per test): each example makes its own skills, users
# and seed rows in them, so examples do not depend on one another.
PROPERTIES = settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
STEPS = st.integers(1, 6)

INT4_MAX = 2**31 - 1
TEXT_MAX = 100_000
ERROR_MAX = 10_000
ID_MAX = 200

FEEDBACK_TYPES = tuple(kind.value for kind in FeedbackType)
SOURCES = tuple(source.value for source in FeedbackSource)
SENTIMENT_OF = {"thumbs_up": 1, "thumbs_down": -1}
ONLY_FOR = {
    "suggested_content": "suggestion",
    "suggested_diff": "suggestion",
    "example_input": "training_example",
    "example_output": "training_example",
    "expected_output": "training_example",
}
FEEDBACK_TEXT = ("comment", *ONLY_FOR)

UNPRICED = "no-such-model-anywhere"
# (model, provider) pairs a measurement or a result names.
MODELS = (
    ("claude-sonnet-4-5", "anthropic"),
    ("gpt-4o", "openai"),
    ("claude-haiku-4-5", "anthropic"),
    (UNPRICED, "anthropic"),
)
RUN_MODELS = [name for name, _ in MODELS]
MEASUREMENT_FIELDS = frozenset(usage.MeasurementInput.model_fields)
RESULT_FIELDS = frozenset(benchmarks.ResultInput.model_fields)
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")

# Verdicts on one id or one row, as the contract classifies them.
OK, MISSING, INVALID = "ok", "missing", "invalid"

# ---------------------------------------------------------------------------
# Values

SECRETS = secret_cases(per_kind=2)
FRAGMENTS = sorted({fragment for case in SECRETS for fragment in case.fragments})

# Text PostgreSQL can store; NUL and lone surrogates have their own test.
PLAIN_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
WORDS = st.text("abcdefghij KLMNOP", max_size=12)
SECRET_TEXT = st.builds(
    lambda before, case, after: f"{before}\n{case.text}\n{after}",
    WORDS,
    st.sampled_from(SECRETS),
    WORDS,
)
TEXT = st.one_of(PLAIN_TEXT, SECRET_TEXT)
NON_BLANK = st.one_of(PLAIN_TEXT.filter(str.strip), SECRET_TEXT)
TOO_LONG = "a" * (TEXT_MAX + 1)
NOT_TEXT = (None, "", "   ", TOO_LONG, 12, b"bytes")
NOT_IDS = ("", "   ", None, 42, 4.2, b"id", ["id"], "x" * (ID_MAX + 1))
COUNT = st.one_of(st.integers(0, 100_000), st.sampled_from([0, 1, INT4_MAX]))
NOT_COUNTS = (-1, INT4_MAX + 1, 2**63, 1.5, True, "10")


def values_of(*values: object) -> st.SearchStrategy[object]:
    """One of ``values``, shrinking to the first; unlike sampled_from, its
    repr does not hold them (some are 100,000 characters long)."""
    return st.integers(0, len(values) - 1).map(lambda index: values[index])


def some_id(own: Sequence[str], foreign: Sequence[str]) -> st.SearchStrategy[object]:
    """A value for an id: one of the tenant's, padded, another tenant's, of
    no row, or no id at all."""
    return st.one_of(
        st.sampled_from(own),
        st.sampled_from(own).map(lambda value: f" {value}\t"),
        st.sampled_from(foreign),
        st.uuids().map(str),
        st.sampled_from(NOT_IDS),
    )


def _value(value: object) -> object:
    return getattr(value, "value", value)


def is_count(value: object, most: int = INT4_MAX) -> bool:
    return type(value) is int and 0 <= value <= most


def name_verdict(value: object) -> str:
    """A stripped name or id of at most 200 characters (pydantic's checks)."""
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > ID_MAX:
        return INVALID
    return OK


def id_verdict(value: object, known: Collection[str], *, strips: bool) -> str:
    """OK, MISSING or INVALID for an id argument: the checks of pydantic
    (``strips``: stripped, at most 200 characters) or of ``check_id``."""
    if strips:
        if name_verdict(value) == INVALID:
            return INVALID
        assert isinstance(value, str)
        value = value.strip()
    elif not isinstance(value, str) or not value.strip():
        return INVALID
    return OK if value in known else MISSING


def total_problem(fields: Mapping[str, object]) -> bool:
    """Whether the token counts (all valid) break the rule of total_tokens."""
    given = fields.get("total_tokens")
    counts = [fields.get(name) for name in TOKEN_FIELDS]
    parts = sum(count for count in counts if isinstance(count, int))
    complete = fields.get("input_tokens") is not None and fields.get("output_tokens") is not None
    if given is None:
        return complete and parts > INT4_MAX
    assert isinstance(given, int)
    return (complete and given != parts) or given < parts


def derived_total(fields: Mapping[str, object]) -> object:
    if fields.get("total_tokens") is not None:
        return fields["total_tokens"]
    if fields.get("input_tokens") is None or fields.get("output_tokens") is None:
        return None
    return sum(count for name in TOKEN_FIELDS if isinstance(count := fields.get(name), int))


def has_secret(text: object) -> bool:
    return isinstance(text, str) and any(fragment in text for fragment in FRAGMENTS)


# ---------------------------------------------------------------------------
# The data: what each example works on, and what the database holds.


@dataclass(repr=False)
class World:
    """One example's rows: two skills with a version each and two users of
    the tenant, the feedback and runs on those skills in the order they were
    made, and the other tenant's rows."""

    tenant_id: str
    skills: list[str]
    versions: dict[str, str]
    users: list[str]
    foreign: TenantRows
    feedback: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    @property
    def tenants(self) -> list[str]:
        return [self.tenant_id, self.foreign.tenant_id]

    def __repr__(self) -> str:
        return f"World(skills={self.skills}, users={self.users})"


async def make_world(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> World:
    tag = uuid.uuid4().hex[:10]
    skills: list[str] = []
    versions: dict[str, str] = {}
    for index in range(2):
        skill = await owner.fetchval(
            "INSERT INTO skills (tenant_id, slug, name, author_id) VALUES ($1, $2, $2, $3)"
            " RETURNING id",
            tenant.tenant_id,
            f"prop-{tag}-{index}",
            tenant.user_id,
        )
        versions[skill] = await owner.fetchval(
            "INSERT INTO skill_versions (tenant_id, skill_id, version, content)"
            " VALUES ($1, $2, 1, 'Do it well.') RETURNING id",
            tenant.tenant_id,
            skill,
        )
        skills.append(skill)
    user = await owner.fetchval(
        "INSERT INTO users (tenant_id, email, name) VALUES ($1, $2, 'Bo') RETURNING id",
        tenant.tenant_id,
        f"bo-{tag}@example.com",
    )
    return World(tenant.tenant_id, skills, versions, [tenant.user_id, user], other_tenant)


async def seed_feedback(owner: asyncpg.Connection, world: World) -> None:
    """A pending thumbs down and an accepted suggestion."""
    for kind, sentiment, content, status in [
        ("thumbs_down", -1, None, "pending"),
        ("suggestion", None, "Say it shorter.", "accepted"),
    ]:
        feedback_id = await owner.fetchval(
            "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment,"
            " suggested_content) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            world.tenant_id,
            world.skills[0],
            kind,
            sentiment,
            content,
        )
        if status != "pending":
            await owner.execute(
                "UPDATE skill_feedback SET status = $2 WHERE id = $1", feedback_id, status
            )
        world.feedback.append(feedback_id)


async def seed_runs(owner: asyncpg.Connection, world: World) -> None:
    """A pending run and a running one with a result, of every model."""
    for status in ["pending", "running"]:
        run_id = await owner.fetchval(
            "INSERT INTO benchmark_runs (tenant_id, skill_id, triggered_by, models)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            world.tenant_id,
            world.skills[0],
            world.users[0],
            RUN_MODELS,
        )
        if status != "pending":
            await owner.execute(
                "UPDATE benchmark_runs SET status = $2 WHERE id = $1", run_id, status
            )
            await owner.execute(
                "INSERT INTO benchmark_results (tenant_id, benchmark_run_id, model_name,"
                " model_provider, test_case_index, quality_score)"
                " VALUES ($1, $2, 'gpt-4o', 'openai', 0, 80)",
                world.tenant_id,
                run_id,
            )
        world.runs.append(run_id)


TABLES = (
    "users",
    "skills",
    "skill_versions",
    "skill_feedback",
    "model_prices",
    "token_measurements",
    "benchmark_runs",
    "benchmark_results",
)
COUNTS = " UNION ALL ".join(
    f"SELECT '{table}' AS table_name, tenant_id, count(*) AS n FROM {table}"
    f" WHERE tenant_id = ANY($1::text[]) GROUP BY tenant_id"
    for table in TABLES
)
SKILLS = """
SELECT id, tenant_id, total_feedback, positive_feedback_pct, avg_token_cost_microcents,
       feedback_thumbs_up, feedback_thumbs_down, costed_measurements, measured_cost_microcents
  FROM skills WHERE tenant_id = ANY($1::text[])
"""
USERS = "SELECT id, tenant_id FROM users WHERE tenant_id = ANY($1::text[])"
VERSIONS = "SELECT id, tenant_id, skill_id FROM skill_versions WHERE tenant_id = ANY($1::text[])"
FEEDBACK = """
SELECT id, tenant_id, skill_id, feedback_type, status, reviewed_by, reviewed_at, review_notes
  FROM skill_feedback WHERE tenant_id = ANY($1::text[])
"""
RUNS = """
SELECT id, tenant_id, skill_id, status, models, started_at, completed_at, error_message,
       best_model, best_quality_score, cheapest_model, cheapest_cost_microcents
  FROM benchmark_runs WHERE tenant_id = ANY($1::text[])
"""
RESULTS = """
SELECT benchmark_run_id, model_name, test_case_index
  FROM benchmark_results WHERE tenant_id = ANY($1::text[])
"""


@dataclass(repr=False)
class State:
    """What the database holds for the tenants, read as the owner."""

    counts: dict[tuple[str, str], int]
    skills: dict[str, dict[str, Any]]
    users: dict[str, str]
    versions: dict[str, tuple[str, str]]
    feedback: dict[str, dict[str, Any]]
    runs: dict[str, dict[str, Any]]
    results: set[tuple[str, str, int]]

    def __repr__(self) -> str:
        return f"State({len(self.feedback)} feedback, {len(self.runs)} runs)"

    def skill_ids(self, tenant_id: str) -> set[str]:
        return {id for id, row in self.skills.items() if row["tenant_id"] == tenant_id}

    def user_ids(self, tenant_id: str) -> set[str]:
        return {id for id, tenant in self.users.items() if tenant == tenant_id}


async def read_state(owner: asyncpg.Connection, tenants: list[str]) -> State:
    counts = {(tenant, table): 0 for tenant in tenants for table in TABLES}
    for record in await owner.fetch(COUNTS, tenants):
        counts[(record["tenant_id"], record["table_name"])] = record["n"]
    return State(
        counts=counts,
        skills={r["id"]: dict(r) for r in await owner.fetch(SKILLS, tenants)},
        users={r["id"]: r["tenant_id"] for r in await owner.fetch(USERS, tenants)},
        versions={
            r["id"]: (r["tenant_id"], r["skill_id"]) for r in await owner.fetch(VERSIONS, tenants)
        },
        feedback={r["id"]: dict(r) for r in await owner.fetch(FEEDBACK, tenants)},
        runs={r["id"]: dict(r) for r in await owner.fetch(RUNS, tenants)},
        results={(r[0], r[1], r[2]) for r in await owner.fetch(RESULTS, tenants)},
    )


def differences(before: State, after: State) -> list[str]:
    """What changed between two states, for messages."""
    found = []
    for name in ("counts", "skills", "users", "versions", "feedback", "runs"):
        old, new = getattr(before, name), getattr(after, name)
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                found.append(f"{name}[{key}]: {old.get(key)} -> {new.get(key)}")
    if before.results != after.results:
        found.append(
            f"results: -{before.results - after.results} +{after.results - before.results}"
        )
    return found


def assert_unchanged(before: State, after: State) -> None:
    assert after == before, "a refused call changed: " + "; ".join(differences(before, after))


@dataclass
class Added:
    feedback: list[str]
    runs: list[str]
    results: set[tuple[str, str, int]]


def assert_changes(
    before: State,
    after: State,
    tenant_id: str,
    *,
    added: Mapping[str, int] = {},
    feedback: Collection[str] = (),
    runs: Collection[str] = (),
    skills: Collection[str] = (),
) -> Added:
    """``after`` is ``before`` but for the rows ``added`` (per table, for the
    tenant) and the feedback, runs and skills' aggregates named, which may
    change; returns what was added."""
    expected = dict(before.counts)
    for table, rows in added.items():
        expected[(tenant_id, table)] += rows
    assert after.counts == expected, "; ".join(differences(before, after))
    assert (after.users, after.versions) == (before.users, before.versions)
    assert after.skills.keys() == before.skills.keys()
    for id, row in before.skills.items():
        if id not in skills:
            assert after.skills[id] == row, f"skill {id} changed: {row} -> {after.skills[id]}"
    for name, allowed in (("feedback", feedback), ("runs", runs)):
        old, new = getattr(before, name), getattr(after, name)
        assert old.keys() <= new.keys()
        for id, row in old.items():
            if id not in allowed:
                assert new[id] == row, f"{name} {id} changed: {row} -> {new[id]}"
    assert before.results <= after.results
    return Added(
        feedback=[id for id in after.feedback if id not in before.feedback],
        runs=[id for id in after.runs if id not in before.runs],
        results=after.results - before.results,
    )


# The counters behind the aggregates, recounted; assert_exact covers the
# aggregates themselves.
COUNTERS = """
SELECT s.id, s.feedback_thumbs_up, s.feedback_thumbs_down, s.costed_measurements,
       s.measured_cost_microcents, f.up, f.down, m.costed, m.cost
  FROM skills s
 CROSS JOIN LATERAL (
       SELECT count(*) FILTER (WHERE feedback_type = 'thumbs_up') AS up,
              count(*) FILTER (WHERE feedback_type = 'thumbs_down') AS down
         FROM skill_feedback WHERE skill_id = s.id AND status <> 'dismissed') f
 CROSS JOIN LATERAL (
       SELECT count(estimated_cost_microcents) AS costed,
              coalesce(sum(estimated_cost_microcents), 0) AS cost
         FROM token_measurements WHERE skill_id = s.id) m
 WHERE s.tenant_id = ANY($1::text[])
"""


async def assert_recounted(owner: asyncpg.Connection, world: World) -> None:
    for skill in world.skills:
        await assert_exact(owner, skill)
    for r in await owner.fetch(COUNTERS, world.tenants):
        stored = [r["feedback_thumbs_up"], r["feedback_thumbs_down"]]
        stored += [r["costed_measurements"], r["measured_cost_microcents"]]
        assert stored == [r["up"], r["down"], r["costed"], r["cost"]], f"skill {r['id']}: {r}"


LEAKS = """
SELECT t.id, fragment FROM (
    SELECT id, concat_ws(' ', comment, suggested_content, suggested_diff, example_input,
                         example_output, expected_output, review_notes) AS text
      FROM skill_feedback WHERE id = ANY($1::text[])
    UNION ALL
    SELECT id, error_message FROM benchmark_runs WHERE id = ANY($1::text[])
    UNION ALL
    SELECT id, concat_ws(' ', input_used, output_produced, expected_output, quality_notes,
                         error_message)
      FROM benchmark_results WHERE id = ANY($1::text[])
) t, unnest($2::text[]) AS fragment
 WHERE strpos(t.text, fragment) > 0
"""


async def assert_no_secret_stored(owner: asyncpg.Connection, ids: list[str]) -> None:
    if ids:
        leaks = await owner.fetch(LEAKS, ids, FRAGMENTS)
        assert not leaks, f"secrets stored: {[tuple(leak) for leak in leaks]}"


# ---------------------------------------------------------------------------
# Calls

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 70
_short.maxlist = _short.maxtuple = _short.maxdict = 8

Check = Callable[[asyncpg.Connection, State, State, Any], Awaitable[list[str]]]


class Call:
    """One call of the API with the outcome the contract gives it:
    ``expected`` is the error it raises, or None when it succeeds, and then
    ``check`` holds the changes it made to be exactly those it should and
    returns the ids of the rows it wrote. (Not a dataclass: Hypothesis
    prints a dataclass field by field, and some values are long.)"""

    def __init__(
        self,
        function: Callable[..., Awaitable[Any]],
        kwargs: dict[str, Any],
        expected: type[EverySkillError] | None,
        check: Check,
    ) -> None:
        self.function = function
        self.kwargs = kwargs
        self.expected = expected
        self.check = check

    def __repr__(self) -> str:
        arguments = ", ".join(f"{name}={_short.repr(value)}" for name, value in self.kwargs.items())
        return f"{self.function.__module__}.{self.function.__name__}({arguments})"


async def run_call(owner: asyncpg.Connection, world: World, before: State, call: Call) -> None:
    """Make ``call`` in a scope of the tenant that commits whatever the call
    does, and hold it and the database to the contract."""
    result: Any = None
    refused: EverySkillError | None = None
    async with tenant_scope(world.tenant_id):
        try:
            result = await call.function(**call.kwargs)
        except EverySkillError as error:
            refused = error
        except Exception as error:
            raise AssertionError(
                f"{call!r} raised {type(error).__module__}.{type(error).__name__},"
                f" not an EverySkillError: {error}"
            ) from error
    after = await read_state(owner, world.tenants)
    if currently_in_test_context():
        event(f"{call.function.__name__}: {type(refused).__name__ if refused else 'written'}")
    if call.expected is None:
        assert refused is None, f"{call!r} was refused: {type(refused).__name__}: {refused}"
        await assert_no_secret_stored(owner, await call.check(owner, before, after, result))
    else:
        assert refused is not None, f"{call!r} succeeded; expected {call.expected.__name__}"
        assert type(refused) is call.expected, (
            f"{call!r} raised {type(refused).__name__} ({refused});"
            f" expected {call.expected.__name__}"
        )
        assert_unchanged(before, after)
    await assert_recounted(owner, world)


async def run_steps(
    owner: asyncpg.Connection,
    world: World,
    data: st.DataObject,
    step: Callable[[World, State], st.SearchStrategy[Call]],
) -> None:
    for _ in range(data.draw(STEPS, label="steps")):
        before = await read_state(owner, world.tenants)
        await run_call(owner, world, before, data.draw(step(world, before), label="call"))


def mutated(
    draw: st.DrawFn,
    kwargs: dict[str, Any],
    mutations: Mapping[str, st.SearchStrategy[object]],
    most: int = 2,
) -> dict[str, Any]:
    """``kwargs`` with up to ``most`` of its fields given another value."""
    for name in draw(st.lists(st.sampled_from(sorted(mutations)), max_size=most, unique=True)):
        kwargs[name] = draw(mutations[name])
    return kwargs


def maybe(
    draw: st.DrawFn, kwargs: dict[str, Any], name: str, values: st.SearchStrategy[Any]
) -> None:
    if draw(st.booleans()):
        kwargs[name] = draw(values)


# -- feedback -----------------------------------------------------------------


def feedback_outcome(
    kw: Mapping[str, Any], world: World, state: State
) -> type[EverySkillError] | None:
    """What record_feedback does with ``kw``: the error it raises, or None."""
    kind = _value(kw.get("feedback_type"))
    skill = id_verdict(kw["skill_id"], state.skill_ids(world.tenant_id), strips=True)
    verdicts = [skill]
    if kw.get("user_id") is not None:
        verdicts.append(id_verdict(kw["user_id"], state.user_ids(world.tenant_id), strips=True))
    version = kw.get("skill_version_id")
    if version is not None:
        verdict = name_verdict(version)
        if verdict == OK:
            owner_skill = state.versions.get(version.strip())
            ok = skill == OK and owner_skill == (world.tenant_id, kw["skill_id"].strip())
            verdict = OK if ok else MISSING
        verdicts.append(verdict)
    if kw.get("usage_event_id") is not None:
        verdicts.append(name_verdict(kw["usage_event_id"]))
    sentiment = kw.get("sentiment")
    quality = kw.get("quality_score")
    texts: dict[str, str | None] = {}
    for name in FEEDBACK_TEXT:
        value = kw.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > TEXT_MAX):
            verdicts.append(INVALID)
        texts[name] = value if isinstance(value, str) and value.strip() else None
    if (
        kind not in FEEDBACK_TYPES
        or INVALID in verdicts
        or not (sentiment is None or (type(sentiment) is int and sentiment in (-1, 0, 1)))
        or not (quality is None or (type(quality) is int and 1 <= quality <= 10))
        or _value(kw.get("source", "web")) not in SOURCES
    ):
        return ValidationError
    # What each type carries.
    if kind in SENTIMENT_OF and sentiment not in (None, SENTIMENT_OF[kind]):
        return ValidationError
    if any(texts[name] is not None and kind != only for name, only in ONLY_FOR.items()):
        return ValidationError
    if kind == "suggestion" and texts["suggested_content"] is texts["suggested_diff"] is None:
        return ValidationError
    if kind == "training_example" and None in (texts["example_input"], texts["expected_output"]):
        return ValidationError
    if kind == "bug_report" and texts["comment"] is None:
        return ValidationError
    return NotFoundError if MISSING in verdicts else None


@st.composite
def record_feedback_call(draw: st.DrawFn, world: World, state: State) -> Call:
    kind = draw(st.sampled_from(FEEDBACK_TYPES))
    skill = draw(st.sampled_from(world.skills))
    kw: dict[str, Any] = {
        "skill_id": skill,
        "feedback_type": draw(st.sampled_from([kind, FeedbackType(kind)])),
    }
    if kind in SENTIMENT_OF:
        maybe(draw, kw, "sentiment", st.just(SENTIMENT_OF[kind]))
    else:
        maybe(draw, kw, "sentiment", st.sampled_from([-1, 0, 1]))
    if kind == "suggestion":
        for name in draw(
            st.sampled_from([["suggested_content"], ["suggested_diff"], list(ONLY_FOR)[:2]])
        ):
            kw[name] = draw(NON_BLANK)
    if kind == "training_example":
        kw["example_input"] = draw(NON_BLANK)
        kw["expected_output"] = draw(NON_BLANK)
        maybe(draw, kw, "example_output", TEXT)
    if kind == "bug_report":
        kw["comment"] = draw(NON_BLANK)
    else:
        maybe(draw, kw, "comment", TEXT)
    maybe(draw, kw, "skill_version_id", st.just(world.versions[skill]))
    maybe(draw, kw, "user_id", st.sampled_from(world.users))
    maybe(draw, kw, "usage_event_id", st.uuids().map(str))
    maybe(draw, kw, "quality_score", st.integers(1, 10))
    maybe(draw, kw, "source", st.sampled_from([*SOURCES, *FeedbackSource]))
    foreign = world.foreign
    bad_text = st.one_of(TEXT, values_of(*NOT_TEXT))
    kw = mutated(
        draw,
        kw,
        {
            "feedback_type": st.sampled_from([*FEEDBACK_TYPES, "like", "", "THUMBS_UP", None, 3]),
            "skill_id": some_id(world.skills, [foreign.skill_id]),
            "skill_version_id": st.none()
            | some_id(list(world.versions.values()), [foreign.version_id]),
            "user_id": st.none() | some_id(world.users, [foreign.user_id]),
            "usage_event_id": st.sampled_from(NOT_IDS),
            "sentiment": st.sampled_from([-1, 0, 1, 2, -2, "1", 0.5, None]),
            "quality_score": st.sampled_from([0, 11, -1, INT4_MAX + 1, True, 5.0, "5", None]),
            "source": st.sampled_from(["email", "", "WEB", None, 1, "api"]),
            **{name: bad_text for name in FEEDBACK_TEXT},
        },
    )

    async def check(
        owner: asyncpg.Connection, before: State, after: State, saved: Any
    ) -> list[str]:
        stripped = kw["skill_id"].strip()
        added = assert_changes(
            before, after, world.tenant_id, added={"skill_feedback": 1}, skills={stripped}
        )
        assert added.feedback == [saved.row.id]
        row = after.feedback[saved.row.id]
        kind = _value(kw["feedback_type"])
        assert (row["skill_id"], row["feedback_type"], row["status"]) == (stripped, kind, "pending")
        if any(has_secret(kw.get(name)) for name in FEEDBACK_TEXT):
            assert saved.redactions
        world.feedback.append(saved.row.id)
        return added.feedback

    return Call(feedback.record_feedback, kw, feedback_outcome(kw, world, state), check)


TRANSITIONS = {"accepted": ("pending",), "dismissed": ("pending",), "implemented": ("accepted",)}


@st.composite
def review_call(draw: st.DrawFn, world: World, state: State) -> Call:
    implement = draw(st.booleans())
    own = world.feedback
    kw: dict[str, Any] = {
        "feedback_id": draw(st.sampled_from(own)),
        "reviewer_id": draw(st.sampled_from(world.users)),
    }
    mutations: dict[str, st.SearchStrategy[object]] = {
        "feedback_id": some_id(own, [world.foreign.feedback_id]),
        "reviewer_id": some_id(world.users, [world.foreign.user_id]),
        "notes": st.one_of(TEXT, values_of(None, "", TOO_LONG, 5)),
    }
    if not implement:
        kw["decision"] = draw(
            st.sampled_from(
                ["accepted", "dismissed", FeedbackStatus.accepted, FeedbackStatus.dismissed]
            )
        )
        mutations["decision"] = st.sampled_from(
            ["implemented", "pending", "rejected", None, 1, FeedbackStatus.implemented, "accepted"]
        )
    maybe(draw, kw, "notes", TEXT)
    kw = mutated(draw, kw, mutations)
    wanted = "implemented" if implement else _value(kw["decision"])
    notes = kw.get("notes")

    expected: type[EverySkillError] | None = None
    fid, reviewer = kw["feedback_id"], kw["reviewer_id"]
    row = state.feedback.get(fid) if isinstance(fid, str) else None
    if (
        wanted not in (["implemented"] if implement else ["accepted", "dismissed"])
        or INVALID in (id_verdict(fid, (), strips=False), id_verdict(reviewer, (), strips=False))
        or (notes is not None and (not isinstance(notes, str) or len(notes) > TEXT_MAX))
    ):
        expected = ValidationError
    elif row is None or row["tenant_id"] != world.tenant_id:
        expected = NotFoundError
    elif row["status"] not in TRANSITIONS[wanted]:
        already = (
            row["status"] == "implemented"
            if wanted == "implemented"
            else row["status"] != "pending"
        )
        expected = AlreadyReviewedError if already else InvalidTransitionError
    elif state.users.get(reviewer) != world.tenant_id:
        expected = NotFoundError

    async def check(
        owner: asyncpg.Connection, before: State, after: State, saved: Any
    ) -> list[str]:
        old = before.feedback[fid]
        assert_changes(before, after, world.tenant_id, feedback={fid}, skills={old["skill_id"]})
        new = after.feedback[fid]
        assert (new["status"], new["reviewed_by"]) == (wanted, reviewer)
        assert new["reviewed_at"] is not None
        if not notes:
            assert new["review_notes"] == old["review_notes"]
        elif not has_secret(notes):
            assert new["review_notes"] == notes
        assert saved.row.status == wanted
        return [fid]

    function = feedback.mark_implemented if implement else feedback.review_feedback
    return Call(function, kw, expected, check)


def feedback_step(world: World, state: State) -> st.SearchStrategy[Call]:
    return st.one_of(record_feedback_call(world, state), review_call(world, state))


@PROPERTIES
@given(data=st.data())
async def test_feedback_writes_hold_to_the_contract(
    data: st.DataObject,
    owner: asyncpg.Connection,
    tenant: TenantRows,
    other_tenant: TenantRows,
) -> None:
    """Recording, reviewing and implementing feedback, in random order."""
    world = await make_world(owner, tenant, other_tenant)
    await seed_feedback(owner, world)
    await run_steps(owner, world, data, feedback_step)


# -- token measurements ---------------------------------------------------------


def measurement_verdict(row: object, world: World, state: State) -> str:
    """OK, INVALID, or MISSING (a skill or user not of the tenant) for one
    measurement given as a mapping of its fields."""
    if isinstance(row, usage.MeasurementInput):
        row = row.model_dump(exclude_unset=True)
    if not isinstance(row, Mapping) or not set(row) <= MEASUREMENT_FIELDS:
        return INVALID
    if "skill_id" not in row or "model_name" not in row:
        return INVALID
    for name in ("skill_id", "model_name", "model_provider", "source"):
        if name in row and name_verdict(row[name]) == INVALID:
            return INVALID
    for name in ("user_id", "usage_event_id"):
        if row.get(name) is not None and name_verdict(row[name]) == INVALID:
            return INVALID
    counts = (*TOKEN_FIELDS, "total_tokens", "estimated_cost_microcents", "latency_ms")
    if any(row.get(name) is not None and not is_count(row[name]) for name in counts):
        return INVALID
    if total_problem(row):
        return INVALID
    if row["skill_id"].strip() not in state.skill_ids(world.tenant_id):
        return MISSING
    user = row.get("user_id")
    if user is not None and user.strip() not in state.user_ids(world.tenant_id):
        return MISSING
    return OK


@st.composite
def measurement_fields(draw: st.DrawFn, world: World, *, bad: bool) -> dict[str, Any]:
    model, provider = draw(st.sampled_from(MODELS))
    row: dict[str, Any] = {
        "skill_id": draw(st.sampled_from(world.skills)),
        "model_name": draw(st.sampled_from([model, f" {model} "])),
    }
    if provider != "anthropic" or draw(st.booleans()):
        row["model_provider"] = provider
    for name in ("input_tokens", "output_tokens"):
        if draw(st.integers(0, 3)):
            row[name] = draw(COUNT)
    for name in ("cache_read_tokens", "cache_write_tokens"):
        maybe(draw, row, name, COUNT)
    if draw(st.booleans()) and not total_problem(row):
        total = derived_total(row)
        row["total_tokens"] = (
            total if total is not None else sum(row.get(name) or 0 for name in TOKEN_FIELDS)
        )
    maybe(draw, row, "estimated_cost_microcents", COUNT)
    maybe(draw, row, "latency_ms", st.integers(0, 60_000))
    maybe(draw, row, "user_id", st.sampled_from(world.users))
    maybe(draw, row, "usage_event_id", st.uuids().map(str))
    maybe(draw, row, "source", st.sampled_from(["hook", "sdk", " api "]))
    if not bad:
        return row
    if draw(st.integers(0, 3)) == 0:  # the other tenant's skill or user
        name = draw(st.sampled_from(["skill_id", "user_id"]))
        row[name] = world.foreign.skill_id if name == "skill_id" else world.foreign.user_id
    not_counts = st.sampled_from(NOT_COUNTS)
    return mutated(
        draw,
        row,
        {
            "skill_id": some_id(world.skills, [world.foreign.skill_id]),
            "model_name": st.sampled_from(NOT_IDS),
            "model_provider": st.sampled_from(NOT_IDS),
            "user_id": some_id(world.users, [world.foreign.user_id]),
            "usage_event_id": st.sampled_from(NOT_IDS),
            "source": st.sampled_from(NOT_IDS),
            "total_tokens": st.one_of(st.integers(0, 300_000), not_counts),
            **{
                name: not_counts
                for name in (*TOKEN_FIELDS, "estimated_cost_microcents", "latency_ms")
            },
        },
        most=1,
    )


async def check_measurements(
    owner: asyncpg.Connection, rows: Sequence[Mapping[str, Any]], ids: Sequence[str], warned: bool
) -> None:
    """Each row written as given: stripped names, its total and its cost."""
    records = {
        r["id"]: r
        for r in await owner.fetch(
            "SELECT * FROM token_measurements WHERE id = ANY($1::text[])", list(ids)
        )
    }
    assert len(records) == len(ids) == len(set(ids))
    for row, id in zip(rows, ids):
        record = records[id]
        assert record["skill_id"] == row["skill_id"].strip()
        assert record["model_name"] == row["model_name"].strip()
        assert record["total_tokens"] == derived_total(row)
        cost = row.get("estimated_cost_microcents")
        if cost is not None:
            assert record["estimated_cost_microcents"] == cost
        else:
            if row["model_name"].strip() == UNPRICED or None in (
                row.get("input_tokens"),
                row.get("output_tokens"),
            ):
                assert record["estimated_cost_microcents"] is None
            if record["estimated_cost_microcents"] is None:
                assert warned, f"measurement {id} has no cost and no warning"


@st.composite
def record_measurement_call(draw: st.DrawFn, world: World, state: State) -> Call:
    kw = draw(measurement_fields(world, bad=draw(st.booleans())))
    verdict = measurement_verdict(kw, world, state)

    async def check(
        owner: asyncpg.Connection, before: State, after: State, saved: Any
    ) -> list[str]:
        assert_changes(
            before,
            after,
            world.tenant_id,
            added={"token_measurements": 1},
            skills={kw["skill_id"].strip()},
        )
        await check_measurements(owner, [kw], [saved.row.id], bool(saved.warnings))
        return []

    expected = {OK: None, INVALID: ValidationError, MISSING: NotFoundError}[verdict]
    return Call(usage.record_measurement, kw, expected, check)


@st.composite
def record_measurements_call(draw: st.DrawFn, world: World, state: State) -> Call:
    size = draw(st.integers(1, 5))
    bad_rows = draw(st.lists(st.integers(0, size - 1), max_size=2, unique=True))
    rows = [draw(measurement_fields(world, bad=index in bad_rows)) for index in range(size)]
    given: list[Any] = []
    for index, row in enumerate(rows):
        form = draw(
            st.sampled_from(
                ["dict", "model", "mapping", "other"]
                if index in bad_rows
                else ["dict", "model", "mapping"]
            )
        )
        if form == "model":
            try:
                given.append(usage.MeasurementInput(**row))
            except pydantic.ValidationError:
                given.append(row)
        elif form == "mapping":
            given.append(types.MappingProxyType(row))
        elif form == "other":
            given.append(
                draw(
                    st.sampled_from(
                        [5, "row", None, {**row, "tokens": 5}, {"model_name": "gpt-4o"}]
                    )
                )
            )
        else:
            given.append(row)
    measurements: object = given
    if draw(st.integers(0, 9)) == 0:
        measurements = draw(
            values_of([], "rows", None, 5, {"skill_id": world.skills[0]}, [{}] * 100_001)
        )
    if measurements is given:
        verdicts = [measurement_verdict(row, world, state) for row in given]
        verdict = INVALID if INVALID in verdicts else MISSING if MISSING in verdicts else OK
    else:
        verdict = INVALID

    async def check(
        owner: asyncpg.Connection, before: State, after: State, saved: Any
    ) -> list[str]:
        assert_changes(
            before,
            after,
            world.tenant_id,
            added={"token_measurements": size},
            skills={row["skill_id"].strip() for row in rows},
        )
        await check_measurements(owner, rows, saved.ids, bool(saved.warnings))
        return []

    expected = {OK: None, INVALID: ValidationError, MISSING: NotFoundError}[verdict]
    return Call(usage.record_measurements, {"measurements": measurements}, expected, check)


def measurement_step(world: World, state: State) -> st.SearchStrategy[Call]:
    return st.one_of(record_measurement_call(world, state), record_measurements_call(world, state))


@PROPERTIES
@given(data=st.data())
async def test_measurement_writes_hold_to_the_contract(
    data: st.DataObject,
    owner: asyncpg.Connection,
    tenant: TenantRows,
    other_tenant: TenantRows,
) -> None:
    """Measurements one at a time and in batches mixing good and bad rows."""
    world = await make_world(owner, tenant, other_tenant)
    await run_steps(owner, world, data, measurement_step)


# -- benchmark runs -------------------------------------------------------------

RUN_TRANSITIONS = {
    "running": ("pending",),
    "completed": ("running",),
    "failed": ("pending", "running"),
}
NOT_MODELS: tuple[object, ...] = (
    [],
    "gpt-4o",
    None,
    ["gpt-4o", "gpt-4o"],
    [" gpt-4o", "gpt-4o "],
    [""],
    ["   "],
    [5],
    ["x" * (ID_MAX + 1)],
    [f"model-{index}" for index in range(benchmarks.MAX_MODELS + 1)],
    {"gpt-4o"},
    ("gpt-4o", None),
)


def models_valid(models: object) -> bool:
    if isinstance(models, (str, bytes)) or not isinstance(models, (list, tuple)):
        return False
    if not 1 <= len(models) <= benchmarks.MAX_MODELS:
        return False
    if not all(isinstance(name, str) and name.strip() for name in models):
        return False
    names = [name.strip() for name in models]
    return all(len(name) <= ID_MAX for name in names) and len(set(names)) == len(names)


@st.composite
def create_run_call(draw: st.DrawFn, world: World, state: State) -> Call:
    skill = draw(st.sampled_from(world.skills))
    models = draw(st.lists(st.sampled_from(RUN_MODELS), min_size=1, max_size=4, unique=True))
    if draw(st.booleans()):
        models = [f" {name} " for name in models]
    kw: dict[str, Any] = {
        "skill_id": skill,
        "models": tuple(models) if draw(st.booleans()) else models,
        "triggered_by": draw(st.sampled_from(world.users)),
    }
    maybe(draw, kw, "skill_version_id", st.just(world.versions[skill]))
    foreign = world.foreign
    kw = mutated(
        draw,
        kw,
        {
            "skill_id": some_id(world.skills, [foreign.skill_id]),
            "triggered_by": some_id(world.users, [foreign.user_id]),
            "skill_version_id": st.none()
            | some_id(list(world.versions.values()), [foreign.version_id]),
            "models": values_of(*NOT_MODELS),
        },
    )
    tenant = world.tenant_id
    skill_id, version = kw["skill_id"], kw.get("skill_version_id")
    ids = [
        id_verdict(skill_id, state.skill_ids(tenant), strips=False),
        id_verdict(kw["triggered_by"], state.user_ids(tenant), strips=False),
    ]
    if version is not None:
        ids.append(
            id_verdict(
                version,
                [v for v, at in state.versions.items() if at == (tenant, skill_id)],
                strips=False,
            )
        )
    expected: type[EverySkillError] | None = None
    if INVALID in ids or not models_valid(kw["models"]):
        expected = ValidationError
    elif MISSING in ids:
        expected = NotFoundError

    async def check(owner: asyncpg.Connection, before: State, after: State, saved: Any) -> list[str]:
        run = saved.row
        assert saved.replayed is False
        added = assert_changes(before, after, tenant, added={"benchmark_runs": 1})
        assert added.runs == [run.id]
        row = after.runs[run.id]
        assert (row["skill_id"], row["status"]) == (skill_id, "pending")
        assert row["models"] == [name.strip() for name in kw["models"]]
        assert row["started_at"] is row["completed_at"] is None
        world.runs.append(run.id)
        return [run.id]

    return Call(benchmarks.create_run, kw, expected, check)


@st.composite
def run_step_call(draw: st.DrawFn, world: World, state: State) -> Call:
    wanted = draw(st.sampled_from(sorted(RUN_TRANSITIONS)))
    own = world.runs
    kw: dict[str, Any] = {"run_id": draw(st.sampled_from(own))}
    mutations: dict[str, st.SearchStrategy[object]] = {
        "run_id": some_id(own, [world.foreign.run_id]),
    }
    if wanted == "failed":
        kw["error_message"] = draw(NON_BLANK)
        mutations["error_message"] = values_of("", "   ", None, 5, "e" * (ERROR_MAX + 1))
    kw = mutated(draw, kw, mutations)
    run_id, message = kw["run_id"], kw.get("error_message")
    row = state.runs.get(run_id) if isinstance(run_id, str) else None

    expected: type[EverySkillError] | None = None
    if (
        wanted == "failed"
        and not (isinstance(message, str) and message.strip() and len(message) <= ERROR_MAX)
    ) or id_verdict(run_id, (), strips=False) == INVALID:
        expected = ValidationError
    elif row is None or row["tenant_id"] != world.tenant_id:
        expected = NotFoundError
    elif row["status"] not in RUN_TRANSITIONS[wanted]:
        expected = InvalidTransitionError

    async def check(owner: asyncpg.Connection, before: State, after: State, run: Any) -> list[str]:
        assert_changes(before, after, world.tenant_id, runs={run_id})
        new = after.runs[run_id]
        assert new["status"] == run.status == wanted
        assert new["started_at"] is not None or wanted == "failed"
        assert (new["completed_at"] is None) == (wanted == "running")
        if wanted == "failed":
            assert isinstance(message, str) and new["error_message"]
            assert has_secret(message) or new["error_message"] == message.strip()
        else:
            assert new["error_message"] is None
        if wanted == "completed":
            recorded = {model for run_of, model, _ in after.results if run_of == run_id}
            assert new["best_model"] is None or new["best_model"] in recorded
            assert new["cheapest_model"] is None or new["cheapest_model"] in recorded
            if not recorded:
                assert new["best_model"] is new["cheapest_model"] is None
        return [run_id]

    functions: dict[str, Callable[..., Awaitable[Any]]] = {
        "running": benchmarks.start_run,
        "completed": benchmarks.complete_run,
        "failed": benchmarks.fail_run,
    }
    return Call(functions[wanted], kw, expected, check)


def result_verdict(row: object) -> str:
    """OK or INVALID: the checks of one result before the database."""
    if isinstance(row, benchmarks.ResultInput):
        return INVALID if total_problem(row.model_dump()) else OK
    if not isinstance(row, Mapping) or not set(row) <= RESULT_FIELDS:
        return INVALID
    if any(name_verdict(row.get(name)) == INVALID for name in ("model_name", "model_provider")):
        return INVALID
    if not is_count(row.get("test_case_index")):
        return INVALID
    for name in (
        "input_used",
        "output_produced",
        "expected_output",
        "quality_notes",
        "error_message",
    ):
        most = ERROR_MAX if name == "error_message" else TEXT_MAX
        value = row.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > most):
            return INVALID
    counts = (*TOKEN_FIELDS, "total_tokens", "latency_ms", "estimated_cost_microcents")
    if any(row.get(name) is not None and not is_count(row[name]) for name in counts):
        return INVALID
    if row.get("quality_score") is not None and not is_count(row["quality_score"], 100):
        return INVALID
    if row.get("matches_expected") is not None and type(row["matches_expected"]) is not bool:
        return INVALID
    return INVALID if total_problem(row) else OK


@st.composite
def result_fields(draw: st.DrawFn, key: tuple[str, int], *, bad: bool) -> dict[str, Any]:
    model, test_case = key
    row: dict[str, Any] = {
        "model_name": draw(st.sampled_from([model, f" {model} "])),
        "model_provider": draw(st.sampled_from(["anthropic", "openai"])),
        "test_case_index": test_case,
    }
    for name in ("input_used", "output_produced", "expected_output", "quality_notes"):
        maybe(draw, row, name, TEXT)
    for name in ("input_tokens", "output_tokens"):
        if draw(st.integers(0, 3)):
            row[name] = draw(COUNT)
    maybe(draw, row, "cache_read_tokens", COUNT)
    maybe(draw, row, "latency_ms", st.integers(0, 60_000))
    maybe(draw, row, "estimated_cost_microcents", COUNT)
    maybe(draw, row, "quality_score", st.integers(0, 100))
    maybe(draw, row, "matches_expected", st.booleans())
    if draw(st.integers(0, 4)) == 0:
        row["error_message"] = draw(NON_BLANK)
    if not bad:
        return row
    not_counts = st.sampled_from(NOT_COUNTS)
    bad_text = values_of(TOO_LONG, 7)
    return mutated(
        draw,
        row,
        {
            "model_name": st.sampled_from([*NOT_IDS, "not-a-model-of-the-run"]),
            "model_provider": st.sampled_from(NOT_IDS),
            "test_case_index": st.sampled_from([*NOT_COUNTS, None]),
            "total_tokens": st.one_of(st.integers(0, 300_000), not_counts),
            "input_tokens": not_counts,
            "latency_ms": not_counts,
            "estimated_cost_microcents": not_counts,
            "quality_score": st.sampled_from([101, -1, True, 50.0, "50"]),
            "matches_expected": st.sampled_from([1, "yes", 0]),
            "error_message": values_of("e" * (ERROR_MAX + 1), 5),
            "input_used": bad_text,
            "quality_notes": bad_text,
        },
        most=1,
    )


def results_outcome(
    run_id: object, rows: Sequence[Any], world: World, state: State
) -> type[EverySkillError] | None:
    """What recording ``rows`` (validated already) for ``run_id`` does."""
    run = state.runs.get(run_id) if isinstance(run_id, str) else None
    if run is None or run["tenant_id"] != world.tenant_id:
        return NotFoundError
    if run["status"] != "running":
        return RunNotRunningError
    keys = [result_key(row) for row in rows]
    if any(model not in run["models"] for model, _ in keys):
        return ValidationError
    if any((run_id, *key) in state.results for key in keys):
        return ConflictError
    return None


def result_key(row: Any) -> tuple[str, int]:
    if isinstance(row, benchmarks.ResultInput):
        return row.model_name, row.test_case_index
    return row["model_name"].strip(), row["test_case_index"]


def check_results(run_id: str, rows: Sequence[Any], world: World) -> Check:
    async def check(
        owner: asyncpg.Connection, before: State, after: State, saved: Any
    ) -> list[str]:
        added = assert_changes(
            before, after, world.tenant_id, added={"benchmark_results": len(rows)}
        )
        assert added.results == {(run_id, *result_key(row)) for row in rows}
        ids = [saved.row.id] if hasattr(saved, "row") else list(saved.ids)
        assert len(set(ids)) == len(rows)
        return ids

    return check


def pick_run(draw: st.DrawFn, world: World, state: State) -> str:
    """A run of the example: a running one more often than not."""
    running = [id for id in world.runs if state.runs[id]["status"] == "running"]
    prefer_running: bool = draw(st.booleans())
    return draw(st.sampled_from(running if running and prefer_running else world.runs))


def result_keys(draw: st.DrawFn, run_id: str, state: State, size: int) -> list[tuple[str, int]]:
    """``size`` distinct (model, test case) pairs of the run; now and then
    the first is one the run has a result for already."""
    models = state.runs[run_id]["models"]
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(models), st.integers(0, 3)),
            min_size=size,
            max_size=size,
            unique=True,
        )
    )
    recorded = sorted((model, case) for run, model, case in state.results if run == run_id)
    if recorded and draw(st.integers(0, 2)) == 0:
        keys[0] = draw(st.sampled_from(recorded))
    return keys


@st.composite
def record_result_call(draw: st.DrawFn, world: World, state: State) -> Call:
    run_id: object = pick_run(draw, world, state)
    assert isinstance(run_id, str)
    (key,) = result_keys(draw, run_id, state, 1)
    fields = draw(result_fields(key, bad=draw(st.booleans())))
    if draw(st.integers(0, 5)) == 0:
        run_id = draw(some_id(world.runs, [world.foreign.run_id]))
    expected: type[EverySkillError] | None
    if id_verdict(run_id, (), strips=False) == INVALID or result_verdict(fields) == INVALID:
        expected = ValidationError
    else:
        expected = results_outcome(run_id, [fields], world, state)
    check = check_results(str(run_id), [fields], world)
    return Call(benchmarks.record_result, {"run_id": run_id, **fields}, expected, check)


@st.composite
def record_results_call(draw: st.DrawFn, world: World, state: State) -> Call:
    run_id: object = pick_run(draw, world, state)
    assert isinstance(run_id, str)
    size = draw(st.integers(1, 4))
    keys = result_keys(draw, run_id, state, size)
    if size > 1 and draw(st.integers(0, 5)) == 0:
        keys[-1] = keys[0]  # one (model, test case) twice in the batch
    bad_rows = draw(st.lists(st.integers(0, size - 1), max_size=1))
    rows: list[Any] = []
    for index, key in enumerate(keys):
        row = draw(result_fields(key, bad=index in bad_rows))
        forms = ["dict", "model", "other"] if index in bad_rows else ["dict", "model"]
        form = draw(st.sampled_from(forms))
        if form == "model":
            try:
                rows.append(benchmarks.ResultInput(**row))
                continue
            except pydantic.ValidationError:
                pass
        if form == "other":
            row = draw(st.sampled_from([5, None, "result", {**row, "score": 5}]))
        rows.append(row)
    if draw(st.integers(0, 5)) == 0:
        run_id = draw(some_id(world.runs, [world.foreign.run_id]))
    results: object = rows
    if draw(st.integers(0, 9)) == 0:
        results = draw(st.sampled_from([[], "results", None, {"model_name": "gpt-4o"}]))

    expected: type[EverySkillError] | None
    verdicts = [result_verdict(row) for row in rows]
    keys = [result_key(row) for row, verdict in zip(rows, verdicts) if verdict == OK]
    if (
        id_verdict(run_id, (), strips=False) == INVALID
        or results is not rows
        or INVALID in verdicts
        or len(set(keys)) != len(keys)
    ):
        expected = ValidationError
    else:
        expected = results_outcome(run_id, rows, world, state)
    check = check_results(str(run_id), rows, world)
    return Call(benchmarks.record_results, {"run_id": run_id, "results": results}, expected, check)


def benchmark_step(world: World, state: State) -> st.SearchStrategy[Call]:
    return st.one_of(
        create_run_call(world, state),
        run_step_call(world, state),
        record_result_call(world, state),
        record_results_call(world, state),
    )


@PROPERTIES
@given(data=st.data())
async def test_benchmark_writes_hold_to_the_contract(
    data: st.DataObject,
    owner: asyncpg.Connection,
    tenant: TenantRows,
    other_tenant: TenantRows,
) -> None:
    """Runs created, started, completed and failed, and their results
    recorded one by one and in batches, in random order."""
    world = await make_world(owner, tenant, other_tenant)
    await seed_runs(owner, world)
    await run_steps(owner, world, data, benchmark_step)


# -- text PostgreSQL cannot store -------------------------------------------------

UNSTORABLE = {"NUL": "a\x00b", "lone surrogate": "x\ud800y"}


# Where each write takes text: the call with ``bad`` there, the rest valid.
UNSTORABLE_CALLS: dict[
    str, Callable[[World, str], tuple[Callable[..., Awaitable[Any]], dict[str, Any]]]
] = {
    "feedback comment": lambda w, bad: (
        feedback.record_feedback,
        {"skill_id": w.skills[0], "feedback_type": "bug_report", "comment": bad},
    ),
    "feedback skill_id": lambda w, bad: (
        feedback.record_feedback,
        {"skill_id": bad, "feedback_type": "thumbs_up"},
    ),
    "review notes": lambda w, bad: (
        feedback.review_feedback,
        {
            "feedback_id": w.feedback[0],
            "reviewer_id": w.users[0],
            "decision": "accepted",
            "notes": bad,
        },
    ),
    "review feedback_id": lambda w, bad: (
        feedback.review_feedback,
        {"feedback_id": bad, "reviewer_id": w.users[0], "decision": "accepted"},
    ),
    "measurement model_name": lambda w, bad: (
        usage.record_measurement,
        {"skill_id": w.skills[0], "model_name": bad},
    ),
    "measurement batch source": lambda w, bad: (
        usage.record_measurements,
        {"measurements": [{"skill_id": w.skills[0], "model_name": "gpt-4o", "source": bad}]},
    ),
    "run models": lambda w, bad: (
        benchmarks.create_run,
        {"skill_id": w.skills[0], "models": [bad], "triggered_by": w.users[0]},
    ),
    "run skill_id": lambda w, bad: (
        benchmarks.create_run,
        {"skill_id": bad, "models": ["gpt-4o"], "triggered_by": w.users[0]},
    ),
    "start run_id": lambda w, bad: (benchmarks.start_run, {"run_id": bad}),
    "fail error_message": lambda w, bad: (
        benchmarks.fail_run,
        {"run_id": w.runs[0], "error_message": bad},
    ),
    "result input_used": lambda w, bad: (
        benchmarks.record_result,
        {
            "run_id": w.runs[1],
            "model_name": "gpt-4o",
            "model_provider": "openai",
            "test_case_index": 1,
            "input_used": bad,
        },
    ),
}


@pytest.mark.parametrize("kind", sorted(UNSTORABLE))
@pytest.mark.parametrize("where", sorted(UNSTORABLE_CALLS))
async def test_text_postgresql_cannot_store_is_refused_as_invalid(
    where: str,
    kind: str,
    owner: asyncpg.Connection,
    tenant: TenantRows,
    other_tenant: TenantRows,
) -> None:
    """A NUL character or a lone surrogate, in any text or id of any write,
    is refused with a ValidationError and writes nothing."""
    world = await make_world(owner, tenant, other_tenant)
    await seed_feedback(owner, world)
    await seed_runs(owner, world)
    function, kwargs = UNSTORABLE_CALLS[where](world, UNSTORABLE[kind])

    async def check(
        owner: asyncpg.Connection, before: State, after: State, saved: Any
    ) -> list[str]:
        raise AssertionError("unreachable: the call is expected to be refused")

    before = await read_state(owner, world.tenants)
    await run_call(owner, world, before, Call(function, kwargs, ValidationError, check))
