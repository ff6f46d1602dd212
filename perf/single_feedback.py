"""One feedback through the Python API, against a raw INSERT, and where its time goes.

Five ways of writing one feedback row, each on a skill of its own:

- ``api``: what an application does per feedback, ``async with
  tenant_scope(tenant, autocommit=True):`` around
  ``feedback.record_feedback``: validation and redaction in Python, then one
  statement (the SQL function ``record_feedback``: the switch to the
  application role and the tenant, the INSERT under row-level security with
  its triggers, the row returned) sent alone on a pooled connection of the
  application's login. One round trip.
- ``api_transaction``: the same call in a transaction scope,
  ``tenant_scope(tenant)``: ``BEGIN`` with the switch, the statement,
  ``COMMIT``. Three round trips.
- ``function``: the API's statement sent raw (asyncpg, no Python around it)
  on a connection of the application's login (``everyskill_api``, its
  engine's settings), one round trip: the database work of ``api``.
- ``owner``: a raw asyncpg INSERT of the same row as the owner, in one
  round trip. The table's triggers fire: the feedback aggregates (an UPDATE
  of the skill's row, with that table's triggers) and the foreign-key
  checks. Row-level security does not apply (the owner is not subject to
  it); no row is returned.
- ``no_triggers``: the same as ``owner`` with the table's own triggers
  disabled (``ALTER TABLE ... DISABLE TRIGGER USER`` before the round and
  ``ENABLE`` after it, outside the timing; the foreign-key checks stay).

Every way commits each row on its own (a durable COMMIT per row). A round
writes ``single_rows`` rows each way, the ways in turn, forwards in one
round and backwards in the next; the first round is a warm-up. Kept: the
median throughput of each way, and the median CPU time of this process per
row (the client's share: Python, asyncpg, the event loop).

The figures, each a throughput against a baseline of the same rounds:

- ``single_feedback``: ``api`` against ``owner``, the row written raw with
  its triggers in the fewest round trips. Target: at least 0.8x.
- ``single_feedback_triggers``: ``owner`` against ``no_triggers``: what the
  live aggregates cost an INSERT.
- ``single_feedback_function``: ``function`` against ``owner``: what the
  API's statement costs in the database beyond the raw INSERT (the switch
  to the role and tenant, row-level security, the conflict check on the id,
  the row returned).
- ``single_feedback_transaction_scope``: ``api_transaction`` against
  ``api``: what a transaction scope's two more round trips cost.

The remainder, ``api`` against ``function``, is the API's own share:
Python (validation, redaction, the scope, the row built and returned) and
the pool. ``details`` of ``single_feedback`` hold every way's time and CPU
time per row and these differences (in its ``notes`` too, for
``results.md``).

Checks: the aggregates of every skill written with triggers equal a recount;
the skill written with triggers off kept its aggregates (the triggers were
off), and its rows were all written; the rows the raw statement wrote are
the tenant's (it ran as the application's login).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from everyskill import feedback
from everyskill.database import app_engine
from everyskill.tenancy import tenant_scope
from perf.concurrent_writers import RECOUNT
from perf.context import Context
from perf.harness import Figure, Target, p50

COMMENT = "Worked well on the quarterly report; the summary matched the source."

# A raw INSERT of the row the API writes, without RETURNING.
RAW_INSERT = """
INSERT INTO skill_feedback (
    tenant_id, skill_id, skill_version_id, user_id, usage_event_id,
    feedback_type, sentiment, comment, suggested_content, suggested_diff,
    example_input, example_output, expected_output, quality_score, source)
VALUES ($1, $2, NULL, $3, NULL, 'thumbs_up', 1, $4, NULL, NULL, NULL, NULL, NULL, NULL, 'web')
"""

# The statement the API sends for one feedback (the SQL function of
# piccolo_migrations/everyskill_2026_12_07t03_00_00_000000.py): tenant, id,
# then the row's values.
FUNCTION_CALL = """
SELECT * FROM record_feedback(
    $1, $2, $3, NULL, $4, NULL, 'thumbs_up', 1, $5, NULL, NULL, NULL, NULL, NULL, NULL, 'web')
