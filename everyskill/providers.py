"""Model clients for real providers: Anthropic and OpenAI (or a server that
speaks OpenAI's API), on their official SDKs.

Contract
--------
- :class:`AnthropicClient` (Messages API) and :class:`OpenAIClient` (Chat
  Completions API) implement :class:`~everyskill.benchmark_runner.ModelClient`:
  ``complete(model, prompt, system=...)`` sends ``system`` (the skill's
  content) as the system prompt and ``prompt`` as the user message, and
  returns a :class:`~everyskill.benchmark_runner.Completion`: the answer's
  text, the tokens as the provider reports them and the latency measured
  around the call (its retries included). ``complete_json`` does the same
  but asks for an answer that matches a JSON schema (Anthropic's
  ``output_config`` format, OpenAI's strict ``json_schema`` response format):
  the answer's text is then that JSON, for the caller to validate.
- Tokens follow :class:`~everyskill.pricing.TokenUsage` (Anthropic's way).
  Anthropic: ``input_tokens``, ``output_tokens``,
  ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` as
  reported. OpenAI: its ``prompt_tokens`` include the cached ones, so the
  input tokens are ``prompt_tokens`` minus ``cached_tokens`` (cache reads)
  minus ``cache_write_tokens`` (cache writes) when it reports them; a
  count it does not report is None (unknown), and a server that reports
  no usage at all gives None tokens (the result then has no cost).
  Anthropic's system prompt is marked for prompt caching
  (``cache_system_prompt``, on by default), as assistants use skills;
  OpenAI caches long prompts by itself.
- Keys: ``api_key``, else the environment's ``ANTHROPIC_API_KEY`` /
  ``OPENAI_API_KEY``; neither is a :class:`~everyskill.errors.ValidationError`
  on ``api_key`` before anything is sent. A key is handed to the SDK and
  kept for one purpose: it is cut out of every error message (replaced by
  ``[api key]``) before the message leaves this module, so that it reaches
  neither a result, nor a log, nor a terminal; the clients' ``repr`` does
  not show it either. (Stored text is also redacted by
  :mod:`everyskill.redaction`.)
- ``base_url`` (else ``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL``, read by
  the SDK, else the provider's own): an :class:`OpenAIClient` pointed at a
  local OpenAI-compatible server (vLLM, Ollama, llama.cpp's server) benchmarks
  local models; name it with ``provider`` (default ``openai``) so that its
  results are priced as that provider's (a tenant price for it, or no cost).
- Retries and their bound: the SDK retries what it deems transient, with
  its own exponential backoff (0.5 s doubling, at most 8 s, with jitter) or
  the wait the server asks for (``retry-after``): rate limits (429),
  overload and server errors (529, 503, 5xx), 408, 409, timeouts and lost
  connections. A call makes at most ``max_retries + 1`` attempts (default
  3), each waits at most ``timeout`` seconds for an answer (default 120),
  and the call as a whole, waits included, is given up after ``deadline``
  seconds (default 600): so no call outlasts ``deadline``, whatever the
  server asks. A response that asks for a wait (``retry-after-ms``, or
  ``retry-after`` in seconds or as a date) longer than the time the deadline
  leaves is not retried: the call fails at once with that response's error
  (a 429 is :class:`ModelRateLimited`, status 429), instead of holding a
  place of the runner's concurrency until the deadline to end as a
  timeout. Authentication (401, 403) and bad requests (400, 404, 413,
  422) are not retried.
- Errors are :class:`ModelCallError` subclasses, which the runner records as
  the result's error: :class:`ModelRateLimited` (429),
  :class:`ModelUnavailable` (5xx, 529 overloaded included),
  :class:`ModelAuthenticationError` (401, 403), :class:`ModelRequestRefused`
  (another 4xx), :class:`ModelTimeout` (no answer within ``timeout`` on the
  last attempt, or within ``deadline``), :class:`ModelConnectionError` (the
  server could not be reached) and :class:`ModelBadResponse` (an answer
  that is not JSON, or JSON that is not the API's answer: content that is
  not a list of blocks, no choices, a token count that is missing or not a
  count; the SDKs do not check). Each says the provider, the model, the
  status, the number of attempts made and the provider's message (key cut
  out, at most 500 characters); ``status`` and ``attempts`` are attributes.
  A mapped error has neither cause nor context: the SDK's error, whose
  request carries the key, is not reachable from it.
- :class:`ModelRouter` is one client over several: each model is served by
  its provider's client (:func:`model_routes` reads ``provider:model`` names
  and knows ``claude-*`` as Anthropic's and ``gpt-*``, ``o1``/``o3``/``o4``
  and ``chatgpt-*`` as OpenAI's). It holds one client per provider's API:
  OpenAI's own models and those of an OpenAI-compatible server
  (``openai:NAME``) share the OpenAI client, its base URL and its provider
  name. Clients are closed with ``aclose()`` or ``async with``.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import anthropic
import openai

from everyskill.benchmark_runner import Completion
from everyskill.errors import ValidationError

__all__ = [
    "PROVIDERS",
    "AnthropicClient",
    "JsonModelClient",
    "ModelAuthenticationError",
    "ModelBadResponse",
    "ModelCallError",
    "ModelConnectionError",
    "ModelRateLimited",
    "ModelRequestRefused",
    "ModelRouter",
    "ModelTimeout",
    "ModelUnavailable",
    "OpenAIClient",
    "ProviderClient",
    "model_routes",
]

#: The APIs a model can be served through, by provider name.
PROVIDERS = ("anthropic", "openai")

#: The longest provider message an error quotes, in characters.
_MESSAGE_LENGTH = 500
_KEY_SHOWN = "[api key]"


# -- errors ----------------------------------------------------------------------------


class ModelCallError(Exception):
    """A model call that failed; see the module's contract."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class ModelRateLimited(ModelCallError):
    """The provider refused the call for its rate limit (429), retries spent."""


