"""
Piccolo configuration: the database engine and the registered apps.

``DB`` is the owner's engine: it connects to ``DATABASE_URL`` when it is set,
and otherwise to the project's embedded PostgreSQL, started on demand (see
``everyskill.database``). The migrations, the admin and the sample data use
it, and the tables are bound to it. The query API's tenant scopes run on the
application's own engine, ``everyskill.database.app_engine()``, logged in as
``everyskill_api``.
"""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

from everyskill.database import database_url, engine_config

# engine_config: connections of the class everyskill.tenancy.ScopeConnection
# (a tenant scope's COMMIT carries the pool's session reset), with the
# planner's costs for data on SSD or in memory; behind a pooler
# (EVERYSKILL_BEHIND_POOLER=1), no statement cache and no start-up settings.
DB = PostgresEngine(config=engine_config(database_url()))

APP_REGISTRY = AppRegistry(
    apps=[
        "piccolo_app",
        "piccolo.apps.user.piccolo_app",
        "piccolo_api.session_auth.piccolo_app",
    ]
)
