"""
A local HTTP server that speaks the model providers' APIs, for the tests of
everyskill.providers: Anthropic's Messages API (``POST /v1/messages``) and
OpenAI's Chat Completions API (``POST /v1/chat/completions``), with their
usage reports, cache tokens, structured outputs and error bodies.

It is a Starlette app served by uvicorn in a thread of the test process, on
a free port of 127.0.0.1: the SDKs reach it through their ``base_url`` over
real sockets, and nothing goes to the network.

- :attr:`ModelServer.answers` maps a prompt (the user message) to the
  :class:`Answer` every model gives it, with its usage;
  :attr:`ModelServer.answers_of` maps a (model, prompt) pair to the answer
  of that model alone.
- :attr:`ModelServer.script` maps a (model, prompt) pair to the replies its
  first requests get, in order (:class:`Reply`: a status, headers, a body
  or a raw one, a delay before answering); once they are used up the pair
  gets its normal answer.
- A request asking for structured output (Anthropic's ``output_config``,
  OpenAI's ``response_format``) is a judge's: :attr:`ModelServer.judge`
  turns its user message into the verdict, answered as JSON text.
- A key other than :attr:`ModelServer.key` is a 401 whose message quotes
  the key it was given (real providers quote part of it): the worst case
  for a client that must never store or log a key.
- Every request is recorded (:class:`Recorded`) and counted, so a test
  knows how many attempts a call made.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support import free_port


@dataclass(frozen=True)
class Answer:
    """A model's answer to a prompt and the usage the provider reports.

    ``input_tokens`` are Anthropic's (uncached input); the OpenAI route
    reports ``prompt_tokens`` = input + cache read + cache write, with the
    cache reads as ``cached_tokens`` and the cache writes (when any) as
    ``cache_write_tokens``, as OpenAI counts them.
    """

    text: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Reply:
    """One scripted reply: ``body`` (JSON) or ``raw`` (bytes as they are);
    neither: the pair's normal answer. ``delay`` seconds before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    raw: bytes | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """A request the server received."""

    api: str  # "anthropic" or "openai"
    model: str
    prompt: str
    system: str | None
    judged: bool
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


def anthropic_error(status: int, kind: str, message: str) -> Reply:
    """An error reply as Anthropic writes it."""
    return Reply(status, body={"type": "error", "error": {"type": kind, "message": message}})


def openai_error(status: int, kind: str, message: str, code: str | None = None) -> Reply:
    """An error reply as OpenAI writes it."""
    return Reply(
        status, body={"error": {"message": message, "type": kind, "param": None, "code": code}}
    )


