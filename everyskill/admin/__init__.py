"""The admin: Piccolo Admin as the review interface of platform staff.

One module per capability:

- :mod:`everyskill.admin.app` -- :func:`create_app`, the ASGI app, and its
  security settings (login, CSRF, login rate limit, production cookies);
- :mod:`everyskill.admin.login` -- :func:`ensure_admin_user`, the admin
  login bootstrap;
- :mod:`everyskill.admin.table_configs` -- how each table is listed,
  filtered, ordered and linked;
- :mod:`everyskill.admin.review` -- reviewing feedback in its edit form;
- :mod:`everyskill.admin.api_key_forms` -- the forms that create (shown
  once) and revoke the HTTP API's keys;
- :mod:`everyskill.admin.guards` -- what an edit may not change, the
  measurements the admin does not edit, and redaction of edited text.
"""

from everyskill.admin.app import create_app
from everyskill.admin.login import AdminLogin, ensure_admin_user

__all__ = ["AdminLogin", "create_app", "ensure_admin_user"]
