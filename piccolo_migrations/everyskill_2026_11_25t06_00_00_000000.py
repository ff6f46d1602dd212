"""
Usage and benchmark rules: tenant model prices, cache tokens, the life cycle
of a benchmark run and what its results may be.

- ``model_prices`` gets what every table has (a database-generated id,
  millisecond timestamps, row-level security with the plan's policy and the
  permissive one, the application role's grants) and one price per
  (tenant, provider, model).
- Cache-token counts are not negative, like the other token counts.
- Token measurements and benchmark runs are listed newest first by skill
  and by tenant, and a run's results by run, with a (created_at, id)
  cursor: an index scan, never a sort of every row.
- A benchmark run follows its life cycle for every writer: it is created
  pending; pending becomes running (``started_at`` stamped); running becomes
  completed (``completed_at`` stamped, best and cheapest model picked by
  :func:`benchmark_run_picks`); pending or running becomes failed, with an
  error message. Completed and failed are final. The stamps, picks and error
  message belong to the life cycle: a write that does not change the status
  leaves them as they were.
- A benchmark result belongs to a running run and to one of its models, one
  per (model, test case).

Checks that older rows might break are added NOT VALID and then validated,
with a WARNING when old rows prevent it (see
``everyskill.migration_sql.validated_check``). Every statement is idempotent,
and ``backwards`` undoes what ``forwards`` did.
"""

from everyskill.migration_sql import raw_migration, validated_check

ID = "2026-11-25T06:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "usage and benchmark rules"

MODEL_PRICES = """
-- model_prices: the same conventions as every other table.
ALTER TABLE model_prices ALTER COLUMN id SET DEFAULT gen_random_uuid()::text;
ALTER TABLE model_prices ALTER COLUMN created_at TYPE TIMESTAMPTZ(3),
                         ALTER COLUMN created_at SET DEFAULT now();
ALTER TABLE model_prices ALTER COLUMN updated_at TYPE TIMESTAMPTZ(3),
                         ALTER COLUMN updated_at SET DEFAULT now();
-- A price names its model: no placeholder default.
ALTER TABLE model_prices ALTER COLUMN model_provider DROP DEFAULT,
                         ALTER COLUMN model_name DROP DEFAULT;

-- One price per model of a provider, per tenant, whatever the case of the
-- names (prices are matched to measurements without regard to case): the
-- price that wins is never ambiguous.
CREATE UNIQUE INDEX IF NOT EXISTS model_prices_tenant_id_model_key
    ON model_prices (tenant_id, lower(model_provider), lower(model_name));

DO $$ BEGIN
  -- A price names its model and provider.
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'model_prices'::regclass
                 AND conname = 'model_prices_model_check') THEN
    ALTER TABLE model_prices ADD CONSTRAINT model_prices_model_check
      CHECK (model_name <> '' AND model_provider <> '');
  END IF;
  -- Rates are not negative (a free model costs 0).
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'model_prices'::regclass
                 AND conname = 'model_prices_rates_check') THEN
    ALTER TABLE model_prices ADD CONSTRAINT model_prices_rates_check
      CHECK (input_microcents_per_token >= 0 AND output_microcents_per_token >= 0
             AND cache_read_microcents_per_token >= 0
             AND cache_write_microcents_per_token >= 0);
  END IF;
END $$;

-- updated_at follows changes of the price.
CREATE OR REPLACE FUNCTION model_prices_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.input_microcents_per_token, NEW.output_microcents_per_token,
        NEW.cache_read_microcents_per_token, NEW.cache_write_microcents_per_token,
        NEW.model_provider, NEW.model_name, NEW.note)
       IS DISTINCT FROM
       (OLD.input_microcents_per_token, OLD.output_microcents_per_token,
        OLD.cache_read_microcents_per_token, OLD.cache_write_microcents_per_token,
        OLD.model_provider, OLD.model_name, OLD.note) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER model_prices_touch_updated_at
    BEFORE UPDATE ON model_prices
    FOR EACH ROW EXECUTE FUNCTION model_prices_touch_updated_at();

-- Tenant isolation, as on every table (see the tenant isolation migration):
-- the plan's restrictive policy, and the permissive one that grants the
-- application role its own tenant's rows. A tenant sets its own prices.
GRANT SELECT, INSERT, UPDATE, DELETE ON model_prices TO everyskill_app;
ALTER TABLE model_prices ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON model_prices;
CREATE POLICY tenant_isolation ON model_prices AS RESTRICTIVE FOR ALL
    USING (tenant_id = current_setting('app.current_tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));
DROP POLICY IF EXISTS tenant_access ON model_prices;
CREATE POLICY tenant_access ON model_prices AS PERMISSIVE FOR ALL TO everyskill_app
    USING (tenant_id = NULLIF(current_setting('app.current_tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant_id', true), ''));
"""

