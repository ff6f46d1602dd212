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
import shlex
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
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
            {"reason": "Right.", "score": 90}
            if json.loads(text)["answer"] != "Six."
            else {"reason": "Wrong count.", "score": 10}
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


def cost_column(stdout: str) -> list[str]:
    """The last column (cost) of each model's row of the printed table."""
    return [
        line.split("│")[-2].strip()
        for line in stdout.splitlines()
        if line.startswith("│") and line.split("│")[1].strip() in (HAIKU, GPT)
    ]


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
    # The cost column adds up to the model calls' cost.
    assert cost_column(out) == ["$0.000106", "$0.000039"]
    assert "Not judged" not in out
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
    # Haiku's 10,600 microcents and GPT-4.1 mini's 3,920 less the failed
    # case (22*40 + 3*160 = 1,360): 13,160, $0.000132. GPT-4.1 mini's two
    # costed answers cost 2,560 ($0.000026), 1,280 ($0.000013) on average:
    # its error has no cost, and is neither a 0 in the average nor a third
    # average in the sum.
    assert re.search(
        rf"{GPT} +│ openai +│ +3 │ +1 │ .* │ \$0\.000013 │ \$0\.000026 │", some.stdout
    ), some.stdout
    assert "Run cost: $0.000132 = model calls $0.000132 + judging $0.000000 (0 judgements)" in some.stdout
    assert cost_column(some.stdout) == ["$0.000106", "$0.000026"]
    assert sum(Decimal(cost[1:]) for cost in cost_column(some.stdout)) == Decimal("0.000132")

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


