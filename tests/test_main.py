"""
The main job: ``main.py`` migrates the database it is given, creates the
admin login, loads the sample data, serves the admin (login required) and
the HTTP API under /v1 on the same port, with ``--workers N`` in N
processes (a key's rate limit exact across them: a burst of concurrent
requests over many connections gets exactly the limit through, the rest
429s, answered by both workers), and stops cleanly on SIGTERM; it prints where the admin password is, never the
password; it refuses half an admin login and production without allowed hosts.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from everyskill.database import environment_for
from tests.support import PROJECT_ROOT, connected, free_port, wait_until_served


async def test_main_migrates_serves_the_admin_and_stops_on_sigterm(
    fresh_database: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **environment_for(fresh_database),
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
            # The HTTP API on the same port.
            assert client.get("/v1/openapi.json").json()["info"]["title"] == "EverySkill API"
            refused = client.get("/v1/skills")
            assert refused.status_code == 401
            assert refused.headers["content-type"].startswith("application/problem+json")
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


async def test_main_prints_where_a_generated_password_is_never_the_password(
    fresh_database: str, tmp_path: Path
) -> None:
    credentials = tmp_path / "admin-credentials.json"
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("EVERYSKILL_ADMIN_USERNAME", "EVERYSKILL_ADMIN_PASSWORD")
    }
    env |= {**environment_for(fresh_database), "EVERYSKILL_ADMIN_CREDENTIALS": str(credentials)}
    process = subprocess.Popen(
        [sys.executable, "main.py", "--port", str(port), "--no-sample-data"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_served(f"{base}/", process)
        password = json.loads(credentials.read_text())["password"]
        with httpx.Client(base_url=base, timeout=10) as client:
            client.get("/")  # sets the CSRF cookie
            login = client.post(
                "/public/login/",
                json={"username": "admin", "password": password},
                headers={"X-CSRFToken": client.cookies["csrftoken"]},
            )
            assert login.status_code == 200, login.text
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert password not in output
    assert f"log in as 'admin' with the password in {credentials} (user created)" in output


def test_main_refuses_half_an_admin_login_saying_what_to_set(fresh_database: str) -> None:
    env = {**os.environ, **environment_for(fresh_database), "EVERYSKILL_ADMIN_USERNAME": "staff"}
    env.pop("EVERYSKILL_ADMIN_PASSWORD", None)
    result = subprocess.run(
        [sys.executable, "main.py", "--no-sample-data"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "The admin login: invalid input: EVERYSKILL_ADMIN_PASSWORD: set both"
        " EVERYSKILL_ADMIN_USERNAME and EVERYSKILL_ADMIN_PASSWORD, or neither"
    )


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


async def test_main_serves_with_several_workers_whose_rate_limits_are_exact(
    fresh_database: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **environment_for(fresh_database),
        "EVERYSKILL_ADMIN_USERNAME": "staff",
        "EVERYSKILL_ADMIN_PASSWORD": "a long test password",
        "EVERYSKILL_ADMIN_CREDENTIALS": str(tmp_path / "credentials.json"),
        "EVERYSKILL_WORKERS": "2",
    }
    process = subprocess.Popen(
        [sys.executable, "main.py", "--port", str(port), "--no-sample-data"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_served(f"{base}/v1/openapi.json", process)
        workers = [
            child
            for child in psutil.Process(process.pid).children(recursive=True)
            if "multiprocessing" in " ".join(child.cmdline())
            and "resource_tracker" not in " ".join(child.cmdline())
        ]
        assert len(workers) == 2, [c.cmdline() for c in workers]
        async with connected(fresh_database) as owner:
            await owner.execute("INSERT INTO tenants (name, slug) VALUES ('W', 'w')")
        from tests.support import run_piccolo

        output = run_piccolo(
            fresh_database, "everyskill", "create_api_key", "--tenant", "w", "--name", "n",
            "--scopes", "read,catalogue:write",
        )
        key = re.search(r"esk_[0-9A-Za-z]{38}", output)
        assert key, output
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key[0]}"}) as client:
            created = [
                client.post("/v1/users", json={"email": f"u{i}@example.com", "name": "U"})
                for i in range(10)
            ]
            assert {response.status_code for response in created} == {201}
            assert len(client.get("/v1/users").json()["items"]) == 10
            assert client.get("/").status_code == 200  # the admin, in every worker
        limited = re.search(
            r"esk_[0-9A-Za-z]{38}",
            run_piccolo(
                fresh_database, "everyskill", "create_api_key", "--tenant", "w", "--name",
                "limited", "--scopes", "read", "--rate-limit-per-minute", str(LIMIT),
            ),
        )
        assert limited, output
        answers, elapsed = await burst(base, limited[0], BURST)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert output.count("Application startup complete") == 2
    finally:
        if process.poll() is None:
            # The workers too: they hold the output pipe open.
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.communicate()
    # The limits are exact across the workers: LIMIT requests fit in a minute
    # from rest, then one every 60/LIMIT seconds; the burst ended sooner.
    assert elapsed < 60 / LIMIT, elapsed
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == LIMIT and statuses.count(429) == BURST - LIMIT, statuses
    for answer in answers:
        if answer.status_code == 429:
            assert 1 <= int(answer.headers["retry-after"]) <= 60 / LIMIT
            assert answer.json()["violated-policies"] == ["key"]
    # Both workers answered: each access line names its process.
    answered = re.findall(r'\[(\d+)\] 127\.0\.0\.1:\d+ - "GET /v1/skills HTTP/1\.1" (200|429)', output)
    assert len(answered) == BURST
    assert {int(pid) for pid, _ in answered} == {worker.pid for worker in workers}


#: The key's limit per minute in the burst, and the burst's requests.
LIMIT = 10
BURST = 80


async def burst(base: str, key: str, count: int) -> tuple[list[httpx.Response], float]:
    """``count`` GET /v1/skills at once, each on a connection of its own."""
    async with httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": f"Bearer {key}"},
        limits=httpx.Limits(max_connections=count, max_keepalive_connections=0),
        timeout=30,
    ) as client:
        start = time.monotonic()
        answers = await asyncio.gather(*(client.get("/v1/skills") for _ in range(count)))
        return list(answers), time.monotonic() - start

