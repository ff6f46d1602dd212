"""
The HTTP API's keys (``everyskill.api_keys``): their format and checksum,
that the database holds only their hashes, resolving them as the
application's login, the login's inability to read the key table, the
``piccolo`` commands, and the migrations' round trip.
"""

from __future__ import annotations

import math
import re
import string

import asyncpg
import pytest
from piccolo.engine.postgres import PostgresEngine

from everyskill import api_keys
from everyskill.api_keys import (
    CHECKSUM_LENGTH,
    DISPLAY_PREFIX_LENGTH,
    KEY_LENGTH,
    SCOPES,
    SECRET_LENGTH,
    create_api_key,
    display_prefix,
    generate_key,
    is_well_formed,
    key_hash,
    list_api_keys,
    resolve,
    revoke_api_key,
)
from everyskill.errors import AuthenticationError, TenantScopeError, ValidationError
from everyskill.rate_limits import DEFAULT_KEY_LIMIT_PER_MINUTE, DEFAULT_TENANT_LIMIT_PER_MINUTE
from everyskill.tenancy import APP_ROLE, tenant_scope, tenant_transaction
from tests.admin_client import Staff, row, save
from tests.support import TenantRows, connected, run_piccolo, snapshot

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
KEY = re.compile(r"esk_[0-9A-Za-z]{38}")
APP_LOGIN = "everyskill_api"


async def slug_of(owner: asyncpg.Connection, tenant: TenantRows) -> str:
    slug = await owner.fetchval("SELECT slug FROM tenants WHERE id = $1", tenant.tenant_id)
    assert isinstance(slug, str)
    return slug


# -- format -----------------------------------------------------------------------


def test_keys_have_the_documented_shape_and_are_all_different() -> None:
    keys = [generate_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert KEY.fullmatch(key), key
        assert len(key) == KEY_LENGTH == 42
        assert is_well_formed(key)
    # Every character of the alphabet is drawn (64,000 draws of 62 characters).
    assert set("".join(key[4 : 4 + SECRET_LENGTH] for key in keys)) == set(ALPHABET)


def test_the_secret_holds_at_least_128_bits_beyond_the_display_prefix() -> None:
    bits_per_character = math.log2(len(ALPHABET))
    assert SECRET_LENGTH * bits_per_character > 190
    assert (SECRET_LENGTH - DISPLAY_PREFIX_LENGTH) * bits_per_character >= 128
    # The checksum carries no secret: it is computed from the secret.
    assert 62**CHECKSUM_LENGTH > 2**32


def test_the_checksum_is_githubs_crc32_in_base62() -> None:
    """A public example of the scheme (GitHub's token format: CRC32 of the
    random part, base62, six characters), from the base62-token write-up
    (gist.github.com/coolaj86/eb8cddfd3e4251258712dfed03e1f86d):
    ``ghp_`` + ``zQWBuTSOoRi4A9spHcVY5ncnsDkxkJ`` + ``0mLq17``."""
    assert api_keys._checksum("zQWBuTSOoRi4A9spHcVY5ncnsDkxkJ") == "0mLq17"


def test_any_change_of_one_character_breaks_the_key() -> None:
    key = generate_key()
    for position in range(4, len(key)):
        for character in ALPHABET:
            if character != key[position]:
                changed = key[:position] + character + key[position + 1 :]
                assert not is_well_formed(changed), (position, character)
    for bad in (
        key[:-1], key + "0", "esK_" + key[4:], "esk-" + key[4:], key.lower(), key.upper(),
        " " + key, key + "\n", "Bearer " + key, "", None, 42, key.encode(),
    ):
        assert bad == key or not is_well_formed(bad), bad


# -- creation and storage ------------------------------------------------------------


async def test_only_the_hash_is_stored(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    created = await create_api_key(await slug_of(owner, tenant), "ci", ["read", "feedback:write"])
    key = created.key
    assert is_well_formed(key)
    assert created.info.key_prefix == key[4:12]
    assert created.info.scopes == ("feedback:write", "read")
    assert key not in repr(created)
    stored = await owner.fetchval("SELECT key_hash FROM api_keys WHERE id = $1", created.info.id)
    assert stored == key_hash(key) and len(stored) == 32
    # No text or bytea column of any table holds the key, whole or its secret.
    columns = await owner.fetch(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
        " JOIN pg_tables t ON t.tablename = c.table_name AND t.schemaname = c.table_schema"
        " WHERE c.table_schema = current_schema()"
        "   AND c.data_type IN ('text', 'character varying', 'bytea', 'ARRAY', 'jsonb', 'json')"
    )
    assert ("api_keys", "key_hash", "bytea") in {tuple(row) for row in columns}
    secret = key[4:]
    for table, column, kind in columns:
        as_text = f'"{column}"::text' if kind != "bytea" else f"encode(\"{column}\", 'escape')"
        found = await owner.fetchval(
            f'SELECT count(*) FROM "{table}" WHERE strpos({as_text}, $1) > 0', secret
        )
        assert found == 0, (table, column)
    listed = await list_api_keys(tenant.tenant_id)
    assert [info.id for info in listed] == [created.info.id]
    assert not hasattr(listed[0], "key_hash")


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["admin"]}, "scopes"),
        ({"scopes": ["read", "write"]}, "scopes"),
        ({"scopes": "read,,"}, "scopes"),
        ({"scopes": 3}, "scopes"),
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": -1}, "expires_in_days"),
        ({"expires_in_days": 1.5}, "expires_in_days"),
        ({"expires_in_days": True}, "expires_in_days"),
        ({"expires_in_days": 3651}, "expires_in_days"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"rate_limit_per_minute": 2**31}, "rate_limit_per_minute"),
        ({"tenant": ""}, "tenant"),
    ],
)
async def test_bad_input_names_the_field(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows,
    arguments: dict[str, object], field: str,
) -> None:
    given: dict[str, object] = {"tenant": tenant.tenant_id, "name": "ci", "scopes": ["read"]}
    given.update(arguments)
    with pytest.raises(ValidationError) as refused:
        await create_api_key(**given)  # type: ignore[arg-type]
    assert refused.value.field == field
    assert await owner.fetchval(
        "SELECT count(*) FROM api_keys WHERE tenant_id = $1", tenant.tenant_id
    ) == 0