class ModelUnavailable(ModelCallError):
    """The provider was overloaded or failed (5xx, 529), retries spent."""


class ModelAuthenticationError(ModelCallError):
    """The key was refused (401) or lacks the permission (403): not retried."""


class ModelRequestRefused(ModelCallError):
    """The provider refused the request (400, 404, 413, 422...): not retried."""


class ModelTimeout(ModelCallError):
    """No answer in time: an attempt's ``timeout`` or the call's ``deadline``."""


class ModelConnectionError(ModelCallError):
    """The provider's server could not be reached, retries spent."""


class ModelBadResponse(ModelCallError):
    """The provider answered something that is not its API's answer."""


# -- each call's state, kept by the HTTP client's hooks ------------------------------


@dataclass
class _Call:
    """One call of a client: its attempts so far, when its deadline passes
    (on the event loop's clock), and a wait the server asked for that the
    deadline could not give (the wait and the time that was left)."""

    ends_at: float
    attempts: int = 0
    refused_wait: tuple[float, float] | None = None


# Each call has its own state: the runner runs each call in a task of its
# own, and a task sees its own value of a context variable (the HTTP
# client's hooks run in the task that sends).
_calls: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "everyskill_provider_call", default=None
)


async def _count_attempt(request: object) -> None:
    """An HTTP client's request hook: one more attempt of the current call."""
    call = _calls.get()
    if call is not None:
        call.attempts += 1


def _asked_wait(headers: Mapping[str, str]) -> float | None:
    """The wait in seconds a response asks for: ``retry-after-ms``, else
    ``retry-after`` in seconds or as an HTTP date; None when it asks none."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        given = headers.get(name)
        if given is None:
            continue
        try:
            wait = float(given) * scale
        except ValueError:
            if name == "retry-after-ms":
                continue
            try:
                when = email.utils.parsedate_to_datetime(given)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            wait = (when - datetime.now(timezone.utc)).total_seconds()
        if math.isnan(wait):
            return None
        return wait  # an infinite wait is longer than any deadline
    return None


async def _refuse_long_waits(response: Any) -> None:
    """An HTTP client's response hook: a response the SDK would retry after
    a wait longer than the call's deadline leaves is not retried (the SDK's
    own ``x-should-retry: false``), so that the call fails at once with the
    provider's status instead of holding its place until the deadline."""
    call = _calls.get()
    status = response.status_code
    if call is None or not (status in (408, 409, 429) or status >= 500):
        return
    wait = _asked_wait(response.headers)
    if wait is None:
        return
    left = call.ends_at - asyncio.get_running_loop().time()
    if wait >= left:
        call.refused_wait = (wait, max(left, 0.0))
        response.headers["x-should-retry"] = "false"


