"""
Least privilege: the login the application connects as, and tightened grants.

Before this migration the application connected as the owner and switched to
``everyskill_app`` for each tenant transaction: any query run outside such a
transaction (or after ``RESET ROLE`` inside one) ran as the owner and saw
every tenant. From here on the application connects as ``everyskill_api``:

- ``everyskill_api`` is a LOGIN role with no privileges of its own (not a
  superuser, no BYPASSRLS, CREATEDB or CREATEROLE), NOINHERIT, and a member of
  ``everyskill_app`` only. Outside a tenant transaction it can read and write
  nothing; ``RESET ROLE`` drops back to nothing; it is no member of the owner,
  so ``SET ROLE`` to the owner is refused. It is created here without a
  password when this role may (CREATEROLE); otherwise a DBA creates it first
  (the error says how). A role that exists with more powers is refused.
- It is granted CONNECT on this database. That grant is also how ``backwards``
  knows that another database still uses the cluster-wide role: it is dropped
  only when no database grants it anything.

Grants of ``everyskill_app``, tightened:
- No row's ``id``, ``tenant_id`` or ``created_at`` can be changed; nor a
  version's, a run's or a feedback's skill, nor a published version's number
  or content; nor can a version be deleted (feedback and runs name the
  version they saw, and its number is not to be used again: publish a new
  one).
- The review stamps: ``reviewed_at`` is written by the review workflow's
  trigger only; ``reviewed_by`` changes only together with the status (the
  trigger refuses it otherwise); feedback is created unreviewed.
- ``reviewed_by_admin`` (a staff login) cannot be read. Feedback reviewed by
  staff reads as reviewed (``reviewed_at`` set) with no ``reviewed_by``.
- Skills cannot be deleted by the application (the cascade would erase their
  feedback, usage and cost history): tenants archive them (``archived_at``).
  A skill may be inserted with every column: the aggregate guard trigger sets
  the maintained columns to their initial values whatever is given.

SECURITY DEFINER functions get ``search_path = pg_catalog, pg_temp`` and
schema-qualified names, so that nothing another role creates can be picked
up by them; ``CREATE`` on the ``public`` schema is revoked from PUBLIC (the
default before PostgreSQL 15), and so is ``TEMPORARY`` on the database: a
temporary table comes first in a session's search path, and one made in a
tenant's transaction would shadow a table for every later transaction on
that pooled connection.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-12-07T01:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "least privilege: the everyskill_api login and tightened grants"

ROLE = """
-- The login of the application. Created without a password: the embedded
-- server sets one (kept in .everyskill/), a DBA sets one elsewhere.
DO $$
DECLARE
    extra text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api') THEN
        BEGIN
            CREATE ROLE everyskill_api
                LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'role everyskill_api does not exist and % may not create it',
                current_user
                USING HINT = 'as a DBA: CREATE ROLE everyskill_api LOGIN NOINHERIT PASSWORD ''...'';'
                             ' then run the migrations again';
        END;
    ELSIF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api'
                  AND (rolsuper OR rolbypassrls OR rolcreatedb OR rolcreaterole
                       OR rolreplication OR rolinherit OR NOT rolcanlogin)) THEN
        RAISE EXCEPTION 'role everyskill_api exists with powers it must not have '
            '(it must be LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE'
            ' NOREPLICATION)'
            USING HINT = 'ALTER ROLE everyskill_api LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS'
                         ' NOCREATEDB NOCREATEROLE NOREPLICATION';
    END IF;
    -- Membership is transitive: the application role is a member of nothing.
    SELECT string_agg(m.roleid::regrole::text, ', ') INTO extra
      FROM pg_auth_members m WHERE m.member = 'everyskill_app'::regrole;
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION 'role everyskill_app is a member of %: it may be a member of no role', extra
            USING HINT = format('REVOKE %s FROM everyskill_app', extra);
    END IF;
    SELECT string_agg(m.roleid::regrole::text, ', ') INTO extra
      FROM pg_auth_members m
     WHERE m.member = 'everyskill_api'::regrole
       AND m.roleid <> 'everyskill_app'::regrole;
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION 'role everyskill_api is a member of %: it may be a member of'
            ' everyskill_app only', extra
            USING HINT = format('REVOKE %s FROM everyskill_api', extra);
    END IF;
