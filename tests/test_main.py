"""
The main job: ``main.py`` migrates the database it is given, makes sure an
admin can log in, serves the admin (login required), and stops cleanly on
SIGTERM. Also the admin login bootstrap on its own.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from piccolo.apps.user.tables import BaseUser

from everyskill.admin import ensure_admin_user
from tests.support import PROJECT_ROOT, connected, free_port, wait_until_served


async def test_main_migrates_serves_the_admin_and_stops_on_sigterm(
    fresh_database: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database,
        "EVERYSKILL_ADMIN_USERNAME": "staff",
        "EVERYSKILL_ADMIN_PASSWORD": "a long test password",
        "EVERYSKILL_ADMIN_CREDENTIALS": str(tmp_path / "credentials.json"),
    }
    process = subprocess.Popen(
        [sys.executable, "main.py", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_served(f"{base}/", process)
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/api/tables/").status_code == 401
            client.get("/")  # sets the CSRF cookie
            token = client.cookies["csrftoken"]
            refused = client.post(
                "/public/login/",
                json={"username": "staff", "password": "wrong"},
                headers={"X-CSRFToken": token},
            )
            assert refused.status_code == 401
            login = client.post(
                "/public/login/",
                json={"username": "staff", "password": "a long test password"},
                headers={"X-CSRFToken": token},
            )
            assert login.status_code == 200, login.text
            tables = client.get("/api/tables/")
            assert tables.status_code == 200
            assert {"skill_feedback", "token_measurements", "benchmark_runs", "benchmark_results"} <= set(
                tables.json()
            )
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "Application shutdown complete" in output
        assert "a long test password" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    async with connected(fresh_database) as connection:
        ran = await connection.fetchval("SELECT count(*) FROM migration WHERE app_name = 'everyskill'")
        assert ran == len(list((PROJECT_ROOT / "piccolo_migrations").glob("everyskill_*.py")))
        # The database was empty: the sample data is there to look at.
        assert await connection.fetchval("SELECT count(*) FROM tenants") == 2
        assert await connection.fetchval("SELECT count(*) FROM token_measurements") > 1000
    assert "Loaded the sample data: 2 tenants" in output


async def test_a_generated_admin_password_is_kept_private_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "state" / "admin-credentials.json"
    monkeypatch.setenv("EVERYSKILL_ADMIN_CREDENTIALS", str(credentials))
    monkeypatch.delenv("EVERYSKILL_ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("EVERYSKILL_ADMIN_PASSWORD", raising=False)
    await BaseUser.delete().where(BaseUser.username == "admin")

    first = await ensure_admin_user()
    assert first.username == "admin" and first.password and len(first.password) >= 20
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert await BaseUser.login("admin", first.password) is not None

    second = await ensure_admin_user()
    assert second.password == first.password

    # A stored password that no longer works is replaced, not trusted.
    await BaseUser.update_password("admin", "changed elsewhere")
    third = await ensure_admin_user()
    assert third.password not in (None, first.password)
    assert third.password is not None
    assert await BaseUser.login("admin", third.password) is not None


async def test_admin_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVERYSKILL_ADMIN_USERNAME", "ops")
    monkeypatch.setenv("EVERYSKILL_ADMIN_PASSWORD", "first password")
    login = await ensure_admin_user()
    assert (login.username, login.password) == ("ops", None)
    assert await BaseUser.login("ops", "first password") is not None
    monkeypatch.setenv("EVERYSKILL_ADMIN_PASSWORD", "second password")
    await ensure_admin_user()
    assert await BaseUser.login("ops", "first password") is None
    assert await BaseUser.login("ops", "second password") is not None
    monkeypatch.delenv("EVERYSKILL_ADMIN_PASSWORD")
    with pytest.raises(ValueError, match="both"):
        await ensure_admin_user()
