"""The spool: items for the HTTP API kept on disk until the API has them.

Shared by the hook and the MCP server. Every item carries its client
``id``, so sending an item again after an uncertain failure is a replay
(the API answers with the stored row and writes nothing): an item is
never counted twice, however often it is sent.

Contract
--------
- :class:`Spool` keeps its files in ``directory`` (created ``0700``; each
  file ``0600``, readable by its owner only: items may hold a user's
  comment). Nothing else is written there.
- :meth:`Spool.add` writes the items for one route (``path``, such as
  ``/token-measurements``) to a new file of their own: written under a
  temporary name, flushed to disk and renamed, so a reader never sees half
  a file, and two processes adding at the same time never share a file.
- :meth:`Spool.deliver` sends what the spool holds. It takes an exclusive
  lock (``filelock``, cross-platform) for at most ``lock_wait`` seconds:
  when another process holds it, that process is delivering, and this call
  returns at once, delivering nothing (the items it would have sent stay
  for the next call). Under the lock it reads every spool file, posts
  their items per route with :func:`~everyskill.api_client.post_items`
  (``batch_sizes`` per route), and then:

  - items stored (or replayed) are done;
  - items the API refused (and ``repair`` did not fix) are appended to
    ``refused.jsonl`` with the reason and the time, for a person to look
    at, and are never sent again;
  - items left unsent (the API unreachable, 429, 503, a revoked key) are
    written to one new spool file, and
  - only then are the files it read deleted. A crash in between leaves an
    item in two files, which costs a replay, not a double count.

  It returns a :class:`~everyskill.api_client.Delivery` of all routes.
  ``paths``, when given, limits it to those routes: a file holding no item
  of them is left as it is, and another route's item in a file it reads is
  kept for later, unsent and uncounted. A client delivers only what it
  spooled itself (the MCP server's key need not be able to send the hook's
  measurements, and only the hook knows how to ``repair`` them).
- :meth:`Spool.pending` counts the items waiting (for some routes only,
  given ``paths``).
- A line that is not a JSON item (a file edited by hand) is moved to
  ``refused.jsonl`` as it is, with the reason.
"""

from __future__ import annotations

import datetime
import json
import os
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


class Spool:
    """The items waiting in ``directory``; see the module's contract."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = filelock.FileLock(self.directory / ".lock", mode=0o600)

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("*" + _SUFFIX))

    def add(self, path: str, items: Sequence[Mapping[str, Any]]) -> None:
        """Keep ``items`` for ``path`` until :meth:`deliver` sends them."""
        if not items:
            return
        now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{now}-{uuid.uuid4().hex}"
        temporary = self.directory / f".{name}.tmp"
        _write_private(temporary, [json.dumps({"path": path, "item": item}) for item in items])
        os.replace(temporary, self.directory / (name + _SUFFIX))

    def pending(self, paths: Collection[str] | None = None) -> int:
        """How many items wait in the spool (for ``paths``, when given)."""
        lines = [line for f in self._files() for line in f.read_text("utf-8").splitlines() if line]
        if paths is None:
            return len(lines)
        waiting = 0
        for line in lines:
            try:
                waiting += json.loads(line).get("path") in paths
            except (ValueError, AttributeError):
                continue
        return waiting

    def _refuse(self, entries: Sequence[tuple[Any, str]]) -> None:
        if not entries:
            return
        when = datetime.datetime.now(datetime.UTC).isoformat()
        _write_private(
            self.directory / _REFUSED,
            [json.dumps({"at": when, "reason": reason, "entry": entry}) for entry, reason in entries],
            append=True,
        )

    async def deliver(
        self,
        client: ApiClient,
        *,
        batch_sizes: Mapping[str, int] | None = None,
        repair: Repair | None = None,
        lock_wait: float = 0.2,
        paths: Collection[str] | None = None,
    ) -> Delivery:
        """Send what the spool holds; see the module's contract."""
        total = Delivery()
        try:
            self._lock.acquire(timeout=lock_wait)
        except filelock.Timeout:
            return total
        try:
            files: list[Path] = []
            by_path: dict[str, list[dict[str, Any]]] = {}
            others: dict[str, list[dict[str, Any]]] = {}
            bad: list[tuple[Any, str]] = []
            for file in self._files():
                read: list[tuple[str, dict[str, Any]]] = []
                unreadable: list[tuple[Any, str]] = []
                for line in file.read_text("utf-8").splitlines():
                    if not line.strip():
                        continue
                    try:
                        entry = json.loads(line)
                        path, item = entry["path"], entry["item"]
                        if not isinstance(path, str) or not isinstance(item, dict):
                            raise TypeError
                    except (ValueError, KeyError, TypeError):
                        unreadable.append((line, "not a spool entry"))
                        continue
                    read.append((path, item))
                if paths is not None and read and all(path not in paths for path, _ in read):
                    continue  # another client's file
                files.append(file)
                bad += unreadable
                for path, item in read:
                    mine = paths is None or path in paths
                    (by_path if mine else others).setdefault(path, []).append(item)
            unsent: list[tuple[str, list[dict[str, Any]]]] = list(others.items())
            refused: list[tuple[Any, str]] = list(bad)
            for path, items in by_path.items():
                if total.error is not None:
                    unsent.append((path, items))
                    total.unsent += items
                    continue
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
                total.error = total.error or delivery.error
                refused += [({"path": path, "item": item}, why) for item, why in delivery.refused]
                if delivery.unsent:
                    unsent.append((path, delivery.unsent))
            self._refuse(refused)
            for path, items in unsent:
                self.add(path, items)
            for file in files:
                file.unlink(missing_ok=True)
            return total
        finally:
            self._lock.release()
