"""
API keys: a scope of its own for reviewing feedback.

- ``feedback:review`` joins the scopes a key may carry. Accepting,
  dismissing and implementing feedback (``POST /v1/feedback/{id}/review``
  and ``/implemented``) need it; ``feedback:write`` records feedback only.
  The key of a laptop's hook or MCP server, which sends feedback, then
  cannot also accept its own suggestions: a leaked one cannot steer what a
  skill becomes.
- ``api_keys_scopes_check`` is replaced by the same rule over the six
  scopes. Keys made before keep their scopes: none of them could be used
  for reviews over HTTP before this release.

``backwards`` gives each key that carries ``feedback:review`` the scope that
allowed reviews before (``feedback:write``) in its place, then restores the
rule over five scopes. Idempotent both ways.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-12-07T04:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "api keys: the feedback:review scope"

FORWARDS = """
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_scopes_check;
-- Containment never holds for a NULL element: NULL scopes are refused too.
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check
  CHECK (cardinality(scopes) > 0
         AND scopes <@ ARRAY['feedback:write', 'feedback:review', 'measurements:write',
                             'benchmarks:write', 'catalogue:write', 'read']::text[]);
"""

BACKWARDS = """
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_scopes_check;
UPDATE api_keys
   SET scopes = CASE WHEN 'feedback:write' = ANY (scopes)
                     THEN array_remove(scopes, 'feedback:review')
                     ELSE array_replace(scopes, 'feedback:review', 'feedback:write') END
 WHERE 'feedback:review' = ANY (scopes);
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check
  CHECK (cardinality(scopes) > 0
         AND scopes <@ ARRAY['feedback:write', 'measurements:write', 'benchmarks:write',
                             'catalogue:write', 'read']::text[]);
"""


def forwards_sql() -> str:
    return FORWARDS


def backwards_sql() -> str:
    return BACKWARDS


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
