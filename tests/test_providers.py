"""
everyskill.providers: the Anthropic and OpenAI clients on their official
SDKs, against a local server that speaks each provider's API
(tests/model_server.py) reached through the SDK's ``base_url`` over real
sockets; never the network. Normal answers with usage and cache tokens, the
system prompt, 429 with retry-after (a wait longer than the deadline leaves
fails at once), 529 and 503 overload, 401, 400, a timeout, the deadline,
malformed JSON and JSON that is not the API's answer; the attempts the
server counted; keys from the environment; no key in any error, in what an
error leads to, or in a log. Then whole runs with
these clients against the real database: results, tokens, hand-worked
costs, errors, retries, and no key in any text column of any table.
"""

from __future__ import annotations

import math
import asyncio
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from everyskill import benchmarks
from everyskill.benchmark_runner import Completion, TestCase, run_benchmark
from everyskill.errors import ValidationError
from everyskill.providers import (
    AnthropicClient,
    ModelAuthenticationError,
    ModelBadResponse,
    ModelCallError,
    ModelRateLimited,
    ModelRequestRefused,
    ModelRouter,
    ModelTimeout,
    ModelUnavailable,
    OpenAIClient,
    ProviderClient,
    model_routes,
)
from everyskill.tenancy import tenant_scope
from tests.model_server import (
    Answer,
    ModelServer,
    Reply,
    anthropic_error,
    model_server,
    openai_error,
)
from tests.support import TenantRows

HAIKU, GPT = "claude-haiku-4-5", "gpt-4.1-mini"
# The price table's rates of these models, in microcents per token
# (genai-prices: Haiku 4.5 $1/$5 per million, cache reads $0.10, writes
# $1.25; GPT-4.1 mini $0.40/$1.60, cache reads $0.10).
HAIKU_RATES = {"input": 100, "output": 500, "cache_read": 10, "cache_write": 125}
GPT_RATES = {"input": 40, "output": 160, "cache_read": 10, "cache_write": 40}
SYSTEM = "Review the diff."  # the fixture skill's only version

ANSWERS = {
    "What is 2 + 2?": Answer("4", 120, 3, cache_read_tokens=2000),
    "Name the capital of France.": Answer("Paris.", 130, 5, cache_write_tokens=1500),
    "How many legs does a spider have?": Answer("Eight.", 110, 4, 2000, 0),
}
CASES = [TestCase(prompt, answer.text) for prompt, answer in ANSWERS.items()]


def new_key(prefix: str) -> str:
    """A key no redaction rule knows the shape of: only the clients' own
    care keeps it out of what is stored and logged."""
    return f"{prefix}-{secrets.token_hex(16)}"


@pytest.fixture
def key() -> str:
    return new_key("local-test-key")


@pytest.fixture
def server(key: str) -> Iterator[ModelServer]:
    with model_server(key, ANSWERS) as served:
        yield served


def anthropic(server: ModelServer, key: str, **options: Any) -> AnthropicClient:
    return AnthropicClient(api_key=key, base_url=server.anthropic_url, **options)


def openai(server: ModelServer, key: str, **options: Any) -> OpenAIClient:
    return OpenAIClient(api_key=key, base_url=server.openai_url, **options)


def cost(rates: dict[str, int], answer: Answer) -> int:
    """The cost of an answer, worked by hand from the rates."""
    return (
        answer.input_tokens * rates["input"]
        + answer.output_tokens * rates["output"]
        + answer.cache_read_tokens * rates["cache_read"]
        + answer.cache_write_tokens * rates["cache_write"]
    )


# -- normal answers ---------------------------------------------------------------------


async def test_anthropic_answers_with_its_usage_and_the_system_prompt(
    server: ModelServer, key: str
) -> None:
    async with anthropic(server, key) as client:
        completion = await client.complete(HAIKU, "What is 2 + 2?", system=SYSTEM)
        second = await client.complete(HAIKU, "Name the capital of France.", system=SYSTEM)
    assert (completion.output, completion.input_tokens, completion.output_tokens) == ("4", 120, 3)
    assert (completion.cache_read_tokens, completion.cache_write_tokens) == (2000, 0)
    assert (second.cache_read_tokens, second.cache_write_tokens) == (0, 1500)
    assert completion.latency_ms is not None and completion.latency_ms >= 0
    request = server.received(HAIKU, "What is 2 + 2?")[0]
    # The skill is the system prompt, marked for the prompt cache; the key
    # is sent as the SDK sends it.
    assert request.body["system"] == [
        {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}
    ]
    assert request.body["messages"] == [{"role": "user", "content": "What is 2 + 2?"}]
    assert request.body["max_tokens"] == 1024 and "temperature" not in request.body
    assert request.headers["authorization"] == f"Bearer {key}"
    assert client.provider_of(HAIKU) == "anthropic"
    assert key not in repr(client)


