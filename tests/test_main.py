"""
The main job: ``main.py`` migrates the database it is given, makes sure an
admin can log in, loads the sample data, serves the admin (login required),
and stops cleanly on SIGTERM; it refuses production without allowed hosts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

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


def test_main_refuses_production_without_allowed_hosts() -> None:
    result = subprocess.run(
        [sys.executable, "main.py", "--production"],
        cwd=PROJECT_ROOT,
        env={k: v for k, v in os.environ.items() if k != "EVERYSKILL_ALLOWED_HOSTS"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--allowed-host" in result.stderr and "EVERYSKILL_ALLOWED_HOSTS" in result.stderr