# -- clients ---------------------------------------------------------------------------


@runtime_checkable
class JsonModelClient(Protocol):
    """A model client that can also ask for an answer matching a JSON schema."""

    def provider_of(self, model: str) -> str: ...

    async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion: ...

    async def complete_json(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None,
        schema_name: str,
        schema: Mapping[str, Any],
        max_tokens: int | None = None,
    ) -> Completion: ...


def _checked_number(name: str, value: object, low: float, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < low:
        what = "an integer" if integer else "a number"
        raise ValidationError.of(name, f"must be {what} of at least {low:g}")


class ProviderClient:
    """What both providers' clients share: the key, the bound on retries
    and time, the mapping of errors, the latency. See the module's contract."""

    #: The provider whose API the client speaks.
    api: str = ""
    #: The environment variable the key is read from.
    key_variable: str = ""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        provider: str | None = None,
        max_retries: int = 2,
        timeout: float = 120.0,
        deadline: float = 600.0,
        max_tokens: int = 1024,
        temperature: float | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(self.key_variable, "")
        if not isinstance(key, str) or not key.strip():
            raise ValidationError.of(
                "api_key", f"no key for {self.api}: set {self.key_variable} or pass api_key"
            )
        _checked_number("max_retries", max_retries, 0, integer=True)
        _checked_number("timeout", timeout, 0.001)
        _checked_number("deadline", deadline, 0.001)
        _checked_number("max_tokens", max_tokens, 1, integer=True)
        if temperature is not None:
            _checked_number("temperature", temperature, 0)
        name = self.api if provider is None else provider.strip()
        if not name:
            raise ValidationError.of("provider", "must be a non-empty name")
        self._key = key.strip()
        self.provider = name
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.deadline = float(deadline)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.base_url = ""  # the SDK client's, set by the subclass

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, base_url={self.base_url!r})"

    def provider_of(self, model: str) -> str:
        """The provider whose prices apply: ``provider``."""
        return self.provider

    async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion:
        """The model's answer to ``prompt`` with ``system`` as system prompt."""
        return await self._call(model, lambda: self._create(model, prompt, system, None, self.max_tokens))

    async def complete_json(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None,
        schema_name: str,
        schema: Mapping[str, Any],
        max_tokens: int | None = None,
    ) -> Completion:
        """An answer matching ``schema`` (a JSON schema), as JSON text."""
        return await self._call(
            model,
            lambda: self._create(
                model, prompt, system, (schema_name, schema), max_tokens or self.max_tokens
            ),
        )

    async def _create(
        self,
        model: str,
        prompt: str,
        system: str | None,
        schema: tuple[str, Mapping[str, Any]] | None,
        max_tokens: int,
    ) -> Completion:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the SDK's connections."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(self, model: str, create: Callable[[], Awaitable[Completion]]) -> Completion:
        """One call: attempts counted, the deadline kept, errors mapped, the
        latency measured around it all."""
        call = _Call(ends_at=asyncio.get_running_loop().time() + self.deadline)
        token = _calls.set(call)
        started = time.perf_counter()
        mapped: ModelCallError
        try:
            async with asyncio.timeout(self.deadline):
                completion = await create()
        except TimeoutError:
            mapped = ModelTimeout(
                self._message(model, f"no answer within the deadline of {self.deadline:g} s", call.attempts),
                attempts=call.attempts,
            )
        except (anthropic.APIError, openai.APIError) as error:
            mapped = self._mapped(error, model, call)
        except ValueError as error:  # a body that is not JSON, or not the API's
            mapped = ModelBadResponse(
                self._message(
                    model, f"the answer could not be read: {type(error).__name__}: {error}", call.attempts
                ),
                attempts=call.attempts,
            )
        else:
            return _with_latency(completion, time.perf_counter() - started)
        finally:
            _calls.reset(token)
        # Raised here, outside the handlers, the error has no context: the
        # SDK's error (whose request holds the key) is not reachable from it.
        raise mapped

    def _mapped(self, error: anthropic.APIError | openai.APIError, model: str, call: _Call) -> ModelCallError:
        attempts = call.attempts
        if isinstance(error, (anthropic.APITimeoutError, openai.APITimeoutError)):
            return ModelTimeout(
                self._message(model, f"no answer within {self.timeout:g} s", attempts), attempts=attempts
            )
        if isinstance(error, (anthropic.APIConnectionError, openai.APIConnectionError)):
            return ModelConnectionError(
                self._message(model, f"could not reach {self.base_url}: {error}", attempts),
                attempts=attempts,
            )
        if isinstance(error, (anthropic.APIStatusError, openai.APIStatusError)):
            status = error.status_code
            kind: type[ModelCallError]
            if status == 429:
                kind, what = ModelRateLimited, "rate limited"
            elif status >= 500:
                kind, what = ModelUnavailable, "overloaded" if status == 529 else "unavailable"
            elif status in (401, 403):
                kind, what = ModelAuthenticationError, "key refused"
            else:
                kind, what = ModelRequestRefused, "request refused"
            retry_after = error.response.headers.get("retry-after")
            asked = f", retry-after {retry_after}" if status == 429 and retry_after else ""
            if call.refused_wait is not None:
                wait, left = call.refused_wait
                asked = (
                    f", retry-after {wait:g} s, more than the {left:.1f} s"
                    " the deadline leaves: not retried"
                )
            return kind(
                self._message(model, f"{status} {what}{asked}: {error}", attempts),
                status=status,
                attempts=attempts,
            )
        return ModelBadResponse(
            self._message(model, f"{type(error).__name__}: {error}", attempts), attempts=attempts
        )

    def _message(self, model: str, text: str, attempts: int) -> str:
        text = text.replace(self._key, _KEY_SHOWN)
        if len(text) > _MESSAGE_LENGTH:
            text = text[: _MESSAGE_LENGTH - 1] + "…"
        plural = "" if attempts == 1 else "s"
        return f"{self.provider} {model}: {text} ({attempts} attempt{plural})"


