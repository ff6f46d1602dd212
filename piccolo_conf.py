"""
Piccolo configuration: the database engine and the registered apps.

The engine connects to ``DATABASE_URL`` when it is set, and otherwise to the
project's embedded PostgreSQL, started on demand (see ``everyskill.database``).
"""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

from everyskill.database import SERVER_SETTINGS, database_url
from everyskill.tenancy import ScopeConnection

# ScopeConnection: a tenant scope's COMMIT carries the pool's session reset.
# SERVER_SETTINGS: the planner's costs for data on SSD or in memory.
DB = PostgresEngine(
    config={
        "dsn": database_url(),
        "connection_class": ScopeConnection,
        "server_settings": SERVER_SETTINGS,
    }
)

APP_REGISTRY = AppRegistry(
    apps=[
        "piccolo_app",
        "piccolo.apps.user.piccolo_app",
        "piccolo_api.session_auth.piccolo_app",
    ]
)
