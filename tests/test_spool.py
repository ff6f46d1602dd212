"""
The spool against the served API: what it holds is private, survives the
API being down, is sent once it is up and stored once however often it
is sent; refused items are set aside for a person; a second deliverer
waits for nobody.
"""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from everyskill.api_client import ApiClient
from everyskill.spool import Spool
from tests.http_support import Served, Tenant
from tests.support import free_port

PATH = "/token-measurements"


def item(tenant: Tenant, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "skill_id": tenant.rows.skill_id,
        "model_name": "claude-haiku-4-5",
        "input_tokens": 3,
        "output_tokens": 4,
        **extra,
    }


async def stored(owner: asyncpg.Connection, items: list[dict[str, Any]]) -> int:
    value = await owner.fetchval(
        "SELECT count(*) FROM token_measurements WHERE id = ANY($1::text[])",
        [i["id"] for i in items],
    )
    assert isinstance(value, int)
    return value


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_items_wait_while_the_api_is_down_then_are_stored_once(
    tmp_path: Path, api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    spool = Spool(tmp_path / "spool")
    first, second = [item(api_a) for _ in range(3)], [item(api_a) for _ in range(2)]
    spool.add(PATH, first)
    spool.add(PATH, second)
    assert mode(spool.directory) == 0o700
    assert all(mode(f) == 0o600 for f in spool.directory.glob("*.jsonl"))
    assert spool.pending() == 5

    async with ApiClient(f"http://127.0.0.1:{free_port()}", api_a.key, timeout=1) as down:
        delivery = await spool.deliver(down)
    assert delivery.stored == [] and len(delivery.unsent) == 5 and delivery.error is not None
    assert spool.pending() == 5
    assert await stored(owner, first + second) == 0

    async with ApiClient(api.base, api_a.key) as up:
        delivery = await spool.deliver(up)
        assert len(delivery.stored) == 5 and delivery.unsent == []
        assert spool.pending() == 0
        assert await stored(owner, first + second) == 5
        # The same items again (a crash left them in a file): replays, not new rows.
        spool.add(PATH, first)
        assert len((await spool.deliver(up)).stored) == 3
    assert await stored(owner, first + second) == 5


async def test_refused_items_go_aside_and_are_not_sent_again(
    tmp_path: Path, api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    spool = Spool(tmp_path / "spool")
    good, bad = item(api_a), item(api_a, model_name="")
    spool.add(PATH, [good, bad])
    (spool.directory / "hand.spool.jsonl").write_text("not json\n")
    async with ApiClient(api.base, api_a.key) as client:
        delivery = await spool.deliver(client)
        assert [i["id"] for i in delivery.stored] == [good["id"]]
        assert [i["id"] for i, _ in delivery.refused] == [bad["id"]]
        assert spool.pending() == 0
        assert (await spool.deliver(client)).refused == []
    refused = [json.loads(line) for line in (spool.directory / "refused.jsonl").read_text().splitlines()]
    assert len(refused) == 2 and mode(spool.directory / "refused.jsonl") == 0o600
    assert {r["reason"] for r in refused} >= {"not a spool entry"}
    assert any(r["entry"] == {"path": PATH, "item": bad} and "model_name" in r["reason"] for r in refused)
    assert await stored(owner, [good, bad]) == 1


async def test_a_second_deliverer_does_not_wait(
    tmp_path: Path, api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.add(PATH, [item(api_a)])
    other = Spool(tmp_path / "spool")
    other._lock.acquire()  # another process delivering
    try:
        async with ApiClient(api.base, api_a.key) as client:
            delivery = await spool.deliver(client, lock_wait=0.05)
        assert delivery.stored == [] and delivery.unsent == [] and spool.pending() == 1
    finally:
        other._lock.release()


async def test_items_added_while_delivering_are_kept(
    tmp_path: Path, api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    spool = Spool(tmp_path / "spool")
    early = [item(api_a) for _ in range(200)]
    spool.add(PATH, early)
    late = [item(api_a)]
    async with ApiClient(api.base, api_a.key) as client:
        delivering = asyncio.create_task(spool.deliver(client, batch_sizes={PATH: 20}))
        await asyncio.sleep(0)
        spool.add(PATH, late)
        await delivering
        assert spool.pending() == 1  # listed before it was added: left for the next call
        await spool.deliver(client)
    assert spool.pending() == 0
    assert await stored(owner, early + late) == 201