def _with_latency(completion: Completion, seconds: float) -> Completion:
    return Completion(
        output=completion.output,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cache_read_tokens=completion.cache_read_tokens,
        cache_write_tokens=completion.cache_write_tokens,
        latency_ms=round(seconds * 1000),
    )


# -- reading answers -----------------------------------------------------------------
#
# The SDKs build their answer objects without validating them: a body that is
# JSON but not the API's answer (content null, a count that is text, a list)
# arrives as an object with None or anything in its fields. What is read is
# checked here; anything off is a ValueError, so a ModelBadResponse.


def _read(reader: Callable[[Any], Completion], answer: Any) -> Completion:
    """``reader(answer)``; any error reading it is a ValueError naming it."""
    try:
        return reader(answer)
    except ValueError:
        raise
    except (TypeError, AttributeError, LookupError) as error:
        raise ValueError(f"the answer is not the API's: {type(error).__name__}: {error}") from None


def _count(value: object, name: str) -> int:
    """A token count the answer must have: a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"the answer's {name} is {value!r}, not a count of tokens")
    return value


def _optional_count(value: object, name: str) -> int | None:
    """A token count the answer may leave out (None)."""
    return None if value is None else _count(value, name)


def _anthropic_completion(message: Any) -> Completion:
    if not isinstance(message, anthropic.types.Message):
        raise ValueError(f"the answer is a {type(message).__name__}, not a message")
    # Read as what they may be (anything), not as what they are typed.
    content: Any = message.content
    if not isinstance(content, list):
        raise ValueError(f"the answer's content is {content!r}, not a list of blocks")
    texts: list[str] = []
    for block in content:
        kind = getattr(block, "type", None)
        if not isinstance(kind, str):
            raise ValueError(f"the answer's content holds {block!r}, not a block")
        if kind == "text":
            text = getattr(block, "text", None)
            if not isinstance(text, str):
                raise ValueError(f"the answer's text block has text {text!r}, not text")
            texts.append(text)
    usage: Any = message.usage
    if not isinstance(usage, anthropic.types.Usage):
        raise ValueError(f"the answer's usage is {usage!r}")
    return Completion(
        output="".join(texts),
        input_tokens=_count(usage.input_tokens, "input_tokens"),
        output_tokens=_count(usage.output_tokens, "output_tokens"),
        cache_read_tokens=_optional_count(
            usage.cache_read_input_tokens, "cache_read_input_tokens"
        ),
        cache_write_tokens=_optional_count(
            usage.cache_creation_input_tokens, "cache_creation_input_tokens"
        ),
    )


def _openai_completion(completion: Any) -> Completion:
    if not isinstance(completion, openai.types.chat.ChatCompletion):
        raise ValueError(f"the answer is a {type(completion).__name__}, not a chat completion")
    # Read as what they may be (anything), not as what they are typed.
    choices: Any = completion.choices
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"the answer's choices are {choices!r}, not a list of choices")
    message = getattr(choices[0], "message", None)
    if not isinstance(message, openai.types.chat.ChatCompletionMessage):
        raise ValueError(f"the answer's first choice has no message: {choices[0]!r}")
    content: Any = message.content
    if content is not None and not isinstance(content, str):
        raise ValueError(f"the answer's message has content {content!r}, not text")
    text = content or ""
    usage: Any = completion.usage
    if usage is None:  # a local server may report none: tokens unknown
        return Completion(output=text)
    if not isinstance(usage, openai.types.CompletionUsage):
        raise ValueError(f"the answer's usage is {usage!r}")
    prompt_tokens = _count(usage.prompt_tokens, "prompt_tokens")
    output_tokens = _count(usage.completion_tokens, "completion_tokens")
    details: Any = usage.prompt_tokens_details
    cache_read = cache_write = None
    if details is not None:
        cache_read = _optional_count(details.cached_tokens, "cached_tokens")
        cache_write = _optional_count(details.cache_write_tokens, "cache_write_tokens")
    input_tokens = prompt_tokens - (cache_read or 0) - (cache_write or 0)
    if input_tokens < 0:
        raise ValueError(
            f"the answer's usage does not add up: {prompt_tokens} prompt tokens,"
            f" {cache_read} cached, {cache_write} written to the cache"
        )
    return Completion(
        output=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


class AnthropicClient(ProviderClient):
    """Anthropic's Messages API through the ``anthropic`` SDK."""

    api = "anthropic"
    key_variable = "ANTHROPIC_API_KEY"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        provider: str | None = None,
        max_retries: int = 2,
        timeout: float = 120.0,
        deadline: float = 600.0,
        max_tokens: int = 1024,
        temperature: float | None = None,
        cache_system_prompt: bool = True,
    ) -> None:
        super().__init__(
            api_key=api_key, base_url=base_url, provider=provider, max_retries=max_retries,
            timeout=timeout, deadline=deadline, max_tokens=max_tokens, temperature=temperature,
        )
        self.cache_system_prompt = cache_system_prompt
        self._sdk = anthropic.AsyncAnthropic(
            api_key=self._key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=self.timeout,
            # The SDK's own HTTP client, counting each call's attempts and
            # refusing waits longer than its deadline leaves.
            http_client=anthropic.DefaultAsyncHttpxClient(
                event_hooks={"request": [_count_attempt], "response": [_refuse_long_waits]}
            ),
        )
        self.base_url = str(self._sdk.base_url)

    async def _create(
        self,
        model: str,
        prompt: str,
        system: str | None,
        schema: tuple[str, Mapping[str, Any]] | None,
        max_tokens: int,
    ) -> Completion:
        options: dict[str, Any] = {}
        if system:
            block: dict[str, Any] = {"type": "text", "text": system}
            if self.cache_system_prompt:
                block["cache_control"] = {"type": "ephemeral"}
            options["system"] = [block]
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if schema is not None:
            options["output_config"] = {
                "format": {"type": "json_schema", "schema": anthropic.transform_schema(dict(schema[1]))}
            }
        message = await self._sdk.messages.create(
            model=model,
            max_tokens=max_tokens,
            messages=[{"role": "user", "content": prompt}],
            **options,
        )
        return _read(_anthropic_completion, message)

    async def aclose(self) -> None:
        await self._sdk.close()