async def test_the_database_refuses_what_the_module_refuses(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """The table's checks hold for every writer, the owner included."""
    good = {
        "name": "'ci'", "key_prefix": "'abcdEFG1'", "key_hash": "sha256('x')",
        "scopes": "ARRAY['read']", "rate_limit_per_minute": "NULL", "expires_at": "NULL",
    }
    bad = [
        ("name", "' '"), ("key_prefix", "'abc'"), ("key_prefix", "'abcdefg_'"),
        ("key_hash", "'\\x00'::bytea"), ("scopes", "ARRAY[]::text[]"),
        ("scopes", "ARRAY['read', 'admin']"), ("scopes", "ARRAY['read', NULL]"),
        ("rate_limit_per_minute", "0"), ("expires_at", "now() - interval '1 day'"),
    ]
    for column, value in bad:
        values = {**good, column: value}
        with pytest.raises(asyncpg.CheckViolationError):
            await owner.execute(
                f"INSERT INTO api_keys (tenant_id, {', '.join(values)})"
                f" VALUES ($1, {', '.join(values.values())})",
                tenant.tenant_id,
            )
    await owner.execute(
        f"INSERT INTO api_keys (tenant_id, {', '.join(good)}) VALUES ($1, {', '.join(good.values())})",
        tenant.tenant_id,
    )


async def test_a_tenant_or_prefix_that_names_nothing_is_refused(
    engine: PostgresEngine, tenant: TenantRows
) -> None:
    for call in (
        create_api_key("no-such-tenant", "ci", ["read"]),
        list_api_keys("no-such-tenant"),
    ):
        with pytest.raises(ValidationError) as refused:
            await call
        assert refused.value.field == "tenant"
        assert "no tenant has the slug or id 'no-such-tenant'" in str(refused.value)
    created = await create_api_key(tenant.tenant_id, "ci", ["read"])
    for prefix in ("esk_00000000", "esk_0000", created.info.key_prefix + "0", "", "esk_"):
        with pytest.raises(ValidationError) as refused:
            await revoke_api_key(prefix)
        assert refused.value.field == "prefix"
    # The prefix with or without esk_, or the whole key, names the key.
    assert (await revoke_api_key(created.key)).id == created.info.id


# -- resolving as the application ---------------------------------------------------------


async def test_a_key_resolves_to_its_tenant_and_scopes(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    mine = await create_api_key(tenant.tenant_id, "hook", "feedback:write", rate_limit_per_minute=60)
    theirs = await create_api_key(await slug_of(owner, other_tenant), "ci", SCOPES, 30)
    resolved = await resolve(mine.key)
    assert resolved.tenant_id == tenant.tenant_id
    assert resolved.key_id == mine.info.id
    assert resolved.scopes == {"feedback:write"}
    assert resolved.allows("feedback:write") and not resolved.allows("read")
    assert resolved.rate_limit_per_minute == 60
    other = await resolve(theirs.key)
    assert (other.tenant_id, other.scopes, other.rate_limit_per_minute) == (
        other_tenant.tenant_id, frozenset(SCOPES), DEFAULT_KEY_LIMIT_PER_MINUTE
    )
    # Rotation: a second key of the tenant works alongside the first.
    second = await create_api_key(tenant.tenant_id, "hook 2", ["feedback:write"])
    assert (await resolve(second.key)).tenant_id == tenant.tenant_id
    assert (await resolve(mine.key)).tenant_id == tenant.tenant_id


async def test_revoked_expired_unknown_and_malformed_keys_are_refused(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    revoked = await create_api_key(tenant.tenant_id, "old", ["read"])
    assert (await resolve(revoked.key)).tenant_id == tenant.tenant_id
    info = await revoke_api_key("esk_" + revoked.info.key_prefix)
    assert info.revoked_at is not None
    # Revoking again keeps the first time.
    assert (await revoke_api_key(revoked.info.key_prefix)).revoked_at == info.revoked_at

    expired = await create_api_key(tenant.tenant_id, "short", ["read"], expires_in_days=1)
    assert (await resolve(expired.key)).tenant_id == tenant.tenant_id
    await owner.execute(
        "UPDATE api_keys SET created_at = now() - interval '2 days',"
        " expires_at = now() - interval '1 second' WHERE id = $1",
        expired.info.id,
    )
    unknown = generate_key()
    messages = set()
    for key in (revoked.key, expired.key, unknown):
        with pytest.raises(AuthenticationError) as refused:
            await resolve(key)
        assert refused.value.reason == "invalid"
        assert key not in str(refused.value)
        messages.add(str(refused.value))
    # One message: whoever holds a key learns nothing about whether it existed.
    assert len(messages) == 1
    changed = unknown[:-1] + ("0" if unknown[-1] != "0" else "1")
    for key, reason in ((changed, "malformed"), ("esk_short", "malformed"), (None, "missing"), ("", "missing")):
        with pytest.raises(AuthenticationError) as refused:
            await resolve(key)
        assert refused.value.reason == reason
        assert str(unknown) not in str(refused.value)


async def test_resolve_is_refused_inside_a_tenant_scope(
    engine: PostgresEngine, tenant: TenantRows
) -> None:
    created = await create_api_key(tenant.tenant_id, "hook", ["read"])
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(TenantScopeError):
            await resolve(created.key)


async def test_last_used_is_stamped_at_most_once_a_minute(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    created = await create_api_key(tenant.tenant_id, "hook", ["read"])

    async def last_used() -> object:
        return await owner.fetchval(
            "SELECT last_used_at FROM api_keys WHERE id = $1", created.info.id
        )

    assert await last_used() is None
    await resolve(created.key)
    first = await last_used()
    assert first is not None
    # Fifty more uses within the minute change nothing, nor write the row.
    versions = await owner.fetchval("SELECT xmin::text FROM api_keys WHERE id = $1", created.info.id)
    for _ in range(50):
        await resolve(created.key)
    assert await last_used() == first
    assert await owner.fetchval(
        "SELECT xmin::text FROM api_keys WHERE id = $1", created.info.id
    ) == versions
    # A stamp older than a minute is renewed by the next use.
    await owner.execute(
        "UPDATE api_keys SET last_used_at = now() - interval '61 seconds' WHERE id = $1",
        created.info.id,
    )
    stale = await last_used()
    await resolve(created.key)
    renewed = await last_used()
    assert isinstance(renewed, type(stale)) and renewed > stale  # type: ignore[operator]


# -- the application's login and the table ----------------------------------------------------


async def test_the_application_cannot_read_or_write_the_key_table(
    owner: asyncpg.Connection, app_connection: asyncpg.Connection, engine: PostgresEngine,
    tenant: TenantRows,
) -> None:
    created = await create_api_key(tenant.tenant_id, "hook", ["read"])
    statements = [
        "SELECT * FROM api_keys",
        "SELECT key_hash FROM api_keys",
        "SELECT count(*) FROM api_keys",
        "UPDATE api_keys SET revoked_at = NULL",
        "UPDATE api_keys SET scopes = ARRAY['read', 'catalogue:write']",
        "DELETE FROM api_keys",
        "INSERT INTO api_keys (tenant_id, name, key_prefix, key_hash, scopes)"
        " SELECT tenant_id, 'x', 'aaaaaaaa', sha256('x'), ARRAY['read'] FROM users",
        "TRUNCATE api_keys",
    ]
    for statement in statements:
        # As the login, outside any tenant transaction.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_connection.execute(statement)
        # As the application role, in the key's own tenant.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_connection, tenant.tenant_id) as db:
                await db.execute(statement)
    # In a tenant transaction the resolution is refused too: it is the login's, not the role's.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_connection, tenant.tenant_id) as db:
            await db.fetch("SELECT * FROM api_key_resolve($1)", key_hash(created.key))
    # Outside, the login gets what the function returns, and nothing else.
    rows = await app_connection.fetch("SELECT * FROM api_key_resolve($1)", key_hash(created.key))
    assert [
        (row["key_id"], row["tenant_id"], row["scopes"], row["allowed"], row["key_limit"],
         row["key_remaining"], row["tenant_limit"], row["tenant_remaining"])
        for row in rows
    ] == [(
        created.info.id, tenant.tenant_id, ["read"], True, DEFAULT_KEY_LIMIT_PER_MINUTE,
        DEFAULT_KEY_LIMIT_PER_MINUTE - 1, DEFAULT_TENANT_LIMIT_PER_MINUTE,
        DEFAULT_TENANT_LIMIT_PER_MINUTE - 1,
    )]
    assert await owner.fetchval(
        "SELECT revoked_at IS NULL AND scopes = ARRAY['read'] FROM api_keys WHERE id = $1",
        created.info.id,
    )
    privileges = await owner.fetchrow(
        "SELECT has_table_privilege($1, 'api_keys', 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE,"
        " REFERENCES, TRIGGER') AS login,"
        " has_table_privilege($2, 'api_keys', 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE,"
        " REFERENCES, TRIGGER') AS role,"
        " has_function_privilege($1, 'api_key_resolve(bytea)', 'EXECUTE') AS login_lookup,"
        " has_function_privilege($2, 'api_key_resolve(bytea)', 'EXECUTE') AS role_lookup,"
        " has_function_privilege('public', 'api_key_resolve(bytea)', 'EXECUTE') AS public_lookup,"
        " (SELECT relrowsecurity FROM pg_class WHERE oid = 'api_keys'::regclass) AS rls",
        APP_LOGIN,
        APP_ROLE,
    )
    assert dict(privileges) == {
        "login": False, "role": False, "login_lookup": True, "role_lookup": False,
        "public_lookup": False, "rls": True,
    }


# -- the commands ---------------------------------------------------------------------


async def test_the_commands_create_and_revoke_a_key(
    owner: asyncpg.Connection, database_url_for_tests: str, engine: PostgresEngine,
    tenant: TenantRows,
) -> None:
    slug = await slug_of(owner, tenant)
    output = run_piccolo(
        database_url_for_tests, "everyskill", "create_api_key", "--tenant", slug,
        "--name", "laptop hook", "--scopes", "feedback:write,read", "--expires-in-days", "30",
    )
    keys = KEY.findall(output)
    assert len(keys) == 1 and is_well_formed(keys[0])
    key = keys[0]
    row = await owner.fetchrow(
        "SELECT name, scopes, expires_at - created_at AS lasts FROM api_keys WHERE key_hash = $1",
        key_hash(key),
    )
    assert row is not None
    assert (row["name"], row["scopes"], row["lasts"].days) == ("laptop hook", ["feedback:write", "read"], 30)
    # The --option=value form means the same; options in any order.
    other = run_piccolo(
        database_url_for_tests, "everyskill", "create_api_key", "--scopes=read",
        f"--tenant={tenant.tenant_id}", "--name=ci",
    )
    assert len(KEY.findall(other)) == 1
    assert (await resolve(key)).scopes == {"feedback:write", "read"}

    revoked = run_piccolo(database_url_for_tests, "everyskill", "revoke_api_key", key[:12])
    assert f"Revoked {key[:12]}" in revoked and key not in revoked
    with pytest.raises(AuthenticationError):
        await resolve(key)
    # A refused input fails the command, saying which field.
    with pytest.raises(AssertionError, match="scopes"):
        run_piccolo(
            database_url_for_tests, "everyskill", "create_api_key", "--tenant", slug,
            "--name", "x", "--scopes", "admin",
        )


def test_the_create_command_prints_only_the_key_on_stdout(
    database_url_for_tests: str, tenant: TenantRows,
) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from everyskill.database import environment_for
    from tests.support import PROJECT_ROOT

    completed = subprocess.run(
        [str(Path(sys.executable).parent / "piccolo"), "everyskill", "create_api_key",
         "--tenant", tenant.tenant_id, "--name", "ci", "--scopes", "read"],
        cwd=PROJECT_ROOT, env={**os.environ, **environment_for(database_url_for_tests)},
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert KEY.fullmatch(completed.stdout.strip()), completed.stdout
    assert completed.stdout.strip() not in completed.stderr


# -- migrations -------------------------------------------------------------------------


async def test_backwards_and_forwards_again_with_keys_stored(fresh_database: str) -> None:
    """The two migrations of the keys go back (with keys in the table) and
    forwards again to the same schema; a key made afterwards resolves."""
    run_piccolo(fresh_database, "migrations", "forwards", "all")
    built = await snapshot(fresh_database)
    async with connected(fresh_database) as connection:
        tenant_id = await connection.fetchval(
            "INSERT INTO tenants (name, slug) VALUES ('a', 'a') RETURNING id"
        )
        await connection.execute(
            "INSERT INTO api_keys (tenant_id, name, key_prefix, key_hash, scopes)"
            " VALUES ($1, 'ci', 'abcdefgh', $2, ARRAY['read'])",
            tenant_id,
            key_hash(generate_key()),
        )
    run_piccolo(
        fresh_database, "migrations", "backwards", "everyskill", "2026-12-07T02:00:00:000000",
        "--auto_agree",
    )
    async with connected(fresh_database) as connection:
        assert await connection.fetchval("SELECT to_regclass('api_keys')") is None
        assert await connection.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('api_key_lookup', 'api_key_resolve')"
        ) == 0
    run_piccolo(fresh_database, "migrations", "forwards", "all")
    assert await snapshot(fresh_database) == built


# -- the admin ---------------------------------------------------------------------------


async def test_the_admin_lists_keys_read_only_and_never_their_hash(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    created = await create_api_key(tenant.tenant_id, "ci", ["read", "benchmarks:write"])
    listed = await staff.client.get(
        "/api/tables/api_keys/", params={"tenant_id": tenant.tenant_id, "__readable": "true"}
    )
    assert listed.status_code == 200, listed.text
    rows = listed.json()["rows"]
    assert [row["key_prefix"] for row in rows] == [created.info.key_prefix]
    assert rows[0]["scopes"] == ["benchmarks:write", "read"]
    schema = (await staff.client.get("/api/tables/api_keys/schema/")).json()
    assert schema["extra"]["visible_column_names"] == [
        "tenant_id", "name", "key_prefix", "scopes", "expires_at", "last_used_at",
        "revoked_at", "created_at",
    ]
    detail = await row(staff.client, "api_keys", created.info.id)
    stored = await owner.fetchval("SELECT key_hash FROM api_keys WHERE id = $1", created.info.id)
    # The hash is a secret column: Piccolo's CRUD never reads it (its field is null).
    assert rows[0].get("key_hash") is None and detail.get("key_hash") is None
    for response in (listed, await staff.client.get(f"/api/tables/api_keys/{created.info.id}/")):
        assert stored.hex() not in response.text and created.key not in response.text
        assert stored.hex().upper() not in response.text
    # Read-only: no edit (not even a revocation), no addition, no deletion.
    edited = await save(staff.client, "api_keys", created.info.id, revoked_at=None, name="renamed")
    assert edited.status_code == 405 and "create_api_key" in edited.json()["detail"]
    added = await staff.client.post(
        "/api/tables/api_keys/",
        json={"tenant_id": tenant.tenant_id, "name": "x", "key_prefix": "abcdefgh", "scopes": ["read"]},
    )
    assert added.status_code == 405
    deleted = await staff.client.delete(f"/api/tables/api_keys/{created.info.id}/")
    assert deleted.status_code == 405
    bulk = await staff.client.delete("/api/tables/api_keys/", params={"id": created.info.id})
    assert bulk.status_code >= 400
    assert await owner.fetchval(
        "SELECT name FROM api_keys WHERE id = $1", created.info.id
    ) == "ci"


async def test_resolve_runs_as_the_applications_login(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    """Without the login's EXECUTE on the resolution, resolve is refused: it
    runs as everyskill_api, not as the owner."""
    created = await create_api_key(tenant.tenant_id, "hook", ["read"])
    await owner.execute(f"REVOKE EXECUTE ON FUNCTION api_key_resolve(bytea) FROM {APP_LOGIN}")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await resolve(created.key)
    finally:
        await owner.execute(f"GRANT EXECUTE ON FUNCTION api_key_resolve(bytea) TO {APP_LOGIN}")
    assert (await resolve(created.key)).tenant_id == tenant.tenant_id


async def test_a_taken_display_prefix_draws_a_new_key(
    engine: PostgresEngine, tenant: TenantRows, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await create_api_key(tenant.tenant_id, "one", ["read"])
    # A different key with the same first 8 characters after esk_.
    secret = first.key[4:12] + "".join(reversed(first.key[12:36]))
    clash = "esk_" + secret + api_keys._checksum(secret)
    assert is_well_formed(clash) and clash != first.key
    drawn = iter([clash, generate_key()])
    monkeypatch.setattr(api_keys, "generate_key", lambda: next(drawn))
    second = await create_api_key(tenant.tenant_id, "two", ["read"])
    assert second.key != clash and second.info.key_prefix != first.info.key_prefix
    assert (await resolve(second.key)).key_id == second.info.id
    with pytest.raises(AuthenticationError):
        await resolve(clash)


async def test_the_database_takes_exactly_the_scopes_the_code_knows(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """``api_keys_scopes_check`` and :data:`SCOPES` name the same scopes: each
    is stored, and a scope the code does not know is refused by the database
    too (a key made by SQL cannot carry one)."""
    insert = (
        "INSERT INTO api_keys (tenant_id, name, key_prefix, key_hash, scopes)"
        " VALUES ($1, 'rule', $2, $3, $4::text[])"
    )
    async with owner.transaction():
        for scope in SCOPES:
            key = generate_key()
            await owner.execute(insert, tenant.tenant_id, display_prefix(key), key_hash(key), [scope])
    for unknown in ("feedback:delete", "write", "admin"):
        key = generate_key()
        with pytest.raises(asyncpg.CheckViolationError):
            await owner.execute(insert, tenant.tenant_id, display_prefix(key), key_hash(key), [unknown])
