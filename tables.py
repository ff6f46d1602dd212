"""
The EverySkill schema: one ``Table`` per concept, in dependency order.

The catalogue (``tenants``, ``users``, ``skills``, ``skill_versions``) carries
the four tables of the feedback / measurement / benchmark plan
(``skill_feedback``, ``token_measurements``, ``benchmark_runs``,
``benchmark_results``) and the three aggregate columns on ``skills``, and
``model_prices``: a tenant's own (negotiated) price of a model. ``api_keys``
(the HTTP API's keys, hashed) is staff-only: in :data:`STAFF_TABLES`, not in
:data:`TABLES`, the tenants' data.

Piccolo creates the tables and the single-column foreign keys declared here.
What Piccolo cannot express is added by the raw-SQL migrations that follow the
table migration in ``piccolo_migrations/``, and is part of the schema all the
same:

- every ``id`` defaults to ``gen_random_uuid()::text`` in the database, and
  every ``created_at`` is ``TIMESTAMPTZ(3) NOT NULL DEFAULT now()``;
- CHECK constraints enforce the domain values of the enums below, score
  ranges and non-negative tokens, costs and latencies;
- composite foreign keys ``(tenant_id, x_id) -> parent (tenant_id, id)`` make it
  impossible for a row to point at another tenant's row;
- row-level security on every table, the application role and its grants
  (see ``everyskill.tenancy``).

Money is counted in microcents: 1 microcent = 1e-6 cent = 1e-8 USD, so a
price of $3 per million tokens is 300 microcents per token. The seed types
cost columns as 32-bit ``integer``: one row holds at most 2,147,483,647
microcents (about $21.47).
"""

from __future__ import annotations

import uuid
from enum import Enum, IntEnum

