"""The rules a new row must follow to be stored, written once in Python.

PostgreSQL holds the rules of a stored row for every writer (the CHECK
constraints and triggers of the raw-SQL migrations in
``piccolo_migrations/``). This module states the same rules for the Python
code that checks a row before it is written, and the catalogue API's input
rules on top of them: the ``New*`` models of :mod:`everyskill.rows` apply
both, :mod:`everyskill.feedback` applies :data:`FEEDBACK_RULES` to its
input, and :mod:`everyskill.catalogue` applies :data:`INPUT_RULES`.
``tests/test_rows.py`` checks that the models refuse exactly what the
database or the catalogue API refuses.

Contract
--------
The database's rules:

- :data:`NON_EMPTY`: text columns that must not be ``''``. As in the
  database's ``<> ''``, text of spaces is not empty (but see
  :data:`INPUT_RULES`).
- :data:`BOUNDS`: the lowest and highest value of integer and numeric
  columns (``None``: the column type's own limit, :data:`INT4` for
  ``integer``, :data:`INT8` for ``bigint``).
- :data:`SET_BY_DATABASE`: columns whose value PostgreSQL sets itself on a
  new row, whatever was given (a skill's aggregates, a run's life-cycle
  stamps and picks). A new row leaves them at their default; the value is
  why.
- :data:`ROW_RULES`: the other rules of a table, as :class:`Rule` objects:
  rules on one field that read other fields of the row (what each feedback
  type carries, a review time for reviewed feedback), and rules a column
  constraint cannot state (a run is created pending; its models are
  distinct, non-blank names). :data:`FEEDBACK_RULES` is the part of them the
  feedback API checks. :func:`problems` applies rules to a row's values.
- Text that PostgreSQL cannot store (:func:`everyskill.errors.storable`) is
  refused in every text column.
- What no rule of a single row can know is left to the database: that the
  rows a row names exist in its tenant (foreign keys), uniqueness, and that
  a benchmark result's run is running and names the result's model.

The catalogue API's input rules, on top of the database's
(:data:`INPUT_RULES`, by table and column; each a pydantic type that
refuses a value or gives the value to store):

- ``skills.slug`` (:data:`Slug`): surrounding whitespace stripped, then
  lowercase letters and digits in words joined by single hyphens
  (``review-code``), at most :data:`MAX_SLUG_LENGTH` characters. The
  database takes any non-empty text.
- ``skills.name``, ``users.name`` (:data:`Name`): stripped, non-blank, at
  most :data:`MAX_NAME_LENGTH` characters. The database refuses only an
  empty skill name, and takes any user name, even ``''``.
- ``users.email`` (:data:`Email`): stripped, ``local@domain`` with one
  ``@`` and no whitespace, at most :data:`MAX_EMAIL_LENGTH` characters, the
  domain lowercased (it is case-insensitive, RFC 5321; the local part is
  kept as given). A plausibility check, not RFC 5322: quoted local parts
  with spaces are refused, and some addresses no mail server takes
  (``.a@example.com``) pass. The database takes any non-empty text.
- ``skill_versions.content`` (:data:`Content`): not blank, at most
  :data:`MAX_TEXT_LENGTH` characters, kept as given. The database takes
  any text, even ``''``.
- ``skills.description``, ``skill_versions.changelog`` (:data:`FreeText`):
  at most :data:`MAX_TEXT_LENGTH` characters; blank text is none (NULL).
- Whitespace-only text is therefore refused (or, for free text, read as
  none) in these columns, where the database would store it: the stricter
  rule wins, so that a row a ``New*`` model accepts is one the API would
  write too. Elsewhere (tenants, model names, ...) the database's rule
  stands: text of spaces is not empty.
- Every one of them refuses text PostgreSQL cannot store.
- The API has other input rules that are not rules of a row: ids it is
  given are stripped and at most 200 characters; a thumb's sentiment is
  filled in; the version number is computed. The database checks the ids
  (they must name rows of the tenant).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import pydantic
from piccolo.table import Table
from pydantic_core import PydanticCustomError

from everyskill.errors import UNSTORABLE, storable

from tables import (
    BenchmarkResult,
    BenchmarkRun,
    BenchmarkStatus,
    FeedbackStatus,
    FeedbackType,
    ModelPrice,
    Skill,
    SkillFeedback,
    SkillVersion,
    Tenant,
    TokenMeasurement,
    User,
)

__all__ = [
    "BOUNDS",
    "EMAIL_PATTERN",
    "FEEDBACK_RULES",
    "INPUT_RULES",
    "INT4",
    "INT8",
    "MAX_EMAIL_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_SLUG_LENGTH",
    "MAX_TEXT_LENGTH",
    "NON_EMPTY",
    "ONLY_FOR",
    "ROW_RULES",
    "SENTIMENT_OF",
    "SET_BY_DATABASE",
    "SLUG_PATTERN",
    "Bound",
    "Content",
    "Email",
    "FreeText",
    "Name",
    "Rule",
    "Slug",
    "problems",
]

#: The range of PostgreSQL's ``integer`` and ``bigint``.
INT4 = (-(2**31), 2**31 - 1)
INT8 = (-(2**63), 2**63 - 1)

Bound = int | Decimal | None


@dataclass(frozen=True)
class Rule:
    """A rule on ``field`` of a row, which may read other fields (``reads``).

    ``broken`` takes the row's values by column name and returns why the
    row breaks the rule, or None when it does not.
    """

    field: str
    reads: tuple[str, ...]
    broken: Callable[[Mapping[str, Any]], str | None]

    def reason(self, values: Mapping[str, Any]) -> str | None:
        """Why ``values`` break the rule; None when they do not, or when a
        field the rule needs is not among them (it was refused already)."""
        if self.field not in values or any(name not in values for name in self.reads):
            return None
        return self.broken(values)


def problems(rules: Iterable[Rule], values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field, reason)`` for each rule that ``values`` break, in order."""
    found = []
    for rule in rules:
        reason = rule.reason(values)
        if reason is not None:
            found.append((rule.field, reason))
    return found


