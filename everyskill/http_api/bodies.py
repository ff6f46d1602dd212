"""Request bodies: their media type and their size, checked before parsing.

Contract
--------
- :class:`BodyLimits` is an ASGI middleware of the API. A request that
  carries a body (a ``Content-Length`` above 0, or a chunked body) must say
  ``Content-Type: application/json`` (or ``application/<x>+json``); any
  other type, or none, is answered 415 (``unsupported-media-type``) without
  reading the body. So is a body with a ``Content-Encoding`` other than
  ``identity`` (a compressed body), with ``Accept-Encoding: identity``
  saying what the API takes (RFC 9110, section 15.5.16).
- A body may hold at most :data:`BATCH_BODY_LIMIT` bytes (16 MiB) on the
  routes that take a batch (``POST /v1/feedback``,
  ``POST /v1/token-measurements``, ``POST /v1/benchmark-runs/{id}/results``)
  and :data:`BODY_LIMIT` bytes (1 MiB) on every other route. A larger
  ``Content-Length`` is answered 413 (``content-too-large``) at once; a body
  without one (chunked) is counted while it is read, and the request is
  answered 413 as soon as the count goes over, before anything is parsed or
  written.
- Why not FastAPI's own ``max_body_size``: when the ``Content-Length`` is
  over the limit, Starlette's limiter replaces the answer of the app's error
  handler by a plain-text 413, and every error here is problem+json.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from everyskill.http_api.problems import problem_response

__all__ = ["BATCH_BODY_LIMIT", "BODY_LIMIT", "BodyLimits", "limit_of"]

#: The largest body of a route that takes one item, in bytes.
BODY_LIMIT = 1024 * 1024
#: The largest body of a route that takes a batch, in bytes.
BATCH_BODY_LIMIT = 16 * 1024 * 1024

# Routes taking a batch, as paths inside the API (it is mounted at /v1).
_BATCH_ROUTES = re.compile(
    r"^(?:/v1)?/(?:feedback|token-measurements|benchmark-runs/[^/]+/results)/?$"
)
_JSON = re.compile(r"^application/(?:json|[^/;\s]+\+json)$", re.IGNORECASE)


def limit_of(method: str, path: str) -> int:
    """The body limit of a request to ``path`` (inside the API) with ``method``."""
    if method == "POST" and _BATCH_ROUTES.match(path):
        return BATCH_BODY_LIMIT
    return BODY_LIMIT


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the body is larger than this route takes ({limit} bytes): send less, or split"
            " a batch into smaller batches",
        )


class BodyLimits:
    """The middleware (see the module's contract)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length_header = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        try:
            length = int(length_header) if length_header is not None else None
        except ValueError:
            response = problem_response("bad-request", "the Content-Length is not a number")
            await response(scope, receive, send)
            return
        if not chunked and not length:
            await self.app(scope, receive, send)
            return
        encodings = [
            coding.strip().lower()
            for value in headers.getlist("content-encoding")
            for coding in value.split(",")
            if coding.strip()
        ]
        if any(coding != "identity" for coding in encodings):
            response = problem_response(
                "unsupported-media-type",
                f"the body's Content-Encoding is {', '.join(encodings)[:100]!r}: send it"
                " uncompressed (no Content-Encoding, or identity)",
                headers={"Accept-Encoding": "identity"},
            )
            await response(scope, receive, send)
            return
        media_type = headers.get("content-type", "").split(";", 1)[0].strip()
        if not _JSON.match(media_type):
            shown = repr(media_type[:100]) if media_type else "none"
            response = problem_response(
                "unsupported-media-type",
                f"the body's Content-Type is {shown}: send JSON with"
                " Content-Type: application/json",
            )
            await response(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        limit = limit_of(scope["method"], path)
        if length is not None and length > limit:
            response = problem_response("content-too-large", _TooLarge(limit).detail)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises an HTTPException met while reading the
                    # body: the app's handler answers it with a problem.
                    raise _TooLarge(limit)
            return message

        await self.app(scope, counted, send)
