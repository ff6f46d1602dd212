"""The spool: items for the HTTP API kept on disk until the API has them.

Shared by the hook and the MCP server. Every item carries its client
``id``, so sending an item again after an uncertain failure is a replay
(the API answers with the stored row and writes nothing): an item is
never counted twice, however often it is sent.

Contract
--------
- :class:`Spool` keeps its files in ``directory`` (created ``0700``; each
  file ``0600``, readable by its owner only: items may hold a user's
  comment). Nothing else is written there. :meth:`Spool.for_client` is the
  spool of one configuration: ``<state_dir>/spool/<fingerprint>``, the
  fingerprint a hash of the API's URL and key, so that what one
  configuration kept is only ever sent to the same API with the same key
  (never into another tenant that another project's key names).
- :meth:`Spool.add` writes the items for one route (``path``, such as
  ``/token-measurements``) to new files of their own, at most ``per_file``
  items each (a file is what one delivery step sends and then deletes):
  written under a temporary name, flushed to disk and renamed, so a reader
  never sees half a file, and two processes adding at the same time never
  share a file. The route is in the file's name.
- :meth:`Spool.deliver` sends what the spool holds, oldest file first. It
  returns at once, delivering nothing, when this :class:`Spool` object is
  already delivering (two tasks of one process), or when another process
  holds the spool's lock (``filelock``, cross-platform) for ``lock_wait``
  seconds: the one delivering will send them, or the next call. Then, file
  by file, it posts the file's items with
  :func:`~everyskill.api_client.post_items` (``batch_sizes`` per route)
  and settles that file before the next:

  - items stored (or replayed) are done, and the file is deleted;
  - items the API refused (and ``repair`` did not fix) are appended to
    ``refused.jsonl`` with the reason and the time, for a person to look
    at, and are never sent again;
  - items left unsent (the API unreachable, 429, 503, a key it refuses)
    are written to a new file and the old one is deleted, and the delivery
    stops there: the other files wait for the next call, unread
    (``Delivery.unsent`` holds the unsent items of the file it stopped at).

  Each file settled is progress kept, whatever happens to the next one: a
  delivery cancelled in the middle of a file (the hook's deadline) resends
  only that file, as replays. An item whose ``id`` came earlier in the same
  delivery (it was spooled twice) is sent once. ``deadline`` (a
  ``time.monotonic()`` value) stops the delivery before the next file once
  passed. ``paths``, when given, limits it to those routes: a client
  delivers only what it spooled itself (the MCP server's key need not be
  able to send the hook's measurements, and only the hook knows how to
  ``repair`` them). It returns a :class:`~everyskill.api_client.Delivery`.
- :meth:`Spool.pending` counts the items waiting (for some routes only,
  given ``paths``), from the files' names and lines, without parsing them.
- A line that is not a JSON item (a file edited by hand) is moved to
  ``refused.jsonl`` as it is, with the reason.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import filelock

from everyskill.api_client import ApiClient, Delivery, post_items, Repair

__all__ = ["DEFAULT_BATCH_SIZE", "Spool"]

#: Items per request for a route ``batch_sizes`` does not name.
DEFAULT_BATCH_SIZE = 500
_SUFFIX = ".spool.jsonl"
_REFUSED = "refused.jsonl"


def _write_private(path: Path, lines: Sequence[str], *, append: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.writelines(line + "\n" for line in lines)
        file.flush()
        os.fsync(file.fileno())


def _route_tag(path: str) -> str:
    """The route as it is written in a file's name."""
    return path.strip("/").replace("/", "_") or "_"