###############################################################################
# Column rules.

NON_EMPTY: dict[type[Table], tuple[str, ...]] = {
    # An empty tenant id could match an empty app.current_tenant_id.
    Tenant: ("id", "name", "slug"),
    User: ("email",),
    Skill: ("slug", "name"),
    ModelPrice: ("model_provider", "model_name"),
    TokenMeasurement: ("model_name", "model_provider", "source"),
    BenchmarkResult: ("model_name", "model_provider"),
}

_COUNT: tuple[Bound, Bound] = (0, None)
_RATE: tuple[Bound, Bound] = (Decimal(0), None)
_TOKENS = ("input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens")

BOUNDS: dict[type[Table], dict[str, tuple[Bound, Bound]]] = {
    # A tenant's rate limit, in requests per minute (NULL: the default).
    Tenant: {"rate_limit_per_minute": (1, None)},
    SkillVersion: {"version": (1, None)},
    SkillFeedback: {"quality_score": (1, 10)},
    ModelPrice: {
        "input_microcents_per_token": _RATE,
        "output_microcents_per_token": _RATE,
        "cache_read_microcents_per_token": _RATE,
        "cache_write_microcents_per_token": _RATE,
    },
    TokenMeasurement: {
        **{name: _COUNT for name in _TOKENS},
        "estimated_cost_microcents": _COUNT,
        "latency_ms": _COUNT,
    },
    BenchmarkResult: {
        "test_case_index": _COUNT,
        **{name: _COUNT for name in _TOKENS},
        "estimated_cost_microcents": _COUNT,
        "latency_ms": _COUNT,
        "quality_score": (0, 100),
    },
}

_MAINTAINED = "is maintained by PostgreSQL from the skill's feedback and measurements"
_LIFE_CYCLE = "is set by the run's life cycle (start, complete or fail the run)"