END $$;
GRANT everyskill_app TO everyskill_api;
DO $$ BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO everyskill_api', current_database());
END $$;
-- Nothing of its own in this schema: every privilege comes with SET ROLE.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM everyskill_api;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM everyskill_api;
"""

# The application role's privileges per table. Column lists are computed from
# the table's columns at migration time, less those named: a later migration
# that adds a column the application writes grants it too (a test checks it).
# (table, SELECT hidden, INSERT excluded, UPDATE excluded, DELETE)
GRANTED = [
    ("users", "", "", "id, tenant_id, created_at", True),
    ("skills", "", "", "id, tenant_id, created_at, total_feedback, feedback_thumbs_up,"
     " feedback_thumbs_down, positive_feedback_pct, costed_measurements,"
     " measured_cost_microcents, avg_token_cost_microcents", False),
    ("skill_versions", "", "", "id, tenant_id, created_at, skill_id, version, content", False),
    ("skill_feedback", "reviewed_by_admin", "reviewed_by_admin, reviewed_by, reviewed_at",
     "id, tenant_id, created_at, skill_id, reviewed_by_admin, reviewed_at", True),
    ("benchmark_runs", "", "", "id, tenant_id, created_at, skill_id", True),
    ("model_prices", "", "", "id, tenant_id, created_at", True),
]

GRANT = """
-- {table}: SELECT{select_note}, INSERT{insert_note}, UPDATE except {update}{delete_note}.
REVOKE ALL ON {table} FROM everyskill_app;
DO $$
DECLARE
    readable text;
    insertable text;
    updatable text;
BEGIN
    SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
             FILTER (WHERE column_name <> ALL (string_to_array('{hidden}', ', '))),
           string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
             FILTER (WHERE column_name <> ALL (string_to_array('{insert}', ', '))),
           string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
             FILTER (WHERE column_name <> ALL (string_to_array('{update}', ', ')))
      INTO readable, insertable, updatable
      FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name = '{table}';
    EXECUTE format('GRANT SELECT (%s), INSERT (%s), UPDATE (%s) ON {table} TO everyskill_app',
                   readable, insertable, updatable);
END $$;{delete}
"""

# The review workflow trigger of the admin-review migration, with one more
# rule: reviewed_by (who reviewed) changes only with the status.
WORKFLOW = """
-- The review workflow, for every writer: pending feedback is accepted or
-- dismissed, accepted feedback is later implemented; no other change of
-- status. A change of status stamps reviewed_at unless the writer set it
-- (the application may not: only the owner can). The reviewer stamps,
-- reviewed_by and reviewed_by_admin, change only together with the status.
CREATE OR REPLACE FUNCTION skill_feedback_review_workflow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT ((OLD.status = 'pending' AND NEW.status IN ('accepted', 'dismissed'))
                OR (OLD.status = 'accepted' AND NEW.status = 'implemented')) THEN
            RAISE EXCEPTION 'feedback % cannot go from % to %', OLD.id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation', TABLE = 'skill_feedback',
                      COLUMN = 'status', CONSTRAINT = 'skill_feedback_review_workflow',
                      HINT = 'pending becomes accepted or dismissed; accepted becomes implemented';
        END IF;
        IF NEW.reviewed_at IS NOT DISTINCT FROM OLD.reviewed_at THEN
            NEW.reviewed_at := now();
        END IF;
        -- Reviewed by a tenant's user: the staff stamp of an earlier review
        -- does not describe this one.
        IF NEW.reviewed_by IS NOT NULL AND NEW.reviewed_by IS DISTINCT FROM OLD.reviewed_by THEN
            NEW.reviewed_by_admin := NULL;
        END IF;
    ELSIF NEW.reviewed_by_admin IS NOT NULL
          AND NEW.reviewed_by_admin IS DISTINCT FROM OLD.reviewed_by_admin THEN
        -- A staff stamp without a change of status: someone else reviewed
        -- this feedback since it was read.
        RAISE EXCEPTION 'feedback % was already reviewed (% by %, at %): reload it before reviewing',
                OLD.id, OLD.status,
                coalesce(OLD.reviewed_by_admin, 'user ' || OLD.reviewed_by, 'nobody recorded'),
                OLD.reviewed_at
            USING ERRCODE = 'check_violation', TABLE = 'skill_feedback',
                  COLUMN = 'reviewed_by_admin', CONSTRAINT = 'skill_feedback_review_stamp',
                  HINT = 'reviewed_by_admin is stamped by the review that changes the status';
    ELSIF NEW.reviewed_by IS DISTINCT FROM OLD.reviewed_by THEN
        RAISE EXCEPTION 'the reviewer of feedback % is set by its review, not on its own', OLD.id
            USING ERRCODE = 'check_violation', TABLE = 'skill_feedback',
                  COLUMN = 'reviewed_by', CONSTRAINT = 'skill_feedback_review_stamp',
                  HINT = 'review the feedback (a change of status) to set reviewed_by';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER skill_feedback_review_workflow
    BEFORE UPDATE OF status, reviewed_by_admin, reviewed_by ON skill_feedback
    FOR EACH ROW EXECUTE FUNCTION skill_feedback_review_workflow();
