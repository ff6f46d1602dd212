"""A client of the HTTP API, for the project's own clients (the hook, the MCP server).

It imports neither the database layer nor pydantic, so that a short-lived
process (a Claude Code hook) starts quickly.

Contract
--------
- :class:`ApiClient` (an async context manager over an ``httpx.AsyncClient``)
  calls the API under ``/v1`` of ``base_url`` with a tenant key sent as
  ``Authorization: Bearer <key>``. :meth:`ApiClient.request` returns the
  decoded JSON of a 2xx answer. Any other answer raises :class:`ApiProblem`,
  carrying the RFC 9457 fields of the API's problem+json (``status``,
  ``type``, ``title``, ``detail``, ``errors``, ``scope``) and the
  ``Retry-After`` seconds when given. No answer at all (a refused
  connection, a timeout, a broken answer) raises :class:`ApiUnreachable`.
- ``retryable`` says whether the same request may succeed later unchanged:
  true for :class:`ApiUnreachable` and for 429, 500, 502, 503 and 504;
  false for every other problem (the request itself must change: a bad
  field, an unknown skill, a missing scope, a revoked key).
- :func:`post_items` posts items to a route that takes ``{"items": [...]}``
  batches, in batches of at most ``batch_size``, and sorts the items into a
  :class:`Delivery`: ``stored`` (2xx: written now, or a replay of an item
  already stored, which is how a resent item is recognised), ``refused``
  (the API named the item in a 404, 409 or 422: the item and the problem's
  message; the batch's other items are sent again without it, so one bad
  item does not hold back the others; a problem that is not retryable and
  names no item, such as a 422 on the body or a 413, halves the batch
  until the item it is about is alone, and refuses that one), and
  ``unsent`` (the items not stored when a retryable failure, or a problem
  of the key itself, 401 or 403, stopped the delivery, with that error in
  ``error``). Before an item is refused,
  ``repair(item, field)`` may return a changed item to send instead (the
  hook moves a measurement of an unknown skill to its default skill); it
  returns None to refuse it. Every item must carry a client ``id`` (a
  UUID, see the API's "Client ids and safe retries"): resending it is safe.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

__all__ = [
    "ApiClient",
    "ApiError",
    "ApiProblem",
    "ApiUnreachable",
    "Delivery",
    "post_items",
]

_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Problems of the key, not of an item: no item is to blame.
_KEY_STATUSES = frozenset({401, 403})
# A batch item's field is named "items[3].skill_id" or just "skill_id".
_ITEM_PREFIX = re.compile(r"^items\[\d+\]\.")


class ApiError(Exception):
    """A call of the HTTP API that did not succeed."""

    retryable: bool = False


class ApiUnreachable(ApiError):
    """No answer: the connection failed, timed out or broke off."""

    retryable = True


class ApiProblem(ApiError):
    """A non-2xx answer, with the fields of its problem+json."""

    def __init__(
        self,
        status: int,
        problem: Mapping[str, Any],
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.type = str(problem.get("type", "about:blank"))
        self.title = str(problem.get("title", f"HTTP {status}"))
        self.detail = str(problem.get("detail", ""))
        errors = problem.get("errors")
        self.errors: list[dict[str, Any]] = (
            [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
        )
        self.scope = problem.get("scope")
        self.retry_after = retry_after
        self.retryable = status in _RETRYABLE_STATUSES
        super().__init__(f"{status} {self.title}: {self.detail}".rstrip(": "))

    @property
    def type_name(self) -> str:
        """The last part of the type URI (``validation``, ``not-found``...)."""
        return self.type.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def _retry_after(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


class ApiClient:
    """The HTTP API of ``base_url`` (its ``/v1`` is added), called with ``key``.

    ``timeout`` bounds each call (seconds); ``transport`` replaces the
    network (tests may pass an ``httpx`` transport; the project's own tests
    use a real server).
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/v1",
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """The JSON of a 2xx answer to ``method path``; see the contract."""
        try:
            answer = await self._client.request(
                method,
                path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                content=None if json_body is None else json.dumps(json_body),
                headers={"Content-Type": "application/json"} if json_body is not None else None,
            )
        except httpx.HTTPError as error:
            raise ApiUnreachable(f"{method} {path}: {type(error).__name__}: {error}") from error
        if answer.is_success:
            try:
                return answer.json()
            except ValueError as error:
                raise ApiUnreachable(f"{method} {path}: the answer is not JSON") from error
        try:
            problem = answer.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            problem = {"detail": answer.text[:200]}
        raise ApiProblem(answer.status_code, problem, _retry_after(answer.headers.get("Retry-After")))

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, json_body=body)


@dataclasses.dataclass
class Delivery:
    """What became of the items given to :func:`post_items`."""

    stored: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    refused: list[tuple[dict[str, Any], str]] = dataclasses.field(default_factory=list)
    unsent: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error: ApiError | None = None


Repair = Callable[[dict[str, Any], str], "dict[str, Any] | None"]


def _named_items(problem: ApiProblem, size: int) -> dict[int, tuple[str, str]]:
    """The batch items a problem names: index -> (field, message)."""
    named: dict[int, tuple[str, str]] = {}
    if problem.status not in (404, 409, 422):
        return named
    for error in problem.errors:
        index = error.get("index")
        if isinstance(index, int) and 0 <= index < size and index not in named:
            field = _ITEM_PREFIX.sub("", str(error.get("field", "")))
            named[index] = (field, str(error.get("message", "")))
    return named


async def post_items(
    client: ApiClient,
    path: str,
    items: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    repair: Repair | None = None,
) -> Delivery:
    """Post ``items`` to ``path`` in batches; see the contract."""
    delivery = Delivery()
    given = [dict(item) for item in items]
    batches = [given[i : i + batch_size] for i in range(0, len(given), batch_size)]
    while batches:
        batch = batches.pop(0)
        if not batch:
            continue
        try:
            await client.post(path, {"items": batch})
        except ApiError as error:
            if not isinstance(error, ApiProblem) or error.retryable or error.status in _KEY_STATUSES:
                delivery.unsent = batch + [item for rest in batches for item in rest]
                delivery.error = error
                return delivery
            named = _named_items(error, len(batch))
            if not named:
                if len(batch) == 1:
                    delivery.refused.append((batch[0], str(error)))
                else:
                    # A problem of some item the answer does not name: halve
                    # the batch until the item is alone.
                    half = len(batch) // 2
                    batches[0:0] = [batch[:half], batch[half:]]
                continue
            kept = []
            for index, item in enumerate(batch):
                if index not in named:
                    kept.append(item)
                    continue
                field, message = named[index]
                fixed = repair(item, field) if repair is not None else None
                if fixed is None or fixed == item:
                    delivery.refused.append((item, f"{field}: {message}"))
                else:
                    kept.append(fixed)
            batches.insert(0, kept)
            continue
        delivery.stored += batch
    return delivery