SET_BY_DATABASE: dict[type[Table], dict[str, str]] = {
    Skill: {
        name: _MAINTAINED
        for name in (
            "total_feedback",
            "feedback_thumbs_up",
            "feedback_thumbs_down",
            "positive_feedback_pct",
            "costed_measurements",
            "measured_cost_microcents",
            "avg_token_cost_microcents",
        )
    },
    BenchmarkRun: {
        name: _LIFE_CYCLE
        for name in (
            "started_at",
            "completed_at",
            "error_message",
            "best_model",
            "best_quality_score",
            "cheapest_model",
            "cheapest_cost_microcents",
        )
    },
}


###############################################################################
# Feedback: what each type carries.

#: The sentiment a thumb carries.
SENTIMENT_OF = {FeedbackType.thumbs_up.value: 1, FeedbackType.thumbs_down.value: -1}
#: Fields that only one feedback type carries.
ONLY_FOR = {
    "suggested_content": FeedbackType.suggestion.value,
    "suggested_diff": FeedbackType.suggestion.value,
    "example_input": FeedbackType.training_example.value,
    "example_output": FeedbackType.training_example.value,
    "expected_output": FeedbackType.training_example.value,
}


def _has_text(value: object) -> bool:
    """Text is there: not NULL and not '' (the database's coalesce(x, '') <> '')."""
    return value is not None and value != ""


def _thumb_sentiment(values: Mapping[str, Any]) -> str | None:
    kind = values["feedback_type"]
    wanted = SENTIMENT_OF.get(kind)
    given = values["sentiment"]
    if wanted is not None and (0 if given is None else given) != wanted:
        return f"a {kind} has sentiment {wanted}"
    return None


def _only_for(name: str, only: str) -> Rule:
    def broken(values: Mapping[str, Any]) -> str | None:
        kind = values["feedback_type"]
        if values[name] is not None and kind != only:
            return f"only a {only} has {name}, not a {kind}"
        return None

    return Rule(name, ("feedback_type",), broken)


def _suggestion(values: Mapping[str, Any]) -> str | None:
    if values["feedback_type"] == FeedbackType.suggestion.value and not (
        _has_text(values["suggested_content"]) or _has_text(values["suggested_diff"])
    ):
        return "a suggestion needs suggested_content or suggested_diff"
    return None


def _needed_by(name: str, kind: str, reason: str) -> Rule:
    def broken(values: Mapping[str, Any]) -> str | None:
        if values["feedback_type"] == kind and not _has_text(values[name]):
            return reason
        return None

    return Rule(name, ("feedback_type",), broken)


#: What each feedback type carries (the feedback rules migration's checks).
FEEDBACK_RULES: tuple[Rule, ...] = (
    Rule("sentiment", ("feedback_type",), _thumb_sentiment),
    *(_only_for(name, only) for name, only in ONLY_FOR.items()),
    Rule("suggested_content", ("feedback_type", "suggested_diff"), _suggestion),
    _needed_by(
        "example_input",
        FeedbackType.training_example.value,
        "a training_example needs example_input",
    ),
    _needed_by(
        "expected_output",
        FeedbackType.training_example.value,
        "a training_example needs expected_output",
    ),
    _needed_by(
        "comment",
        FeedbackType.bug_report.value,
        "a bug_report needs a comment saying what is wrong",
    ),
)


def _review_time(values: Mapping[str, Any]) -> str | None:
    status = values["status"]
    if status != FeedbackStatus.pending.value and values["reviewed_at"] is None:
        return f"{status} feedback records when it was reviewed: give reviewed_at"
    return None


###############################################################################
# Benchmark runs: created pending, over distinct named models.


def _created_pending(values: Mapping[str, Any]) -> str | None:
    status = values["status"]
    if status != BenchmarkStatus.pending.value:
        return (
            f"a benchmark run is created pending, not {status}: start, complete"
            " or fail it afterwards"
        )
    return None


