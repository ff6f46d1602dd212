"""
The spool against the served API: what it holds is private, survives the
API being down, is sent once it is up and stored once however often it
is sent; refused items are set aside for a person; a second deliverer
waits for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    # It stops at the first file; the second waits, unread.
    assert delivery.stored == [] and len(delivery.unsent) == 3 and delivery.error is not None
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


def test_each_configuration_has_its_own_spool(tmp_path: Path) -> None:
    a = Spool.for_client(tmp_path, "http://api:1", "esk_a")
    b = Spool.for_client(tmp_path, "http://api:1", "esk_b")
    other_server = Spool.for_client(tmp_path, "http://elsewhere:1", "esk_a")
    assert len({a.directory, b.directory, other_server.directory}) == 3
    assert a.directory == Spool.for_client(tmp_path, "http://api:1", "esk_a").directory
    assert "esk_a" not in str(a.directory) and mode(tmp_path / "spool") == 0o700
    a.add(PATH, [{"id": "1"}])
    assert (a.pending(), b.pending()) == (1, 0)


async def test_two_deliveries_of_one_process_do_not_send_the_same_files(
    tmp_path: Path, api_a: Tenant
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.add(PATH, [item(api_a)])
    async with ApiClient(f"http://127.0.0.1:{free_port()}", api_a.key, timeout=1) as down:
        for _ in range(3):
            await asyncio.gather(*(spool.deliver(down, lock_wait=0) for _ in range(3)))
    assert spool.pending() == 1


async def test_an_item_spooled_twice_is_sent_once_and_not_refused(
    tmp_path: Path, api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    spool = Spool(tmp_path / "spool")
    items = [item(api_a) for _ in range(3)]
    spool.add(PATH, items)
    spool.add(PATH, items)
    async with ApiClient(api.base, api_a.key) as client:
        delivery = await spool.deliver(client)
    assert len(delivery.stored) == 3 and delivery.refused == []
    assert not (spool.directory / "refused.jsonl").exists()
    assert await stored(owner, items) == 3


async def test_a_bad_item_the_answer_does_not_name_is_found_and_set_aside(
    tmp_path: Path, api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    spool = Spool(tmp_path / "spool")
    # A NUL in a text is refused as the body's problem, not an item's.
    bad = item(api_a, usage_event_id="msg_bad\u0000")
    good = [item(api_a) for _ in range(6)]
    spool.add(PATH, [*good[:4], bad, *good[4:]])
    async with ApiClient(api.base, api_a.key) as client:
        delivery = await spool.deliver(client)
    assert [i["id"] for i, _ in delivery.refused] == [bad["id"]]
    assert len(delivery.stored) == 6 and spool.pending() == 0
    assert await stored(owner, good) == 6


async def test_a_key_the_api_refuses_keeps_everything(
    tmp_path: Path, api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.add(PATH, [item(api_a) for _ in range(2)], per_file=1)
    async with ApiClient(api.base, "esk_" + "x" * 36) as client:
        delivery = await spool.deliver(client)
    assert delivery.error is not None and delivery.refused == [] and spool.pending() == 2


async def test_each_file_sent_is_progress_kept(
    tmp_path: Path, api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    spool = Spool(tmp_path / "spool")
    items = [item(api_a) for _ in range(6)]
    spool.add(PATH, items, per_file=2)
    assert len(list(spool.directory.glob("*.spool.jsonl"))) == 3
    async with ApiClient(api.base, api_a.key) as client:
        # A deadline already passed sends nothing.
        assert (await spool.deliver(client, deadline=0)).stored == []
        sending = asyncio.create_task(spool.deliver(client))
        while spool.pending() == 6:
            await asyncio.sleep(0.001)
        sending.cancel()  # in the middle: the files sent are gone
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        assert spool.pending() in (0, 2, 4)
        await spool.deliver(client)
    assert spool.pending() == 0 and await stored(owner, items) == 6