from piccolo.columns import (
    Array,
    BigInt,
    Boolean,
    Bytea,
    ForeignKey,
    Integer,
    Numeric,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.base import OnDelete, OnUpdate
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.columns.readable import Readable
from piccolo.table import Table

###############################################################################
# Domain values. The CHECK constraints in the migrations list the same values;
# tests/test_schema.py keeps the two in step.


class FeedbackType(str, Enum):
    """What a piece of feedback is; decides which other columns it needs."""

    thumbs_up = "thumbs_up"
    thumbs_down = "thumbs_down"
    suggestion = "suggestion"
    training_example = "training_example"
    bug_report = "bug_report"


class Sentiment(IntEnum):
    """Sentiment of a piece of feedback."""

    negative = -1
    neutral = 0
    positive = 1


class FeedbackStatus(str, Enum):
    """Where a piece of feedback stands in the review workflow."""

    pending = "pending"
    accepted = "accepted"
    dismissed = "dismissed"
    implemented = "implemented"


class FeedbackSource(str, Enum):
    """Where a piece of feedback came from."""

    web = "web"
    mcp = "mcp"
    hook = "hook"
    api = "api"


class BenchmarkStatus(str, Enum):
    """The life cycle of a benchmark run."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"


###############################################################################
# Column factories for the columns every table shares.


def new_id() -> str:
    """A fresh primary key: a random UUID as text.

    Used by Piccolo for rows it inserts; rows inserted any other way get
    ``gen_random_uuid()::text`` from the column's database default.
    """
    return str(uuid.uuid4())


def _id() -> Text:
    return Text(
        primary_key=True,
        default=new_id,
        help_text="Random UUID, as text.",
    )


def _tenant() -> ForeignKey[Tenant]:
    return ForeignKey(
        references=Tenant,
        null=False,
        required=True,
        on_delete=OnDelete.no_action,
        on_update=OnUpdate.no_action,
        index=True,
        help_text="The tenant that owns this row; row-level security keys on it.",
    )


def _created_at() -> Timestamptz:
    return Timestamptz(
        default=TimestamptzNow(),
        help_text="When the row was created (millisecond precision).",
    )


def _user(*, null: bool, help_text: str, index: bool = False) -> ForeignKey[User]:
    return ForeignKey(
        references=User,
        null=null,
        required=not null,
        on_delete=OnDelete.no_action,
        on_update=OnUpdate.no_action,
        index=index,
        help_text=help_text,
    )


def _nullable_int(help_text: str) -> Integer:
    return Integer(null=True, default=None, help_text=help_text)


def _nullable_text(help_text: str) -> Text:
    return Text(null=True, default=None, help_text=help_text)


def _rate(*, help_text: str, required: bool = False) -> Numeric:
    # Microcents per token: 6 decimal places hold $0.000001 per million tokens.
    return Numeric(
        digits=(14, 6),
        null=not required,
        required=required,
        default=None,
        help_text=help_text,
    )


###############################################################################
# The catalogue.


class Tenant(Table, tablename="tenants"):
    """
    An organisation using EverySkill. Every other row belongs to one tenant,
    and row-level security keeps tenants apart.
    """

    id = _id()
    name = Text(required=True, help_text="Display name of the organisation.")
    slug = Text(required=True, unique=True, help_text="Short unique name, used in URLs.")
    rate_limit_per_minute = _nullable_int(
        "Requests per minute all of this tenant's API keys together may make;"
        " NULL: the default limit (see everyskill.rate_limits)."
    )
    created_at = _created_at()

    @classmethod
    def get_readable(cls) -> Readable:
        return Readable(template="%s", columns=[cls.name])


class User(Table, tablename="users"):
    """
    A person of one tenant: author of skills, giver and reviewer of feedback,
    trigger of benchmark runs. ``email`` is unique within a tenant.
    """

    id = _id()
    tenant_id = _tenant()
    email = Text(required=True, help_text="Email address, unique within the tenant.")
    name = Text(required=True, help_text="Display name.")
    created_at = _created_at()

    @classmethod
    def get_readable(cls) -> Readable:
        return Readable(template="%s", columns=[cls.email])


class Skill(Table, tablename="skills"):
    """
    A reusable instruction set for an AI assistant. Besides its catalogue
    entry it carries denormalised aggregates that PostgreSQL keeps exact:
    ``total_feedback``, ``positive_feedback_pct`` and
    ``avg_token_cost_microcents``, and the counters they are computed from.
    Triggers on ``skill_feedback`` and ``token_measurements`` maintain all of
    them; a direct write to them is ignored.
    """

    id = _id()
    tenant_id = _tenant()
    slug = Text(required=True, help_text="Short name, unique within the tenant.")
    name = Text(required=True, help_text="Display name.")
    description = _nullable_text("What the skill does.")
    author_id = _user(null=True, help_text="The user who wrote the skill.")
    average_rating = _nullable_int(
        "Average star rating; NULL until the skill is rated."
    )
    total_feedback = Integer(
        default=0,
        help_text="Number of feedback items of every type on this skill, dismissed ones aside.",
    )
    positive_feedback_pct = _nullable_int(
        "round(100 * thumbs up / (thumbs up + thumbs down)); NULL with no thumbs."
    )
    avg_token_cost_microcents = _nullable_int(
        "Rounded mean cost of the skill's measured uses, in microcents "
        "(1e-8 USD); NULL with no costed measurement."
    )
    # The counters the aggregates above are computed from, maintained by the
    # same triggers, so that a write costs the same however many rows the
    # skill already has.
    feedback_thumbs_up = Integer(
        default=0, help_text="Thumbs-up feedback on this skill, dismissed ones aside (maintained)."
    )
    feedback_thumbs_down = Integer(
        default=0, help_text="Thumbs-down feedback on this skill, dismissed ones aside (maintained)."
    )
    costed_measurements = BigInt(
        default=0,
        help_text="Token measurements of this skill with a cost (maintained).",
    )
    measured_cost_microcents = BigInt(
        default=0,
        help_text="Sum of those measurements' costs, in microcents (maintained).",
    )
    created_at = _created_at()
    updated_at = Timestamptz(
        default=TimestamptzNow(),
        help_text="When the catalogue entry (not its aggregates) last changed.",
    )
    archived_at = Timestamptz(
        null=True,
        default=None,
        help_text="When the tenant archived the skill (NULL while in use): left out"
        " of lists by default; its feedback, usage and runs are kept.",
    )

    @classmethod
    def get_readable(cls) -> Readable:
        return Readable(template="%s", columns=[cls.name])


class SkillVersion(Table, tablename="skill_versions"):
    """
    One published version of a skill's content. ``version`` counts from 1
    and is unique per skill.
    """

    id = _id()
    tenant_id = _tenant()
    skill_id = ForeignKey(
        references=Skill,
        null=False,
        required=True,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.no_action,
        index=True,
        help_text="The skill this is a version of.",
    )
    version = Integer(required=True, help_text="Version number, from 1, unique per skill.")
    content = Text(required=True, help_text="The skill's instructions at this version.")
    changelog = _nullable_text("What changed since the previous version.")
    author_id = _user(null=True, help_text="Who published this version.")
    created_at = _created_at()

    @classmethod
    def get_readable(cls) -> Readable:
        return Readable(template="%s", columns=[cls.version])


class ApiKey(Table, tablename="api_keys"):
    """
    A tenant's key to the HTTP API (``Authorization: Bearer esk_...``; see
    ``everyskill.api_keys``). Only the SHA-256 hash of a key is stored: the
    key itself is shown once, when it is created. A tenant may hold many
    active keys, so that one can be rotated without downtime. Staff only: the
    application's roles have no privilege on this table, and a request's key
    is resolved by the ``api_key_resolve`` function.
    """

    id = _id()
    tenant_id = _tenant()
    name = Text(required=True, help_text="What the key is for, e.g. ci-benchmarks.")
    key_prefix = Text(
        required=True,
        unique=True,
        help_text="The first 8 characters after esk_: not secret, names the key to staff.",
    )
    # secret: Piccolo's CRUD (the admin) never reads it; not "required",
    # which Piccolo Admin cannot combine with secret (NOT NULL all the same).
    key_hash = Bytea(
        unique=True,
        secret=True,
        help_text="SHA-256 of the whole key; the key itself is never stored.",
    )
    scopes = Array(
        required=True,
        base_column=Text(),
        help_text="feedback:write, measurements:write, benchmarks:write, catalogue:write, read.",
    )
    rate_limit_per_minute = _nullable_int(
        "Requests per minute this key may make; NULL: the default limit."
    )
    expires_at = Timestamptz(
        null=True, default=None, help_text="When the key stops working; NULL: never."
    )
    last_used_at = Timestamptz(
        null=True,
        default=None,
        help_text="When the key was last used (stamped at most once a minute).",
    )
    revoked_at = Timestamptz(
        null=True, default=None, help_text="When the key was revoked; NULL: not revoked."
    )
    created_at = _created_at()

    @classmethod
    def get_readable(cls) -> Readable:
        return Readable(template="%s (esk_%s)", columns=[cls.name, cls.key_prefix])


###############################################################################
# Feedback, measurements and benchmarks (the seed's four tables).


class SkillFeedback(Table, tablename="skill_feedback"):
    """
    Feedback on a skill: a thumbs up or down, a suggestion (content or diff),
    a training example (input, output, expected output) or a bug report,
    reviewed by a user of the same tenant (``reviewed_by``) or by platform
    staff in the admin (``reviewed_by_admin``). Dismissed feedback no longer
    counts in the skill's aggregates.
    """

    id = _id()
    tenant_id = _tenant()
    skill_id = ForeignKey(
        references=Skill,
        null=False,
        required=True,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.no_action,
        index=True,
        help_text="The skill the feedback is about.",
    )
    skill_version_id = ForeignKey(
        references=SkillVersion,
        null=True,
        on_delete=OnDelete.no_action,
        on_update=OnUpdate.no_action,
        help_text="The version the feedback is about, when known.",
    )
    user_id = _user(
        null=True,
        index=True,
        help_text="Who gave the feedback; NULL for anonymous (MCP) feedback.",
    )
    usage_event_id = _nullable_text(
        "The usage event this feedback follows (no foreign key: usage events "
        "live elsewhere)."
    )
    feedback_type = Text(
        required=True,
        choices=FeedbackType,
        index=True,
        help_text="thumbs_up, thumbs_down, suggestion, training_example or bug_report.",
    )
    sentiment = Integer(
        null=True,
        default=None,
        choices=Sentiment,
        help_text="-1, 0 or 1.",
    )
    comment = _nullable_text("Free-text comment.")
    suggested_content = _nullable_text("Suggested replacement content.")
    suggested_diff = _nullable_text("Suggested change, as a diff.")
    example_input = _nullable_text("Training example: the input.")
    example_output = _nullable_text("Training example: the output produced.")
    expected_output = _nullable_text("Training example: the output wanted.")
    quality_score = _nullable_int("Quality from 1 to 10.")
    status = Text(
        default=FeedbackStatus.pending.value,
        choices=FeedbackStatus,
        index=True,
        help_text="pending, accepted, dismissed or implemented.",
    )
    reviewed_by = _user(
        null=True, help_text="The tenant's user who reviewed it (through the query API)."
    )
    reviewed_by_admin = Varchar(
        length=100,
        null=True,
        default=None,
        help_text="The admin login (platform staff) who reviewed it in the admin.",
    )
    reviewed_at = Timestamptz(
        null=True, default=None, help_text="When it was reviewed."
    )
    review_notes = _nullable_text("The reviewer's notes.")
    source = Text(
        default=FeedbackSource.web.value,
        choices=FeedbackSource,
        help_text="web, mcp, hook or api.",
    )
    created_at = _created_at()


class ModelPrice(Table, tablename="model_prices"):
    """
    A tenant's own price for a model (a negotiated rate). It wins over the
    maintained price table (PyPI ``genai-prices``) when the tenant's token
    measurements and benchmark results are costed. Rates are in microcents
    per token: $3 per million tokens is 300. Cache rates are optional; cache
    tokens without their own rate are charged at the input rate.
    """

    id = _id()
    tenant_id = _tenant()
    model_provider = Text(required=True, help_text="Model vendor, e.g. anthropic.")
    model_name = Text(
        required=True,
        help_text="Model identifier, exactly as measurements name it.",
    )
    input_microcents_per_token = _rate(
        required=True,
        help_text="Price of an uncached input token, in microcents ($3/MTok = 300).",
    )
    output_microcents_per_token = _rate(
        required=True, help_text="Price of an output token, in microcents."
    )
    cache_read_microcents_per_token = _rate(
        help_text="Price of a token read from the prompt cache; NULL: the input rate."
    )
    cache_write_microcents_per_token = _rate(
        help_text="Price of a token written to the prompt cache; NULL: the input rate."
    )
    note = _nullable_text("Where the rate comes from (contract, date).")
    created_at = _created_at()
    updated_at = Timestamptz(
        default=TimestamptzNow(), help_text="When the price last changed."
    )

    @classmethod
    def get_readable(cls) -> Readable:
        return Readable(template="%s/%s", columns=[cls.model_provider, cls.model_name])


class TokenMeasurement(Table, tablename="token_measurements"):
    """
    Tokens, model, cost and latency of one use of a skill. Costs are in
    microcents (1e-8 USD).

    Token counts follow Anthropic's usage report: ``input_tokens`` are the
    input tokens that neither came from nor went to the prompt cache; tokens
    read from the cache and written to it are counted apart, each priced at
    its own rate. ``total_tokens`` is every input token (uncached, cache read,
    cache write) plus the output tokens.
    """

    id = _id()
    tenant_id = _tenant()
    skill_id = ForeignKey(
        references=Skill,
        null=False,
        required=True,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.no_action,
        index=True,
        help_text="The skill that was used.",
    )
    usage_event_id = _nullable_text(
        "The usage event measured (no foreign key: usage events live elsewhere)."
    )
    user_id = _user(null=True, help_text="Who used the skill.")
    input_tokens = _nullable_int(
        "Input tokens, not counting cache reads and writes (as Anthropic reports them)."
    )
    output_tokens = _nullable_int("Output (completion) tokens.")
    total_tokens = _nullable_int(
        "Input (uncached, cache read and cache write) plus output tokens."
    )
    cache_read_tokens = _nullable_int("Input tokens read from the prompt cache.")
    cache_write_tokens = _nullable_int("Input tokens written to the prompt cache.")
    model_name = Text(required=True, index=True, help_text="Model identifier, e.g. claude-sonnet-4-5.")
    model_provider = Text(default="anthropic", help_text="Model vendor.")
    estimated_cost_microcents = _nullable_int(
        "Estimated cost in microcents (1e-8 USD); NULL when unknown."
    )
    latency_ms = _nullable_int("Latency in milliseconds.")
    source = Text(default="hook", help_text="What recorded the measurement.")
    created_at = Timestamptz(
        default=TimestamptzNow(),
        index=True,
        help_text="When the row was created (millisecond precision).",
    )


class BenchmarkRun(Table, tablename="benchmark_runs"):
    """
    One skill run against several models over test cases. On completion it
    names the best model (highest quality) and the cheapest.
    """

    id = _id()
    tenant_id = _tenant()
    skill_id = ForeignKey(
        references=Skill,
        null=False,
        required=True,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.no_action,
        index=True,
        help_text="The skill benchmarked.",
    )
    skill_version_id = ForeignKey(
        references=SkillVersion,
        null=True,
        on_delete=OnDelete.no_action,
        on_update=OnUpdate.no_action,
        help_text="The version benchmarked, when pinned.",
    )
    triggered_by = _user(null=False, help_text="Who started the run.")
    status = Text(
        default=BenchmarkStatus.pending.value,
        choices=BenchmarkStatus,
        index=True,
        help_text="pending, running, completed or failed.",
    )
    models = Array(required=True, base_column=Text(), help_text="The models compared.")
    best_model = _nullable_text("Model with the highest average quality.")
    best_quality_score = _nullable_int("Its rounded average quality (0-100).")
    cheapest_model = _nullable_text("Model with the lowest average cost.")
    cheapest_cost_microcents = _nullable_int(
        "Its rounded average cost, in microcents (1e-8 USD)."
    )
    started_at = Timestamptz(null=True, default=None, help_text="When it started.")
    completed_at = Timestamptz(
        null=True, default=None, help_text="When it completed or failed."
    )
    error_message = _nullable_text("Why the run failed; NULL unless it failed.")
    created_at = _created_at()

    @classmethod
    def get_readable(cls) -> Readable:
        return Readable(
            template="%s, %s run of %s",
            columns=[cls.skill_id.name, cls.status, cls.created_at],
        )


class BenchmarkResult(Table, tablename="benchmark_results"):
    """
    The result of one model on one test case of a benchmark run.
    """

    id = _id()
    tenant_id = _tenant()
    benchmark_run_id = ForeignKey(
        references=BenchmarkRun,
        null=False,
        required=True,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.no_action,
        index=True,
        help_text="The run this result belongs to.",
    )
    model_name = Text(required=True, index=True, help_text="Model identifier.")
    model_provider = Text(required=True, help_text="Model vendor.")
    test_case_index = Integer(required=True, help_text="Position of the test case, from 0.")
    input_used = _nullable_text("The input given to the model.")
    output_produced = _nullable_text("What the model produced.")
    expected_output = _nullable_text("What it should have produced.")
    input_tokens = _nullable_int("Input tokens, not counting cache reads and writes.")
    output_tokens = _nullable_int("Output tokens.")
    total_tokens = _nullable_int(
        "Input (uncached, cache read and cache write) plus output tokens."
    )
    cache_read_tokens = _nullable_int("Input tokens read from the prompt cache.")
    cache_write_tokens = _nullable_int("Input tokens written to the prompt cache.")
    latency_ms = _nullable_int("Latency in milliseconds.")
    estimated_cost_microcents = _nullable_int(
        "Estimated cost in microcents (1e-8 USD)."
    )
    quality_score = _nullable_int("Quality from 0 to 100.")
    quality_notes = _nullable_text("How the quality was judged.")
    matches_expected = Boolean(
        null=True, default=None, help_text="Whether the output matched."
    )
    error_message = _nullable_text("The error, when the call failed.")
    created_at = _created_at()


#: Every table of the tenants' data, parents before children.
TABLES: tuple[type[Table], ...] = (
    Tenant,
    User,
    Skill,
    SkillVersion,
    SkillFeedback,
    ModelPrice,
    TokenMeasurement,
    BenchmarkRun,
    BenchmarkResult,
)

#: Tables only staff reach (the owner): the application's roles hold no
#: privilege on them, and the query API has no row type for them.
STAFF_TABLES: tuple[type[Table], ...] = (ApiKey,)
