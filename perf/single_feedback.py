"""One feedback through the API, and where its time goes.

Five ways of writing one feedback row, each on a skill of its own:

- ``api``: what an application does per request, ``async with
  tenant_scope(tenant):`` around ``feedback.record_feedback``: a transaction
  as the application role, validation, redaction, the INSERT under
  row-level security with its triggers, the row returned. Three round trips.
- ``transaction``: the API's INSERT, raw (asyncpg, no Python around it), in
  a transaction that switches to the application role and the tenant as a
  scope does: ``BEGIN`` with the switch, the INSERT, ``COMMIT``. Three round
  trips; row-level security and the triggers as for the API.
- ``application_role``: the same INSERT on a connection whose session was
  switched to the application role and the tenant beforehand: one round
  trip (the INSERT commits on its own), the same database work.
- ``owner``: the same INSERT as the owner, in one round trip. The table's
  triggers fire: the feedback aggregates (an UPDATE of the skill's row,
  with that table's triggers) and the foreign-key checks. Row-level
  security does not apply (the owner is not subject to it).
- ``no_triggers``: the same as ``owner`` with the table's own triggers
  disabled (``ALTER TABLE ... DISABLE TRIGGER USER`` before the round and
  ``ENABLE`` after it, outside the timing; the foreign-key checks stay).

The two application-role ways connect as the API's pool does (its engine's
login, ``everyskill_api``, and settings). Every way commits each row on its
own (a durable COMMIT per row); the raw ways do not return the row (the API
does).
A round writes ``single_rows`` rows each way, the ways in turn, forwards in
one round and backwards in the next; the first round is a warm-up. Kept:
the median throughput of each way, and the median CPU time of this process
per row (the client's share: Python, asyncpg, the event loop).

The figures, each a throughput against a baseline of the same rounds:

- ``single_feedback``: ``api`` against ``owner``, the database work the API
  must do at its fewest round trips. Target: at least 0.5x.
- ``single_feedback_triggers``: ``owner`` against ``no_triggers``: what the
  live aggregates cost an INSERT.
- ``single_feedback_rls``: ``application_role`` against ``owner``: what
  row-level security (and the role's privilege checks) cost it.
- ``single_feedback_round_trips``: ``transaction`` against
  ``application_role``: the same work in three round trips instead of one.

The remainder, ``api`` against ``transaction``, is the API's own share:
Python (validation, redaction, the scope, the row returned), the row sent
back, and the pool's session reset (sent with the COMMIT). ``details`` of
``single_feedback`` hold every way's time and CPU time per row and these
differences (in its ``notes`` too, for ``results.md``).

Checks: the aggregates of every skill written with triggers equal a recount;
the skill written with triggers off kept its aggregates (the triggers were
off), and its rows were all written; the one-round-trip connection ran as
the application role.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import asyncpg

from everyskill import feedback
from everyskill.database import app_engine
from everyskill.tenancy import APP_ROLE, TENANT_SETTING, tenant_scope
from perf.concurrent_writers import RECOUNT
from perf.context import Context
from perf.harness import Figure, Target, p50

COMMENT = "Worked well on the quarterly report; the summary matched the source."

# The API's INSERT (everyskill.feedback), without RETURNING.
RAW_INSERT = """
INSERT INTO skill_feedback (
    tenant_id, skill_id, skill_version_id, user_id, usage_event_id,
    feedback_type, sentiment, comment, suggested_content, suggested_diff,
    example_input, example_output, expected_output, quality_score, source)
