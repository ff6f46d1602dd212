"""The HTTP API (FastAPI), served under ``/v1`` beside the admin.

One module per capability: ``app`` (the FastAPI app), ``problems`` (errors
as RFC 9457 problem+json), ``bodies`` (media type and size of bodies),
``auth`` (the API key and the route's scope), ``schemas`` (the answers'
shapes), ``skill_refs`` (a skill named by slug in a write), and the routers ``feedback``, ``measurements``, ``benchmarks`` and
``catalogue``. The handlers call the query API inside the key's tenant
scope; they hold no rules of their own. See docs/http-api.md.
"""

from everyskill.http_api.app import create_api_app

__all__ = ["create_api_app"]
