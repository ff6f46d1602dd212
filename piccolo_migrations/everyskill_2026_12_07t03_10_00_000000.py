"""
Rate limits of the HTTP API, counted in PostgreSQL, and one function that
resolves a request's key and counts the request in the same statement.

- ``tenants.rate_limit_per_minute`` (added by the migration before this one)
  must be positive when set; NULL is the default limit.
- ``rate_limit_keys`` and ``rate_limit_tenants`` hold one row per key and per
  tenant: the GCRA's *theoretical arrival time* (``tat``, seconds since the
  epoch as an exact ``numeric``). They are UNLOGGED: a counter is written on
  every request, and a write to an unlogged table makes no WAL, so the
  request's commit waits for no disk flush. A crash (not a clean shutdown)
  empties them: every key and tenant then starts again with its whole quota.
  Nobody but the owner has any privilege on them; a key's or tenant's
  counter goes when the key or tenant is deleted.
- ``api_key_resolve(key_hash bytea)`` replaces ``api_key_lookup``: the same
  narrow SECURITY DEFINER function (search path ``pg_catalog, pg_temp``,
  every name qualified, EXECUTE for ``everyskill_api`` only) that returns
  the key's id, tenant and scopes when the key is neither revoked nor
  expired (nothing otherwise), and stamps ``last_used_at`` at most once a
  minute, now also counting the request against the key's limit and its
  tenant's: ``allowed``, and per policy the limit, the requests still
  allowed now, the seconds until the whole quota is back, and the seconds
  until a request would be allowed (0 when it is). A request is counted
  against both limits when both allow it, and against neither when either
  refuses it.

Every statement is idempotent, and ``backwards`` restores ``api_key_lookup``
(from the migration that made it) and removes the rest.
"""

from types import ModuleType

from everyskill.migration_sql import earlier_migration, raw_migration

ID = "2026-12-07T03:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "rate limits: counters and the counting key resolution"

TABLES = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'tenants'::regclass
                 AND conname = 'tenants_rate_limit_check') THEN
    ALTER TABLE tenants ADD CONSTRAINT tenants_rate_limit_check
      CHECK (rate_limit_per_minute > 0);
  END IF;
END $$;

-- One row per subject, rewritten by every request: UNLOGGED, so that a
-- request's commit flushes no WAL (a crash empties the table: the counts
-- start again, which errs on the side of the client). fillfactor 50 keeps
-- room on the page for HOT updates of the row. The foreign keys remove a
-- counter with its key or tenant.
CREATE UNLOGGED TABLE IF NOT EXISTS rate_limit_keys (
    key_id text PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    tat numeric NOT NULL
) WITH (fillfactor = 50);
CREATE UNLOGGED TABLE IF NOT EXISTS rate_limit_tenants (
    tenant_id text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    tat numeric NOT NULL
) WITH (fillfactor = 50);
COMMENT ON TABLE rate_limit_keys IS
    'GCRA state of each API key (theoretical arrival time, epoch seconds); unlogged: emptied by a crash';
COMMENT ON TABLE rate_limit_tenants IS
    'GCRA state of each tenant (theoretical arrival time, epoch seconds); unlogged: emptied by a crash';

-- Nobody but the owner: the counters are read and written by api_key_resolve only.
REVOKE ALL ON rate_limit_keys, rate_limit_tenants FROM PUBLIC;
DO $$ BEGIN
    REVOKE ALL ON rate_limit_keys, rate_limit_tenants FROM everyskill_app;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api') THEN
        REVOKE ALL ON rate_limit_keys, rate_limit_tenants FROM everyskill_api;
    END IF;
END $$;
"""

# The function is made with this schema's name written into its body: with
# search_path = pg_catalog, pg_temp nothing else is found.
RESOLVE = """
DROP FUNCTION IF EXISTS api_key_lookup(bytea);

DO $do$ BEGIN
EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.api_key_resolve(key_hash bytea)
RETURNS TABLE (key_id text, tenant_id text, scopes text[], allowed boolean,
               key_limit integer, key_remaining integer, key_reset integer, key_wait integer,
               tenant_limit integer, tenant_remaining integer, tenant_reset integer,
               tenant_wait integer)
