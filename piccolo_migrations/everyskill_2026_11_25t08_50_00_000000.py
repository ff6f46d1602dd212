"""
Newest-first indexes for the tables that grow with use.

The admin lists rows newest first, ties broken by id (``ORDER BY created_at
DESC, id DESC``): a stable order for paging, since a batch written in one
statement shares one ``created_at``. These indexes hold exactly that order,
so the first page of a list of a million rows reads fifteen index entries.
A list filtered by what has its own ``(..., created_at DESC, id DESC)``
index (a tenant's or a skill's measurements and feedback, a run's results)
is read from that index, in the same order.

The plan's single-column ``token_measurements_created_at`` index stays,
although this one covers it.

Piccolo runs each migration in a transaction, where CREATE INDEX
CONCURRENTLY cannot run: the indexes are built with a lock that holds
writes to the table back until they are built (seconds for a million rows).
On a large table in service, build them by hand first with CREATE INDEX
CONCURRENTLY and the same names; this migration then finds them there.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-11-25T08:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "newest-first indexes"

INDEXES = [
    ("token_measurements_newest", "token_measurements (created_at DESC, id DESC)"),
    ("skill_feedback_newest", "skill_feedback (created_at DESC, id DESC)"),
    ("benchmark_results_newest", "benchmark_results (created_at DESC, id DESC)"),
]


def forwards_sql() -> str:
    return "\n".join(
        f"CREATE INDEX IF NOT EXISTS {name} ON {definition};" for name, definition in INDEXES
    )


def backwards_sql() -> str:
    return "\n".join(f"DROP INDEX IF EXISTS {name};" for name, _definition in INDEXES)


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
