"""``everyskill-mcp``: an MCP server through which an assistant gives feedback on skills.

Built with the official MCP SDK (PyPI ``mcp``, its ``MCPServer``). It calls
only the HTTP API (``/v1`` of ``EVERYSKILL_API_URL``) with its configured
key (:mod:`everyskill.client_config`); it never connects to the database.

Contract
--------
Tools (their arguments are typed and described in their input schemas):

- ``submit_feedback(skill, feedback_type, ...)`` records one feedback item on
  the skill whose catalogue slug is ``skill``, through ``POST /v1/feedback``
  with ``skill_slug``, ``source="mcp"``, the configured user (``user_id``;
  anonymous when none is configured) and a fresh client ``id`` (a UUID 4),
  so that sending the item again is a replay, never a second item. What each
  type needs is checked before anything is sent (the query API's rules,
  :mod:`everyskill.feedback`): ``thumbs_up`` and ``thumbs_down`` (the
  sentiment follows the type), ``suggestion`` (``suggested_content`` or
  ``suggested_diff``), ``training_example`` (``example_input`` and
  ``expected_output``, ``example_output`` optional), ``bug_report``
  (``comment``); suggestion fields belong to suggestions only, example fields
  to training examples only. Optional for every type: ``comment``,
  ``quality_score`` (1-10), ``usage_event_id`` (the usage event the
  feedback follows: an id of the client's, not checked). What the API
  refuses whatever its state is refused before anything is sent or kept
  (:func:`check_sendable`): text PostgreSQL cannot store (a NUL character,
  an unpaired surrogate: :func:`everyskill.errors.storable`, the project's
  one check), a blank ``skill`` or ``usage_event_id``. It answers what
  was stored: the id, the type, the review status and the secrets the API
  redacted. Needs a key with ``feedback:write``.
- ``skill_feedback_summary(skill)``: the skill's aggregates as PostgreSQL
  keeps them (feedback count, thumbs, positive share), its uses and their
  average cost in dollars (``unpriced`` while no use has a known price), and
  its latest accepted suggestions, implemented ones included (an
  implemented suggestion was accepted first; each says its ``status``): up
  to :data:`SUGGESTIONS_SHOWN`, newest first. Needs ``read``.
- ``list_pending_feedback(skill=None, feedback_type=None, limit=20,
  cursor=None)``: feedback waiting for review, newest first, with
  ``next_cursor`` to pass back for the next page. Long texts are cut at
  :data:`TEXT_SHOWN` characters. Needs ``read``.

Errors are MCP tool errors (a result with ``isError``) whose text says what
to fix; nothing raised by a call ends the server or the session:

- a bad argument (a wrong type, an unknown ``feedback_type``, a type's
  field missing) names the argument;
- the API's 422 lists the fields (as the tool's arguments) and messages;
  401: the key is not valid; 403: the scope the key lacks, and that staff
  create keys in the admin; 404: no skill of that name (or the configured
  user is not the tenant's);
- the API unreachable, or answering 429 (with the ``Retry-After`` seconds)
  or a 5xx: ``submit_feedback`` keeps the item in the spool of its
  configuration (:meth:`~everyskill.spool.Spool.for_client`: only ever sent
  to the same API with the same key; route ``/feedback``) and answers that
  it is kept and will be sent by the next call (not an error: calling again
  would record the feedback twice); the reading tools say the API is
  unavailable.

Every tool call first delivers the spool's feedback items
(:meth:`~everyskill.spool.Spool.deliver` limited to ``/feedback``: other
clients' items, such as the hook's measurements, are theirs to send), with
``lock_wait=0``: while another call (the server has one spool object, so
calls at the same time see each other) or another process is delivering,
it sends nothing of the spool and does not wait. Each result (``earlier_items_refused``, and the
text of a receipt or of a tool error) lists the kept items that this
delivery met and the API refused for good, with the API's reason: a kept
item whose ``user_id`` (the configured user) is not the tenant's, say.
They are not sent again; the spool's ``refused.jsonl`` keeps them. So an
item kept during an outage is stored later, or reported refused, never
dropped without a word.

Transports: ``everyskill-mcp`` (or ``python -m everyskill.mcp_server``)
serves over stdio, the default; ``everyskill-mcp --http [--host 127.0.0.1]
[--port 8765] [--allowed-host NAME ...]`` serves streamable HTTP at the SDK's
path, ``/mcp``. Over HTTP there is no authentication of its own: anyone who
can reach the port acts with the configured key (its tenant and scopes). So
it listens on the loopback address unless told otherwise, and the SDK's
DNS-rebinding protection stays on (the ``Host`` and ``Origin`` headers must
name the loopback address, or the ``--host`` and ``--allowed-host`` names).
A missing or malformed setting (:class:`~everyskill.client_config.ConfigError`)
is a message on stderr and exit status 2 at start; a setting the API
refuses (a key it does not know, a user not of the tenant) is known only at
a tool call, whose error says so. Logs go to stderr: stdout
is the stdio transport's channel.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import decimal
import ipaddress
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from everyskill import client_config
from everyskill.api_client import ApiClient, ApiError, ApiProblem, Delivery
from everyskill.client_config import ClientConfig, ConfigError
from everyskill.errors import UNSTORABLE, storable
from everyskill.spool import Spool

__all__ = [
    "DEFAULT_PORT",
    "FEEDBACK_TYPES",
    "SUGGESTIONS_SHOWN",
    "TEXT_SHOWN",
    "build_server",
    "check_feedback_fields",
    "check_sendable",
    "main",
]

logger = logging.getLogger("everyskill.mcp")

#: The port of ``--http`` when ``--port`` is not given.
DEFAULT_PORT = 8765
#: The latest accepted suggestions a summary shows.
SUGGESTIONS_SHOWN = 5
#: The characters of one text field a pending item shows.
TEXT_SHOWN = 2_000
#: The feedback route, in the spool and the API.
FEEDBACK_PATH = "/feedback"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_MICROCENTS_PER_DOLLAR = decimal.Decimal(100_000_000)

FeedbackType = Literal["thumbs_up", "thumbs_down", "suggestion", "training_example", "bug_report"]
#: The five feedback types (``tables.FeedbackType``'s values).
FEEDBACK_TYPES: tuple[str, ...] = get_args(FeedbackType)

# What each type needs (every group: at least one of its fields), and the
# fields that belong to one type only: the query API's rules
# (everyskill.feedback), checked here so that an item the API would refuse
# is neither sent nor kept in the spool.
_NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "suggestion": (("suggested_content", "suggested_diff"),),
    "training_example": (("example_input",), ("expected_output",)),
    "bug_report": (("comment",),),
}
_ONLY_FOR = {
    "suggested_content": "suggestion",
    "suggested_diff": "suggestion",
    "example_input": "training_example",
    "example_output": "training_example",
    "expected_output": "training_example",
}
_TYPE_NAMES = {
    "thumbs_up": "a thumbs up",
    "thumbs_down": "a thumbs down",
    "suggestion": "a suggestion",
    "training_example": "a training example",
    "bug_report": "a bug report",
}
# Arguments the API strips of surrounding whitespace before it checks them.
_STRIPPED = frozenset({"skill", "usage_event_id"})
# The API's names of fields that are not the tools' argument names.
_ARGUMENT_OF = {"skill_slug": "skill", "skill_id": "skill", "slug": "skill"}

Skill = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="The skill's name as the EverySkill catalogue knows it (its slug),"
        " e.g. 'review-code'.",
    ),
]
Text = Annotated[str | None, Field(max_length=100_000)]


# -- results ------------------------------------------------------------------------


class RefusedItem(BaseModel):
    """A feedback item kept by an earlier call that the API then refused for
    good: it is not sent again (the spool's ``refused.jsonl`` keeps it)."""

    id: str | None = Field(description="The id the item was kept with.")
    skill: str | None
    feedback_type: str | None
    reason: str = Field(description="The field the API refused and why.")


_REFUSED_DESCRIPTION = (
    "Feedback items kept by earlier calls (the API being unavailable then) that the API"
    " refused when this call sent them: they are not stored and will not be sent again."
)


class FeedbackReceipt(BaseModel):
    """What became of one submitted feedback item."""

    outcome: Literal["stored", "kept"] = Field(
        description="stored: the API has it; kept: the API could not be reached, the item"
        " waits on this machine and is sent by the next call (do not submit it again)."
    )
    id: str = Field(description="The feedback item's id (chosen by this server).")
    skill: str
    feedback_type: str
    review_status: str | None = Field(
        description="The item's review status (pending until reviewed); null while kept."
    )
    user_id: str | None = Field(description="The user it is recorded for; null: anonymous.")
    redactions: dict[str, int] = Field(
        description="Secrets replaced by markers before the text was stored, by kind."
    )
    earlier_items_sent: int = Field(description="Items kept by earlier calls, sent by this one.")
    earlier_items_refused: list[RefusedItem] = Field(description=_REFUSED_DESCRIPTION)
    message: str


class AcceptedSuggestion(BaseModel):
    id: str
    status: Literal["accepted", "implemented"] = Field(
        description="accepted by a reviewer; implemented: accepted, and since made in the skill."
    )
    created_at: str
    suggested_content: str | None
    suggested_diff: str | None
    comment: str | None
    quality_score: int | None


class SkillSummary(BaseModel):
    """A skill's feedback and cost, as the catalogue keeps them."""

    skill: str
    name: str
    skill_id: str
    archived: bool
    total_feedback: int = Field(description="Feedback items of every type, dismissed ones aside.")
    thumbs_up: int
    thumbs_down: int
    positive_feedback_pct: int | None = Field(
        description="Thumbs up as a share of all thumbs, in percent; null with no thumbs."
    )
    positive_share: str
    uses: int = Field(description="Measured uses of the skill.")
    priced_uses: int = Field(description="Measured uses with a known price.")
    unpriced_uses: int
    average_cost_per_use: str = Field(
        description="Mean cost of the priced uses in US dollars, or 'unpriced'."
    )
    latest_accepted_suggestions: list[AcceptedSuggestion] = Field(
        description="Suggestions a reviewer accepted, the implemented ones included, newest"
        f" first (at most {SUGGESTIONS_SHOWN})."
    )
    earlier_items_refused: list[RefusedItem] = Field(description=_REFUSED_DESCRIPTION)


class PendingItem(BaseModel):
    id: str
    skill: str
    feedback_type: str
    created_at: str
    source: str
    user_id: str | None
    sentiment: int | None
    quality_score: int | None
    comment: str | None
    suggested_content: str | None
    suggested_diff: str | None
    example_input: str | None
    example_output: str | None
    expected_output: str | None


class PendingPage(BaseModel):
    """One page of feedback waiting for review, newest first."""

    items: list[PendingItem]
    next_cursor: str | None = Field(
        description="Pass it as cursor for the next page; null on the last page."
    )
    earlier_items_refused: list[RefusedItem] = Field(description=_REFUSED_DESCRIPTION)


# -- errors -------------------------------------------------------------------------


def _argument(field: str) -> str:
    name = field.rsplit(".", 1)[-1]
    return _ARGUMENT_OF.get(name, name)


_KEY_ADVICE = (
    "Staff create API keys in the EverySkill admin (Forms, API access, Create API key)"
    " or with `piccolo everyskill create_api_key`; put the key in EVERYSKILL_API_KEY"
    " (or api_key in the configuration file) and restart this server."
)


def _unavailable(error: ApiError) -> str:
    if isinstance(error, ApiProblem) and error.status == 429:
        wait = f" for {error.retry_after:g} seconds" if error.retry_after is not None else ""
        return f"The EverySkill API refused the call: the key's rate limit is used up{wait}."
    if isinstance(error, ApiProblem):
        return f"The EverySkill API is unavailable ({error.status} {error.title}). {error.detail}".strip()
    return f"The EverySkill API cannot be reached ({error})."


def _explain(error: ApiError, skill: str | None) -> str:
    """The text of the tool error for a failed call: what to fix."""
    if not isinstance(error, ApiProblem) or error.retryable:
        return _unavailable(error) + " Try again later."
    if error.status == 401:
        return (
            "The configured API key is not valid (unknown, revoked or expired). " + _KEY_ADVICE
        )
    if error.status == 403:
        scope = error.scope or "?"
        return (
            f"The configured API key lacks the scope '{scope}', which this tool needs."
            f" Give this server a key with '{scope}'. " + _KEY_ADVICE
        )
    fields = [(_argument(str(e.get("field", ""))), str(e.get("message", ""))) for e in error.errors]
    if error.status == 404:
        named = fields[0][0] if fields else "skill"
        if named == "skill":
            return (
                f"No skill named '{skill}' in this tenant's catalogue: pass the skill's"
                " slug, its name in the catalogue (e.g. review-code)."
            )
        if named == "user_id":
            return (
                "The configured user (EVERYSKILL_USER_ID, or user_id in the configuration"
                " file) is not a user of this tenant: set it to one, or leave it out to"
                " record feedback anonymously."
            )
        return f"{named}: no such row in this tenant ({fields[0][1]})."
    if fields:
        listed = "; ".join(f"{name}: {message}" for name, message in fields)
        return f"The API refused the input ({error.status} {error.title}): {listed}."
    return f"The API refused the call ({error.status} {error.title}): {error.detail}"


def check_feedback_fields(feedback_type: str, given: Mapping[str, str | None]) -> None:
    """ToolError naming each argument ``feedback_type`` lacks or does not take
    (``given``: the text arguments by name); the query API's rules."""
    problems: list[str] = []
    present = {name for name, value in given.items() if value is not None and value.strip()}
    for group in _NEEDS.get(feedback_type, ()):
        if not present.intersection(group):
            needed = " or ".join(group)
            problems.append(f"{needed}: {_TYPE_NAMES[feedback_type]} needs it")
    for name in sorted(present):
        owner = _ONLY_FOR.get(name)
        if owner is not None and owner != feedback_type:
            problems.append(
                f"{name}: belongs to {_TYPE_NAMES[owner]} only, not to {_TYPE_NAMES[feedback_type]}"
            )
    if problems:
        raise ToolError("Invalid arguments: " + "; ".join(problems) + ".")


def check_sendable(given: Mapping[str, str | None]) -> None:
    """ToolError naming each argument of ``given`` (text arguments by name)
    the API would refuse whatever its state: text PostgreSQL cannot store
    (:func:`everyskill.errors.storable`), and a ``skill`` or
    ``usage_event_id`` that is blank (the API strips them). Checked before an
    item is sent or kept, so that no item is kept that the API then refuses."""
    problems: list[str] = []
    for name, value in given.items():
        if value is None:
            continue
        if not storable(value):
            problems.append(f"{name}: {UNSTORABLE}")
        elif name in _STRIPPED and not value.strip():
            problems.append(f"{name}: must not be blank")
    if problems:
        raise ToolError("Invalid arguments: " + "; ".join(problems) + ".")


def _refused(delivery: Delivery) -> list[RefusedItem]:
    """The kept items ``delivery`` met refused for good."""
    return [
        RefusedItem(
            id=_text_or_none(item.get("id")),
            skill=_text_or_none(item.get("skill_slug")),
            feedback_type=_text_or_none(item.get("feedback_type")),
            reason=reason,
        )
        for item, reason in delivery.refused
    ]


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _refusal_note(refused: Sequence[RefusedItem]) -> str:
    """What a result says of the earlier items the API refused (``""``: none)."""
    if not refused:
        return ""
    listed = "; ".join(f"{item.id} ({item.reason})" for item in refused)
    return (
        f" {len(refused)} feedback item(s) kept by earlier calls were refused by the API when"
        f" this call sent them, and will not be sent again: {listed}."
    )


def _failure(message: str, delivery: Delivery) -> ToolError:
    """The tool error of ``message``, telling of the refusals ``delivery`` met."""
    return ToolError(message + _refusal_note(_refused(delivery)))


# -- formatting ---------------------------------------------------------------------


def _dollars(microcents: int | None) -> str:
    """Microcents (1e-8 USD) as dollars, ``$0.012345``; ``unpriced`` for None."""
    if microcents is None:
        return "unpriced"
    value = (decimal.Decimal(microcents) / _MICROCENTS_PER_DOLLAR).quantize(
        decimal.Decimal("0.000001"), rounding=decimal.ROUND_HALF_UP
    )
    return f"${value:,}"


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= TEXT_SHOWN:
        return text
    return f"{text[:TEXT_SHOWN]}… [{len(text) - TEXT_SHOWN} more characters]"


# -- the server ---------------------------------------------------------------------


@dataclasses.dataclass
class _Calls:
    """What each tool call shares: the configuration and the spool."""

    config: ClientConfig
    spool: Spool

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[tuple[ApiClient, Delivery]]:
        """A client of the API, after the spool's feedback was delivered, and
        what became of it."""
        async with ApiClient(
            self.config.api_url, self.config.api_key, timeout=self.config.timeout
        ) as client:
            yield client, await self.deliver(client)

    async def deliver(self, client: ApiClient) -> Delivery:
        try:
            # lock_wait=0: never block the event loop on the spool's lock;
            # while another call delivers, this one sends nothing of it.
            delivery = await self.spool.deliver(client, paths=(FEEDBACK_PATH,), lock_wait=0)
        except Exception:  # the spool is best effort: the call itself goes on
            logger.exception("delivering the spool failed")
            return Delivery()
        for item, reason in delivery.refused:
            logger.warning("kept feedback %s refused by the API: %s", item.get("id"), reason)
        if delivery.unsent:
            waits = logger.info if delivery.error is None or delivery.error.retryable else logger.warning
            waits("%d kept feedback item(s) wait: %s", len(delivery.unsent), delivery.error)
        if delivery.stored:
            logger.info("sent %d kept feedback item(s)", len(delivery.stored))
        return delivery

    async def skill_row(self, client: ApiClient, skill: str, delivery: Delivery) -> dict[str, Any]:
        page = await client.get("/skills", slug=skill, include_archived=True, limit=1)
        if not page["items"]:
            raise _failure(_explain(ApiProblem(404, {"title": "Not found"}), skill), delivery)
        row: dict[str, Any] = page["items"][0]
        return row


def build_server(config: ClientConfig) -> MCPServer[Any]:
    """The MCP server of ``config``: its three tools; see the module's contract."""
    # One spool object per server: concurrent calls deliver it once.
    calls = _Calls(config, Spool.for_client(config.state_dir, config.api_url, config.api_key))
    for other in calls.spool.directory.parent.iterdir():
        if other != calls.spool.directory and other.is_dir() and Spool(other).pending(
            paths=(FEEDBACK_PATH,)
        ):
            logger.warning(
                "%s holds feedback kept for another API address or key; it is sent only with"
                " that configuration",
                other,
            )
    server: MCPServer[Any] = MCPServer(
        "everyskill",
        title="EverySkill feedback",
        instructions=(
            "EverySkill is a catalogue of skills (reusable instructions for an assistant)."
            " When the user says what worked or did not in a skill, suggests a change to it,"
            " gives an example of the output it should produce, or reports a bug in it, record"
            " it with submit_feedback. skill_feedback_summary tells how a skill is rated and"
            " which suggestions were accepted; list_pending_feedback lists feedback a reviewer"
            " has still to look at."
        ),
        log_level="INFO",
    )

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
    async def submit_feedback(
        skill: Skill,
        feedback_type: Annotated[
            FeedbackType,
            Field(
                description="thumbs_up or thumbs_down (the skill helped or not), suggestion"
                " (a change to the skill: give suggested_content or suggested_diff),"
                " training_example (give example_input and expected_output), bug_report"
                " (give comment)."
            ),
        ],
        comment: Annotated[
            Text, Field(description="What the user said; required for a bug_report.")
        ] = None,
        suggested_content: Annotated[
            Text, Field(description="For a suggestion: the skill's text as it should read.")
        ] = None,
        suggested_diff: Annotated[
            Text, Field(description="For a suggestion: the change, as a unified diff.")
        ] = None,
        example_input: Annotated[
            Text, Field(description="For a training_example: the input given to the skill.")
        ] = None,
        example_output: Annotated[
            Text, Field(description="For a training_example: the output it gave (optional).")
        ] = None,
        expected_output: Annotated[
            Text, Field(description="For a training_example: the output it should have given.")
        ] = None,
        quality_score: Annotated[
            int | None, Field(ge=1, le=10, description="How good the skill's result was, 1 to 10.")
        ] = None,
        usage_event_id: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=200,
                description="The usage event this feedback follows, if known: the id its"
                " token usage was recorded with.",
            ),
        ] = None,
    ) -> FeedbackReceipt:
        """Record feedback on an EverySkill skill: a thumbs up or down, a suggested change,
        a training example or a bug report. Secrets in the text are redacted before they
        are stored. Call it once per piece of feedback: an item the API cannot take now
        (unreachable, rate-limited, failing) is kept on this machine and sent by a later
        call; if the API then refuses it, that later call's result says so."""
        texts = {
            "comment": comment,
            "suggested_content": suggested_content,
            "suggested_diff": suggested_diff,
            "example_input": example_input,
            "example_output": example_output,
            "expected_output": expected_output,
        }
        check_sendable({"skill": skill, **texts, "usage_event_id": usage_event_id})
        check_feedback_fields(feedback_type, texts)
        item: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "skill_slug": skill.strip(),
            "feedback_type": feedback_type,
            "source": "mcp",
            **{name: value for name, value in texts.items() if value is not None},
        }
        for name, value in (
            ("user_id", config.user_id),
            ("quality_score", quality_score),
            ("usage_event_id", usage_event_id),
        ):
            if value is not None:
                item[name] = value
        async with calls.client() as (client, delivery):
            earlier = len(delivery.stored)
            refused = _refused(delivery)
            try:
                if delivery.error is not None and delivery.error.retryable:
                    # The API failed the spool's delivery a moment ago: keep
                    # this item with the others rather than wait for it again.
                    raise delivery.error
                answer = await client.post(FEEDBACK_PATH, item)
            except ApiError as error:
                if not error.retryable:
                    raise _failure(_explain(error, skill), delivery) from None
                calls.spool.add(FEEDBACK_PATH, [item])
                logger.info("feedback %s kept in the spool: %s", item["id"], error)
                return FeedbackReceipt(
                    outcome="kept",
                    id=item["id"],
                    skill=skill,
                    feedback_type=feedback_type,
                    review_status=None,
                    user_id=config.user_id,
                    redactions={},
                    earlier_items_sent=earlier,
                    earlier_items_refused=refused,
                    message=(
                        f"{_unavailable(error)} The feedback is kept on this machine and will be"
                        " sent with the next call of this server's tools; do not submit it again."
                        + _refusal_note(refused)
                    ),
                )
        row = answer["row"]
        redactions = {kind: int(count) for kind, count in (answer.get("redactions") or {}).items()}
        hidden = sum(redactions.values())
        return FeedbackReceipt(
            outcome="stored",
            id=row["id"],
            skill=skill,
            feedback_type=row["feedback_type"],
            review_status=row["status"],
            user_id=row["user_id"],
            redactions=redactions,
            earlier_items_sent=earlier,
            earlier_items_refused=refused,
            message=f"Stored {_TYPE_NAMES[row['feedback_type']]} on {skill}"
            + (f"; {hidden} secret(s) in it were redacted." if hidden else ".")
            + _refusal_note(refused),
        )

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def skill_feedback_summary(skill: Skill) -> SkillSummary:
        """How an EverySkill skill is doing: its feedback count, thumbs up and down, the
        average cost of a use in dollars, and the latest suggestions a reviewer accepted
        (implemented ones included)."""
        check_sendable({"skill": skill})
        async with calls.client() as (client, delivery):
            try:
                row = await calls.skill_row(client, skill, delivery)
                usage = await client.get("/usage/summary", by="skill", skill_id=row["id"])
                # Implemented suggestions were accepted first: the latest of
                # both, merged newest first as the API orders each list.
                accepted = [
                    item
                    for status in ("accepted", "implemented")
                    for item in (
                        await client.get(
                            FEEDBACK_PATH,
                            skill_id=row["id"],
                            feedback_type="suggestion",
                            status=status,
                            limit=SUGGESTIONS_SHOWN,
                        )
                    )["items"]
                ]
            except ApiError as error:
                raise _failure(_explain(error, skill), delivery) from None
        accepted.sort(
            key=lambda item: (datetime.datetime.fromisoformat(item["created_at"]), item["id"]),
            reverse=True,
        )
        uses = sum(int(group["calls"]) for group in usage["items"])
        priced = int(row["costed_measurements"])
        up, down = int(row["feedback_thumbs_up"]), int(row["feedback_thumbs_down"])
        pct = row["positive_feedback_pct"]
        return SkillSummary(
            skill=row["slug"],
            name=row["name"],
            skill_id=row["id"],
            archived=row["archived_at"] is not None,
            total_feedback=row["total_feedback"],
            thumbs_up=up,
            thumbs_down=down,
            positive_feedback_pct=pct,
            positive_share=f"{pct}% of {up + down} thumbs" if pct is not None else "no thumbs yet",
            uses=uses,
            priced_uses=priced,
            unpriced_uses=max(uses - priced, 0),
            average_cost_per_use=_dollars(row["avg_token_cost_microcents"]),
            latest_accepted_suggestions=[
                AcceptedSuggestion(
                    id=item["id"],
                    status=item["status"],
                    created_at=item["created_at"],
                    suggested_content=item["suggested_content"],
                    suggested_diff=item["suggested_diff"],
                    comment=item["comment"],
                    quality_score=item["quality_score"],
                )
                for item in accepted[:SUGGESTIONS_SHOWN]
            ],
            earlier_items_refused=_refused(delivery),
        )

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def list_pending_feedback(
        skill: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=200,
                description="Only this skill's feedback (its slug, e.g. review-code).",
            ),
        ] = None,
        feedback_type: Annotated[
            FeedbackType | None, Field(description="Only feedback of this type.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="Items per page.")] = 20,
        cursor: Annotated[
            str | None,
            Field(min_length=1, description="next_cursor of the previous page, for the next one."),
        ] = None,
    ) -> PendingPage:
        """Feedback on EverySkill skills that waits for a reviewer, newest first, one page
        at a time. For reviewers: the key needs the read scope."""
        if skill is not None:
            check_sendable({"skill": skill})
        async with calls.client() as (client, delivery):
            try:
                skill_id: str | None = None
                slugs: dict[str, str] = {}
                if skill is not None:
                    row = await calls.skill_row(client, skill, delivery)
                    skill_id, slugs[row["id"]] = row["id"], row["slug"]
                page = await client.get(
                    FEEDBACK_PATH,
                    status="pending",
                    skill_id=skill_id,
                    feedback_type=feedback_type,
                    limit=limit,
                    cursor=cursor,
                )
                for item in page["items"]:
                    if item["skill_id"] not in slugs:
                        found = await client.get(f"/skills/{item['skill_id']}")
                        slugs[item["skill_id"]] = found["slug"]
            except ApiError as error:
                if isinstance(error, ApiProblem) and any(
                    e.get("field") == "cursor" for e in error.errors
                ):
                    raise _failure(
                        "cursor: not a cursor of this list; pass next_cursor of the previous"
                        " page as it was, or no cursor for the first page.",
                        delivery,
                    ) from None
                raise _failure(_explain(error, skill), delivery) from None
        texts = ("comment", "suggested_content", "suggested_diff", "example_input",
                 "example_output", "expected_output")
        return PendingPage(
            items=[
                PendingItem(
                    id=item["id"],
                    skill=slugs[item["skill_id"]],
                    feedback_type=item["feedback_type"],
                    created_at=item["created_at"],
                    source=item["source"],
                    user_id=item["user_id"],
                    sentiment=item["sentiment"],
                    quality_score=item["quality_score"],
                    **{name: _cut(item[name]) for name in texts},
                )
                for item in page["items"]
            ],
            next_cursor=page["next_cursor"],
            earlier_items_refused=_refused(delivery),
        )

    return server


def _is_ipv6(name: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address)
    except ValueError:
        return False


def _security(host: str, allowed: Sequence[str]) -> TransportSecuritySettings | None:
    """The SDK's DNS-rebinding protection for ``host``: its own default on a
    loopback address without other names; else the loopback names (a client
    on the machine itself), ``host`` and the names ``allowed``, with any
    port, in ``Host`` and in ``Origin`` (``http`` or ``https``)."""
    if host in _LOOPBACK and not allowed:
        return None
    names = list(dict.fromkeys([*_LOOPBACK, host, *allowed]))
    hosts = [f"[{name}]" if _is_ipv6(name) else name for name in names]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*hosts, *(f"{name}:*" for name in hosts)],
        allowed_origins=[
            f"{scheme}://{name}{port}"
            for name in hosts
            for scheme in ("http", "https")
            for port in ("", ":*")
        ],
    )


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="everyskill-mcp",
        description="The EverySkill MCP server: feedback on skills, through the HTTP API."
        " Configured by EVERYSKILL_API_URL, EVERYSKILL_API_KEY, EVERYSKILL_USER_ID, ..."
        " or the configuration file (EVERYSKILL_CONFIG).",
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help="serve streamable HTTP (at /mcp) instead of stdio; anyone who can reach the"
        " port acts with the configured key",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (--http)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (--http)")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another host name clients use to reach the server (--http; repeat it)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """``everyskill-mcp``: serve over stdio, or streamable HTTP with ``--http``."""
    options = _arguments(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per call of the API
    try:
        config = client_config.load()
        server = build_server(config)
    except ConfigError as error:
        print(f"everyskill-mcp: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        print(
            f"everyskill-mcp: cannot use the state directory (EVERYSKILL_STATE_DIR): {error}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    if options.http:
        logger.info(
            "serving streamable HTTP at http://%s:%d/mcp for %s", options.host, options.port,
            config.api_url,
        )
        app = server.streamable_http_app(
            host=options.host, transport_security=_security(options.host, options.allowed_host)
        )
        # log_config=None: uvicorn's loggers go to the root logger (stderr),
        # its access lines included (its own configuration prints those on stdout).
        uvicorn.run(app, host=options.host, port=options.port, log_config=None)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