class OpenAIClient(ProviderClient):
    """OpenAI's Chat Completions API (or a server that speaks it) through
    the ``openai`` SDK."""

    api = "openai"
    key_variable = "OPENAI_API_KEY"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        provider: str | None = None,
        max_retries: int = 2,
        timeout: float = 120.0,
        deadline: float = 600.0,
        max_tokens: int = 1024,
        temperature: float | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key, base_url=base_url, provider=provider, max_retries=max_retries,
            timeout=timeout, deadline=deadline, max_tokens=max_tokens, temperature=temperature,
        )
        self._sdk = openai.AsyncOpenAI(
            api_key=self._key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=self.timeout,
            # The SDK's own HTTP client, counting each call's attempts and
            # refusing waits longer than its deadline leaves.
            http_client=openai.DefaultAsyncHttpxClient(
                event_hooks={"request": [_count_attempt], "response": [_refuse_long_waits]}
            ),
        )
        self.base_url = str(self._sdk.base_url)

    async def _create(
        self,
        model: str,
        prompt: str,
        system: str | None,
        schema: tuple[str, Mapping[str, Any]] | None,
        max_tokens: int,
    ) -> Completion:
        messages: list[dict[str, str]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        options: dict[str, Any] = {"max_completion_tokens": max_tokens}
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if schema is not None:
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema[0], "schema": dict(schema[1]), "strict": True},
            }
        completion = await self._sdk.chat.completions.create(
            model=model, messages=messages, **options  # type: ignore[arg-type]
        )
        return _read(_openai_completion, completion)

    async def aclose(self) -> None:
        await self._sdk.close()


