"""A tenant's rate limit for the HTTP API (``tenants.rate_limit_per_minute``);
see the raw-SQL migration that follows."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Integer
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-07T03:05:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "tenant rate limit"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="everyskill", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="Tenant",
        tablename="tenants",
        column_name="rate_limit_per_minute",
        db_column_name="rate_limit_per_minute",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