LANGUAGE plpgsql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    -- The defaults of a key and a tenant whose limit is NULL
    -- (everyskill.rate_limits says the same).
    default_key_limit constant integer := 600;
    default_tenant_limit constant integer := 6000;
    -- Every limit is per minute.
    period constant numeric := 60;
    -- A request's cost is period/limit truncated to 18 decimals: the
    -- division is done on integers (div truncates, exactly) and scaled back
    -- by a multiplication (exact), because numeric division rounds its
    -- quotient to about 16 significant digits, which could round the cost
    -- up and let fewer than `limit` requests fit in a period.
    period_units constant numeric := 60000000000000000000;  -- period * 10^18
    unit constant numeric := 0.000000000000000001;          -- 10^-18
    last_used timestamptz;
    key_interval numeric;
    tenant_interval numeric;
    key_tat numeric;
    tenant_tat numeric;
    now_s numeric;
    key_debt numeric;
    tenant_debt numeric;
    key_allows boolean;
BEGIN
    -- Lock order, the same for every request: the key's counter, then
    -- (only when the key allows the request) its tenant's counter. The
    -- key's row in api_keys is never waited for (last_used_at is stamped
    -- with SKIP LOCKED, below): deleting a key locks api_keys and then,
    -- by its ON DELETE CASCADE, the key's counter, so a request holding
    -- the counter must not wait for api_keys. A tenant's deletion locks
    -- the tenant, its keys, their counters, then the tenant's counter: the
    -- same order again.
    --
    -- The key, its tenant's limit and both counters; only the key's
    -- counter locked. The tenant's counter is read (not locked) for the
    -- response's headers when the key refuses.
    SELECT k.id, k.tenant_id, k.scopes, k.last_used_at,
           coalesce(k.rate_limit_per_minute, default_key_limit),
           coalesce(t.rate_limit_per_minute, default_tenant_limit), ck.tat, ct.tat
      INTO key_id, tenant_id, scopes, last_used, key_limit, tenant_limit, key_tat, tenant_tat
      FROM %1$I.api_keys AS k
      JOIN %1$I.tenants AS t ON t.id = k.tenant_id
      JOIN %1$I.rate_limit_keys AS ck ON ck.key_id = k.id
      JOIN %1$I.rate_limit_tenants AS ct ON ct.tenant_id = k.tenant_id
     WHERE k.key_hash = api_key_resolve.key_hash
       AND k.revoked_at IS NULL
       AND (k.expires_at IS NULL OR k.expires_at > pg_catalog.now())
       FOR UPDATE OF ck;
    IF NOT FOUND THEN
        -- No such key, or a counter is missing (the key's or its tenant's
        -- first request, or after a crash emptied them).
        SELECT k.id, k.tenant_id, k.scopes, k.last_used_at,
               coalesce(k.rate_limit_per_minute, default_key_limit),
               coalesce(t.rate_limit_per_minute, default_tenant_limit)
          INTO key_id, tenant_id, scopes, last_used, key_limit, tenant_limit
          FROM %1$I.api_keys AS k JOIN %1$I.tenants AS t ON t.id = k.tenant_id
         WHERE k.key_hash = api_key_resolve.key_hash
           AND k.revoked_at IS NULL
           AND (k.expires_at IS NULL OR k.expires_at > pg_catalog.now());
        IF NOT FOUND THEN
            RETURN;
        END IF;
        -- The tenant's counter is made first: its foreign key check
        -- share-locks the tenant, then the key's share-locks the key,
        -- the order in which a tenant's deletion locks them.
        INSERT INTO %1$I.rate_limit_tenants AS c (tenant_id, tat)
        VALUES (api_key_resolve.tenant_id, 0) ON CONFLICT DO NOTHING;
        INSERT INTO %1$I.rate_limit_keys AS c (key_id, tat)
        VALUES (api_key_resolve.key_id, 0) ON CONFLICT DO NOTHING;
        SELECT ck.tat INTO key_tat FROM %1$I.rate_limit_keys AS ck
         WHERE ck.key_id = api_key_resolve.key_id FOR UPDATE;
        IF NOT FOUND THEN
            -- The key was deleted meanwhile.
            RETURN;
        END IF;
        SELECT ct.tat INTO tenant_tat FROM %1$I.rate_limit_tenants AS ct
         WHERE ct.tenant_id = api_key_resolve.tenant_id;
    END IF;

    -- GCRA: a request costs period/limit seconds of "debt"; it is allowed
    -- when the debt it leaves is at most the period. The key is judged
    -- with the time read once its counter is locked; only if it allows the
    -- request is the tenant's counter locked (a key over its own limit
    -- never makes its tenant's other keys wait), the time read again and
    -- both judged with it (a key's debt only shrinks as time passes).
    key_interval := div(period_units, key_limit) * unit;
    tenant_interval := div(period_units, tenant_limit) * unit;
    now_s := extract(epoch FROM pg_catalog.clock_timestamp());
    key_debt := greatest(key_tat, now_s) - now_s;
    key_allows := key_debt + key_interval <= period;
    IF key_allows THEN
        SELECT ct.tat INTO tenant_tat FROM %1$I.rate_limit_tenants AS ct
         WHERE ct.tenant_id = api_key_resolve.tenant_id FOR UPDATE;
        IF NOT FOUND THEN
            -- Deleted since (by hand): made again, then locked.
            INSERT INTO %1$I.rate_limit_tenants AS c (tenant_id, tat)
            VALUES (api_key_resolve.tenant_id, 0) ON CONFLICT DO NOTHING;
            SELECT ct.tat INTO tenant_tat FROM %1$I.rate_limit_tenants AS ct
             WHERE ct.tenant_id = api_key_resolve.tenant_id FOR UPDATE;
        END IF;
        now_s := extract(epoch FROM pg_catalog.clock_timestamp());
        key_debt := greatest(key_tat, now_s) - now_s;
    END IF;
    tenant_debt := greatest(coalesce(tenant_tat, 0), now_s) - now_s;
    allowed := key_allows AND tenant_debt + tenant_interval <= period;
    IF allowed THEN
        -- Counted against both limits only when both allow it.
        key_debt := key_debt + key_interval;
        tenant_debt := tenant_debt + tenant_interval;
        UPDATE %1$I.rate_limit_keys AS c SET tat = now_s + key_debt
         WHERE c.key_id = api_key_resolve.key_id;
        UPDATE %1$I.rate_limit_tenants AS c SET tat = now_s + tenant_debt
         WHERE c.tenant_id = api_key_resolve.tenant_id;
    END IF;
    -- div() truncates exactly. The debt is at most the period unless a
    -- counter was written by hand.
    key_remaining := greatest(div(period - key_debt, key_interval), 0);
    tenant_remaining := greatest(div(period - tenant_debt, tenant_interval), 0);
    key_reset := ceil(key_debt);
    tenant_reset := ceil(tenant_debt);
    key_wait := greatest(ceil(key_debt + key_interval - period), 0);
    tenant_wait := greatest(ceil(tenant_debt + tenant_interval - period), 0);

    -- At most one write a minute per key, whatever the rate of requests;
    -- never waiting for the key's row (SKIP LOCKED): whoever holds it (a
    -- deletion, a revocation) may be waiting for this request's counter.
    -- A skipped stamp is made by a later request.
    IF last_used IS NULL OR last_used <= pg_catalog.now() - interval '1 minute' THEN
        UPDATE %1$I.api_keys AS k SET last_used_at = pg_catalog.now()
         WHERE k.id = (SELECT l.id FROM %1$I.api_keys AS l
                        WHERE l.id = api_key_resolve.key_id
                          AND (l.last_used_at IS NULL
                               OR l.last_used_at <= pg_catalog.now() - interval '1 minute')
                          FOR NO KEY UPDATE SKIP LOCKED);
    END IF;
    RETURN NEXT;
