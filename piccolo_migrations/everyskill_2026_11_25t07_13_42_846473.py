from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-25T07:13:42:846473"
VERSION = "1.38.0"
DESCRIPTION = "reviewed in the admin by"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="everyskill", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="SkillFeedback",
        tablename="skill_feedback",
        column_name="reviewed_by_admin",
        db_column_name="reviewed_by_admin",
        column_class_name="Varchar",
        column_class=Varchar,
        params={
            "length": 100,
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
