"""
Newest-first indexes for the tables that grow with use.

The admin lists rows newest first, ties broken by id (``ORDER BY created_at
DESC, id DESC``): a stable order for paging, since a batch written in one
statement shares one ``created_at``. These indexes hold exactly that order,
so the first page of a list of a million rows reads fifteen index entries,
and a list filtered by tenant, skill or run is read from the ``(...,
created_at DESC, id DESC)`` index of that filter instead of scanning the
newest rows of every tenant (the choice PostgreSQL made when one tenant's
batch was the newest data).

The plan's single-column ``token_measurements_created_at`` index stays.
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