"""

# The workflow trigger as the admin-review migration left it.
WORKFLOW_BACKWARDS = """
CREATE OR REPLACE TRIGGER skill_feedback_review_workflow
    BEFORE UPDATE OF status, reviewed_by_admin ON skill_feedback
    FOR EACH ROW EXECUTE FUNCTION skill_feedback_review_workflow();
CREATE OR REPLACE FUNCTION skill_feedback_review_workflow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT ((OLD.status = 'pending' AND NEW.status IN ('accepted', 'dismissed'))
                OR (OLD.status = 'accepted' AND NEW.status = 'implemented')) THEN
            RAISE EXCEPTION 'feedback % cannot go from % to %', OLD.id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation', TABLE = 'skill_feedback',
                      COLUMN = 'status', CONSTRAINT = 'skill_feedback_review_workflow',
                      HINT = 'pending becomes accepted or dismissed; accepted becomes implemented';
        END IF;
        IF NEW.reviewed_at IS NOT DISTINCT FROM OLD.reviewed_at THEN
            NEW.reviewed_at := now();
        END IF;
        IF NEW.reviewed_by IS NOT NULL AND NEW.reviewed_by IS DISTINCT FROM OLD.reviewed_by THEN
            NEW.reviewed_by_admin := NULL;
        END IF;
    ELSIF NEW.reviewed_by_admin IS NOT NULL
          AND NEW.reviewed_by_admin IS DISTINCT FROM OLD.reviewed_by_admin THEN
        RAISE EXCEPTION 'feedback % was already reviewed (% by %, at %): reload it before reviewing',
                OLD.id, OLD.status,
                coalesce(OLD.reviewed_by_admin, 'user ' || OLD.reviewed_by, 'nobody recorded'),
                OLD.reviewed_at
            USING ERRCODE = 'check_violation', TABLE = 'skill_feedback',
                  COLUMN = 'reviewed_by_admin', CONSTRAINT = 'skill_feedback_review_stamp',
                  HINT = 'reviewed_by_admin is stamped by the review that changes the status';
    END IF;
    RETURN NEW;
END $$;
"""

# SECURITY DEFINER functions run as the owner whoever calls them. Their
# search_path becomes pg_catalog and pg_temp only (pg_temp last, so that no
# temporary object shadows anything), and their bodies name this schema's
# tables and functions in full. The bodies are rewritten where they stand:
# every schema object they use is one of OBJECTS, after FROM, JOIN, UPDATE or
# INTO; what is left unqualified afterwards fails the migration.
OBJECTS = "skills|skill_feedback|token_measurements|benchmark_runs|benchmark_results|benchmark_run_picks"

DEFINER_FUNCTIONS = """
DO $$
DECLARE
    f record;
    definition text;
    schema_name text := quote_ident(current_schema());
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p
              WHERE p.pronamespace = current_schema()::regnamespace AND p.prosecdef LOOP
        definition := pg_get_functiondef(f.oid);
        definition := regexp_replace(
            definition, '\\m(FROM|JOIN|UPDATE|INTO)(\\s+)({objects})\\M',
            '\\1\\2' || schema_name || '.\\3', 'gi');
        definition := regexp_replace(
            definition, 'SET search_path TO [^\\n]*', 'SET search_path TO ''pg_catalog'', ''pg_temp''');
        IF definition ~* '\\m(FROM|JOIN|UPDATE|INTO)\\s+({objects})\\M' THEN
            RAISE EXCEPTION 'function % still names a table without its schema', f.oid::regproc;
        END IF;
        EXECUTE definition;
    END LOOP;
