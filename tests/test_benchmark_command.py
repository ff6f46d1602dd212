"""
``piccolo everyskill run_benchmark`` (everyskill.benchmark_command), run as a
user runs it: the ``piccolo`` command line in a process of its own, on the
tests' database, its SDKs pointed at the local provider server
(tests/model_server.py) by ``--anthropic-base-url``/``--openai-base-url``.
Its output (progress, the per-model table, the picks, the run's cost worked
by hand), its exit codes (0, 3, 1, 2, 130), an interruption with SIGINT and
the resumption of the run; no key in its output. The cases file's checks
are tested in-process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from everyskill.benchmark_command import (
    EXIT_COMPLETED,
    EXIT_ERRORS,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    load_cases,
)
from everyskill.benchmark_runner import TestCase
from everyskill.database import environment_for
from everyskill.errors import ValidationError
from tests.model_server import Answer, ModelServer, Reply, model_server, openai_error
from tests.support import PROJECT_ROOT, TenantRows

HAIKU, GPT, SONNET = "claude-haiku-4-5", "gpt-4.1-mini", "claude-sonnet-4-5"
ANSWERS = {
    "What is 2 + 2?": Answer("4", 20, 2),
    "Name the capital of France.": Answer("Paris.", 22, 3),
    "How many legs does a spider have?": Answer("Eight.", 24, 3),
    "Translate 'merci' to English.": Answer("Thank you.", 26, 4),
}
PROMPTS = list(ANSWERS)


@pytest.fixture
def key() -> str:
    return f"command-test-key-{secrets.token_hex(12)}"


@pytest.fixture
def server(key: str) -> Iterator[ModelServer]:
    with model_server(key, ANSWERS) as served:
        served.judge = lambda text: (
            {"reason": "Right.", "score": 90, "matches": True}
            if "<answer>\nSix.\n</answer>" not in text
            else {"reason": "Wrong count.", "score": 10, "matches": False}
        )
        served.answers_of[(GPT, "How many legs does a spider have?")] = Answer("Six.", 24, 3)
        yield served


def cases_file(directory: Path, prompts: list[str] = PROMPTS[:3], name: str = "cases.jsonl") -> Path:
    path = directory / name
    path.write_text(
        "\n".join(json.dumps({"input": p, "expected_output": ANSWERS[p].text}) for p in prompts)
        + "\n\n",
        encoding="utf-8",
    )
    return path


async def tenant_slug(owner: asyncpg.Connection, tenant: TenantRows) -> str:
    return str(await owner.fetchval("SELECT slug FROM tenants WHERE id = $1", tenant.tenant_id))


def environment(url: str, key: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        **environment_for(url),
        "ANTHROPIC_API_KEY": key,
        "OPENAI_API_KEY": key,
        "PYTHONWARNINGS": "ignore",
        **extra,
    }
    return {name: value for name, value in env.items() if value != ""}


def argv(server: ModelServer, *options: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "piccolo"), "everyskill", "run_benchmark",
        "--anthropic-base-url", server.anthropic_url, "--openai-base-url", server.openai_url,
        *options,
    ]


def run(
    url: str, server: ModelServer, key: str, *options: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv(server, *options), cwd=PROJECT_ROOT, env=environment(url, key, **extra),
        capture_output=True, text=True, timeout=180,
    )


def run_id_of(stderr: str) -> str:
    found = re.search(r"benchmark run ([0-9a-f-]{36})", stderr)
    assert found, stderr
    return found.group(1)


async def test_a_judged_run_prints_its_tables_and_costs_and_exits_0(
    owner: asyncpg.Connection, tenant: TenantRows, server: ModelServer, key: str,
    database_url_for_tests: str, tmp_path: Path,
) -> None:
    slug = await tenant_slug(owner, tenant)
    done = run(
        database_url_for_tests, server, key, "--tenant", slug, "--skill", "review-code",
        "--models", f"{HAIKU},{GPT}", "--cases", str(cases_file(tmp_path)),
        f"--judge={SONNET}", "--concurrency", "3",
    )
    # GPT-4.1 mini answered the spider wrong, but every call answered.
    assert done.returncode == EXIT_COMPLETED, done.stderr
    run_id = run_id_of(done.stderr)
    assert f"Created benchmark run {run_id}: 2 models x 3 cases, judged by {SONNET}" in done.stderr
    assert re.search(r"cases .*6/6 0 failed", done.stderr), done.stderr
    out = done.stdout
    assert f"Benchmark run {run_id} (completed)" in out
    # Haiku: quality 90 on every case; costs by hand at $1 / $5 per million
    # tokens: 20*100+2*500 + 22*100+3*500 + 24*100+3*500 = 10,600
    # microcents, $0.000106 in all, $0.000035 a case.
    assert re.search(
        rf"{HAIKU} +│ anthropic +│ +3 │ +0 │ +90\.0 │ +100% │ .* │ \$0\.000035 │ \$0\.000106", out
    ), out
    # GPT-4.1 mini: 90, 90, 10 (the spider); $0.40 / $1.60 per million:
    # 20*40+2*160 + 22*40+3*160 + 24*40+3*160 = 3,920 microcents.
    assert re.search(
        rf"{GPT} +│ openai +│ +3 │ +0 │ +63\.3 │ +67% │ .* │ \$0\.000013 │ \$0\.000039", out
    ), out
    assert re.search(rf"best +│ {HAIKU} +│ +avg quality 90", out), out
    assert re.search(rf"cheapest +│ {GPT} +│ +avg cost \$0\.000013", out), out
    # The judge: 6 verdicts of 400 input and 60 output tokens at the
    # tenant's Sonnet price (250 / 1,250): 6 * 175,000 = 1,050,000 microcents.
    assert (
        "Run cost: $0.010645 = model calls $0.000145 + judging $0.010500 (6 judgements)" in out
    ), out
    assert key not in done.stdout + done.stderr
    row = await owner.fetchrow("SELECT * FROM benchmark_runs WHERE id = $1", run_id)
    assert row is not None and (row["status"], row["best_model"], row["cheapest_model"]) == (
        "completed", HAIKU, GPT,
    )
    assert row["triggered_by"] == tenant.user_id  # the skill's author
    assert await owner.fetchval(
        "SELECT count(*) FROM token_measurements WHERE usage_event_id = $1 AND source = 'api'", run_id
    ) == 6


async def test_failed_calls_exit_3_and_a_run_where_every_call_fails_exits_1(
    owner: asyncpg.Connection, tenant: TenantRows, server: ModelServer, key: str,
    database_url_for_tests: str, tmp_path: Path,
) -> None:
    slug = await tenant_slug(owner, tenant)
    cases = str(cases_file(tmp_path))
    server.script[(GPT, PROMPTS[1])] = [openai_error(503, "server_error", "Overloaded")]
    some = run(
        database_url_for_tests, server, key, "--tenant", slug, "--skill", "review-code",
        "--models", f"{HAIKU},{GPT}", "--cases", cases, "--max-retries", "0",
    )
    assert some.returncode == EXIT_ERRORS, some.stderr
    assert re.search(rf"{GPT} +│ openai +│ +3 │ +1 │", some.stdout), some.stdout
    # Haiku's 10,600 microcents and GPT-4.1 mini's 3,920 less the failed
    # case (22*40 + 3*160 = 1,360): 13,160, $0.000132.
    assert "Run cost: $0.000132 = model calls $0.000132 + judging $0.000000 (0 judgements)" in some.stdout

    wrong = f"wrong-key-{secrets.token_hex(12)}"
    none = run(
        database_url_for_tests, server, key, "--tenant", slug, "--skill", "review-code",
        "--models", GPT, "--cases", cases, OPENAI_API_KEY=wrong,
    )
    assert none.returncode == EXIT_FAILED, none.stderr
    assert "(failed)" in none.stdout and "every model call failed (3 of 3)" in none.stdout
    assert "ModelAuthenticationError" in none.stdout
    assert wrong not in none.stdout + none.stderr and key not in none.stdout + none.stderr
    assert server.count(GPT, PROMPTS[0]) == 2  # once per run: a refused key is not retried


async def test_bad_input_exits_2_before_anything_is_run(
    owner: asyncpg.Connection, tenant: TenantRows, server: ModelServer, key: str,
    database_url_for_tests: str, tmp_path: Path,
) -> None:
    slug = await tenant_slug(owner, tenant)
    runs = await owner.fetchval("SELECT count(*) FROM benchmark_runs")
    good = str(cases_file(tmp_path))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "fine"}\nnot json\n', encoding="utf-8")
    attempts = [
        ((f"--tenant={slug}", "--skill=review-code", f"--models={HAIKU}", f"--cases={bad}"), {},
         "cases line 2: is not JSON"),
        (("--tenant", "no-such-tenant", "--skill", "review-code", "--models", HAIKU, "--cases", good),
         {}, "no tenant has the slug or id 'no-such-tenant'"),
        (("--tenant", slug, "--skill", "no-such-skill", "--models", HAIKU, "--cases", good), {},
         "no skill with the slug or id 'no-such-skill'"),
        (("--tenant", slug, "--skill", "review-code", "--models", HAIKU, "--cases", good),
         {"ANTHROPIC_API_KEY": ""}, "set ANTHROPIC_API_KEY"),
    ]
    # (A model without a known provider is refused the same way: see
    # test_providers' model_routes.)
    for options, extra, message in attempts:
        done = run(database_url_for_tests, server, key, *options, **extra)
        assert done.returncode == EXIT_USAGE, (options, done.stderr)
        assert message in done.stderr, done.stderr
    # No run was created, no model called.
    assert await owner.fetchval("SELECT count(*) FROM benchmark_runs") == runs
    assert server.requests == []


async def test_an_interrupted_run_is_resumed_where_it_stopped(
    owner: asyncpg.Connection, tenant: TenantRows, server: ModelServer, key: str,
    database_url_for_tests: str, tmp_path: Path,
) -> None:
    """The last two cases hang: the command is interrupted with SIGINT once
    the first two are recorded, exits 130 and says how to resume; the run
    stays running. Resumed, it calls only the cases without a result."""
    slug = await tenant_slug(owner, tenant)
    cases = str(cases_file(tmp_path, PROMPTS))
    for model in (HAIKU, GPT):
        for prompt in PROMPTS[2:]:
            server.script[(model, prompt)] = [Reply(delay=120)]
    process = subprocess.Popen(
        argv(server, "--tenant", slug, "--skill", "review-code", "--models", f"{HAIKU},{GPT}",
             "--cases", cases, "--judge", SONNET, "--concurrency", "8"),
        cwd=PROJECT_ROOT, env=environment(database_url_for_tests, key),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        run_id = None
        for _ in range(600):
            run_id = await owner.fetchval(
                "SELECT id FROM benchmark_runs WHERE tenant_id = $1 AND id <> $2",
                tenant.tenant_id, tenant.run_id,
            )
            if run_id is not None and server.count(judged=False) == 8 and await owner.fetchval(
                "SELECT count(*) FROM benchmark_results WHERE benchmark_run_id = $1", run_id
            ) == 4:
                break
            await asyncio.sleep(0.1)
        assert run_id is not None
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert "Interrupted: 4 of 8 results recorded" in stderr
    assert f"--resume {run_id}" in stderr and stdout == ""
    row = await owner.fetchrow("SELECT status, error_message FROM benchmark_runs WHERE id = $1", run_id)
    assert row is not None and (row["status"], row["error_message"]) == ("running", None)

    # Another cases file is refused: the run recorded other inputs.
    other = cases_file(tmp_path, [PROMPTS[1], PROMPTS[0], *PROMPTS[2:]], "other.jsonl")
    refused = run(database_url_for_tests, server, key, "--tenant", slug, "--cases", str(other),
                  "--resume", run_id, "--judge", SONNET)
    assert refused.returncode == EXIT_USAGE and "differs from the input the run recorded" in refused.stderr

    resumed = run(database_url_for_tests, server, key, "--tenant", slug, "--cases", cases,
                  "--resume", run_id, "--judge", SONNET)
    assert resumed.returncode == EXIT_COMPLETED, resumed.stderr
    assert f"Resuming benchmark run {run_id}" in resumed.stderr
    assert re.search(r"cases .*8/8", resumed.stderr), resumed.stderr
    assert f"Benchmark run {run_id} (completed)" in resumed.stdout
    for model in (HAIKU, GPT):
        # The first two cases were answered once; the last two were asked,
        # abandoned, and asked again.
        assert [server.count(model, p, judged=False) for p in PROMPTS] == [1, 1, 2, 2]
    assert server.count(SONNET, judged=True) == 8  # one verdict per result
    assert await owner.fetchval(
        "SELECT count(*) FROM benchmark_results WHERE benchmark_run_id = $1", run_id
    ) == 8
    again = run(database_url_for_tests, server, key, "--tenant", slug, "--cases", cases,
                "--resume", run_id)
    assert again.returncode == EXIT_USAGE and "the run is completed" in again.stderr


def test_the_cases_file_is_read_strictly(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"input": "a", "expected_output": "b"}\n\n{"input": "c", "expected_output": null}\n')
    assert load_cases(good) == [TestCase("a", "b"), TestCase("c", None)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('["a"]\n{"input": ""}\n{"input": "x", "expected": "y"}\n{"input": "x", "expected_output": 4}\n')
    with pytest.raises(ValidationError) as refused:
        load_cases(bad)
    assert [field for field, _ in refused.value.problems] == [
        "cases line 1", "cases line 2.input", "cases line 3", "cases line 4.expected_output",
    ]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValidationError, match="holds no test case"):
        load_cases(empty)
    with pytest.raises(ValidationError, match="cannot read"):
        load_cases(tmp_path / "missing.jsonl")