async def test_a_judge_whose_key_is_refused_leaves_the_answers_unjudged_and_exits_3(
    owner: asyncpg.Connection, tenant: TenantRows, server: ModelServer, key: str,
    database_url_for_tests: str, tmp_path: Path,
) -> None:
    """Every model call answers, every judge call is refused: the run
    completes with its answers, none judged, and the judge's failed calls
    count as failed calls."""
    slug = await tenant_slug(owner, tenant)
    wrong = f"wrong-key-{secrets.token_hex(12)}"
    done = run(
        database_url_for_tests, server, key, "--tenant", slug, "--skill", "review-code",
        "--models", HAIKU, "--cases", str(cases_file(tmp_path)), "--judge", GPT,
        OPENAI_API_KEY=wrong,
    )
    assert done.returncode == EXIT_ERRORS, done.stderr
    run_id = run_id_of(done.stderr)
    assert f"Benchmark run {run_id} (completed)" in done.stdout
    assert re.search(rf"{HAIKU} +│ anthropic +│ +3 │ +0 │ +- │ +- │", done.stdout), done.stdout
    assert "Not judged: 3 answers" in done.stdout
    assert re.search(r"best +│ - ", done.stdout), done.stdout
    notes = await owner.fetch(
        "SELECT quality_notes FROM benchmark_results WHERE benchmark_run_id = $1", run_id
    )
    assert len(notes) == 3 and all(
        n["quality_notes"].startswith(f"judge {GPT}: not judged: ModelAuthenticationError") for n in notes
    )
    assert wrong not in done.stdout + done.stderr


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
        # One client serves OpenAI's API: its own models are not priced as
        # a local server's.
        (("--tenant", slug, "--skill", "review-code", "--models", f"{HAIKU},openai:llama3.2:3b",
          "--judge", GPT, "--openai-provider", "ollama", "--cases", good), {},
         f"openai_provider: would send {GPT} to the OpenAI-compatible server and price it as ollama's"),
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
    """The last two cases hang and GPT-4.1 mini fails the first: the
    command is interrupted with SIGINT once the first two cases are
    recorded, exits 130 and prints the command that resumes the run with
    every option it was given, quoted; the run stays running. A resume with
    another judge, none, or another cases file is refused; the printed
    command, run as printed, calls only the cases without a result, judges
    them with the run's judge and completes the run, its costs worked by
    hand."""
    slug = await tenant_slug(owner, tenant)
    folder = tmp_path / "my cases"
    folder.mkdir()
    cases = str(cases_file(folder, PROMPTS))
    for model in (HAIKU, GPT):
        for prompt in PROMPTS[2:]:
            server.script[(model, prompt)] = [Reply(delay=120)]
    server.script[(GPT, PROMPTS[0])] = [openai_error(503, "server_error", "Overloaded")]
    options = [
        "--tenant", slug, "--skill", "review-code", "--models", f"{HAIKU},{GPT}", "--cases", cases,
        "--judge", SONNET, "--concurrency", "8", "--max-retries", "0", "--timeout", "30",
        "--deadline", "150", "--max-tokens", "512",
    ]
    process = subprocess.Popen(
        argv(server, *options), cwd=PROJECT_ROOT, env=environment(database_url_for_tests, key),
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
    assert stdout == ""
    row = await owner.fetchrow("SELECT status, error_message FROM benchmark_runs WHERE id = $1", run_id)
    assert row is not None and (row["status"], row["error_message"]) == ("running", None)
    # Three answers judged (the error is not): three measurements so far.
    measurements = "SELECT count(*) FROM token_measurements WHERE usage_event_id = $1 AND source = 'api'"
    assert await owner.fetchval(measurements, run_id) == 3

    # The command that resumes it: every option given (the base URLs too),
    # the path with a space quoted; --skill is the run's.
    printed = stderr.split("Resume it with:\n", 1)[1].strip()
    words = shlex.split(printed)
    assert words == [
        "piccolo", "everyskill", "run_benchmark", "--tenant", slug, "--cases", cases,
        "--resume", run_id, "--models", f"{HAIKU},{GPT}", "--judge", SONNET,
        "--concurrency", "8", "--anthropic-base-url", server.anthropic_url,
        "--openai-base-url", server.openai_url, "--max-retries", "0", "--timeout", "30",
        "--deadline", "150", "--max-tokens", "512",
    ]
    assert shlex.quote(cases) in printed and "'" in shlex.quote(cases)

    # Another judge, no judge, or another cases file is refused.
    refusals = [
        (("--judge", GPT), cases,
         f"judge: the run's answers were judged by {SONNET}: resume it with --judge {SONNET}"),
        ((), cases, f"resume it with --judge {SONNET}"),
        (("--judge", SONNET), str(cases_file(tmp_path, [PROMPTS[1], PROMPTS[0], *PROMPTS[2:]], "other.jsonl")),
         "case 0 (line order) differs from the input the run recorded for it"),
    ]
    # The same model through another provider (an OpenAI-compatible server).
    refusals.append((("--models", f"openai:{HAIKU},{GPT}", "--judge", SONNET), cases,
                     f"the run's results for {HAIKU!r} came from anthropic"))
    changed = tmp_path / "changed.jsonl"
    changed.write_text(Path(cases).read_text().replace('"expected_output": "4"', '"expected_output": "four"'))
    refusals.append((("--judge", SONNET), str(changed),
                     "case 0 (line order) differs from the expected output the run recorded for it"))
    for extra, file, message in refusals:
        refused = run(database_url_for_tests, server, key, "--tenant", slug, "--cases", file,
                      "--resume", run_id, *extra)
        assert refused.returncode == EXIT_USAGE, refused.stderr
        assert message in refused.stderr, refused.stderr
    assert server.count(judged=False) == 8  # nothing was called

    # The printed command, as printed.
    resumed = subprocess.run(
        [str(Path(sys.executable).parent / "piccolo"), *words[1:]], cwd=PROJECT_ROOT,
        env=environment(database_url_for_tests, key), capture_output=True, text=True, timeout=180,
    )
    assert resumed.returncode == EXIT_ERRORS, resumed.stderr  # the error recorded before
    assert f"Resuming benchmark run {run_id}" in resumed.stderr
    # The progress counts the error an earlier runner recorded.
    assert re.search(r"cases .*8/8 1 failed", resumed.stderr), resumed.stderr
    assert f"Benchmark run {run_id} (completed)" in resumed.stdout
    for model, first in ((HAIKU, 1), (GPT, 1)):
        # The first two cases were asked once; the last two were asked,
        # abandoned, and asked again.
        assert [server.count(model, p, judged=False) for p in PROMPTS] == [first, 1, 2, 2]
    assert server.count(SONNET, judged=True) == 7  # one verdict per answer
    assert all(r.body["max_tokens"] == 512 for r in server.received(HAIKU, judged=False))
    assert await owner.fetchval(
        "SELECT count(*) FROM benchmark_results WHERE benchmark_run_id = $1", run_id
    ) == 8
    # The judging of the four answers before and the three after, each once.
    assert await owner.fetchval(measurements, run_id) == 7
    # By hand: Haiku 20*100+2*500 + 22*100+3*500 + 24*100+3*500 + 26*100+4*500
    # = 15,200; GPT-4.1 mini (2 + 2 failed) 22*40+3*160 + 24*40+3*160 +
    # 26*40+4*160 = 4,480; judging 7 * 175,000 = 1,225,000.
    spent = await owner.fetchrow(
        "SELECT (SELECT sum(estimated_cost_microcents) FROM benchmark_results"
        "         WHERE benchmark_run_id = $1) AS results,"
        "       (SELECT sum(estimated_cost_microcents) FROM token_measurements"
        "         WHERE usage_event_id = $1 AND source = 'api') AS judging",
        run_id,
    )
    assert (spent["results"], spent["judging"]) == (15_200 + 4_480, 1_225_000)
    assert (
        "Run cost: $0.012447 = model calls $0.000197 + judging $0.012250 (7 judgements)"
        in resumed.stdout
    ), resumed.stdout
    assert cost_column(resumed.stdout) == ["$0.000152", "$0.000045"]
    again = run(database_url_for_tests, server, key, "--tenant", slug, "--cases", cases,
                "--resume", run_id, "--judge", SONNET)
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