class ModelServer:
    """The server's state; see the module's docstring."""

    def __init__(self, key: str, answers: dict[str, Answer] | None = None) -> None:
        self.key = key
        self.answers: dict[str, Answer] = dict(answers or {})
        self.answers_of: dict[tuple[str, str], Answer] = {}
        self.script: dict[tuple[str, str], list[Reply]] = {}
        self.judge: Callable[[str], dict[str, Any]] = lambda _text: {
            "reason": "no judge configured", "score": 0, "matches": False,
        }
        #: Usage the judge's answers report.
        self.judge_usage = Answer("", 400, 60, 0, 0)
        self.requests: list[Recorded] = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # -- what tests read ----------------------------------------------------------

    @property
    def anthropic_url(self) -> str:
        """The Anthropic SDK's base_url (it adds /v1/messages)."""
        return self.base_url

    @property
    def openai_url(self) -> str:
        """The OpenAI SDK's base_url (it adds /chat/completions)."""
        return f"{self.base_url}/v1"

    def count(self, model: str | None = None, prompt: str | None = None, *, judged: bool | None = None) -> int:
        """How many requests (of ``model`` on ``prompt``, judge's or not) arrived."""
        return len(self.received(model, prompt, judged=judged))

    def received(
        self, model: str | None = None, prompt: str | None = None, *, judged: bool | None = None
    ) -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (model is None or r.model == model)
                and (prompt is None or r.prompt == prompt)
                and (judged is None or r.judged == judged)
            ]

    # -- serving ------------------------------------------------------------------

    def _next_reply(self, model: str, prompt: str) -> Reply | None:
        with self._lock:
            queue = self.script.get((model, prompt))
            if queue:
                return queue.pop(0)
        return None

    async def _serve(self, request: Request, api: str) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "not JSON"}, status_code=400)
        model = str(body.get("model", ""))
        messages = body.get("messages", [])
        system = body.get("system")
        user = [m for m in messages if m.get("role") == "user"]
        if api == "openai":
            system = next((m["content"] for m in messages if m.get("role") == "system"), None)
        prompt = _text(user[-1]["content"]) if user else ""
        judged = bool(body.get("output_config") or body.get("response_format"))
        with self._lock:
            self.requests.append(
                Recorded(api, model, prompt, _text(system) if system else None, judged,
                         dict(request.headers), body, time.monotonic())
            )
        # Anthropic's API takes the key as x-api-key or as a bearer token.
        given = request.headers.get("x-api-key") if api == "anthropic" else None
        if given is None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if given != self.key:
            message = f"Incorrect API key provided: {given}"
            reply = (
                anthropic_error(401, "authentication_error", message)
                if api == "anthropic"
                else openai_error(401, "invalid_request_error", message, "invalid_api_key")
            )
            return _response(reply)
        reply = self._next_reply(model, prompt)
        if reply is not None and reply.delay:
            await asyncio.sleep(reply.delay)
        if reply is not None and (reply.body is not None or reply.raw is not None):
            return _response(reply)
        if judged:
            answer = Answer(json.dumps(self.judge(prompt)), *_usage(self.judge_usage))
        else:
            answer = self.answers_of.get(
                (model, prompt), self.answers.get(prompt, Answer("I do not know.", 10, 4))
            )
        payload = (
            self._anthropic_message(model, answer)
            if api == "anthropic"
            else self._openai_completion(model, answer)
        )
        return JSONResponse(
            payload,
            status_code=reply.status if reply is not None else 200,
            headers=reply.headers if reply is not None else None,
        )

    def _anthropic_message(self, model: str, answer: Answer) -> dict[str, Any]:
        return {
            "id": f"msg_{next(self._ids):024d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": answer.input_tokens,
                "output_tokens": answer.output_tokens,
                "cache_creation_input_tokens": answer.cache_write_tokens,
                "cache_read_input_tokens": answer.cache_read_tokens,
            },
        }

    def _openai_completion(self, model: str, answer: Answer) -> dict[str, Any]:
        prompt_tokens = answer.input_tokens + answer.cache_read_tokens + answer.cache_write_tokens
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": prompt_tokens + answer.output_tokens,
                "prompt_tokens_details": {
                    "cached_tokens": answer.cache_read_tokens,
                    # Reported by OpenAI's API for prompts it wrote to its
                    # cache (included in prompt_tokens, as reads are).
                    **({"cache_write_tokens": answer.cache_write_tokens}
                       if answer.cache_write_tokens else {}),
                },
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }

    def app(self) -> Starlette:
        async def anthropic(request: Request) -> Response:
            return await self._serve(request, "anthropic")

        async def openai(request: Request) -> Response:
            return await self._serve(request, "openai")

        return Starlette(
            routes=[
                Route("/v1/messages", anthropic, methods=["POST"]),
                Route("/v1/chat/completions", openai, methods=["POST"]),
            ]
        )


def _usage(answer: Answer) -> tuple[int, int, int, int]:
    return (answer.input_tokens, answer.output_tokens, answer.cache_read_tokens,
            answer.cache_write_tokens)


def _text(content: Any) -> str:
    """A message's text: a string, or its text blocks joined."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def _response(reply: Reply) -> Response:
    if reply.raw is not None:
        return Response(
            reply.raw, status_code=reply.status, headers=reply.headers,
            media_type="application/json",
        )
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


@contextmanager
def model_server(key: str, answers: dict[str, Answer] | None = None) -> Iterator[ModelServer]:
    """A :class:`ModelServer` served on a free port while the block runs."""
    state = ModelServer(key, answers)
    config = uvicorn.Config(
        state.app(), host="127.0.0.1", port=state.port, log_level="warning",
        lifespan="off", timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="model server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the model server did not start")
        time.sleep(0.02)
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