MODEL_PRICES_BACKWARDS = """
DROP POLICY IF EXISTS tenant_access ON model_prices;
DROP POLICY IF EXISTS tenant_isolation ON model_prices;
ALTER TABLE model_prices DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON model_prices FROM everyskill_app;
DROP TRIGGER IF EXISTS model_prices_touch_updated_at ON model_prices;
DROP FUNCTION IF EXISTS model_prices_touch_updated_at();
ALTER TABLE model_prices DROP CONSTRAINT IF EXISTS model_prices_rates_check;
ALTER TABLE model_prices DROP CONSTRAINT IF EXISTS model_prices_model_check;
DROP INDEX IF EXISTS model_prices_tenant_id_model_key;
ALTER TABLE model_prices ALTER COLUMN model_provider SET DEFAULT '',
                         ALTER COLUMN model_name SET DEFAULT '';
-- Piccolo's timestamps. The id keeps a database-generated default: Piccolo's
-- frozen UUID is not worth restoring, and the table is dropped next anyway.
ALTER TABLE model_prices ALTER COLUMN created_at TYPE TIMESTAMPTZ,
                         ALTER COLUMN created_at SET DEFAULT current_timestamp,
                         ALTER COLUMN updated_at TYPE TIMESTAMPTZ,
                         ALTER COLUMN updated_at SET DEFAULT current_timestamp;
"""

# (table, constraint name, definition, why): checks that rows written before
# this migration might break.
CHECKS = [
    ("token_measurements", "token_measurements_cache_tokens_check",
     "CHECK (cache_read_tokens >= 0 AND cache_write_tokens >= 0)",
     "cache-token counts are not negative"),
    ("benchmark_results", "benchmark_results_cache_tokens_check",
     "CHECK (cache_read_tokens >= 0 AND cache_write_tokens >= 0)",
     "cache-token counts are not negative"),
    ("benchmark_runs", "benchmark_runs_error_message_check",
     "CHECK (error_message IS NULL OR status = 'failed')",
     "only a failed run has an error message"),
    ("benchmark_runs", "benchmark_runs_started_at_check",
     "CHECK (status IN ('pending', 'failed') OR started_at IS NOT NULL)",
     "a run that ran has a start time"),
    ("benchmark_runs", "benchmark_runs_completed_at_check",
     "CHECK ((completed_at IS NOT NULL) = (status IN ('completed', 'failed')))",
     "a run has an end time exactly when it has ended"),
]

INDEXES = [
    ("token_measurements_skill_id_created_at",
     "token_measurements (skill_id, created_at DESC, id DESC)"),
    ("token_measurements_tenant_id_created_at",
     "token_measurements (tenant_id, created_at DESC, id DESC)"),
    ("benchmark_runs_skill_id_created_at",
     "benchmark_runs (skill_id, created_at DESC, id DESC)"),
    ("benchmark_runs_tenant_id_created_at",
     "benchmark_runs (tenant_id, created_at DESC, id DESC)"),
    ("benchmark_results_run_id_created_at",
     "benchmark_results (benchmark_run_id, created_at DESC, id DESC)"),
]

ONE_RESULT_PER_CASE = """
-- One result per model and test case of a run: recording a case twice is a
-- conflict, not a second opinion. Older duplicates must be resolved by hand;
-- the error says how to find them.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'benchmark_results'::regclass
                 AND conname = 'benchmark_results_one_per_case_key') THEN
    IF EXISTS (SELECT FROM benchmark_results
                GROUP BY benchmark_run_id, model_name, test_case_index
               HAVING count(*) > 1) THEN
      RAISE EXCEPTION 'benchmark_results holds more than one result for a model and test case'
        USING HINT = 'Find them with: SELECT benchmark_run_id, model_name, test_case_index, '
                     'count(*) FROM benchmark_results GROUP BY 1, 2, 3 HAVING count(*) > 1; '
                     'keep one of each, then migrate again.';
    END IF;
    ALTER TABLE benchmark_results ADD CONSTRAINT benchmark_results_one_per_case_key
      UNIQUE (benchmark_run_id, model_name, test_case_index);
  END IF;
END $$;
"""

