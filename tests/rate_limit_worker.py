"""
One OS process of ``tests/test_rate_limits.py``: it resolves a key
(``everyskill.api_keys.resolve``, on the application's engine, as the
application's login) a number of times and prints what each request got.

Run as ``python -m tests.rate_limit_worker KEY COUNT`` from the project root,
with ``DATABASE_URL`` and ``EVERYSKILL_APP_DATABASE_URL`` set: it connects,
prints ``ready``, waits for a line on stdin (so that several workers start
together), then prints one JSON list of ``["allowed", policy, remaining]``
or ``["refused", policy, retry_after_seconds]``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from everyskill.api_keys import resolve
from everyskill.database import app_engine
from everyskill.errors import RateLimitedError


async def main(key: str, count: int) -> None:
    engine = app_engine()
    await engine.start_connection_pool(min_size=1, max_size=1)
    try:
        assert engine.pool is not None
        async with engine.pool.acquire() as connection:
            await connection.fetchval("SELECT 1")
        print("ready", flush=True)
        sys.stdin.readline()
        outcomes: list[list[object]] = []
        for _ in range(count):
            try:
                resolved = await resolve(key)
            except RateLimitedError as refused:
                outcomes.append(["refused", refused.policy, refused.retry_after_seconds])
            else:
                status = resolved.rate_limit
                outcomes.append(["allowed", status.policy, status.remaining])
        print(json.dumps(outcomes), flush=True)
    finally:
        await engine.close_connection_pool()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
