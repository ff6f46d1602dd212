"""
One statement for one feedback item: ``record_feedback``.

A single statement sent outside ``BEGIN`` is a transaction of its own. This
function does in one statement what a tenant transaction does in three
round trips (``BEGIN`` with the switch, the INSERT, ``COMMIT``):

- ``set_config('role', 'everyskill_app', true)`` and
  ``set_config('app.current_tenant_id', tenant, true)``: the transaction's
  role and tenant, as a tenant scope sets them (SET LOCAL: they end with the
  transaction, so nothing is left on a pooled connection);
- then ``INSERT ... ON CONFLICT (id) DO NOTHING`` of the row, as the
  application role under row-level security: the row's tenant must be the
  one just set, and its skill, version and user rows of that tenant (the
  composite foreign keys);
- and it returns the row as the application may read it (``replayed``
  false), or, when the id was already taken, the tenant's stored row with
  ``replayed`` true, or no row when the id is another tenant's (row-level
  security hides it).

Inside a tenant transaction it writes for that transaction's tenant only:
it refuses another tenant, a transaction whose tenant ``RESET ALL`` emptied,
and one that dropped its role (``RESET ROLE``: the login may do nothing
there). It never switches a transaction to another tenant or back to the
application role.

It is SECURITY INVOKER: it can do only what its caller could do by sending
those statements itself. The login ``everyskill_api`` may become
``everyskill_app``; a role that is not a member of it cannot (set_config is
refused), and the insert is then refused too. Its ``search_path`` is pinned
to ``pg_catalog, pg_temp`` and it names the schema's tables in full, so that
no object another role creates is picked up. EXECUTE is revoked from PUBLIC
and granted to ``everyskill_api``, the login that calls it outside a
transaction, and to ``everyskill_app``, the role a tenant transaction has
switched to when the call comes inside one.

The function's result columns are the feedback table's, in its order, with
``reviewed_by_admin`` read as the application reads it (``'staff'`` or
NULL, never the staff login): ``tests/test_feedback.py`` holds them to the
table's columns.

Every statement is idempotent, and ``backwards`` drops the function.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-12-07T03:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "record_feedback: one statement for one feedback item"

# The columns returned, each cast to the result type (RETURN QUERY wants the
# exact types); {p} is the row's alias.
RETURNED = """
    {p}.id::text, {p}.tenant_id::text, {p}.skill_id::text, {p}.skill_version_id::text,
    {p}.user_id::text, {p}.usage_event_id::text, {p}.feedback_type::text,
    {p}.sentiment::integer, {p}.comment::text, {p}.suggested_content::text,
    {p}.suggested_diff::text, {p}.example_input::text, {p}.example_output::text,
    {p}.expected_output::text, {p}.quality_score::integer, {p}.status::text,
    {p}.reviewed_by::text,
    CASE WHEN {p}.reviewed_at IS NOT NULL AND {p}.reviewed_by IS NULL THEN 'staff' END::text,
    {p}.reviewed_at::timestamptz, {p}.review_notes::text, {p}.source::text,
    {p}.created_at::timestamptz"""

ARGUMENTS = """
    p_tenant_id text, p_id text, p_skill_id text, p_skill_version_id text, p_user_id text,
    p_usage_event_id text, p_feedback_type text, p_sentiment integer, p_comment text,
    p_suggested_content text, p_suggested_diff text, p_example_input text,
    p_example_output text, p_expected_output text, p_quality_score integer, p_source text"""
SIGNATURE = (
    "record_feedback(text, text, text, text, text, text, text, integer, text, text, text,"
    " text, text, text, integer, text)"
)

FUNCTION = """
DO $do$ BEGIN
EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.record_feedback({arguments})
RETURNS TABLE (
    replayed boolean, id text, tenant_id text, skill_id text, skill_version_id text,
    user_id text, usage_event_id text, feedback_type text, sentiment integer, comment text,
    suggested_content text, suggested_diff text, example_input text, example_output text,
    expected_output text, quality_score integer, status text, reviewed_by text,
    reviewed_by_admin text, reviewed_at timestamptz, review_notes text, source text,
    created_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $body$
#variable_conflict use_column
DECLARE
    current_tenant text := coalesce(pg_catalog.current_setting('app.current_tenant_id', true), '');
BEGIN
    -- Inside a tenant transaction (the role switched already) the function
    -- writes for that transaction's tenant only: it never switches a
    -- transaction to another tenant, nor back to one after RESET ALL
    -- emptied it. A tenant set while the role is not the application's
    -- means the transaction dropped its role (RESET ROLE): the login may do
    -- nothing there, this function included.
    IF current_user = 'everyskill_app' THEN
        IF current_tenant <> p_tenant_id THEN
            RAISE EXCEPTION 'new row violates row-level security policy for table'
                            ' "skill_feedback": a tenant transaction writes for its own'
                            ' tenant only'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSIF current_tenant <> '' THEN
        RAISE EXCEPTION 'permission denied for table skill_feedback: the tenant transaction'
                        ' no longer runs as everyskill_app'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The tenant transaction's switch: SET LOCAL semantics, so both end
    -- with the transaction (the statement's own, outside BEGIN).
    PERFORM pg_catalog.set_config('role', 'everyskill_app', true),
            pg_catalog.set_config('app.current_tenant_id', p_tenant_id, true);
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO %1$I.skill_feedback AS f (
            tenant_id, id, skill_id, skill_version_id, user_id, usage_event_id,
            feedback_type, sentiment, comment, suggested_content, suggested_diff,
            example_input, example_output, expected_output, quality_score, source)
        VALUES (p_tenant_id, p_id, p_skill_id, p_skill_version_id, p_user_id,
                p_usage_event_id, p_feedback_type, p_sentiment, p_comment,
                p_suggested_content, p_suggested_diff, p_example_input, p_example_output,
                p_expected_output, p_quality_score, p_source)
        -- A taken id writes nothing (the AFTER INSERT aggregate trigger's
        -- transition table is then empty): a replay or another tenant's id.
        ON CONFLICT (id) DO NOTHING
        RETURNING {returned_f}
    )
    SELECT false, inserted.* FROM inserted;
    IF NOT FOUND THEN
        -- The tenant's own row under that id (a replay), or none: row-level
        -- security hides another tenant's.
        RETURN QUERY SELECT true, {returned_s}
          FROM %1$I.skill_feedback AS s WHERE s.id = p_id;
    END IF;
END
$body$
$function$, current_schema());
END $do$;
REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;
DO $$ BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api') THEN
        GRANT EXECUTE ON FUNCTION {signature} TO everyskill_api;
    ELSE
        RAISE EXCEPTION 'role everyskill_api does not exist: run the least-privilege migration first';
    END IF;
    GRANT EXECUTE ON FUNCTION {signature} TO everyskill_app;
END $$;
""".format(
    arguments=ARGUMENTS,
    returned_f=RETURNED.format(p="f"),
    returned_s=RETURNED.format(p="s"),
    signature=SIGNATURE,
)

BACKWARDS = f"DROP FUNCTION IF EXISTS {SIGNATURE};\n"


def forwards_sql() -> str:
    return FUNCTION


def backwards_sql() -> str:
    return BACKWARDS


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