PICKS = """
-- The best and the cheapest model of a run, from its results, in one query.
-- Best: the highest average quality score; ties go to the lower average
-- cost, then to the model's name. Cheapest: the lowest average cost among
-- the models whose results have a cost; ties go to the higher average
-- quality, then to the name. Averages are rounded half away from zero.
-- Used by the life-cycle trigger when a run completes, and callable on its
-- own to see what a completion would pick.
CREATE OR REPLACE FUNCTION benchmark_run_picks(run_id text)
RETURNS TABLE (best_model text, best_quality_score integer,
               cheapest_model text, cheapest_cost_microcents integer)
LANGUAGE sql STABLE AS $$
    WITH per_model AS (
        SELECT model_name,
               avg(quality_score) AS quality,
               avg(estimated_cost_microcents) AS cost
          FROM benchmark_results
         WHERE benchmark_run_id = run_id
         GROUP BY model_name
    ), best AS (
        SELECT model_name, round(quality)::integer AS score
          FROM per_model WHERE quality IS NOT NULL
         ORDER BY quality DESC, cost ASC NULLS LAST, model_name
         LIMIT 1
    ), cheapest AS (
        SELECT model_name, round(cost)::integer AS cost
          FROM per_model WHERE cost IS NOT NULL
         ORDER BY cost ASC, quality DESC NULLS LAST, model_name
         LIMIT 1
    )
    SELECT best.model_name, best.score, cheapest.model_name, cheapest.cost
      FROM (SELECT) AS one_row
      LEFT JOIN best ON true
      LEFT JOIN cheapest ON true
$$;
"""

LIFECYCLE = """
-- The life cycle of a run, for every writer (the query API, the admin, raw
-- SQL). BEFORE ROW: by the time it runs on an UPDATE, PostgreSQL holds the
-- run's row lock, so writers of results (who hold a SHARE lock on the run,
-- see benchmark_results_guard) have committed, and the picks see all their
-- results.
CREATE OR REPLACE FUNCTION benchmark_runs_lifecycle() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    picks record;
BEGIN
    IF TG_OP = 'INSERT' OR NEW.models IS DISTINCT FROM OLD.models THEN
        IF TG_OP = 'UPDATE' AND OLD.status <> 'pending' THEN
            RAISE EXCEPTION 'benchmark run % is %: its models are fixed once it has started',
                  OLD.id, OLD.status
                USING ERRCODE = 'check_violation', TABLE = 'benchmark_runs',
                      COLUMN = 'models', CONSTRAINT = 'benchmark_runs_lifecycle';
        END IF;
        IF EXISTS (SELECT FROM unnest(NEW.models) AS m(name) WHERE btrim(m.name) = '')
           OR cardinality(NEW.models)
              <> (SELECT count(DISTINCT m.name) FROM unnest(NEW.models) AS m(name)) THEN
            RAISE EXCEPTION 'the models of a benchmark run are distinct, non-empty names: %',
                  NEW.models
                USING ERRCODE = 'check_violation', TABLE = 'benchmark_runs',
                      COLUMN = 'models', CONSTRAINT = 'benchmark_runs_lifecycle';
        END IF;
    END IF;

    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'pending' THEN
            RAISE EXCEPTION 'a benchmark run is created pending, not %', NEW.status
                USING ERRCODE = 'check_violation', TABLE = 'benchmark_runs',
                      COLUMN = 'status', CONSTRAINT = 'benchmark_runs_lifecycle',
                      HINT = 'create it pending, then start, complete or fail it';
        END IF;
        NEW.started_at := NULL;
        NEW.completed_at := NULL;
        NEW.error_message := NULL;
        NEW.best_model := NULL;
        NEW.best_quality_score := NULL;
        NEW.cheapest_model := NULL;
        NEW.cheapest_cost_microcents := NULL;
        RETURN NEW;
    END IF;

    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        -- Not a step of the life cycle: what it stamped stays.
        NEW.started_at := OLD.started_at;
        NEW.completed_at := OLD.completed_at;
        NEW.error_message := OLD.error_message;
        NEW.best_model := OLD.best_model;
        NEW.best_quality_score := OLD.best_quality_score;
        NEW.cheapest_model := OLD.cheapest_model;
        NEW.cheapest_cost_microcents := OLD.cheapest_cost_microcents;
        RETURN NEW;
    END IF;

    IF OLD.status = 'pending' AND NEW.status = 'running' THEN
        NEW.started_at := now();
    ELSIF OLD.status = 'running' AND NEW.status = 'completed' THEN
        NEW.completed_at := now();
        SELECT * INTO picks FROM benchmark_run_picks(NEW.id);
        NEW.best_model := picks.best_model;
        NEW.best_quality_score := picks.best_quality_score;
        NEW.cheapest_model := picks.cheapest_model;
        NEW.cheapest_cost_microcents := picks.cheapest_cost_microcents;
    ELSIF OLD.status IN ('pending', 'running') AND NEW.status = 'failed' THEN
        IF btrim(coalesce(NEW.error_message, '')) = '' THEN
            RAISE EXCEPTION 'benchmark run % fails with an error message saying why', OLD.id
                USING ERRCODE = 'check_violation', TABLE = 'benchmark_runs',
                      COLUMN = 'error_message', CONSTRAINT = 'benchmark_runs_lifecycle';
        END IF;
        NEW.completed_at := now();
    ELSE
        RAISE EXCEPTION 'benchmark run % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', TABLE = 'benchmark_runs',
                  COLUMN = 'status', CONSTRAINT = 'benchmark_runs_lifecycle',
                  HINT = 'pending becomes running or failed; running becomes completed or failed';
    END IF;
    IF NEW.status <> 'failed' THEN
        NEW.error_message := NULL;
    END IF;
    -- The picks are the completion's: no other step sets them.
    IF NEW.status <> 'completed' THEN
        NEW.best_model := NULL;
        NEW.best_quality_score := NULL;
        NEW.cheapest_model := NULL;
        NEW.cheapest_cost_microcents := NULL;
    END IF;
    IF NEW.status = 'running' THEN
        NEW.completed_at := NULL;
    ELSIF NEW.status = 'failed' THEN
        NEW.started_at := OLD.started_at;
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER benchmark_runs_lifecycle
    BEFORE INSERT OR UPDATE ON benchmark_runs
    FOR EACH ROW EXECUTE FUNCTION benchmark_runs_lifecycle();
"""