VALUES ($1, $2, NULL, $3, NULL, 'thumbs_up', 1, $4, NULL, NULL, NULL, NULL, NULL, NULL, 'web')
"""

# The ways, in the order of the rounds that run forwards.
WAYS = ("no_triggers", "owner", "application_role", "transaction", "api")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def measure(context: Context) -> list[Figure]:
    tenant = context.catalogue.tenants[0]
    tenant_id, user = tenant.tenant_id, tenant.user_ids[1]
    # Skills no other benchmark writes to.
    skills = dict(zip(WAYS, tenant.skill_ids[10 : 10 + len(WAYS)], strict=True))
    rows = context.scale.single_rows
    owner = context.owner
    # BEGIN and the switch in one round trip, as a tenant scope opens (a
    # simple query: its values are literals).
    opening = (
        f"BEGIN; SELECT set_config('role', {_literal(APP_ROLE)}, true),"
        f" set_config({_literal(TENANT_SETTING)}, {_literal(tenant_id)}, true)"
    )
    # The application-role ways connect as the API's pool does (its engine's
    # login, everyskill_api, and settings), each on a connection of its own.
    engine = app_engine()
    session: asyncpg.Connection = await engine.get_new_connection()
    transactions: asyncpg.Connection = await engine.get_new_connection()
    try:
        await session.execute(
            "SELECT set_config('role', $1, false), set_config($2, $3, false)",
            APP_ROLE,
            TENANT_SETTING,
            tenant_id,
        )
        session_role = await session.fetchval("SELECT current_user")

        async def no_triggers() -> None:
            await owner.execute(RAW_INSERT, tenant_id, skills["no_triggers"], user, COMMENT)

        async def as_owner() -> None:
            await owner.execute(RAW_INSERT, tenant_id, skills["owner"], user, COMMENT)

        async def application_role() -> None:
            await session.execute(RAW_INSERT, tenant_id, skills["application_role"], user, COMMENT)

        async def transaction() -> None:
            await transactions.execute(opening)
            await transactions.execute(RAW_INSERT, tenant_id, skills["transaction"], user, COMMENT)
            await transactions.execute("COMMIT")

        async def api() -> None:
            async with tenant_scope(tenant_id):
                await feedback.record_feedback(
                    skill_id=skills["api"], feedback_type="thumbs_up", user_id=user, comment=COMMENT
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
            "application_role": lambda: timed(application_role),
            "transaction": lambda: timed(transaction),
            "api": lambda: timed(api),
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
        await session.close()
        await transactions.close()

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
    rate = {way: p50(values) for way, values in rates.items()}
    ms = {way: 1000 / value for way, value in rate.items()}
    cpu_ms = {way: p50(values) for way, values in cpu.items()}
    common = {"rows_per_round": rows, "rounds": context.scale.single_rounds}

    def per_round(*ways: str) -> dict[str, list[float]]:
        return {f"{way}_rows_per_s": rates[way] for way in ways}

    return [
        Figure(
            key="single_feedback",
            what="one feedback through the API (scope, validation, redaction, RLS, aggregates)",
            measured=rate["api"],
            unit="rows/s",
            baseline_what=(
                "raw asyncpg INSERT of the same row as the owner, one round trip, its triggers"
                " firing (aggregates, foreign keys); no RLS (the owner is not subject to it)"
            ),
            baseline=rate["owner"],
            ratio=rate["api"] / rate["owner"],
            ratio_meaning="API throughput / raw throughput",
            target=Target("at_least", 0.5),
            details={
                **common,
                **per_round("api", "owner"),
                "ms_per_row": ms,
                "client_cpu_ms_per_row": cpu_ms,
                "us_per_row_added": {
                    "aggregate triggers (owner - no_triggers)": 1000 * (ms["owner"] - ms["no_triggers"]),
                    "RLS (application_role - owner)": 1000 * (ms["application_role"] - ms["owner"]),
                    "two more round trips, BEGIN and COMMIT (transaction - application_role)": (
                        1000 * (ms["transaction"] - ms["application_role"])
                    ),
                    "the API's own share (api - transaction)": 1000 * (ms["api"] - ms["transaction"]),
                },
            },
            checks={"aggregates equal a recount": exact["api"] and exact["owner"]},
            notes=[
                "Time per row (of it, this process's CPU time): "
                + "; ".join(f"{way} {ms[way]:.3f} ms ({cpu_ms[way]:.3f} ms)" for way in WAYS[::-1])
                + ". Ways: api, the API in a tenant scope; transaction, the raw INSERT in a"
                " transaction of three round trips as the application role; application_role,"
                " in one round trip as the application role; owner, in one round trip as the"
                " owner; no_triggers, the same with the table's triggers off."
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
            key="single_feedback_rls",
            what="raw INSERT of one feedback as the application role, one round trip",
            measured=rate["application_role"],
            unit="rows/s",
            baseline_what=(
                "the same INSERT as the owner (no RLS); both fire the triggers, in one round trip"
            ),
            baseline=rate["owner"],
            ratio=rate["application_role"] / rate["owner"],
            ratio_meaning="throughput as the application role / as the owner",
            details={**common, **per_round("application_role", "owner")},
            checks={
                "aggregates equal a recount": exact["application_role"],
                "ran as the application role": session_role == APP_ROLE,
            },
        ),
        Figure(
            key="single_feedback_round_trips",
            what="raw INSERT of one feedback in a tenant transaction: three round trips",
            measured=rate["transaction"],
            unit="rows/s",
            baseline_what=(
                "the same INSERT as the application role in one round trip (role and tenant set"
                " for the session): the same database work"
            ),
            baseline=rate["application_role"],
            ratio=rate["transaction"] / rate["application_role"],
            ratio_meaning="throughput in three round trips / in one",
            details={**common, **per_round("transaction", "application_role")},
            checks={"aggregates equal a recount": exact["transaction"]},
        ),
    ]