class Spool:
    """The items waiting in ``directory``; see the module's contract."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = filelock.FileLock(self.directory / ".lock", mode=0o600)
        self._delivering = asyncio.Lock()

    @classmethod
    def for_client(cls, state_dir: str | os.PathLike[str], api_url: str, api_key: str) -> Spool:
        """The spool of one configuration (its API and key)."""
        fingerprint = hashlib.sha256(f"{api_url}\x00{api_key}".encode()).hexdigest()[:16]
        base = Path(state_dir) / "spool"
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(base / fingerprint)

    def _files(self, paths: Collection[str] | None = None) -> list[Path]:
        files = sorted(self.directory.glob("*" + _SUFFIX))
        if paths is None:
            return files
        tags = {_route_tag(path) for path in paths}
        return [f for f in files if f.name[: -len(_SUFFIX)].rsplit(".", 1)[-1] in tags]

    def add(
        self, path: str, items: Sequence[Mapping[str, Any]], *, per_file: int = DEFAULT_BATCH_SIZE
    ) -> None:
        """Keep ``items`` for ``path`` until :meth:`deliver` sends them."""
        for start in range(0, len(items), per_file):
            now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
            name = f"{now}-{uuid.uuid4().hex}.{_route_tag(path)}"
            temporary = self.directory / f".{name}.tmp"
            _write_private(
                temporary,
                [json.dumps({"path": path, "item": item}) for item in items[start : start + per_file]],
            )
            os.replace(temporary, self.directory / (name + _SUFFIX))

    def pending(self, paths: Collection[str] | None = None) -> int:
        """How many items wait in the spool (for ``paths``, when given)."""
        return sum(
            1
            for file in self._files(paths)
            for line in file.read_bytes().splitlines()
            if line.strip()
        )

    def _refuse(self, entries: Sequence[tuple[Any, str]]) -> None:
        if not entries:
            return
        when = datetime.datetime.now(datetime.UTC).isoformat()
        _write_private(
            self.directory / _REFUSED,
            [json.dumps({"at": when, "reason": reason, "entry": entry}) for entry, reason in entries],
            append=True,
        )

    def _read(self, file: Path) -> tuple[str | None, list[dict[str, Any]], list[tuple[Any, str]]]:
        """A file's route, its items, and its lines that are not items."""
        path: str | None = None
        items: list[dict[str, Any]] = []
        bad: list[tuple[Any, str]] = []
        for line in file.read_text("utf-8").splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry["path"], str) or not isinstance(entry["item"], dict):
                    raise TypeError
                if path is not None and entry["path"] != path:
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                bad.append((line, "not a spool entry"))
                continue
            path = entry["path"]
            items.append(entry["item"])
        return path, items, bad

    async def deliver(
        self,
        client: ApiClient,
        *,
        batch_sizes: Mapping[str, int] | None = None,
        repair: Repair | None = None,
        lock_wait: float = 0.2,
        paths: Collection[str] | None = None,
        deadline: float | None = None,
    ) -> Delivery:
        """Send what the spool holds; see the module's contract."""
        total = Delivery()
        if self._delivering.locked():
            return total
        async with self._delivering:
            try:
                self._lock.acquire(timeout=lock_wait)
            except filelock.Timeout:
                return total
            try:
                await self._deliver_files(client, total, batch_sizes, repair, paths, deadline)
            finally:
                self._lock.release()
        return total

    async def _deliver_files(
        self,
        client: ApiClient,
        total: Delivery,
        batch_sizes: Mapping[str, int] | None,
        repair: Repair | None,
        paths: Collection[str] | None,
        deadline: float | None,
    ) -> None:
        seen: set[Any] = set()
        for file in self._files(paths):
            if deadline is not None and time.monotonic() >= deadline:
                return
            path, read, bad = self._read(file)
            items = []
            for item in read:
                if item.get("id") is None or item.get("id") not in seen:
                    seen.add(item.get("id"))
                    items.append(item)
            delivery = Delivery()
            if path is not None and items:
                delivery = await post_items(
                    client,
                    path,
                    items,
                    batch_size=(batch_sizes or {}).get(path, DEFAULT_BATCH_SIZE),
                    repair=repair,
                )
            total.stored += delivery.stored
            total.refused += delivery.refused
            total.unsent += delivery.unsent
            self._refuse(bad + [({"path": path, "item": i}, why) for i, why in delivery.refused])
            if delivery.unsent and path is not None:
                self.add(path, delivery.unsent)
            file.unlink(missing_ok=True)
            if delivery.error is not None:
                # The later files can't be sent now either (the API is away,
                # or it refuses the key): they wait, unread.
                total.error = delivery.error
                return
