"""
The HTTP API's keys: what Piccolo cannot express of ``api_keys``, and the one
way the application may use it.

- ``api_keys`` gets what every table has: a database-generated id and
  millisecond timestamps (``created_at TIMESTAMPTZ(3) NOT NULL DEFAULT
  now()``, the other stamps ``TIMESTAMPTZ(3)``), no placeholder defaults for
  what a key must be given.
- CHECK constraints: a name that is not blank (at most 100 characters), a
  display prefix of 8 letters or digits, a 32-byte hash (SHA-256), at least
  one scope and only the five scopes (``feedback:write``,
  ``measurements:write``, ``benchmarks:write``, ``catalogue:write``,
  ``read``), a positive rate limit, an expiry after the creation.
- No role but the owner has any privilege on the table: not the application
  role ``everyskill_app``, not the login ``everyskill_api``, not PUBLIC.
  Row-level security is enabled all the same, with the policies every table
  has, so that a grant made by mistake would still show a tenant its own keys
  only.
- ``api_key_lookup(key_hash bytea)`` is the one way in: a SECURITY DEFINER
  function (search path ``pg_catalog, pg_temp``, every name qualified)
  returning ``(key_id, tenant_id, scopes, rate_limit_per_minute)`` for the
  key with that hash when it is neither revoked nor expired, and nothing
  otherwise. It stamps ``last_used_at`` when the stamp is older than a
  minute (or missing), so that a busy key costs one write a minute, not one
  per request. EXECUTE is revoked from PUBLIC and granted to
  ``everyskill_api`` only: the login calls it before it knows the tenant,
  and a tenant's transaction (as ``everyskill_app``) cannot.

Every statement is idempotent, and ``backwards`` undoes what ``forwards`` did
(the table itself is dropped by the migration before this one).
"""

from everyskill.migration_sql import raw_migration

ID = "2026-12-07T02:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "api keys: constraints, no grants, the lookup function"

TABLE = """
ALTER TABLE api_keys ALTER COLUMN id SET DEFAULT gen_random_uuid()::text;
ALTER TABLE api_keys ALTER COLUMN created_at TYPE TIMESTAMPTZ(3),
                     ALTER COLUMN created_at SET DEFAULT now(),
                     ALTER COLUMN expires_at TYPE TIMESTAMPTZ(3),
                     ALTER COLUMN last_used_at TYPE TIMESTAMPTZ(3),
                     ALTER COLUMN revoked_at TYPE TIMESTAMPTZ(3);
-- A key is given its name, prefix, hash and scopes: no placeholder default.
ALTER TABLE api_keys ALTER COLUMN name DROP DEFAULT,
                     ALTER COLUMN key_prefix DROP DEFAULT,
                     ALTER COLUMN key_hash DROP DEFAULT,
                     ALTER COLUMN scopes DROP DEFAULT;

DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'api_keys'::regclass
                 AND conname = 'api_keys_name_check') THEN
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_name_check
      CHECK (btrim(name) <> '' AND char_length(name) <= 100);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'api_keys'::regclass
                 AND conname = 'api_keys_key_prefix_check') THEN
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_key_prefix_check
      CHECK (key_prefix ~ '^[0-9A-Za-z]{8}$');
  END IF;
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'api_keys'::regclass
                 AND conname = 'api_keys_key_hash_check') THEN
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_key_hash_check
      CHECK (octet_length(key_hash) = 32);
  END IF;
  -- Containment never holds for a NULL element: NULL scopes are refused too.
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'api_keys'::regclass
                 AND conname = 'api_keys_scopes_check') THEN
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check
      CHECK (cardinality(scopes) > 0
             AND scopes <@ ARRAY['feedback:write', 'measurements:write', 'benchmarks:write',
                                 'catalogue:write', 'read']::text[]);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'api_keys'::regclass
                 AND conname = 'api_keys_rate_limit_check') THEN
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_rate_limit_check
      CHECK (rate_limit_per_minute > 0);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'api_keys'::regclass
                 AND conname = 'api_keys_expiry_check') THEN
    ALTER TABLE api_keys ADD CONSTRAINT api_keys_expiry_check
      CHECK (expires_at > created_at);
  END IF;
END $$;

-- Nobody but the owner: the keys are resolved by api_key_lookup only.
REVOKE ALL ON api_keys FROM PUBLIC;
DO $$ BEGIN
    REVOKE ALL ON api_keys FROM everyskill_app;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api') THEN
        REVOKE ALL ON api_keys FROM everyskill_api;
    END IF;
END $$;
-- Defence in depth: the policies of every table, should a grant ever be made.
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON api_keys;
CREATE POLICY tenant_isolation ON api_keys AS RESTRICTIVE FOR ALL
    USING (tenant_id = current_setting('app.current_tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));
DROP POLICY IF EXISTS tenant_access ON api_keys;
CREATE POLICY tenant_access ON api_keys AS PERMISSIVE FOR ALL TO everyskill_app
    USING (tenant_id = NULLIF(current_setting('app.current_tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant_id', true), ''));
"""

