"""
everyskill.benchmark_runner against the real database: a full run with the
offline client (results, tokens, latencies, costs, picks consistent with the
summary, reproducible), the concurrency bound, model errors, a run where
every call fails, cancellation, a runner error, redaction, resuming, and the
default scorer. The owner connection only prepares rows and checks what was
really stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

import asyncpg
import pytest
from piccolo.engine.postgres import PostgresEngine

from everyskill import benchmarks
from everyskill.benchmark_runner import (
    Completion,
    OfflineModelClient,
    OfflineModelError,
    RunProgress,
    Score,
    ScorerCall,
    TestCase,
    default_scorer,
    run_benchmark,
)
from everyskill.errors import TenantScopeError, ValidationError
from everyskill.tenancy import tenant_scope
from tests.support import PROJECT_ROOT, TenantRows

AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLQ"
SONNET, HAIKU, OPUS = "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"
# The fixture's tenant pays its own price for Sonnet; the others are the table's.
RATES = {SONNET: (250, 1250), HAIKU: (100, 500), OPUS: (1500, 7500)}
SYSTEM = "Review the diff."  # the fixture skill's only version

ANSWERS = {
    "What is 2 + 2?": "4",
    "Name the capital of France.": "Paris is the capital of France.",
    "Which keyword defines a function in Python?": "The def keyword defines a function.",
    "Translate 'merci' to English.": "Thank you.",
    "What colour is a clear daytime sky?": "A clear daytime sky is blue.",
    "How many legs does a spider have?": "A spider has eight legs.",
}
CASES = [TestCase(prompt, answer) for prompt, answer in ANSWERS.items()]


def offline_client(**options: Any) -> OfflineModelClient:
    options.setdefault("accuracy", {OPUS: 0.9, SONNET: 0.7, HAIKU: 0.4})
    return OfflineModelClient(ANSWERS, **options)


async def new_run(tenant: TenantRows, models: list[str], **extra: Any) -> str:
    async with tenant_scope(tenant.tenant_id):
        run = (await benchmarks.create_run(
            skill_id=tenant.skill_id, models=models, triggered_by=tenant.user_id, **extra
        )).row
    return str(run.id)


async def stored_results(owner: asyncpg.Connection, run_id: str) -> list[asyncpg.Record]:
    return list(
        await owner.fetch(
            "SELECT * FROM benchmark_results WHERE benchmark_run_id = $1"
            " ORDER BY model_name, test_case_index",
            run_id,
        )
    )


def connections_in_use(engine: PostgresEngine) -> int:
    """Connections of the API's pool that are checked out right now."""
    pool = engine.pool
    assert pool is not None
    return int(pool.get_size() - pool.get_idle_size())


def half_up(value: Fraction) -> int:
    return int(
        (Decimal(value.numerator) / Decimal(value.denominator)).quantize(
            Decimal(1), rounding=ROUND_HALF_UP
        )
    )


# -- a full run -------------------------------------------------------------------