async def test_openai_answers_with_its_usage_counted_the_anthropic_way(
    server: ModelServer, key: str
) -> None:
    async with openai(server, key, temperature=0, max_tokens=200) as client:
        completion = await client.complete(GPT, "What is 2 + 2?", system=SYSTEM)
    # The server reported prompt_tokens 2120 of which 2000 cached.
    assert (completion.output, completion.input_tokens, completion.output_tokens) == ("4", 120, 3)
    assert (completion.cache_read_tokens, completion.cache_write_tokens) == (2000, None)
    request = server.received(GPT, "What is 2 + 2?")[0]
    assert request.body["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    assert (request.body["temperature"], request.body["max_completion_tokens"]) == (0, 200)
    assert request.headers["authorization"] == f"Bearer {key}"
    assert client.provider_of(GPT) == "openai"


async def test_an_openai_compatible_server_without_usage_is_named_as_its_provider(
    server: ModelServer, key: str
) -> None:
    server.script[("llama3.2:3b", "hi")] = [
        Reply(body={
            "id": "x", "object": "chat.completion", "created": 0, "model": "llama3.2:3b",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hello"}}],
        })
    ]
    async with openai(server, key, provider="ollama") as client:
        completion = await client.complete("llama3.2:3b", "hi")
        assert client.provider_of("llama3.2:3b") == "ollama"
    assert completion.output == "hello"
    assert (completion.input_tokens, completion.output_tokens) == (None, None)
    assert server.received("llama3.2:3b")[0].system is None


# -- retries and errors -----------------------------------------------------------------


async def test_a_429_is_retried_after_the_wait_it_asks_for(server: ModelServer, key: str) -> None:
    prompt = "What is 2 + 2?"
    server.script[(HAIKU, prompt)] = [
        Reply(429, {"retry-after": "1"}, anthropic_error(
            429, "rate_limit_error", "Number of requests has exceeded your rate limit").body)
    ]
    server.script[(GPT, prompt)] = [
        Reply(429, {"retry-after": "1"}, openai_error(429, "requests", "Rate limit reached").body)
    ]
    async with anthropic(server, key) as claude, openai(server, key) as gpt:
        answers = await asyncio.gather(claude.complete(HAIKU, prompt), gpt.complete(GPT, prompt))
    for model, answer in zip((HAIKU, GPT), answers):
        assert answer.output == "4"
        attempts = server.received(model, prompt)
        assert len(attempts) == 2
        # The SDK waited what the server asked (1 s) before trying again,
        # and the latency is the whole call's.
        assert attempts[1].at - attempts[0].at >= 0.95
        assert answer.latency_ms is not None and answer.latency_ms >= 950
        assert attempts[1].headers["x-stainless-retry-count"] == "1"


@pytest.mark.parametrize(
    ("status", "kind"), [(529, "overloaded_error"), (503, "api_error")]
)
async def test_overload_is_retried_within_the_bound_then_an_error(
    server: ModelServer, key: str, status: int, kind: str
) -> None:
    prompt = "What is 2 + 2?"
    server.script[(HAIKU, prompt)] = [anthropic_error(status, kind, "Overloaded")] * 5
    server.script[(GPT, prompt)] = [openai_error(status, "server_error", "Overloaded")] * 5
    async with anthropic(server, key, max_retries=2) as claude, openai(server, key, max_retries=1) as gpt:
        with pytest.raises(ModelUnavailable) as claude_error:
            await claude.complete(HAIKU, prompt)
        with pytest.raises(ModelUnavailable) as gpt_error:
            await gpt.complete(GPT, prompt)
    # max_retries + 1 attempts, as the server counted them and as the error says.
    assert server.count(HAIKU, prompt) == 3 and claude_error.value.attempts == 3
    assert server.count(GPT, prompt) == 2 and gpt_error.value.attempts == 2
    assert claude_error.value.status == gpt_error.value.status == status
    what = "overloaded" if status == 529 else "unavailable"
    assert str(claude_error.value).startswith(f"anthropic {HAIKU}: {status} {what}: ")
    assert str(claude_error.value).endswith("(3 attempts)")
    # Once the overload is over, the next call answers.
    async with anthropic(server, key) as claude:
        server.script[(HAIKU, prompt)] = [anthropic_error(status, kind, "Overloaded")]
        assert (await claude.complete(HAIKU, prompt)).output == "4"
    assert server.count(HAIKU, prompt) == 5


async def test_a_refused_key_or_request_is_not_retried_and_the_key_is_never_shown(
    server: ModelServer, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = new_key("wrong-key")
    prompt = "What is 2 + 2?"
    async with anthropic(server, wrong) as claude, openai(server, wrong) as gpt:
        for client, model in ((claude, HAIKU), (gpt, GPT)):
            with pytest.raises(ModelAuthenticationError) as refused:
                await client.complete(model, prompt)
            assert refused.value.status == 401 and refused.value.attempts == 1
            assert server.count(model, prompt) == 1
            # The server quoted the key it was given; the error does not.
            assert "Incorrect API key provided: [api key]" in str(refused.value)
            assert wrong not in str(refused.value)
    server.script[(HAIKU, "bad")] = [anthropic_error(400, "invalid_request_error", "max_tokens: too big")]
    server.script[(GPT, "bad")] = [openai_error(400, "invalid_request_error", "Unsupported value")]
    async with anthropic(server, key) as claude, openai(server, key) as gpt:
        for client, model in ((claude, HAIKU), (gpt, GPT)):
            with pytest.raises(ModelRequestRefused) as bad:
                await client.complete(model, "bad")
            assert bad.value.status == 400 and server.count(model, "bad") == 1
    assert caplog.records  # the SDKs and the HTTP client did log
    assert wrong not in caplog.text and key not in caplog.text


async def test_a_timeout_is_an_error_after_the_retries(server: ModelServer, key: str) -> None:
    prompt = "What is 2 + 2?"
    server.script[(HAIKU, prompt)] = [Reply(delay=3)] * 3
    server.script[(GPT, prompt)] = [Reply(delay=3)] * 3
    async with anthropic(server, key, timeout=0.3, max_retries=1) as claude, openai(
        server, key, timeout=0.3, max_retries=0
    ) as gpt:
        with pytest.raises(ModelTimeout) as claude_error:
            await claude.complete(HAIKU, prompt)
        with pytest.raises(ModelTimeout) as gpt_error:
            await gpt.complete(GPT, prompt)
    assert claude_error.value.attempts == 2 and server.count(HAIKU, prompt) == 2
    assert gpt_error.value.attempts == 1 and server.count(GPT, prompt) == 1
    assert "no answer within 0.3 s" in str(claude_error.value)


async def test_the_deadline_bounds_a_call_whatever_the_server_asks(
    server: ModelServer, key: str
) -> None:
    """A server that does not answer within the deadline: the call gives
    up at its deadline, however long each attempt could have waited."""
    prompt = "What is 2 + 2?"
    server.script[(HAIKU, prompt)] = [Reply(delay=5)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with anthropic(server, key, deadline=1.0, timeout=30) as claude:
        with pytest.raises(ModelTimeout) as late:
            await claude.complete(HAIKU, prompt)
    assert 0.9 <= loop.time() - started < 4
    assert "no answer within the deadline of 1 s" in str(late.value)
    assert late.value.attempts == 1 and late.value.status is None


@pytest.mark.parametrize("asked", ["3600", "ms", "date"])
async def test_a_429_asking_for_a_wait_longer_than_the_deadline_fails_at_once(
    server: ModelServer, key: str, asked: str
) -> None:
    """A 429 asking for an hour's wait (in seconds, in milliseconds, or as a
    date) is not waited for: the call is rate limited at once, with its
    status, instead of holding its place until the deadline."""
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    headers = {
        "3600": {"retry-after": "3600"},
        "ms": {"retry-after-ms": "3600000"},
        "date": {"retry-after": format_datetime(
            datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True)},
    }[asked]
    prompt = "What is 2 + 2?"
    server.script[(HAIKU, prompt)] = [
        Reply(429, headers, anthropic_error(429, "rate_limit_error", "slow down").body)
    ]
    server.script[(GPT, prompt)] = [
        Reply(429, headers, openai_error(429, "requests", "Rate limit reached").body)
    ]
    loop = asyncio.get_running_loop()
    async with anthropic(server, key, deadline=20) as claude, openai(server, key, deadline=20) as gpt:
        for client, model in ((claude, HAIKU), (gpt, GPT)):
            started = loop.time()
            with pytest.raises(ModelRateLimited) as limited:
                await client.complete(model, prompt)
            assert loop.time() - started < 2
            assert limited.value.status == 429 and limited.value.attempts == 1
            assert server.count(model, prompt) == 1
            assert "429 rate limited, retry-after 3" in str(limited.value)
            assert "the deadline leaves: not retried" in str(limited.value)
    # A wait the deadline leaves room for is waited (as above: 1 s), and a
    # call that was cut short does not change the next one.
    server.script[(HAIKU, prompt)] = [
        Reply(429, {"retry-after": "1"}, anthropic_error(429, "rate_limit_error", "slow").body)
    ]
    async with anthropic(server, key, deadline=20) as claude:
        assert (await claude.complete(HAIKU, prompt)).output == "4"
    assert server.count(HAIKU, prompt) == 3


async def test_malformed_json_is_a_bad_response(server: ModelServer, key: str) -> None:
    server.script[(HAIKU, "broken")] = [Reply(200, raw=b'{"id": "msg_1", "content": [')]
    server.script[(GPT, "broken")] = [Reply(200, raw=b"<html>gateway</html>")]
    async with anthropic(server, key) as claude, openai(server, key) as gpt:
        for client, model in ((claude, HAIKU), (gpt, GPT)):
            with pytest.raises(ModelBadResponse) as bad:
                await client.complete(model, "broken")
            assert "the answer could not be read" in str(bad.value)
            assert server.count(model, "broken") == 1


# JSON answers that are not the API's: the SDKs build their objects without
# checking them.
ANTHROPIC_SHAPES = [
    {"type": "message"},  # no content, no usage
    {"type": "message", "content": "4", "usage": {"input_tokens": 1, "output_tokens": 1}},
    {"type": "message", "content": [{"type": "text"}], "usage": {"input_tokens": 1, "output_tokens": 1}},
    {"type": "message", "content": ["4"], "usage": {"input_tokens": 1, "output_tokens": 1}},
    {"type": "message", "content": [{"type": "text", "text": "4"}], "usage": {"output_tokens": 1}},
    {"type": "message", "content": [{"type": "text", "text": "4"}],
     "usage": {"input_tokens": "12", "output_tokens": 1}},
    {"type": "message", "content": [{"type": "text", "text": "4"}],
     "usage": {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": -3}},
    [{"type": "text", "text": "4"}],
    "4",
]
OPENAI_SHAPES = [
    {"object": "chat.completion"},  # no choices
    {"choices": [{"index": 0}]},  # no message
    {"choices": "4"},
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": 4}}]},
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}}],
     "usage": {"completion_tokens": 3}},  # no prompt_tokens
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}}],
     "usage": {"prompt_tokens": 10, "completion_tokens": 3,
               "prompt_tokens_details": {"cached_tokens": "a"}}},
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}}],
     "usage": {"prompt_tokens": 10, "completion_tokens": 3,
               "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 8}}},
    [1, 2],
]