# -- several providers -----------------------------------------------------------------

_OPENAI_NAMES = re.compile(r"^(gpt-|chatgpt-|o[134](-|$))")


def model_routes(names: Sequence[str], field: str = "models") -> dict[str, str]:
    """Each model's name and the provider serving it, from ``provider:model``
    names (``openai:llama3.2:3b``) or names a provider is known by
    (``claude-sonnet-4-5``, ``gpt-4.1-mini``); in the order given.
    ValidationError on ``field`` for a name whose provider is unknown."""
    routes: dict[str, str] = {}
    for index, given in enumerate(names):
        name = given.strip()
        provider, _, rest = name.partition(":")
        if provider in PROVIDERS and rest.strip():
            model = rest.strip()
        elif name.startswith("claude-"):
            provider, model = "anthropic", name
        elif _OPENAI_NAMES.match(name):
            provider, model = "openai", name
        else:
            raise ValidationError.of(
                field,
                f"say which provider serves {name!r}: anthropic:{name} or openai:{name}"
                " (openai for an OpenAI-compatible server)",
            )
        if any(character.isspace() for character in model):
            raise ValidationError.of(field, f"a model name has no spaces: {model!r}")
        if model in routes:
            raise ValidationError.of(field, f"names {model!r} twice")
        routes[model] = provider
    if not routes:
        raise ValidationError.of(field, "name at least one model")
    return routes


class ModelRouter:
    """One client over several providers' clients: ``routes`` maps each
    model to its provider, ``clients`` each provider to its client."""

    def __init__(self, clients: Mapping[str, JsonModelClient], routes: Mapping[str, str]) -> None:
        missing = sorted({provider for provider in routes.values() if provider not in clients})
        if missing:
            raise ValidationError.of("clients", f"no client for {', '.join(missing)}")
        self.clients = dict(clients)
        self.routes = dict(routes)

    def client_of(self, model: str) -> JsonModelClient:
        try:
            return self.clients[self.routes[model]]
        except KeyError:
            raise ValidationError.of("model", f"{model!r} is not one of {', '.join(self.routes)}") from None

    def provider_of(self, model: str) -> str:
        return self.client_of(model).provider_of(model)

    async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion:
        return await self.client_of(model).complete(model, prompt, system=system)

    async def complete_json(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None,
        schema_name: str,
        schema: Mapping[str, Any],
        max_tokens: int | None = None,
    ) -> Completion:
        return await self.client_of(model).complete_json(
            model, prompt, system=system, schema_name=schema_name, schema=schema, max_tokens=max_tokens
        )

    async def aclose(self) -> None:
        for client in self.clients.values():
            closing = getattr(client, "aclose", None)
            if closing is not None:
                await closing()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