"""

# The ways, in the order of the rounds that run forwards.
WAYS = ("no_triggers", "owner", "function", "api", "api_transaction")


async def measure(context: Context) -> list[Figure]:
    tenant = context.catalogue.tenants[0]
    tenant_id, user = tenant.tenant_id, tenant.user_ids[1]
    # Skills no other benchmark writes to.
    skills = dict(zip(WAYS, tenant.skill_ids[10 : 10 + len(WAYS)], strict=True))
    rows = context.scale.single_rows
    owner = context.owner
    # The raw statement connects as the API's pool does (its engine's login,
    # everyskill_api, and settings), on a connection of its own.
    login: asyncpg.Connection = await app_engine().get_new_connection()
    try:

        async def no_triggers() -> None:
            await owner.execute(RAW_INSERT, tenant_id, skills["no_triggers"], user, COMMENT)

        async def as_owner() -> None:
            await owner.execute(RAW_INSERT, tenant_id, skills["owner"], user, COMMENT)

        async def function() -> None:
            await login.fetchrow(
                FUNCTION_CALL, tenant_id, str(uuid.uuid4()), skills["function"], user, COMMENT
            )

        async def api() -> None:
            async with tenant_scope(tenant_id, autocommit=True):
                await feedback.record_feedback(
                    skill_id=skills["api"], feedback_type="thumbs_up", user_id=user, comment=COMMENT
                )

        async def api_transaction() -> None:
            async with tenant_scope(tenant_id):
                await feedback.record_feedback(
                    skill_id=skills["api_transaction"],
                    feedback_type="thumbs_up",
                    user_id=user,
                    comment=COMMENT,
                )

        async def timed(write: Callable[[], Awaitable[None]]) -> tuple[float, float]:
            """Rows per second, and this process's CPU time per row in ms."""
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(rows):
                await write()
            elapsed, cpu_time = time.perf_counter() - started, time.process_time() - cpu_started
            return rows / elapsed, 1000 * cpu_time / rows

        async def without_triggers() -> tuple[float, float]:
            await owner.execute("ALTER TABLE skill_feedback DISABLE TRIGGER USER")
            try:
                return await timed(no_triggers)
            finally:
                await owner.execute("ALTER TABLE skill_feedback ENABLE TRIGGER USER")

        rounds: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
            "no_triggers": without_triggers,
            "owner": lambda: timed(as_owner),
            "function": lambda: timed(function),
            "api": lambda: timed(api),
            "api_transaction": lambda: timed(api_transaction),
        }
        # A first round of each warms the caches and prepared statements.
        for way in WAYS:
            await rounds[way]()
        rates: dict[str, list[float]] = {way: [] for way in WAYS}
        cpu: dict[str, list[float]] = {way: [] for way in WAYS}
        for number in range(context.scale.single_rounds):
            # Forwards, then backwards: each way follows each neighbour
            # equally often (the first INSERT on each connection after the
            # ALTER TABLEs of the triggers-off round is planned anew).
            for way in WAYS if number % 2 == 0 else WAYS[::-1]:
                rows_per_s, cpu_per_row = await rounds[way]()
                rates[way].append(rows_per_s)
                cpu[way].append(cpu_per_row)
    finally:
        await login.close()

    written = rows * (context.scale.single_rounds + 1)
    exact = {
        way: bool(await owner.fetchval(RECOUNT, skills[way]))
        for way in WAYS
        if way != "no_triggers"
    }
    # The skill written with the triggers off: its stored count stayed 0.
    stored = await owner.fetchval(
        "SELECT total_feedback FROM skills WHERE id = $1", skills["no_triggers"]
    )
    counted = await owner.fetchval(
        "SELECT count(*) FROM skill_feedback WHERE skill_id = $1", skills["no_triggers"]
    )
    # The raw statement's rows: all written, all the tenant's.
    function_rows = await owner.fetchval(
        "SELECT count(*) FROM skill_feedback WHERE skill_id = $1 AND tenant_id = $2",
        skills["function"],
        tenant_id,
    )
    rate = {way: p50(values) for way, values in rates.items()}
    ms = {way: 1000 / value for way, value in rate.items()}
    cpu_ms = {way: p50(values) for way, values in cpu.items()}
    common = {"rows_per_round": rows, "rounds": context.scale.single_rounds}

    def per_round(*ways: str) -> dict[str, list[float]]:
        return {f"{way}_rows_per_s": rates[way] for way in ways}

    added = {
        "aggregate triggers (owner - no_triggers)": 1000 * (ms["owner"] - ms["no_triggers"]),
        "the API's statement in the database: switch, RLS, conflict check, row returned"
        " (function - owner)": 1000 * (ms["function"] - ms["owner"]),
        "the API's own share: Python, the pool (api - function)": 1000 * (ms["api"] - ms["function"]),
        "a transaction scope's two more round trips (api_transaction - api)": (
            1000 * (ms["api_transaction"] - ms["api"])
        ),
    }
    return [
        Figure(
            key="single_feedback",
            what="one feedback through the Python API, autocommit scope (one round trip)",
            measured=rate["api"],
            unit="rows/s",
            baseline_what=(
                "raw asyncpg INSERT of the same row as the owner, one round trip, its triggers"
                " firing (aggregates, foreign keys); no RLS (the owner is not subject to it)"
            ),
            baseline=rate["owner"],
            ratio=rate["api"] / rate["owner"],
            ratio_meaning="API throughput / raw throughput",
            target=Target("at_least", 0.8),
            details={
                **common,
                **per_round("api", "owner"),
                "ms_per_row": ms,
                "client_cpu_ms_per_row": cpu_ms,
                "us_per_row_added": added,
            },
            checks={"aggregates equal a recount": exact["api"] and exact["owner"]},
            notes=[
                "Time per row (of it, this process's CPU time): "
                + "; ".join(f"{way} {ms[way]:.3f} ms ({cpu_ms[way]:.3f} ms)" for way in WAYS[::-1])
                + ". Ways: api, the Python API in an autocommit scope (one round trip);"
                " api_transaction, the same in a transaction scope (three round trips);"
                " function, the API's statement sent raw as the application's login;"
                " owner, the raw INSERT as the owner; no_triggers, the same with the"
                " table's triggers off. Added per row: "
                + "; ".join(f"{what} {us:.0f} µs" for what, us in added.items())
                + "."
            ],
        ),
        Figure(
            key="single_feedback_triggers",
            what="raw INSERT of one feedback as the owner, one round trip, triggers on",
            measured=rate["owner"],
            unit="rows/s",
            baseline_what=(
                "the same INSERT with the table's own triggers disabled (the aggregates are not"
                " maintained; the foreign-key checks stay)"
            ),
            baseline=rate["no_triggers"],
            ratio=rate["owner"] / rate["no_triggers"],
            ratio_meaning="throughput with the triggers / without",
            details={**common, **per_round("owner", "no_triggers")},
            checks={
                "aggregates equal a recount": exact["owner"],
                "triggers were off": stored == 0 and counted == written,
            },
        ),
        Figure(
            key="single_feedback_function",
            what="the API's one statement for one feedback (record_feedback), sent raw",
            measured=rate["function"],
            unit="rows/s",
            baseline_what=(
                "the raw INSERT as the owner (no role or tenant switch, no RLS, no row"
                " returned); both fire the triggers, in one round trip"
            ),
            baseline=rate["owner"],
            ratio=rate["function"] / rate["owner"],
            ratio_meaning="throughput of the API's statement / of the raw INSERT",
            details={**common, **per_round("function", "owner")},
            checks={
                "aggregates equal a recount": exact["function"],
                "every row written, as the tenant's": function_rows == written,
            },
        ),
        Figure(
            key="single_feedback_transaction_scope",
            what="one feedback through the Python API in a transaction scope (three round trips)",
            measured=rate["api_transaction"],
            unit="rows/s",
            baseline_what="the same call in an autocommit scope (one round trip)",
            baseline=rate["api"],
            ratio=rate["api_transaction"] / rate["api"],
            ratio_meaning="throughput in a transaction scope / in an autocommit scope",
            details={**common, **per_round("api_transaction", "api")},
            checks={"aggregates equal a recount": exact["api_transaction"]},
        ),
    ]