END $$;
""".replace("{objects}", OBJECTS)

DEFINER_FUNCTIONS_BACKWARDS = """
-- The qualified bodies stay (they mean the same); the search_path is as before.
DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p
              WHERE p.pronamespace = current_schema()::regnamespace AND p.prosecdef LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       f.oid::regprocedure, current_schema());
    END LOOP;
END $$;
"""

SCHEMA = """
-- Before PostgreSQL 15 every role may create objects in public, where they
-- could shadow what the application uses. Only the schema's owner may revoke
-- it; another owner is warned.
DO $$ BEGIN
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'CREATE on schema public is still granted to PUBLIC: % may not revoke it',
        current_user
        USING HINT = 'as the schema''s owner: REVOKE CREATE ON SCHEMA public FROM PUBLIC';
END $$;
-- Every role may create temporary tables by default. A session's temporary
-- table comes first in its search path: one named skills, created in a
-- tenant's transaction, would stay on the pooled connection and take the
-- writes and reads of every later tenant's transaction on it. The database's
-- owner keeps the privilege; the application has none.
DO $$ BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'TEMPORARY on database % is still granted to PUBLIC: % may not revoke it',
        current_database(), current_user
        USING HINT = 'as the database''s owner: REVOKE TEMPORARY ON DATABASE ... FROM PUBLIC';
END $$;
ALTER TABLE skills ALTER COLUMN archived_at TYPE timestamptz(3);
"""

# The grants as the earlier migrations left them.
GRANTS_BACKWARDS = """
REVOKE ALL ON users, skills, skill_versions, skill_feedback, benchmark_runs, model_prices
    FROM everyskill_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON users, skill_versions, benchmark_runs, model_prices TO everyskill_app;
GRANT SELECT, DELETE ON skills TO everyskill_app;
GRANT INSERT (id, tenant_id, slug, name, description, author_id, average_rating,
              created_at, updated_at) ON skills TO everyskill_app;
GRANT UPDATE (slug, name, description, author_id, average_rating, updated_at)
    ON skills TO everyskill_app;
GRANT SELECT, DELETE ON skill_feedback TO everyskill_app;
DO $$
DECLARE
    writable text;
BEGIN
    SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
      INTO writable
      FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name = 'skill_feedback'
       AND column_name <> 'reviewed_by_admin';
    EXECUTE format('GRANT INSERT (%s), UPDATE (%s) ON skill_feedback TO everyskill_app',
                   writable, writable);
END $$;
"""

ROLE_BACKWARDS = """
-- CREATE on public and TEMPORARY on the database are left revoked from
-- PUBLIC: granting them to every role again would reopen what they closed. The role is cluster-wide: it is dropped unless
-- another database still grants it something.
DO $$ BEGIN
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM everyskill_api', current_database());
EXCEPTION WHEN undefined_object THEN
    NULL;
END $$;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api') THEN
        BEGIN
            DROP ROLE everyskill_api;
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
            RAISE NOTICE 'role everyskill_api kept: %', SQLERRM;
        END;
    END IF;
END $$;
"""


def _grant(table: str, hidden: str, insert: str, update: str, delete: bool) -> str:
    return GRANT.format(
        table=table,
        hidden=hidden,
        insert=insert,
        update=update,
        select_note=f" except {hidden}" if hidden else "",
        insert_note=f" except {insert}" if insert else "",
        delete_note=", DELETE" if delete else "; no DELETE",
        delete=f"\nGRANT DELETE ON {table} TO everyskill_app;" if delete else "",
    )


def forwards_sql() -> str:
    return "\n".join(
        [ROLE, *(_grant(*granted) for granted in GRANTED), WORKFLOW, DEFINER_FUNCTIONS, SCHEMA]
    )


def backwards_sql() -> str:
    return "\n".join(
        [
            "ALTER TABLE skills ALTER COLUMN archived_at TYPE timestamptz;",
            DEFINER_FUNCTIONS_BACKWARDS,
            WORKFLOW_BACKWARDS,
            GRANTS_BACKWARDS,
            ROLE_BACKWARDS,
        ]
    )


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