async def test_json_that_is_not_the_apis_answer_is_a_bad_response(
    server: ModelServer, key: str
) -> None:
    for index, body in enumerate(ANTHROPIC_SHAPES):
        server.script[(HAIKU, f"shape {index}")] = [Reply(200, body=body)]
    for index, body in enumerate(OPENAI_SHAPES):
        server.script[(GPT, f"shape {index}")] = [Reply(200, body=body)]
    async with anthropic(server, key) as claude, openai(server, key) as gpt:
        for client, model, shapes in ((claude, HAIKU, ANTHROPIC_SHAPES), (gpt, GPT, OPENAI_SHAPES)):
            for index, body in enumerate(shapes):
                with pytest.raises(ModelBadResponse) as bad:
                    await client.complete(model, f"shape {index}")
                assert "the answer could not be read: ValueError: the answer" in str(bad.value), body
                assert bad.value.attempts == 1 and bad.value.status is None
                assert server.count(model, f"shape {index}") == 1  # not retried
                assert bad.value.__cause__ is None and bad.value.__context__ is None


async def test_openai_cache_writes_are_taken_out_of_the_input_tokens(
    server: ModelServer, key: str
) -> None:
    """France: 130 uncached and 1500 written to the cache; the server
    reports prompt_tokens 1630 with cache_write_tokens 1500 (and 0 cached)."""
    async with openai(server, key) as client:
        completion = await client.complete(GPT, "Name the capital of France.", system=SYSTEM)
    assert (completion.input_tokens, completion.output_tokens) == (130, 5)
    assert (completion.cache_read_tokens, completion.cache_write_tokens) == (0, 1500)