END
$body$
$function$, current_schema());
END $do$;
REVOKE ALL ON FUNCTION api_key_resolve(bytea) FROM PUBLIC;
DO $$ BEGIN
    REVOKE ALL ON FUNCTION api_key_resolve(bytea) FROM everyskill_app;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api') THEN
        GRANT EXECUTE ON FUNCTION api_key_resolve(bytea) TO everyskill_api;
    ELSE
        RAISE EXCEPTION 'role everyskill_api does not exist: run the least-privilege migration first';
    END IF;
END $$;
"""

BACKWARDS = """
DROP FUNCTION IF EXISTS api_key_resolve(bytea);
DROP TABLE IF EXISTS rate_limit_tenants;
DROP TABLE IF EXISTS rate_limit_keys;
ALTER TABLE tenants DROP CONSTRAINT IF EXISTS tenants_rate_limit_check;
"""

# The migration that made api_key_lookup, whose SQL restores it.
_LOOKUP_MIGRATION = "everyskill_2026_12_07t02_10_00_000000.py"


def lookup_migration() -> ModuleType:
    """The migration module that made ``api_key_lookup``."""
    return earlier_migration(__file__, _LOOKUP_MIGRATION)


def forwards_sql() -> str:
    return TABLES + RESOLVE


def backwards_sql() -> str:
    return BACKWARDS + lookup_migration().LOOKUP


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