# The functions below name tables without a schema: their search_path is
# fixed, with pg_temp last, so that no temporary table of a session can stand
# in for benchmark_runs or benchmark_results.
FIXED_SEARCH_PATH = """
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION benchmark_run_picks(text)'
                   ' SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION benchmark_runs_lifecycle()'
                   ' SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION benchmark_results_guard()'
                   ' SET search_path = pg_catalog, %I, pg_temp', current_schema());
END $$;
"""

RESULTS_GUARD = """
-- A result is recorded while its run is running, for one of the run's
-- models. Checked once per statement over the rows it wrote, so a batch of
-- results costs one check. The SHARE lock on the runs makes a completion
-- wait for the results being written (and a result written after a
-- completion see it), so the picks never miss a result.
CREATE OR REPLACE FUNCTION benchmark_results_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    refused record;
BEGIN
    PERFORM FROM benchmark_runs
      WHERE id IN (SELECT benchmark_run_id FROM new_rows)
      ORDER BY id FOR SHARE;
    SELECT n.benchmark_run_id, n.model_name, r.status, r.models INTO refused
      FROM new_rows n JOIN benchmark_runs r ON r.id = n.benchmark_run_id
     WHERE r.status <> 'running' OR NOT (n.model_name = ANY (r.models))
     LIMIT 1;
    IF FOUND THEN
        IF refused.status <> 'running' THEN
            RAISE EXCEPTION 'benchmark run % is %: results are recorded only while it runs',
                  refused.benchmark_run_id, refused.status
                USING ERRCODE = 'check_violation', TABLE = 'benchmark_results',
                      COLUMN = 'benchmark_run_id', CONSTRAINT = 'benchmark_results_guard';
        END IF;
        RAISE EXCEPTION 'model % is not one of the models of benchmark run % (%)',
              refused.model_name, refused.benchmark_run_id, refused.models
            USING ERRCODE = 'check_violation', TABLE = 'benchmark_results',
                  COLUMN = 'model_name', CONSTRAINT = 'benchmark_results_guard';
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER benchmark_results_guard_insert
    AFTER INSERT ON benchmark_results REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION benchmark_results_guard();
CREATE OR REPLACE TRIGGER benchmark_results_guard_update
    AFTER UPDATE ON benchmark_results REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION benchmark_results_guard();
"""

BACKWARDS_TRIGGERS = """
DROP TRIGGER IF EXISTS benchmark_results_guard_update ON benchmark_results;
DROP TRIGGER IF EXISTS benchmark_results_guard_insert ON benchmark_results;
DROP FUNCTION IF EXISTS benchmark_results_guard();
DROP TRIGGER IF EXISTS benchmark_runs_lifecycle ON benchmark_runs;
DROP FUNCTION IF EXISTS benchmark_runs_lifecycle();
DROP FUNCTION IF EXISTS benchmark_run_picks(text);
ALTER TABLE benchmark_results DROP CONSTRAINT IF EXISTS benchmark_results_one_per_case_key;
"""


def forwards_sql() -> str:
    statements = [MODEL_PRICES]
    for table, name, definition, why in CHECKS:
        statements.append(validated_check(table, name, definition, why))
    for name, definition in INDEXES:
        statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {definition};")
    statements += [ONE_RESULT_PER_CASE, PICKS, LIFECYCLE, RESULTS_GUARD, FIXED_SEARCH_PATH]
    return "\n".join(statements)


def backwards_sql() -> str:
    statements = [BACKWARDS_TRIGGERS]
    for name, _definition in reversed(INDEXES):
        statements.append(f"DROP INDEX IF EXISTS {name};")
    for table, name, _definition, _why in reversed(CHECKS):
        statements.append(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name};")
    statements.append(MODEL_PRICES_BACKWARDS)
    return "\n".join(statements)


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