# The function is made with this schema's name written into its body: with
# search_path = pg_catalog, pg_temp nothing else is found.
LOOKUP = """
DO $do$ BEGIN
EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.api_key_lookup(key_hash bytea)
RETURNS TABLE (key_id text, tenant_id text, scopes text[], rate_limit_per_minute integer)
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    last_used timestamptz;
BEGIN
    SELECT k.id, k.tenant_id, k.scopes, k.rate_limit_per_minute, k.last_used_at
      INTO key_id, tenant_id, scopes, rate_limit_per_minute, last_used
      FROM %1$I.api_keys AS k
     WHERE k.key_hash = api_key_lookup.key_hash
       AND k.revoked_at IS NULL
       AND (k.expires_at IS NULL OR k.expires_at > pg_catalog.now());
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- At most one write a minute per key, whatever the rate of requests.
    IF last_used IS NULL OR last_used <= pg_catalog.now() - interval '1 minute' THEN
        UPDATE %1$I.api_keys AS k SET last_used_at = pg_catalog.now()
         WHERE k.id = key_id
           AND (k.last_used_at IS NULL
                OR k.last_used_at <= pg_catalog.now() - interval '1 minute');
    END IF;
    RETURN NEXT;
END
$body$
$function$, current_schema());
END $do$;
REVOKE ALL ON FUNCTION api_key_lookup(bytea) FROM PUBLIC;
DO $$ BEGIN
    REVOKE ALL ON FUNCTION api_key_lookup(bytea) FROM everyskill_app;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api') THEN
        GRANT EXECUTE ON FUNCTION api_key_lookup(bytea) TO everyskill_api;
    ELSE
        RAISE EXCEPTION 'role everyskill_api does not exist: run the least-privilege migration first';
    END IF;
END $$;
"""

BACKWARDS = """
DROP FUNCTION IF EXISTS api_key_lookup(bytea);
DROP POLICY IF EXISTS tenant_access ON api_keys;
DROP POLICY IF EXISTS tenant_isolation ON api_keys;
ALTER TABLE api_keys DISABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_expiry_check,
                     DROP CONSTRAINT IF EXISTS api_keys_rate_limit_check,
                     DROP CONSTRAINT IF EXISTS api_keys_scopes_check,
                     DROP CONSTRAINT IF EXISTS api_keys_key_hash_check,
                     DROP CONSTRAINT IF EXISTS api_keys_key_prefix_check,
                     DROP CONSTRAINT IF EXISTS api_keys_name_check;
-- Piccolo's defaults and timestamps. The id keeps a database-generated
-- default: Piccolo's frozen UUID is not worth restoring, and the table is
-- dropped next anyway.
ALTER TABLE api_keys ALTER COLUMN name SET DEFAULT '',
                     ALTER COLUMN key_prefix SET DEFAULT '',
                     ALTER COLUMN key_hash SET DEFAULT ''::bytea,
                     ALTER COLUMN scopes SET DEFAULT '{}',
                     ALTER COLUMN created_at TYPE TIMESTAMPTZ,
                     ALTER COLUMN created_at SET DEFAULT current_timestamp,
                     ALTER COLUMN expires_at TYPE TIMESTAMPTZ,
                     ALTER COLUMN last_used_at TYPE TIMESTAMPTZ,
                     ALTER COLUMN revoked_at TYPE TIMESTAMPTZ;
"""


def forwards_sql() -> str:
    return TABLE + LOOKUP


def backwards_sql() -> str:
    return BACKWARDS


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