async def test_no_key_is_reachable_from_a_mapped_error(server: ModelServer, key: str) -> None:
    """The SDK's error quotes the key the server was sent and carries the
    request with its headers: the mapped error neither quotes it nor leads
    to it through its cause or context, nor prints it in a traceback."""
    import traceback

    wrong = new_key("wrong-key")
    server.script[(HAIKU, "overloaded")] = [anthropic_error(529, "overloaded_error", "Overloaded")]
    async with anthropic(server, wrong) as claude, openai(server, wrong) as gpt, anthropic(
        server, key, max_retries=0
    ) as good:
        calls = [
            (claude.complete(HAIKU, "What is 2 + 2?"), wrong),
            (gpt.complete(GPT, "What is 2 + 2?"), wrong),
            (good.complete(HAIKU, "overloaded"), key),
        ]
        for call, secret in calls:
            with pytest.raises(ModelCallError) as refused:
                await call
            chain: list[BaseException] = []
            error: BaseException | None = refused.value
            while error is not None and error not in chain:
                chain.append(error)
                error = error.__cause__ or error.__context__
            assert chain == [refused.value]
            for link in chain:
                assert secret not in str(link) and secret not in repr(link)
                assert secret not in repr(vars(link))
            assert secret not in "".join(traceback.format_exception(refused.value))


