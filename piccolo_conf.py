"""
Piccolo configuration: the database engine and the registered apps.

The engine connects to ``DATABASE_URL`` when it is set, and otherwise to the
project's embedded PostgreSQL, started on demand (see ``everyskill.database``).
"""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

from everyskill.database import database_url
from everyskill.tenancy import ScopeConnection

# ScopeConnection: a tenant scope's COMMIT carries the pool's session reset.
DB = PostgresEngine(config={"dsn": database_url(), "connection_class": ScopeConnection})

APP_REGISTRY = AppRegistry(
    apps=[
        "piccolo_app",
        "piccolo.apps.user.piccolo_app",
        "piccolo_api.session_auth.piccolo_app",
    ]
)