def _models(values: Mapping[str, Any]) -> str | None:
    models = values["models"]
    if not models:
        return "must name at least one model"
    seen: set[str] = set()
    for index, name in enumerate(models):
        # PostgreSQL's btrim() trims spaces only.
        if name.strip(" ") == "":
            return f"models[{index}] must be a non-blank name"
        if name in seen:
            return f"names each model once; {name!r} is repeated"
        seen.add(name)
    return None


ROW_RULES: dict[type[Table], tuple[Rule, ...]] = {
    SkillFeedback: (
        *FEEDBACK_RULES,
        Rule("reviewed_at", ("status",), _review_time),
    ),
    BenchmarkRun: (
        Rule("status", (), _created_pending),
        Rule("models", (), _models),
    ),
}


###############################################################################
# The catalogue API's input rules, on top of the database's.

#: The longest slug, name, email and free text, in characters.
MAX_SLUG_LENGTH = 100
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
MAX_TEXT_LENGTH = 100_000

SLUG_PATTERN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
EMAIL_PATTERN = re.compile(r"(?P<local>[^@\s]+)@(?P<domain>[^@\s]+)")


def _storable(value: str) -> str:
    if not storable(value):
        raise PydanticCustomError("unstorable_text", UNSTORABLE)
    return value


def _slug(value: str) -> str:
    if len(value) > MAX_SLUG_LENGTH or not SLUG_PATTERN.fullmatch(value):
        raise PydanticCustomError(
            "slug",
            "must be lowercase letters and digits, in words joined by single hyphens"
            f" (like review-code), at most {MAX_SLUG_LENGTH} characters",
        )
    return value


def _non_blank(limit: int) -> Any:
    def check(value: str) -> str:
        if not value.strip() or len(value) > limit:
            raise PydanticCustomError(
                "non_blank", f"must be non-blank text of at most {limit} characters"
            )
        return value

    return pydantic.AfterValidator(check)


def _email(value: str) -> str:
    match = EMAIL_PATTERN.fullmatch(value)
    if match is None or len(value) > MAX_EMAIL_LENGTH:
        raise PydanticCustomError(
            "email",
            "must be an email address like ada@example.com, without spaces, at most"
            f" {MAX_EMAIL_LENGTH} characters",
        )
    # The domain is case-insensitive (RFC 5321); the local part may not be.
    return f"{match['local']}@{match['domain'].lower()}"


def _blank_is_none(value: str) -> str | None:
    return value if value.strip() else None


#: A skill's slug: see the module's contract.
Slug = Annotated[
    str,
    pydantic.StringConstraints(strip_whitespace=True),
    pydantic.AfterValidator(_slug),
]
#: A skill's or a user's name.
Name = Annotated[
    str,
    pydantic.StringConstraints(strip_whitespace=True),
    _non_blank(MAX_NAME_LENGTH),
    pydantic.AfterValidator(_storable),
]
#: A user's email address, its domain lowercased.
Email = Annotated[
    str,
    pydantic.StringConstraints(strip_whitespace=True),
    pydantic.AfterValidator(_email),
    pydantic.AfterValidator(_storable),
]
_Text = Annotated[
    str,
    pydantic.StringConstraints(max_length=MAX_TEXT_LENGTH),
    pydantic.AfterValidator(_storable),
]
#: Free text that may be left out: blank text is none.
FreeText = Annotated[_Text, pydantic.AfterValidator(_blank_is_none)]
#: A version's content: not blank, kept as given.
Content = Annotated[_Text, _non_blank(MAX_TEXT_LENGTH)]

#: The catalogue API's input rules by table and column (the module's contract).
INPUT_RULES: dict[type[Table], dict[str, Any]] = {
    Skill: {"slug": Slug, "name": Name, "description": FreeText},
    SkillVersion: {"content": Content, "changelog": FreeText},
    User: {"email": Email, "name": Name},
}