async def test_an_unreachable_server_is_a_connection_error(key: str) -> None:
    from everyskill.providers import ModelConnectionError
    from tests.support import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with AnthropicClient(api_key=key, base_url=closed, max_retries=1) as client:
        with pytest.raises(ModelConnectionError) as unreachable:
            await client.complete(HAIKU, "What is 2 + 2?")
    assert unreachable.value.attempts == 2 and unreachable.value.status is None
    assert f"could not reach {closed}" in str(unreachable.value)


# -- keys, settings, routes ------------------------------------------------------------


async def test_keys_and_base_urls_come_from_the_environment(
    server: ModelServer, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for make in (AnthropicClient, OpenAIClient):
        with pytest.raises(ValidationError) as missing:
            make()
        assert missing.value.field == "api_key" and make.key_variable in missing.value.reason
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_url)
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
    async with AnthropicClient() as claude, OpenAIClient() as gpt:
        assert (await claude.complete(HAIKU, "What is 2 + 2?")).output == "4"
        assert (await gpt.complete(GPT, "What is 2 + 2?")).output == "4"


@pytest.mark.parametrize(
    ("options", "field"),
    [({"max_retries": -1}, "max_retries"), ({"timeout": 0}, "timeout"),
     ({"deadline": "10"}, "deadline"), ({"max_tokens": 0}, "max_tokens"),
     ({"provider": " "}, "provider"), ({"temperature": -1}, "temperature")],
)
def test_bad_settings_are_refused(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        AnthropicClient(api_key="k", **options)
    assert refused.value.field == field


def test_model_routes() -> None:
    assert model_routes(["claude-haiku-4-5", " gpt-4.1-mini", "o3", "o4-mini",
                         "openai:llama3.2:3b", "anthropic:my-proxy-model"]) == {
        "claude-haiku-4-5": "anthropic", "gpt-4.1-mini": "openai", "o3": "openai",
        "o4-mini": "openai", "llama3.2:3b": "openai", "my-proxy-model": "anthropic",
    }
    with pytest.raises(ValidationError, match="openai:llama3.2"):
        model_routes(["llama3.2"])
    with pytest.raises(ValidationError, match="twice"):
        model_routes(["gpt-4o", "openai:gpt-4o"])
    with pytest.raises(ValidationError) as empty:
        model_routes([], "judge")
    assert empty.value.field == "judge"


async def test_a_router_sends_each_model_to_its_provider(server: ModelServer, key: str) -> None:
    router = ModelRouter(
        {"anthropic": anthropic(server, key), "openai": openai(server, key, provider="openai")},
        model_routes([HAIKU, GPT]),
    )
    async with router:
        answers = [await router.complete(m, "What is 2 + 2?", system=SYSTEM) for m in (HAIKU, GPT)]
        assert [router.provider_of(m) for m in (HAIKU, GPT)] == ["anthropic", "openai"]
        with pytest.raises(ValidationError):
            router.provider_of("gpt-5")
    assert [a.output for a in answers] == ["4", "4"]
    assert [r.api for r in server.received(prompt="What is 2 + 2?")] == ["anthropic", "openai"]
    with pytest.raises(ValidationError, match="no client for openai"):
        ModelRouter({"anthropic": anthropic(server, key)}, {GPT: "openai"})


# -- whole runs, against the database -----------------------------------------------------


async def text_columns(owner: asyncpg.Connection) -> list[tuple[str, str]]:
    """Every column of the public schema that holds text (or JSON)."""
    rows = await owner.fetch(
        """
        SELECT c.table_name, c.column_name FROM information_schema.columns c
          JOIN information_schema.tables t
            ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
           AND (c.data_type IN ('text', 'character varying', 'json', 'jsonb')
                OR c.udt_name IN ('_text', '_varchar'))
        """
    )
    return [(row["table_name"], row["column_name"]) for row in rows]


async def assert_stored_nowhere(owner: asyncpg.Connection, *needles: str) -> None:
    """No text column of any table holds any of ``needles``."""
    columns = await text_columns(owner)
    assert len(columns) > 30
    for table, column in columns:
        for needle in needles:
            found = await owner.fetchval(
                f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE $1',
                f"%{needle}%",
            )
            assert found == 0, f"{table}.{column} holds a key"


async def new_run(tenant: TenantRows, models: list[str]) -> str:
    async with tenant_scope(tenant.tenant_id):
        saved = await benchmarks.create_run(
            skill_id=tenant.skill_id, models=models, triggered_by=tenant.user_id
        )
    return str(saved.row.id)


async def test_a_run_over_both_providers_records_tokens_costs_retries_and_errors(
    owner: asyncpg.Connection, tenant: TenantRows, server: ModelServer, key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    spider = "How many legs does a spider have?"
    france = "Name the capital of France."
    # Haiku is rate limited once on 2 + 2, then answers; GPT-4.1 mini is
    # overloaded on the spider for good, and answers France with broken JSON.
    server.script[(HAIKU, "What is 2 + 2?")] = [
        Reply(429, {"retry-after": "1"}, anthropic_error(429, "rate_limit_error", "slow").body)
    ]
    server.script[(GPT, spider)] = [openai_error(503, "server_error", "Overloaded")] * 3
    server.script[(GPT, france)] = [Reply(200, raw=b'{"id": "chatcmpl-1", "choices": [{')]
    run_id = await new_run(tenant, [HAIKU, GPT])
    router = ModelRouter(
        {"anthropic": anthropic(server, key), "openai": openai(server, key, max_retries=2)},
        model_routes([HAIKU, GPT]),
    )
    async with router:
        run = await run_benchmark(tenant.tenant_id, run_id, router, CASES, concurrency=6)
    assert run.status == "completed"

    rows = {
        (r["model_name"], r["input_used"]): r
        for r in await owner.fetch("SELECT * FROM benchmark_results WHERE benchmark_run_id = $1", run_id)
    }
    assert len(rows) == 6
    for prompt, answer in ANSWERS.items():
        row = rows[(HAIKU, prompt)]
        assert row["model_provider"] == "anthropic" and row["output_produced"] == answer.text
        assert (row["input_tokens"], row["output_tokens"]) == (answer.input_tokens, answer.output_tokens)
        assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (
            answer.cache_read_tokens, answer.cache_write_tokens,
        )
        assert row["total_tokens"] == (
            answer.input_tokens + answer.output_tokens + answer.cache_read_tokens
            + answer.cache_write_tokens
        )
        assert row["estimated_cost_microcents"] == cost(HAIKU_RATES, answer)
        assert (row["quality_score"], row["matches_expected"]) == (100, True)
    # By hand: 120 * 100 + 3 * 500 + 2000 * 10 = 33,500 microcents for 2 + 2;
    # 130 * 100 + 5 * 500 + 1500 * 125 = 203,000 for France.
    assert rows[(HAIKU, "What is 2 + 2?")]["estimated_cost_microcents"] == 33_500
    assert rows[(HAIKU, france)]["estimated_cost_microcents"] == 203_000
    # The rate-limited call waited, was retried once, and its latency says so.
    assert server.count(HAIKU, "What is 2 + 2?") == 2
    assert rows[(HAIKU, "What is 2 + 2?")]["latency_ms"] >= 950

    gpt_two = rows[(GPT, "What is 2 + 2?")]
    # OpenAI reported 2120 prompt tokens, 2000 of them cached: 120 uncached.
    assert (gpt_two["input_tokens"], gpt_two["cache_read_tokens"]) == (120, 2000)
    assert gpt_two["estimated_cost_microcents"] == 120 * 40 + 3 * 160 + 2000 * 10 == 25_280
    overloaded = rows[(GPT, spider)]
    assert overloaded["error_message"] == (
        f"ModelUnavailable: openai {GPT}: 503 unavailable: Error code: 503 - Overloaded (3 attempts)"
    )
    assert server.count(GPT, spider) == 3
    assert overloaded["estimated_cost_microcents"] is None and overloaded["output_produced"] is None
    broken = rows[(GPT, france)]
    assert broken["error_message"].startswith(f"ModelBadResponse: openai {GPT}: the answer could not be read")
    assert server.count(GPT, france) == 1
    async with tenant_scope(tenant.tenant_id):
        summary = {s.model_name: s for s in await benchmarks.run_summary(run_id)}
        spent = await benchmarks.run_cost(run_id)
    assert (summary[HAIKU].errors, summary[GPT].errors) == (0, 2)
    assert spent.results_microcents == sum(
        cost(HAIKU_RATES, answer) for answer in ANSWERS.values()
    ) + 25_280
    assert (spent.judging_microcents, spent.judgements) == (0, 0)
    await assert_stored_nowhere(owner, key)
    assert key not in caplog.text


async def test_a_run_whose_key_is_refused_fails_and_stores_no_key(
    owner: asyncpg.Connection, tenant: TenantRows, server: ModelServer,
) -> None:
    """A key of Anthropic's shape, refused: every call is an error that
    quotes no key, the run fails, and no table holds the key."""
    wrong = "sk-ant-api03-" + secrets.token_urlsafe(70)
    run_id = await new_run(tenant, [HAIKU])
    async with anthropic(server, wrong) as client:
        run = await run_benchmark(tenant.tenant_id, run_id, client, CASES)
    assert run.status == "failed"
    assert run.error_message is not None and "every model call failed (3 of 3)" in run.error_message
    messages = await owner.fetch(
        "SELECT error_message FROM benchmark_results WHERE benchmark_run_id = $1", run_id
    )
    assert len(messages) == 3 and all(
        m["error_message"].startswith(f"ModelAuthenticationError: anthropic {HAIKU}: 401 key refused")
        for m in messages
    )
    assert server.count(HAIKU) == 3  # one attempt per case: no retry
    await assert_stored_nowhere(owner, wrong, wrong[20:60])


def test_the_clients_implement_the_runners_protocol() -> None:
    from everyskill.benchmark_runner import ModelClient
    from everyskill.providers import JsonModelClient

    client = AnthropicClient(api_key="k", base_url="http://127.0.0.1:9")
    assert isinstance(client, ModelClient) and isinstance(client, JsonModelClient)
    assert isinstance(client, ProviderClient)
    assert Completion("x").latency_ms is None


def test_an_endless_wait_asked_is_longer_than_any_deadline() -> None:
    from everyskill.providers import _asked_wait

    assert _asked_wait({"retry-after": "1e999"}) == math.inf
    assert _asked_wait({"retry-after-ms": "inf"}) == math.inf
    assert _asked_wait({"retry-after": "nan"}) is None
    assert _asked_wait({"retry-after": "2"}) == 2.0


def test_a_model_name_with_a_space_is_refused() -> None:
    with pytest.raises(ValidationError, match="no spaces"):
        model_routes(["openai:my judge"], "judge")