async def test_a_full_run_records_every_case_and_completes(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    models = [SONNET, HAIKU, OPUS]
    run_id = await new_run(tenant, models)
    client = offline_client()
    run = await run_benchmark(tenant.tenant_id, run_id, client, CASES, concurrency=3)

    assert run.status == "completed" and run.started_at is not None
    assert run.completed_at is not None and run.error_message is None
    rows = await stored_results(owner, run_id)
    assert sorted((r["model_name"], r["test_case_index"]) for r in rows) == sorted(
        (model, index) for model in models for index in range(len(CASES))
    )
    assert sorted(client.calls) == sorted((m, case.input) for m in models for case in CASES)
    wrong = 0
    for row in rows:
        case = CASES[row["test_case_index"]]
        model = row["model_name"]
        output = client.answer(model, case.input)
        score = default_scorer(output, case.expected_output)
        input_tokens = len(SYSTEM + case.input) // 4 + 1
        output_tokens = len(output) // 4 + 1
        rate_in, rate_out = RATES[model]
        assert row["model_provider"] == "anthropic"
        assert (row["input_used"], row["expected_output"]) == (case.input, case.expected_output)
        assert row["output_produced"] == output
        assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (
            input_tokens, output_tokens, input_tokens + output_tokens,
        )
        assert row["estimated_cost_microcents"] == input_tokens * rate_in + output_tokens * rate_out
        assert row["latency_ms"] is not None and row["latency_ms"] >= 40
        assert (row["quality_score"], row["matches_expected"]) == (score.quality, score.matches)
        assert row["quality_notes"] == score.notes and row["error_message"] is None
        wrong += not score.matches
    assert 0 < wrong < len(rows)  # the offline client gets some wrong, not all

    # The picks agree with the summary and with the stored rows.
    async with tenant_scope(tenant.tenant_id):
        summary = {s.model_name: s for s in await benchmarks.run_summary(run_id)}
    quality = {m: Fraction(sum(r["quality_score"] for r in rows if r["model_name"] == m), 6)
               for m in models}
    cost = {m: Fraction(sum(r["estimated_cost_microcents"] for r in rows if r["model_name"] == m), 6)
            for m in models}
    best = max(models, key=lambda m: (quality[m], -cost[m]))
    cheapest = min(models, key=lambda m: (cost[m], -quality[m]))
    assert (run.best_model, run.best_quality_score) == (best, half_up(quality[best]))
    assert (run.cheapest_model, run.cheapest_cost_microcents) == (cheapest, half_up(cost[cheapest]))
    assert summary[best].avg_quality == max(s.avg_quality or 0 for s in summary.values())
    assert summary[cheapest].avg_cost_microcents == min(
        s.avg_cost_microcents or 0 for s in summary.values()
    )
    for model in models:
        assert summary[model].results == 6 and summary[model].errors == 0
        assert summary[model].avg_quality == pytest.approx(float(quality[model]))


async def test_runs_are_reproducible(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    """Two runs with fresh clients store the same outputs and pick the same
    models; and another process (another hash seed) computes the same
    answers, so sample data made elsewhere matches."""
    models = [SONNET, HAIKU, OPUS]
    first, second = await new_run(tenant, models), await new_run(tenant, models)
    one = await run_benchmark(tenant.tenant_id, first, offline_client(), CASES)
    two = await run_benchmark(tenant.tenant_id, second, offline_client(), CASES, concurrency=1)
    picks = ("best_model", "best_quality_score", "cheapest_model", "cheapest_cost_microcents")
    assert [getattr(one, p) for p in picks] == [getattr(two, p) for p in picks]
    assert one.best_model is not None

    columns = ("model_name", "test_case_index", "output_produced", "input_tokens",
               "output_tokens", "latency_ms", "estimated_cost_microcents", "quality_score")
    stored_one = [tuple(r[c] for c in columns) for r in await stored_results(owner, first)]
    stored_two = [tuple(r[c] for c in columns) for r in await stored_results(owner, second)]
    assert stored_one == stored_two

    script = (
        "import json, sys\n"
        "from everyskill.benchmark_runner import OfflineModelClient\n"
        "answers, accuracy = json.loads(sys.stdin.read())\n"
        "client = OfflineModelClient(answers, accuracy=accuracy)\n"
        "print(json.dumps({m + '|' + p: client.answer(m, p) for m in accuracy for p in answers}))\n"
    )
    accuracy = {OPUS: 0.9, SONNET: 0.7, HAIKU: 0.4}
    elsewhere = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([ANSWERS, accuracy]),
        capture_output=True, text=True, check=True, cwd=PROJECT_ROOT, timeout=60,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    here = offline_client()
    assert json.loads(elsewhere.stdout) == {
        f"{m}|{p}": here.answer(m, p) for m in accuracy for p in ANSWERS
    }


# -- concurrency ----------------------------------------------------------------------


class CountingClient:
    """Counts calls in flight; each call takes a little while."""

    def provider_of(self, model: str) -> str:
        return "anthropic"

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.calls = 0

    async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion:
        self.in_flight += 1
        self.calls += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.02)
        finally:
            self.in_flight -= 1
        return Completion(prompt.upper(), input_tokens=3, output_tokens=2)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_concurrency_is_bounded(
    owner: asyncpg.Connection, tenant: TenantRows, concurrency: int
) -> None:
    run_id = await new_run(tenant, [SONNET, HAIKU])
    client = CountingClient()
    run = await run_benchmark(tenant.tenant_id, run_id, client, CASES, concurrency=concurrency)
    assert run.status == "completed"
    assert client.calls == 2 * len(CASES) > concurrency
    assert client.most == concurrency
    rows = await stored_results(owner, run_id)
    assert len(rows) == 2 * len(CASES)
    # No latency from the client: the runner measured the call (about 20 ms).
    assert all(row["latency_ms"] >= 15 for row in rows)


# -- errors -----------------------------------------------------------------------


async def test_model_errors_are_results_and_the_run_completes(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    failing = {(HAIKU, CASES[1].input), (SONNET, CASES[4].input)}
    run_id = await new_run(tenant, [SONNET, HAIKU])
    run = await run_benchmark(
        tenant.tenant_id, run_id, offline_client(failures=failing), CASES
    )
    assert run.status == "completed" and run.best_model is not None
    rows = await stored_results(owner, run_id)
    assert len(rows) == 2 * len(CASES)
    errors = {(r["model_name"], CASES[r["test_case_index"]].input): r for r in rows
              if r["error_message"] is not None}
    assert set(errors) == failing
    for (model, _), row in errors.items():
        assert row["error_message"] == (
            f"OfflineModelError: simulated failure of {model} (offline client)"
        )
        assert row["output_produced"] is None and row["quality_score"] is None
        assert row["matches_expected"] is None and row["estimated_cost_microcents"] is None
        assert row["input_used"] is not None and row["latency_ms"] is not None
    async with tenant_scope(tenant.tenant_id):
        summary = {s.model_name: s for s in await benchmarks.run_summary(run_id)}
    assert (summary[SONNET].errors, summary[HAIKU].errors) == (1, 1)


async def test_when_every_call_fails_the_run_fails(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    run_id = await new_run(tenant, [SONNET, HAIKU])
    run = await run_benchmark(
        tenant.tenant_id, run_id, offline_client(failure_rate=1.0), CASES
    )
    assert run.status == "failed" and run.completed_at is not None
    assert run.error_message is not None
    assert run.error_message.startswith(f"every model call failed ({2 * len(CASES)} of {2 * len(CASES)})")
    assert "OfflineModelError: simulated failure" in run.error_message
    assert run.best_model is None
    rows = await stored_results(owner, run_id)
    assert len(rows) == 2 * len(CASES) and all(r["error_message"] for r in rows)


class SecretLeakingClient:
    def provider_of(self, model: str) -> str:
        return "anthropic"

    async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion:
        await asyncio.sleep(0)
        if prompt == CASES[0].input:
            raise PermissionError(f"key {AWS_KEY} was revoked")
        return Completion(f"deploy with aws_access_key_id = {AWS_KEY}", 5, 5, latency_ms=7)


async def test_secrets_from_the_model_are_redacted(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    run_id = await new_run(tenant, [SONNET])
    run = await run_benchmark(tenant.tenant_id, run_id, SecretLeakingClient(), CASES[:3])
    assert run.status == "completed"
    rows = await stored_results(owner, run_id)
    assert len(rows) == 3
    stored = [r["output_produced"] or r["error_message"] for r in rows]
    assert all(AWS_KEY not in text and "[REDACTED:aws_access_key]" in text for text in stored)
    assert rows[0]["error_message"].startswith("PermissionError: key ")
    assert [r["latency_ms"] for r in rows[1:]] == [7, 7]


class BlockingClient:
    """Its calls never return until released."""

    def provider_of(self, model: str) -> str:
        return "anthropic"

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion:
        self.started += 1
        await self.release.wait()
        return Completion("late", 1, 1)


async def test_cancelling_the_runner_fails_the_run_and_propagates(
    owner: asyncpg.Connection, tenant: TenantRows, engine: PostgresEngine
) -> None:
    run_id = await new_run(tenant, [SONNET, HAIKU])
    client = BlockingClient()
    runner = asyncio.create_task(
        run_benchmark(tenant.tenant_id, run_id, client, CASES, concurrency=2)
    )
    for _ in range(500):
        if client.started == 2:
            break
        await asyncio.sleep(0.01)
    assert client.started == 2
    row = await owner.fetchrow("SELECT status FROM benchmark_runs WHERE id = $1", run_id)
    assert row is not None and row["status"] == "running"  # started, visible to others
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    row = await owner.fetchrow("SELECT * FROM benchmark_runs WHERE id = $1", run_id)
    assert row is not None
    assert row["status"] == "failed" and row["error_message"] == "the benchmark runner was cancelled"
    assert client.started == 2  # the waiting calls never ran
    assert await stored_results(owner, run_id) == []
    assert connections_in_use(engine) == 0


async def test_an_error_of_the_runner_fails_the_run_and_propagates(
    owner: asyncpg.Connection, tenant: TenantRows, engine: PostgresEngine
) -> None:
    """A scorer giving a quality of 150: record_result refuses it, the runner
    stops, the run is failed saying why, and the error reaches the caller.
    The steps under way when it stopped finish cleanly: no pooled connection
    is left checked out (interrupting a transaction as it begins would)."""
    run_id = await new_run(tenant, [SONNET])

    def broken(output: str, expected: str | None) -> Score:
        return Score(150, False, None)

    with pytest.raises(ValidationError) as refused:
        await run_benchmark(
            tenant.tenant_id, run_id, offline_client(), CASES, scorer=broken, concurrency=1
        )
    assert refused.value.field == "quality_score"
    row = await owner.fetchrow("SELECT * FROM benchmark_runs WHERE id = $1", run_id)
    assert row is not None and row["status"] == "failed"
    assert row["error_message"].startswith("the benchmark runner stopped: ValidationError")
    assert "quality_score" in row["error_message"]
    assert connections_in_use(engine) == 0


# -- arguments, scopes, content, resuming -----------------------------------------------


@pytest.mark.parametrize(
    ("concurrency", "cases", "field"),
    [(0, CASES, "concurrency"), (True, CASES, "concurrency"), (2.0, CASES, "concurrency"),
     (2, [], "test_cases"), (2, ["What is 2 + 2?"], "test_cases[0]")],
)
async def test_bad_arguments_are_refused_before_anything_happens(
    owner: asyncpg.Connection, tenant: TenantRows, concurrency: Any, cases: Any, field: str
) -> None:
    run_id = await new_run(tenant, [SONNET])
    client = offline_client()
    with pytest.raises(ValidationError) as refused:
        await run_benchmark(tenant.tenant_id, run_id, client, cases, concurrency=concurrency)
    assert refused.value.field == field
    assert client.calls == []
    status = await owner.fetchval("SELECT status FROM benchmark_runs WHERE id = $1", run_id)
    assert status == "pending"


async def test_the_runner_is_called_outside_a_scope(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    run_id = await new_run(tenant, [SONNET])
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(TenantScopeError, match="outside"):
            await run_benchmark(tenant.tenant_id, run_id, offline_client(), CASES)
    status = await owner.fetchval("SELECT status FROM benchmark_runs WHERE id = $1", run_id)
    assert status == "pending"


class SystemRecordingClient:
    def provider_of(self, model: str) -> str:
        return "anthropic"

    def __init__(self) -> None:
        self.systems: set[str | None] = set()

    async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion:
        self.systems.add(system)
        return Completion("x", 1, 1, latency_ms=1)


async def test_the_system_prompt_is_the_pinned_or_latest_version(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    await owner.execute(
        "INSERT INTO skill_versions (tenant_id, skill_id, version, content)"
        " VALUES ($1, $2, 2, 'Review the diff; be brief.')",
        tenant.tenant_id,
        tenant.skill_id,
    )
    pinned = await new_run(tenant, [SONNET], skill_version_id=tenant.version_id)
    latest = await new_run(tenant, [SONNET])
    for run_id, expected in ((pinned, SYSTEM), (latest, "Review the diff; be brief.")):
        client = SystemRecordingClient()
        await run_benchmark(tenant.tenant_id, run_id, client, CASES[:2])
        assert client.systems == {expected}


async def test_a_running_run_is_resumed_without_calling_done_cases_again(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """The fixture's run is running with gpt-4o's result on test case 0."""
    client = offline_client(providers={"gpt-4o": "openai"})
    run = await run_benchmark(tenant.tenant_id, tenant.run_id, client, CASES[:3])
    assert run.status == "completed"
    assert ("gpt-4o", CASES[0].input) not in client.calls and len(client.calls) == 5
    rows = await stored_results(owner, tenant.run_id)
    assert len(rows) == 6
    # One run, two providers, each model priced as its provider's: gpt-4o by
    # the table for openai ($2.50 / $10), claude-sonnet-4-5 at the tenant's
    # own anthropic price (250 / 1,250 microcents a token).
    rates = {"gpt-4o": (250, 1000), "claude-sonnet-4-5": (250, 1250)}
    priced = 0
    for row in rows:
        if row["model_name"] == "gpt-4o" and row["test_case_index"] == 0:
            continue  # the fixture's own result
        input_rate, output_rate = rates[row["model_name"]]
        assert row["model_provider"] == client.provider_of(row["model_name"])
        assert row["estimated_cost_microcents"] == (
            row["input_tokens"] * input_rate + row["output_tokens"] * output_rate
        )
        priced += 1
    assert priced == 5


# -- the offline client and the scorer -------------------------------------------------


def test_the_default_scorer() -> None:
    assert default_scorer("anything", None) == Score(None, None, "no expected output")
    assert default_scorer("  The  ANSWER\n is 4 ", "the answer is 4") == Score(100, True, "exact match")
    near = default_scorer("the answer is 5", "the answer is 4")
    assert near.matches is False and near.quality == round(100 * 28 / 30) == 93
    assert default_scorer("xyz", "abc").quality == 0


async def test_the_offline_client_is_deterministic_and_complete() -> None:
    client = offline_client(failures={(OPUS, CASES[0].input)})
    with pytest.raises(OfflineModelError):
        await client.complete(OPUS, CASES[0].input)
    prompt = CASES[1].input
    one = await client.complete(SONNET, prompt, system="Be brief.")
    again = await offline_client().complete(SONNET, prompt, system="Be brief.")
    assert one == again
    assert one.input_tokens == len("Be brief." + prompt) // 4 + 1
    assert one.output_tokens == len(one.output) // 4 + 1
    assert one.latency_ms is not None and one.latency_ms >= 40
    always = OfflineModelClient(ANSWERS, default_accuracy=1.0)
    never = OfflineModelClient(ANSWERS, default_accuracy=0.0)
    for prompt, answer in ANSWERS.items():
        assert always.answer(HAIKU, prompt) == answer
        wrong = never.answer(HAIKU, prompt)
        assert default_scorer(wrong, answer).matches is False
        assert wrong == never.answer(HAIKU, prompt)
    # The share answered right follows the accuracy, roughly.
    many: Mapping[str, str] = {f"question {i}": f"answer {i}" for i in range(400)}
    sampled = OfflineModelClient(many, default_accuracy=0.8)
    right = sum(sampled.answers_right(HAIKU, prompt) for prompt in many)
    assert 280 <= right <= 360
    flaky = OfflineModelClient(many, failure_rate=0.25)
    assert 60 <= sum(flaky.fails(HAIKU, prompt) for prompt in many) <= 140
    with pytest.raises(ValidationError):
        OfflineModelClient(ANSWERS, default_accuracy=1.5)


# -- resuming, odd answers, two runners ----------------------------------------------


async def test_a_resumed_run_with_good_earlier_results_completes(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """Whether every call failed is decided from all the run's results: an
    earlier runner's good results keep the run from failing."""
    run_id = await new_run(tenant, [SONNET])
    async with tenant_scope(tenant.tenant_id):
        await benchmarks.start_run(run_id)
        await benchmarks.record_result(
            run_id, model_name=SONNET, model_provider="anthropic", test_case_index=0,
            output_produced="4", quality_score=100,
        )
    failing = offline_client(failures={(SONNET, case.input) for case in CASES})
    run = await run_benchmark(tenant.tenant_id, run_id, failing, CASES[:3])
    assert run.status == "completed" and run.best_model == SONNET
    errors = [row["error_message"] for row in await stored_results(owner, run_id)]
    assert errors[0] is None and all("OfflineModelError" in e for e in errors[1:])


async def test_answers_a_result_cannot_hold_are_cut_or_recorded_as_errors(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    long_answer = "x" * (benchmarks.MAX_TEXT_LENGTH + 500)

    class OddClient:
        def provider_of(self, model: str) -> str:
            return "anthropic"

        async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion:
            if prompt == CASES[0].input:
                return Completion(long_answer, input_tokens=10, output_tokens=30_000)
            # A negative count cannot be recorded.
            return Completion("4", input_tokens=-1, output_tokens=1)

    run_id = await new_run(tenant, [SONNET])
    run = await run_benchmark(tenant.tenant_id, run_id, OddClient(), CASES[:2])
    assert run.status == "completed"
    first, second = await stored_results(owner, run_id)
    assert len(first["output_produced"]) == benchmarks.MAX_TEXT_LENGTH
    assert first["output_produced"].endswith("…[truncated]") and first["error_message"] is None
    assert second["error_message"].startswith("the answer could not be recorded")
    assert second["output_produced"] is None and second["quality_score"] is None


async def test_two_runners_of_one_run_do_no_harm(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    run_id = await new_run(tenant, [SONNET, HAIKU])
    first, second = await asyncio.gather(
        run_benchmark(tenant.tenant_id, run_id, offline_client(), CASES, concurrency=2),
        run_benchmark(tenant.tenant_id, run_id, offline_client(), CASES, concurrency=3),
    )
    assert first.status == second.status == "completed"
    assert first.best_model == second.best_model is not None
    rows = await stored_results(owner, run_id)
    assert len(rows) == 2 * len(CASES)
    assert all(row["error_message"] is None for row in rows)


# -- scorers that call models, progress, interruptions ------------------------------------


class CallingScorer:
    """A CaseScorer that reports a model call of its own for each score:
    12 input and 3 output tokens of claude-haiku-4-5 ($1 / $5 per million:
    12 * 100 + 3 * 500 = 2,700 microcents); a negative count for
    ``bad_input`` (a broken scorer)."""

    def __init__(self, bad_input: str | None = None) -> None:
        self.bad_input = bad_input
        self.seen: list[str] = []

    async def score_case(self, case: TestCase, output: str, /) -> Score:
        self.seen.append(case.input)
        tokens = -1 if case.input == self.bad_input else 12
        call = ScorerCall("anthropic", HAIKU, tokens, 3, latency_ms=9)
        return Score(60, None, f"scored {case.input}", (call,))


async def test_a_case_scorer_sees_the_case_and_its_calls_are_measurements_of_the_run(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    run_id = await new_run(tenant, [SONNET, OPUS])
    scorer = CallingScorer()
    run = await run_benchmark(tenant.tenant_id, run_id, offline_client(), CASES[:3], scorer=scorer)
    assert run.status == "completed"
    assert sorted(scorer.seen) == sorted(2 * [case.input for case in CASES[:3]])
    rows = await stored_results(owner, run_id)
    assert {(r["quality_score"], r["quality_notes"]) for r in rows} == {
        (60, f"scored {case.input}") for case in CASES[:3]
    }
    measurements = await owner.fetch(
        "SELECT * FROM token_measurements WHERE usage_event_id = $1", run_id
    )
    assert len(measurements) == 6
    assert {(m["skill_id"], m["user_id"], m["source"], m["model_name"], m["input_tokens"],
             m["output_tokens"], m["latency_ms"], m["estimated_cost_microcents"])
            for m in measurements} == {
        (tenant.skill_id, tenant.user_id, "api", HAIKU, 12, 3, 9, 2_700)
    }
    async with tenant_scope(tenant.tenant_id):
        spent = await benchmarks.run_cost(run_id)
    assert spent.judging_microcents == 6 * 2_700 and spent.judgements == 6
    assert spent.results_microcents == sum(r["estimated_cost_microcents"] for r in rows)


async def test_a_result_and_its_scoring_calls_are_written_together_or_not_at_all(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """The scorer's call on the second case cannot be recorded: neither is
    that case's result, the runner stops, and every result stored has its
    scoring call (a step under way when it stopped is let finish)."""
    run_id = await new_run(tenant, [SONNET])
    scorer = CallingScorer(bad_input=CASES[1].input)
    with pytest.raises(ValidationError) as refused:
        await run_benchmark(
            tenant.tenant_id, run_id, offline_client(), CASES[:3], scorer=scorer, concurrency=1
        )
    assert refused.value.field == "measurements[0].input_tokens"
    rows = await stored_results(owner, run_id)
    assert 0 in [r["test_case_index"] for r in rows]
    assert 1 not in [r["test_case_index"] for r in rows]
    assert await owner.fetchval(
        "SELECT count(*) FROM token_measurements WHERE usage_event_id = $1", run_id
    ) == len(rows)
    status = await owner.fetchval("SELECT status FROM benchmark_runs WHERE id = $1", run_id)
    assert status == "failed"


async def test_progress_is_reported_from_the_start_and_after_each_result(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    run_id = await new_run(tenant, [SONNET, HAIKU])
    seen: list[RunProgress] = []
    failing = {(HAIKU, CASES[0].input)}
    await run_benchmark(
        tenant.tenant_id, run_id, offline_client(failures=failing), CASES[:3],
        on_progress=seen.append,
    )
    assert seen[0] == RunProgress(0, 6)
    assert [p.done for p in seen] == list(range(7)) and {p.total for p in seen} == {6}
    assert sorted((p.model, p.test_case_index, p.error) for p in seen[1:]) == sorted(
        (m, i, (m, CASES[i].input) in failing) for m in (SONNET, HAIKU) for i in range(3)
    )
    # A resumed run starts from what it has: the fixture's run has 1 of 6.
    resumed: list[RunProgress] = []
    await run_benchmark(
        tenant.tenant_id, tenant.run_id, offline_client(providers={"gpt-4o": "openai"}),
        CASES[:3], on_progress=resumed.append,
    )
    assert resumed[0] == RunProgress(1, 6) and resumed[-1].done == 6 and len(resumed) == 6


async def test_a_resumable_runner_cancelled_leaves_the_run_running_to_resume(
    owner: asyncpg.Connection, tenant: TenantRows, engine: PostgresEngine
) -> None:
    run_id = await new_run(tenant, [SONNET])
    client = BlockingClient()
    answered = offline_client()

    class HalfBlocking:
        """Answers the first two cases at once; blocks on the others."""

        def provider_of(self, model: str) -> str:
            return "anthropic"

        async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion:
            if prompt in (CASES[0].input, CASES[1].input):
                return await answered.complete(model, prompt, system=system)
            return await client.complete(model, prompt, system=system)

    seen: list[RunProgress] = []
    runner = asyncio.create_task(
        run_benchmark(tenant.tenant_id, run_id, HalfBlocking(), CASES, concurrency=6,
                      on_progress=seen.append, resumable=True)
    )
    for _ in range(500):
        if client.started == 4 and seen and seen[-1].done == 2:
            break
        await asyncio.sleep(0.01)
    assert client.started == 4 and seen[-1].done == 2
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    row = await owner.fetchrow("SELECT status, error_message FROM benchmark_runs WHERE id = $1", run_id)
    assert row is not None and (row["status"], row["error_message"]) == ("running", None)
    assert [r["test_case_index"] for r in await stored_results(owner, run_id)] == [0, 1]
    assert connections_in_use(engine) == 0

    again = offline_client()
    run = await run_benchmark(tenant.tenant_id, run_id, again, CASES)
    assert run.status == "completed"
    assert sorted(prompt for _, prompt in again.calls) == sorted(c.input for c in CASES[2:])
    assert len(await stored_results(owner, run_id)) == len(CASES)
