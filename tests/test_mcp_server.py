"""
everyskill-mcp driven by the official MCP SDK's client, over stdio (the
server a subprocess, ``python -m everyskill.mcp_server``) and over
streamable HTTP (``--http`` in a subprocess on a free port), against the
served HTTP API on the tests' PostgreSQL with real keys: the tools' schemas;
each feedback type stored, as the tenant reads it back, from ``mcp`` and the
configured user, secrets redacted; bad arguments, a key without a scope or
not valid, an unknown skill, each a tool error that says what to fix; the
summary in dollars; pending feedback in pages; the API down (the feedback
kept, sent by the next call, stored once; calls at the same time keeping
and sending each item once; a real 429 and its Retry-After; what the API
would refuse in any case not kept; kept items the API refuses later
reported); a skill named in any case; the DNS-rebinding protection, on the
loopback and on a host of its own; a configuration error at start.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import secrets
import string
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from piccolo.engine.postgres import PostgresEngine

from everyskill import feedback
from everyskill.api_keys import create_api_key
from everyskill.errors import ValidationError
from everyskill.mcp_server import FEEDBACK_TYPES, _security, check_feedback_fields, check_sendable
from everyskill.spool import Spool
from tables import FeedbackType
from tests.http_support import Served, Tenant, tenant_with_key
from tests.support import PROJECT_ROOT, connected, free_port

SKILL = "review-code"  # the slug of the skill every test tenant has

# A GitHub personal access token in GitHub's documented format: "ghp_" and
# 36 characters of [A-Za-z0-9] ("Behind GitHub's new authentication token
# formats", github.blog, 2021-04-05). Random, so that it is no real token.
GITHUB_TOKEN = "ghp_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))


# -- an MCP client session held open in a thread of its own -------------------------

Streams = Any


class Session:
    """A ``ClientSession`` of the SDK over the transport ``connect`` opens,
    kept open on an event loop in a thread of its own, so that one server
    process serves a module's tests, whatever loop each test runs on."""

    def __init__(self, connect: Callable[[], AbstractAsyncContextManager[Streams]]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._closing: asyncio.Event | None = None
        self._held: asyncio.Future[None] | None = None
        self.session: ClientSession = self._run(self._open(connect), timeout=90)

    def _run(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _open(self, connect: Callable[[], AbstractAsyncContextManager[Streams]]) -> ClientSession:
        self._closing = asyncio.Event()
        opened: asyncio.Future[ClientSession] = self._loop.create_future()

        async def hold() -> None:
            assert self._closing is not None
            try:
                async with connect() as streams, ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    opened.set_result(session)
                    await self._closing.wait()
            except BaseException as error:
                if not opened.done():
                    opened.set_exception(error)
                raise

        self._held = asyncio.ensure_future(hold())
        return await opened

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call ``tool`` from any event loop."""
        future = asyncio.run_coroutine_threadsafe(
            self.session.call_tool(tool, arguments), self._loop
        )
        result: CallToolResult = await asyncio.wrap_future(future)
        return result

    async def tools(self) -> list[Any]:
        future = asyncio.run_coroutine_threadsafe(self.session.list_tools(), self._loop)
        return list((await asyncio.wrap_future(future)).tools)

    def close(self) -> None:
        async def stop() -> None:
            assert self._closing is not None and self._held is not None
            self._closing.set()
            await asyncio.wait_for(asyncio.shield(self._held), 30)

        try:
            self._run(stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def stored(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a call that succeeded."""
    assert not result.is_error, text(result)
    assert result.structured_content is not None
    return dict(result.structured_content)


def refused(result: CallToolResult) -> str:
    """The text of a tool error (a result, not a protocol error)."""
    assert result.is_error, result
    return text(result)


# -- the servers --------------------------------------------------------------------


def server_env(api_url: str, key: str, state: Path, user_id: str | None = None) -> dict[str, str]:
    env = {
        "EVERYSKILL_API_URL": api_url,
        "EVERYSKILL_API_KEY": key,
        "EVERYSKILL_STATE_DIR": str(state),
        # No configuration file of the machine's user.
        "EVERYSKILL_CONFIG": str(state / "absent.toml"),
        "EVERYSKILL_TIMEOUT": "5",
    }
    if user_id is not None:
        env["EVERYSKILL_USER_ID"] = user_id
    return env


@contextmanager
def stdio_session(env: dict[str, str], log: Path) -> Iterator[Session]:
    """``python -m everyskill.mcp_server`` over stdio, its stderr in ``log``."""
    with open(log, "w") as errors:
        parameters = StdioServerParameters(
            command=sys.executable,
            args=["-m", "everyskill.mcp_server"],
            env=env,
            cwd=PROJECT_ROOT,
        )
        session = Session(lambda: stdio_client(parameters, errlog=errors))
        try:
            yield session
        finally:
            session.close()


@contextmanager
def http_server(env: dict[str, str], log: Path, *args: str) -> Iterator[str]:
    """``python -m everyskill.mcp_server --http`` on a free port (``args``
    added: ``--host`` ...); yields its URL."""
    port = free_port()
    host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
    with open(log, "wb") as errors, open(log.with_suffix(".stdout"), "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "everyskill.mcp_server", "--http", "--port", str(port), *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=errors,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                httpx.get(f"http://{host}:{port}/mcp", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield f"http://{host}:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Setup:
    """The module's tenant: its key with every scope (to read back), the key
    the servers are configured with (feedback:write and read), its user."""

    tenant: Tenant
    server_key: str

    @property
    def user_id(self) -> str:
        return self.tenant.rows.user_id


@pytest.fixture(scope="module")
async def setup(engine: PostgresEngine) -> Setup:
    async with connected(os.environ["DATABASE_URL"]) as owner:
        tenant = await tenant_with_key(owner, "mcp")
    key = (await create_api_key(tenant.rows.tenant_id, "mcp server", "feedback:write,read")).key
    return Setup(tenant, key)


@pytest.fixture(scope="module", params=["stdio", "http"])
def mcp(
    request: pytest.FixtureRequest,
    api: Served,
    setup: Setup,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Session]:
    """The server over each transport, configured with the tenant's user."""
    state = tmp_path_factory.mktemp(f"mcp-{request.param}")
    env = server_env(api.base, setup.server_key, state, setup.user_id)
    if request.param == "stdio":
        with stdio_session(env, state / "server.log") as session:
            yield session
    else:
        with http_server(env, state / "server.log") as url:
            session = Session(lambda: streamable_http_client(url))
            try:
                yield session
            finally:
                session.close()


def read_feedback(api: Served, setup: Setup, feedback_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=api.base, headers=setup.tenant.headers()) as client:
        answer = client.get(f"/v1/feedback/{feedback_id}")
    assert answer.status_code == 200, answer.text
    row: dict[str, Any] = answer.json()
    return row


def count_feedback(api: Served, setup: Setup, **filters: Any) -> int:
    with httpx.Client(base_url=api.base, headers=setup.tenant.headers()) as client:
        total, cursor = 0, None
        while True:
            params = {**filters, "limit": 500, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/feedback", params=params).json()
            total += len(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return total


def bug_reports(api: Served, setup: Setup) -> list[dict[str, Any]]:
    """Every bug report of the tenant."""
    with httpx.Client(base_url=api.base, headers=setup.tenant.headers()) as client:
        reports: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = client.get("/v1/feedback", params={
                "feedback_type": "bug_report", "limit": 500, **({"cursor": cursor} if cursor else {}),
            }).json()
            reports += page["items"]
            if (cursor := page["next_cursor"]) is None:
                return reports


# -- the tools and their schemas ----------------------------------------------------


async def test_the_tools_and_their_schemas(mcp: Session) -> None:
    tools = {tool.name: tool for tool in await mcp.tools()}
    assert set(tools) == {"submit_feedback", "skill_feedback_summary", "list_pending_feedback"}
    required = {
        "submit_feedback": {"skill", "feedback_type"},
        "skill_feedback_summary": {"skill"},
        "list_pending_feedback": set(),
    }
    for name, tool in tools.items():
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
        assert tool.output_schema is not None
        jsonschema.Draft202012Validator.check_schema(tool.output_schema)
        assert tool.description and len(tool.description) > 40, name
        assert set(tool.input_schema.get("required", [])) == required[name], name
        for argument, schema in tool.input_schema["properties"].items():
            assert schema.get("description"), (name, argument)
    submit = tools["submit_feedback"].input_schema["properties"]
    assert set(submit) == {
        "skill", "feedback_type", "comment", "suggested_content", "suggested_diff",
        "example_input", "example_output", "expected_output", "quality_score", "usage_event_id",
    }
    assert submit["feedback_type"]["enum"] == list(FEEDBACK_TYPES)
    assert (submit["quality_score"]["anyOf"][0]["minimum"], submit["quality_score"]["anyOf"][0]["maximum"]) == (1, 10)
    validator = jsonschema.Draft202012Validator(tools["submit_feedback"].input_schema)
    assert validator.is_valid({"skill": SKILL, "feedback_type": "thumbs_up"})
    assert not validator.is_valid({"skill": SKILL, "feedback_type": "praise"})
    assert not validator.is_valid({"feedback_type": "thumbs_up"})
    assert tools["skill_feedback_summary"].annotations.read_only_hint is True
    assert tools["submit_feedback"].annotations.read_only_hint is False


def test_the_feedback_types_are_the_tables() -> None:
    assert FEEDBACK_TYPES == tuple(kind.value for kind in FeedbackType)


def test_the_servers_checks_are_the_query_apis_rules() -> None:
    """Every type with every combination of the text fields: the server
    refuses exactly what the query API refuses."""
    fields = ("comment", "suggested_content", "suggested_diff", "example_input",
              "example_output", "expected_output")
    for kind in FEEDBACK_TYPES:
        for size in range(len(fields) + 1):
            for given in itertools.combinations(fields, size):
                texts = {name: (f"some {name}" if name in given else None) for name in fields}
                try:
                    check_feedback_fields(kind, texts)
                    ours = True
                except ToolError:
                    ours = False
                try:
                    feedback.check_feedback_batch([{"skill_id": "s", "feedback_type": kind, **texts}])
                    theirs = True
                except ValidationError:
                    theirs = False
                assert ours == theirs, (kind, given)


# -- submitting ---------------------------------------------------------------------


FIVE = {
    "thumbs_up": {},
    "thumbs_down": {"comment": "Too verbose for small diffs."},
    "suggestion": {"suggested_diff": "-Review the diff.\n+Review the diff, tests first.", "quality_score": 6},
    "training_example": {
        "example_input": "def f(x): return x+1",
        "example_output": "Looks fine.",
        "expected_output": "Name the function for what it does.",
    },
    "bug_report": {"comment": "It ignores renamed files."},
}


@pytest.mark.parametrize("kind", list(FIVE))
async def test_each_type_is_stored_from_mcp_and_the_configured_user(
    mcp: Session, api: Served, setup: Setup, kind: str
) -> None:
    receipt = stored(
        await mcp.call("submit_feedback", {"skill": SKILL, "feedback_type": kind, **FIVE[kind]})
    )
    assert receipt["outcome"] == "stored" and receipt["review_status"] == "pending"
    assert receipt["feedback_type"] == kind and receipt["user_id"] == setup.user_id
    assert uuid.UUID(receipt["id"]).version == 4
    row = read_feedback(api, setup, receipt["id"])
    assert row["skill_id"] == setup.tenant.rows.skill_id
    assert (row["feedback_type"], row["source"], row["user_id"]) == (kind, "mcp", setup.user_id)
    assert row["status"] == "pending"
    for name, value in FIVE[kind].items():
        assert row[name] == value, name
    assert row["sentiment"] == {"thumbs_up": 1, "thumbs_down": -1}.get(kind)


async def test_a_secret_in_a_comment_is_stored_redacted(
    mcp: Session, api: Served, setup: Setup
) -> None:
    comment = f"It printed my token {GITHUB_TOKEN} in the review."
    receipt = stored(
        await mcp.call("submit_feedback", {"skill": SKILL, "feedback_type": "bug_report", "comment": comment})
    )
    assert sum(receipt["redactions"].values()) == 1, receipt
    assert "redacted" in receipt["message"]
    row = read_feedback(api, setup, receipt["id"])
    assert GITHUB_TOKEN not in row["comment"] and "[REDACTED:" in row["comment"]
    assert row["comment"].startswith("It printed my token [REDACTED:")


@pytest.mark.parametrize(
    "arguments, named",
    [
        ({"skill": SKILL, "feedback_type": "praise"}, "feedback_type"),
        ({"skill": SKILL, "feedback_type": "thumbs_up", "quality_score": 11}, "quality_score"),
        ({"skill": SKILL, "feedback_type": "thumbs_up", "quality_score": "high"}, "quality_score"),
        ({"skill": SKILL, "feedback_type": "bug_report"}, "comment"),
        ({"skill": SKILL, "feedback_type": "suggestion", "comment": "shorter"}, "suggested_content or suggested_diff"),
        ({"skill": SKILL, "feedback_type": "training_example", "example_input": "x"}, "expected_output"),
        ({"skill": SKILL, "feedback_type": "thumbs_up", "example_input": "x"}, "example_input"),
        ({"feedback_type": "thumbs_up"}, "skill"),
        ({"skill": "", "feedback_type": "thumbs_up"}, "skill"),
    ],
)
async def test_a_bad_argument_is_a_tool_error_naming_it(
    mcp: Session, api: Served, setup: Setup, arguments: dict[str, Any], named: str
) -> None:
    before = count_feedback(api, setup)
    message = refused(await mcp.call("submit_feedback", arguments))
    assert named in message, message
    assert count_feedback(api, setup) == before


def test_what_the_api_refuses_in_any_case_is_refused_here() -> None:
    """check_sendable: the project's storable-text check, and blank names."""
    check_sendable({"skill": SKILL, "comment": None, "usage_event_id": " event-7 "})
    for given, named in (
        ({"comment": "bad \x00 byte"}, "comment: must not contain NUL"),
        ({"expected_output": "half a pair \ud800"}, "expected_output: must not contain NUL"),
        ({"skill": "review\x00code"}, "skill: must not contain NUL"),
        ({"skill": " \t "}, "skill: must not be blank"),
        ({"usage_event_id": "   "}, "usage_event_id: must not be blank"),
    ):
        with pytest.raises(ToolError) as error:
            check_sendable({"skill": SKILL, **given})
        assert named in str(error.value), (given, error.value)


async def test_the_apis_refusal_names_the_field(api: Served, setup: Setup, tmp_path: Path) -> None:
    """A configured user id that is well formed but no user of the tenant
    passes the server's checks; the API's refusal names the field."""
    env = server_env(api.base, setup.server_key, tmp_path, user_id=str(uuid.uuid4()))
    before = count_feedback(api, setup)
    with stdio_session(env, tmp_path / "server.log") as session:
        message = refused(await session.call("submit_feedback", {"skill": SKILL, "feedback_type": "thumbs_up"}))
    assert "user_id" in message, message
    assert count_feedback(api, setup) == before


async def test_a_skill_is_named_in_any_case(mcp: Session, api: Served, setup: Setup) -> None:
    """Slugs are stored lowercase; the API reads a slug so in the list and
    in the write alike."""
    receipt = stored(await mcp.call("submit_feedback", {"skill": " Review-Code ", "feedback_type": "thumbs_up"}))
    assert receipt["outcome"] == "stored"
    assert read_feedback(api, setup, receipt["id"])["skill_id"] == setup.tenant.rows.skill_id
    summary = stored(await mcp.call("skill_feedback_summary", {"skill": "REVIEW-CODE"}))
    assert (summary["skill"], summary["skill_id"]) == (SKILL, setup.tenant.rows.skill_id)
    page = stored(await mcp.call("list_pending_feedback", {"skill": "Review-Code", "limit": 100}))
    assert receipt["id"] in {item["id"] for item in page["items"]}


async def test_an_unknown_skill_is_a_tool_error(mcp: Session, api: Served, setup: Setup) -> None:
    before = count_feedback(api, setup)
    message = refused(await mcp.call("submit_feedback", {"skill": "no-such-skill", "feedback_type": "thumbs_up"}))
    assert "No skill named 'no-such-skill'" in message, message
    assert count_feedback(api, setup) == before
    message = refused(await mcp.call("skill_feedback_summary", {"skill": "no-such-skill"}))
    assert "No skill named 'no-such-skill'" in message, message
    message = refused(await mcp.call("list_pending_feedback", {"skill": "no-such-skill"}))
    assert "No skill named 'no-such-skill'" in message, message


# -- reading ------------------------------------------------------------------------


async def test_the_summary_of_a_skill_in_dollars(mcp: Session, api: Served, setup: Setup) -> None:
    slug = f"summary-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=api.base, headers=setup.tenant.headers()) as client:
        skill = client.post("/v1/skills", json={"slug": slug, "name": "Summarised"}).json()["row"]
        unpriced = stored(await mcp.call("skill_feedback_summary", {"skill": slug}))
        for kind in ("thumbs_up", "thumbs_up", "thumbs_up", "thumbs_down"):
            stored(await mcp.call("submit_feedback", {"skill": slug, "feedback_type": kind}))
        # The tenant's price of claude-sonnet-4-5: 250 and 1,250 microcents a
        # token in and out. 1,000 in + 200 out = 500,000 microcents; 2,000 in
        # = 500,000; a model without a price: no cost.
        measured = client.post("/v1/token-measurements", json={"items": [
            {"skill_id": skill["id"], "model_name": "claude-sonnet-4-5", "model_provider": "anthropic",
             "input_tokens": 1000, "output_tokens": 200},
            {"skill_id": skill["id"], "model_name": "claude-sonnet-4-5", "model_provider": "anthropic",
             "input_tokens": 2000, "output_tokens": 0},
            {"skill_id": skill["id"], "model_name": "in-house-model-7", "input_tokens": 10, "output_tokens": 1},
        ]})
        assert measured.status_code == 201, measured.text
        suggestions = [
            stored(await mcp.call("submit_feedback", {
                "skill": slug, "feedback_type": "suggestion", "suggested_content": f"Take {n}.",
            }))["id"]
            for n in range(3)
        ]
        for feedback_id in suggestions:
            reviewed = client.post(
                f"/v1/feedback/{feedback_id}/review",
                json={"reviewer_id": setup.user_id, "decision": "accepted"},
            )
            assert reviewed.status_code == 200, reviewed.text
        # The middle one is made in the skill: implemented, still shown, in its place.
        implemented = client.post(
            f"/v1/feedback/{suggestions[1]}/implemented", json={"reviewer_id": setup.user_id}
        )
        assert implemented.status_code == 200, implemented.text
    summary = stored(await mcp.call("skill_feedback_summary", {"skill": slug}))

    assert unpriced["average_cost_per_use"] == "unpriced" and unpriced["uses"] == 0
    assert unpriced["positive_share"] == "no thumbs yet" and unpriced["total_feedback"] == 0
    assert (summary["skill"], summary["skill_id"], summary["name"]) == (slug, skill["id"], "Summarised")
    assert summary["total_feedback"] == 7
    assert (summary["thumbs_up"], summary["thumbs_down"], summary["positive_feedback_pct"]) == (3, 1, 75)
    assert summary["positive_share"] == "75% of 4 thumbs"
    assert (summary["uses"], summary["priced_uses"], summary["unpriced_uses"]) == (3, 2, 1)
    assert summary["average_cost_per_use"] == "$0.005000"
    accepted = summary["latest_accepted_suggestions"]
    # Newest first across both statuses (not the accepted ones, then the implemented).
    assert [item["id"] for item in accepted] == suggestions[::-1]
    assert [item["status"] for item in accepted] == ["accepted", "implemented", "accepted"]
    assert [item["suggested_content"] for item in accepted] == ["Take 2.", "Take 1.", "Take 0."]
    assert summary["earlier_items_refused"] == []


async def test_pending_feedback_in_pages(mcp: Session, api: Served, setup: Setup) -> None:
    slug = f"pending-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=api.base, headers=setup.tenant.headers()) as client:
        assert client.post("/v1/skills", json={"slug": slug, "name": "Pending"}).status_code == 201
    long_comment = "x" * 5000
    made = [
        stored(await mcp.call("submit_feedback", {"skill": slug, "feedback_type": "bug_report", "comment": c}))["id"]
        for c in ("first", "second", long_comment)
    ]
    stored(await mcp.call("submit_feedback", {"skill": slug, "feedback_type": "thumbs_up"}))
    first = stored(await mcp.call(
        "list_pending_feedback", {"skill": slug, "feedback_type": "bug_report", "limit": 2}
    ))
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = stored(await mcp.call(
        "list_pending_feedback",
        {"skill": slug, "feedback_type": "bug_report", "limit": 2, "cursor": first["next_cursor"]},
    ))
    assert rest["next_cursor"] is None
    items = first["items"] + rest["items"]
    assert sorted(item["id"] for item in items) == sorted(made)
    assert all(item["skill"] == slug and item["feedback_type"] == "bug_report" for item in items)
    assert all(item["source"] == "mcp" and item["user_id"] == setup.user_id for item in items)
    cut = next(item["comment"] for item in items if item["comment"].startswith("xxx"))
    assert cut.startswith("x" * 2000) and cut.endswith("[3000 more characters]")
    everything = stored(await mcp.call("list_pending_feedback", {"skill": slug}))
    assert len(everything["items"]) == 4
    # Without a skill: the tenant's pending items, each named by its skill.
    tenant_wide = stored(await mcp.call("list_pending_feedback", {"limit": 100}))
    assert {item["skill"] for item in tenant_wide["items"]} >= {slug}
    message = refused(await mcp.call("list_pending_feedback", {"cursor": "not-a-cursor"}))
    assert "cursor" in message


# -- keys and scopes ----------------------------------------------------------------


async def test_a_key_without_the_scope_or_not_valid_is_a_tool_error(
    api: Served, setup: Setup, tmp_path: Path
) -> None:
    tenant_id = setup.tenant.rows.tenant_id
    read_only = (await create_api_key(tenant_id, "mcp read only", "read")).key
    write_only = (await create_api_key(tenant_id, "mcp write only", "feedback:write")).key
    before = count_feedback(api, setup)
    with stdio_session(server_env(api.base, read_only, tmp_path / "r"), tmp_path / "r.log") as session:
        message = refused(await session.call("submit_feedback", {"skill": SKILL, "feedback_type": "thumbs_up"}))
        assert "lacks the scope 'feedback:write'" in message and "admin" in message, message
        assert stored(await session.call("skill_feedback_summary", {"skill": SKILL}))["skill"] == SKILL
    assert count_feedback(api, setup) == before
    with stdio_session(server_env(api.base, write_only, tmp_path / "w"), tmp_path / "w.log") as session:
        for tool, arguments in (
            ("skill_feedback_summary", {"skill": SKILL}),
            ("list_pending_feedback", {}),
        ):
            message = refused(await session.call(tool, arguments))
            assert "lacks the scope 'read'" in message and "admin" in message, message
        # Anonymous: no user configured.
        receipt = stored(await session.call("submit_feedback", {"skill": SKILL, "feedback_type": "thumbs_up"}))
        assert receipt["user_id"] is None
        assert read_feedback(api, setup, receipt["id"])["user_id"] is None
    bogus = "esk_" + "A" * 40
    with stdio_session(server_env(api.base, bogus, tmp_path / "b"), tmp_path / "b.log") as session:
        message = refused(await session.call("submit_feedback", {"skill": SKILL, "feedback_type": "thumbs_up"}))
        assert "API key is not valid" in message, message


# -- the API down -------------------------------------------------------------------


class Relay:
    """A TCP relay from a port of its own to the served API: the API is
    "down" until it serves."""

    def __init__(self, port: int, target: str) -> None:
        self.port = port
        url = httpx.URL(target)
        self.host, self.target_port = url.host, url.port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            finally:
                sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        try:
            yield
        finally:
            server.close()


async def test_with_the_api_down_feedback_is_kept_then_sent_once(
    api: Served, setup: Setup, tmp_path: Path
) -> None:
    port = free_port()
    state = tmp_path / "state"
    env = server_env(f"http://127.0.0.1:{port}", setup.server_key, state, setup.user_id)
    # The hook's measurement, kept in the same spool: not the MCP server's to send.
    hooks = {"id": str(uuid.uuid4()), "skill_id": setup.tenant.rows.skill_id,
             "model_name": "claude-sonnet-4-5", "input_tokens": 1, "output_tokens": 1}
    spool_of(env).add("/token-measurements", [hooks])
    comments = [f"Kept for later, {uuid.uuid4()}." for _ in range(2)]
    with stdio_session(env, tmp_path / "server.log") as session:
        kept = [
            stored(await session.call(
                "submit_feedback", {"skill": SKILL, "feedback_type": "bug_report", "comment": comment}
            ))
            for comment in comments
        ]
        for receipt in kept:
            assert receipt["outcome"] == "kept" and receipt["review_status"] is None
            assert "kept" in receipt["message"] and "do not submit it again" in receipt["message"]
            assert receipt["earlier_items_sent"] == 0
        assert spool_of(env).pending() == 3
        # Still down: a read says so, and the items stay.
        message = refused(await session.call("skill_feedback_summary", {"skill": SKILL}))
        assert "cannot be reached" in message
        with httpx.Client(base_url=api.base, headers=setup.tenant.headers()) as client:
            assert client.get(f"/v1/feedback/{kept[0]['id']}").status_code == 404
        assert spool_of(env).pending() == 3
        async with Relay(port, api.base).serving():
            receipt = stored(await session.call("submit_feedback", {"skill": SKILL, "feedback_type": "thumbs_up"}))
            assert receipt["outcome"] == "stored" and receipt["earlier_items_sent"] == 2
            for item, comment in zip(kept, comments):
                row = read_feedback(api, setup, item["id"])
                assert (row["comment"], row["source"], row["user_id"]) == (comment, "mcp", setup.user_id)
            again = stored(await session.call("skill_feedback_summary", {"skill": SKILL}))
            assert again["skill"] == SKILL
    reports = bug_reports(api, setup)
    with httpx.Client(base_url=api.base, headers=setup.tenant.headers()) as client:
        measurement = client.get(f"/v1/token-measurements/{hooks['id']}")
    # Each kept item stored once, under the id it was kept with.
    for item, comment in zip(kept, comments):
        assert [r["id"] for r in reports if r["comment"] == comment] == [item["id"]]
    assert measurement.status_code == 404  # left for the hook
    assert spool_of(env).pending() == 1
    assert "/token-measurements" in next(spool_of(env).directory.glob("*.spool.jsonl")).read_text()


def spool_of(env: dict[str, str]) -> Spool:
    """The spool of the server configured by ``env`` (its URL and key)."""
    return Spool.for_client(
        Path(env["EVERYSKILL_STATE_DIR"]), env["EVERYSKILL_API_URL"], env["EVERYSKILL_API_KEY"]
    )


def down_env(setup: Setup, state: Path, user_id: str | None = None) -> tuple[int, dict[str, str]]:
    """A free port (nothing listens: the API is down) and a server's env for it."""
    port = free_port()
    return port, server_env(f"http://127.0.0.1:{port}", setup.server_key, state, user_id or setup.user_id)


async def test_calls_at_the_same_time_keep_each_item_once(
    api: Served, setup: Setup, tmp_path: Path
) -> None:
    """Calls run at once (the SDK serves them concurrently): with the API
    down, each submitted item is kept once, and calls delivering the spool
    at the same time do not copy what it holds; up again, each is stored
    once."""
    port, env = down_env(setup, tmp_path / "state")
    comments = [f"Kept at once, {uuid.uuid4()}." for _ in range(4)]

    def submit(comment: str) -> Any:
        return session.call("submit_feedback", {"skill": SKILL, "feedback_type": "bug_report", "comment": comment})

    with stdio_session(env, tmp_path / "server.log") as session:
        kept = [stored(result) for result in await asyncio.gather(*map(submit, comments))]
        assert [receipt["outcome"] for receipt in kept] == ["kept"] * 4
        assert spool_of(env).pending() == 4
        for _ in range(3):
            reads = await asyncio.gather(*(
                session.call("skill_feedback_summary", {"skill": SKILL}) for _ in range(4)
            ), session.call("list_pending_feedback", {}))
            assert all("cannot be reached" in refused(result) for result in reads)
            assert spool_of(env).pending() == 4
        async with Relay(port, api.base).serving():
            after = [stored(result) for result in await asyncio.gather(*(
                session.call("submit_feedback", {"skill": SKILL, "feedback_type": "thumbs_up"})
                for _ in range(4)
            ))]
    assert all(receipt["outcome"] == "stored" for receipt in after)
    assert sum(receipt["earlier_items_sent"] for receipt in after) == 4
    assert spool_of(env).pending() == 0
    reports = bug_reports(api, setup)
    for receipt, comment in zip(kept, comments):
        assert [r["id"] for r in reports if r["comment"] == comment] == [receipt["id"]]


async def test_what_the_api_would_refuse_is_not_kept(setup: Setup, tmp_path: Path) -> None:
    """With the API down, an argument the API refuses in any case is a tool
    error, and nothing is kept."""
    _, env = down_env(setup, tmp_path / "state")
    with stdio_session(env, tmp_path / "server.log") as session:
        for arguments, named in (
            ({"feedback_type": "bug_report", "comment": "bad \x00 byte"}, "comment: must not contain NUL"),
            ({"feedback_type": "thumbs_up", "usage_event_id": "   "}, "usage_event_id: must not be blank"),
            ({"feedback_type": "thumbs_up", "skill": "   "}, "skill: must not be blank"),
            ({"feedback_type": "thumbs_up", "skill": "review\x00code"}, "skill: must not contain NUL"),
        ):
            message = refused(await session.call("submit_feedback", {"skill": SKILL, **arguments}))
            assert named in message, message
        message = refused(await session.call("skill_feedback_summary", {"skill": "a\x00b"}))
        assert "skill: must not contain NUL" in message, message
    assert spool_of(env).pending() == 0


async def test_kept_items_the_api_refuses_later_are_reported(
    api: Served, setup: Setup, tmp_path: Path
) -> None:
    """A user id that is not the tenant's (the API's 404, known only when
    the API answers): items kept during an outage are refused when sent;
    the call that sent them lists each, with the API's reason, once."""
    stranger = str(uuid.uuid4())
    port, env = down_env(setup, tmp_path / "state", user_id=stranger)
    with stdio_session(env, tmp_path / "server.log") as session:
        kept = [
            stored(await session.call("submit_feedback", {"skill": SKILL, "feedback_type": kind}))
            for kind in ("thumbs_up", "thumbs_down")
        ]
        assert [receipt["outcome"] for receipt in kept] == ["kept", "kept"]
        async with Relay(port, api.base).serving():
            summary = stored(await session.call("skill_feedback_summary", {"skill": SKILL}))
            again = stored(await session.call("skill_feedback_summary", {"skill": SKILL}))
            # And the submit of the moment: refused at once, as a tool error.
            message = refused(await session.call("submit_feedback", {"skill": SKILL, "feedback_type": "thumbs_up"}))
    reported = summary["earlier_items_refused"]
    assert sorted(item["id"] for item in reported) == sorted(receipt["id"] for receipt in kept)
    assert all(item["skill"] == SKILL and "user_id" in item["reason"] for item in reported), reported
    assert {item["feedback_type"] for item in reported} == {"thumbs_up", "thumbs_down"}
    assert again["earlier_items_refused"] == []
    assert "configured user" in message and "EVERYSKILL_USER_ID" in message
    assert spool_of(env).pending() == 0
    for receipt in kept:
        with httpx.Client(base_url=api.base, headers=setup.tenant.headers()) as client:
            assert client.get(f"/v1/feedback/{receipt['id']}").status_code == 404
        assert receipt["id"] in (spool_of(env).directory / "refused.jsonl").read_text()


async def test_a_refusal_is_reported_in_a_tool_error_too(
    api: Served, setup: Setup, tmp_path: Path
) -> None:
    """The call that sends the refused items fails itself (an unknown
    skill): its error lists them."""
    port, env = down_env(setup, tmp_path / "state", user_id=str(uuid.uuid4()))
    with stdio_session(env, tmp_path / "server.log") as session:
        kept = stored(await session.call("submit_feedback", {"skill": SKILL, "feedback_type": "thumbs_up"}))
        async with Relay(port, api.base).serving():
            message = refused(await session.call("skill_feedback_summary", {"skill": "no-such-skill"}))
    assert "No skill named 'no-such-skill'" in message
    assert "refused by the API" in message and kept["id"] in message and "user_id" in message


async def test_a_429_keeps_the_item_and_says_for_how_long(
    api: Served, setup: Setup, tmp_path: Path
) -> None:
    """A key allowed one request a minute: the real API answers the second
    with 429 and Retry-After; the item is kept, not an error."""
    limited = (await create_api_key(
        setup.tenant.rows.tenant_id, "mcp one a minute", "feedback:write,read", rate_limit_per_minute=1
    )).key
    env = server_env(api.base, limited, tmp_path / "state", setup.user_id)
    with stdio_session(env, tmp_path / "server.log") as session:
        first = stored(await session.call("submit_feedback", {"skill": SKILL, "feedback_type": "thumbs_up"}))
        second = stored(await session.call(
            "submit_feedback", {"skill": SKILL, "feedback_type": "bug_report", "comment": "Rate limited."}
        ))
        # A read meanwhile: the API's 429 is the tool error's reason.
        message = refused(await session.call("skill_feedback_summary", {"skill": SKILL}))
    assert first["outcome"] == "stored"
    assert second["outcome"] == "kept" and second["review_status"] is None
    wait = re.search(r"rate limit is used up for (\d+(?:\.\d+)?) seconds", second["message"])
    assert wait is not None and 0 < float(wait.group(1)) <= 60, second["message"]
    assert "do not submit it again" in second["message"]
    assert "rate limit is used up" in message and "Try again later" in message, message
    assert spool_of(env).pending() == 1
    with httpx.Client(base_url=api.base, headers=setup.tenant.headers()) as client:
        assert client.get(f"/v1/feedback/{second['id']}").status_code == 404


# -- serving ------------------------------------------------------------------------


def test_http_keeps_the_dns_rebinding_protection(api: Served, setup: Setup, tmp_path: Path) -> None:
    env = server_env(api.base, setup.server_key, tmp_path)
    with http_server(env, tmp_path / "server.log") as url:
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"Accept": "application/json, text/event-stream"}
        port = httpx.URL(url).port
        foreign_host = httpx.post(url, json=body, headers={**headers, "Host": f"evil.example:{port}"})
        foreign_origin = httpx.post(url, json=body, headers={**headers, "Origin": "http://evil.example"})
    assert foreign_host.status_code == 421, foreign_host.text
    assert foreign_origin.status_code == 403, foreign_origin.text
    # Logs, access lines included, go to stderr only.
    assert "421" in (tmp_path / "server.log").read_text()
    assert (tmp_path / "server.stdout").read_text() == ""


def test_the_names_allowed_beside_a_host_of_its_own() -> None:
    loopback = _security("127.0.0.1", [])
    assert loopback is None  # the SDK's own protection for a loopback host
    settings = _security("0.0.0.0", ["mcp.example.internal", "::2"])
    assert settings is not None and settings.enable_dns_rebinding_protection
    for name in ("127.0.0.1", "localhost", "[::1]", "0.0.0.0", "mcp.example.internal", "[::2]"):
        assert {name, f"{name}:*"} <= set(settings.allowed_hosts), name
        assert {f"http://{name}:*", f"https://{name}"} <= set(settings.allowed_origins), name
    assert not any("evil" in name for name in settings.allowed_hosts)
    named = _security("localhost", ["laptop.local"])
    assert named is not None and "laptop.local:*" in named.allowed_hosts
    # A name given with its port is that Host exactly, not an IPv6 address.
    with_port = _security("0.0.0.0", ["mcp.example.internal:8443"])
    assert with_port is not None and "mcp.example.internal:8443" in with_port.allowed_hosts
    assert "https://mcp.example.internal:8443" in with_port.allowed_origins


def test_http_on_a_host_of_its_own_allows_the_names_given(
    api: Served, setup: Setup, tmp_path: Path
) -> None:
    """--host that is not a loopback name (127.0.0.2, still this machine)
    and --allowed-host: requests naming them, or the loopback, are served;
    another name is refused."""
    env = server_env(api.base, setup.server_key, tmp_path)
    with http_server(env, tmp_path / "server.log", "--host", "127.0.0.2",
                     "--allowed-host", "mcp.example.internal") as url:
        port = httpx.URL(url).port
        body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        }}
        headers = {"Accept": "application/json, text/event-stream"}

        def post(host: str, origin: str | None = None) -> int:
            sent = {**headers, "Host": f"{host}:{port}", **({"Origin": origin} if origin else {})}
            return httpx.post(url, json=body, headers=sent).status_code

        assert post("mcp.example.internal", "http://mcp.example.internal") == 200
        assert post("127.0.0.2", f"https://127.0.0.2:{port}") == 200
        assert post("localhost", "http://localhost") == 200
        assert post("evil.example") == 421
        assert post("mcp.example.internal", "http://evil.example") == 403


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "EVERYSKILL_API_URL"),
        ({"EVERYSKILL_API_URL": "ftp://127.0.0.1", "EVERYSKILL_API_KEY": "esk_x"}, "EVERYSKILL_API_URL"),
        ({"EVERYSKILL_API_URL": "http://127.0.0.1:1"}, "EVERYSKILL_API_KEY"),
        ({"EVERYSKILL_API_URL": "http://127.0.0.1:1", "EVERYSKILL_API_KEY": "esk_x",
          "EVERYSKILL_TIMEOUT": "0"}, "EVERYSKILL_TIMEOUT"),
        ({"shared config": 'api_url = "http://127.0.0.1:1"\napi_key = "esk_x"\n'}, "chmod 600"),
    ],
)
def test_a_missing_or_malformed_setting_is_exit_2_at_start(
    tmp_path: Path, settings: dict[str, str], named: str
) -> None:
    """A setting missing or malformed, not one the API would refuse: the
    server makes no call at start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERYSKILL_")}
    env["EVERYSKILL_CONFIG"] = str(tmp_path / "config.toml")
    env["EVERYSKILL_STATE_DIR"] = str(tmp_path / "state")
    for name, value in settings.items():
        if name == "shared config":
            (tmp_path / "config.toml").write_text(value)
            (tmp_path / "config.toml").chmod(0o644)
        else:
            env[name] = value
    done = subprocess.run(
        [sys.executable, "-m", "everyskill.mcp_server"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert "configuration error" in done.stderr and named in done.stderr, done.stderr
