"""Executing a benchmark run: every model of the run on every test case.

Contract
--------
- :func:`run_benchmark` runs a pending (or resumes a running) run of a
  tenant: it starts it, calls ``client.complete(model, case.input,
  system=content)`` for every model of the run and every test case, at most
  ``concurrency`` calls at a time, scores each output with ``scorer`` and
  records it with :func:`everyskill.benchmarks.record_result` as soon as it
  arrives, then completes the run (the database picks the best and the
  cheapest model) and returns it.
  - ``scorer`` is a :class:`Scorer` (a function of the output and the
    expected output, such as :func:`default_scorer`) or a
    :class:`CaseScorer` (an object whose ``async score_case(case, output)``
    sees the whole test case, such as :class:`everyskill.judge.ModelJudge`).
  - The model calls a scorer made (a judge's: :attr:`Score.calls`) are
    recorded as token measurements of the run, in the same transaction as
    the result they scored, so that a result is never stored without the
    cost of judging it, nor that cost twice: the run's skill, the user who
    triggered the run, ``source`` :data:`~everyskill.benchmarks.SCORING_SOURCE`
    (``api``) and ``usage_event_id`` the run's id, costed like every
    measurement. :func:`everyskill.benchmarks.run_cost` adds them to the
    results' costs.
  - ``on_progress``, when given, is called with a :class:`RunProgress` once
    the run is started (counting the results an earlier runner recorded)
    and after each result is recorded; it must not block.
  - ``content`` is the skill's text: the run's pinned version, else the
    skill's latest version (:func:`everyskill.benchmarks.benchmarked_content`).
  - Each database step is its own short :func:`~everyskill.tenancy.tenant_scope`:
    progress is visible to others as it happens, and no model call ever
    holds a transaction open. So the runner is called *outside* a tenant
    scope (inside one it raises :class:`~everyskill.errors.TenantScopeError`).
  - Costs come from the price table (the tenant's price, else genai-prices)
    through ``record_result``; ``client.provider_of(model)`` names the
    provider whose price applies, so one run compares models of several
    providers.
    Latency is the client's, else the wall time of the call.
  - A call that raises an ``Exception`` becomes a result with
    ``error_message`` (``"<type>: <message>"``, secrets redacted, at most
    :data:`~everyskill.benchmarks.MAX_ERROR_LENGTH` characters), no output
    and no quality; so does an answer that a result cannot hold (token
    counts that disagree). The run goes on. Texts longer than a result
    field holds are cut and marked ``…[truncated]``. When every result of
    the run is an error (those of an earlier runner included), the run is
    failed with a message saying so (and the first error) instead of
    completed.
  - When the runner stops for any other reason (it is cancelled, a database
    or scorer error escapes), the model calls still running are cancelled,
    database steps already begun are let finish (a transaction is never
    interrupted half-way), the run is failed with the reason in a fresh
    scope, and the exception is re-raised (``CancelledError`` included).
    With ``resumable=True`` a cancelled runner (an interrupted command)
    leaves the run ``running`` instead, with the results recorded so far,
    for a later call to resume; any other error still fails it.
  - A running run is resumed: the (model, test case) pairs it already has a
    result for are not called again. Two runners of one run do the work
    twice but do no harm: a case the other recorded first is skipped, and
    the one that finishes second returns the run as the other ended it.
  - ``concurrency`` must be an integer >= 1 and there must be at least one
    test case, else :class:`~everyskill.errors.ValidationError`, before
    anything is touched.
- :func:`default_scorer`: without an expected output, no quality and no
  verdict; an output equal to the expected one after normalising whitespace
  and case scores 100 and matches; anything else scores
  ``round(100 * difflib.SequenceMatcher ratio)`` of the normalised texts and
  does not match.
- :class:`OfflineModelClient` answers without a network: whether it answers
  a (model, prompt) right is decided by a SHA-256 hash, so outputs, tokens
  (``len(text) // 4 + 1``) and latencies are the same in every process.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from everyskill import benchmarks, usage
from everyskill.errors import (
    ConflictError,
    InvalidTransitionError,
    RunNotRunningError,
    ValidationError,
)
from everyskill.tenancy import refuse_inside_scope, tenant_scope
from tables import BenchmarkRun, BenchmarkStatus

__all__ = [
    "CaseScorer",
    "Completion",
    "ModelClient",
    "OfflineModelClient",
    "OfflineModelError",
    "RunProgress",
    "Score",
    "Scorer",
    "ScorerCall",
    "TestCase",
    "default_scorer",
    "fitted",
    "run_benchmark",
]


@dataclass(frozen=True)
class TestCase:
    """One input of a benchmark, and the output it should produce (if known)."""

    __test__ = False  # not a pytest test class

    input: str
    expected_output: str | None = None


@dataclass(frozen=True)
class Completion:
    """What a model call returned. Token counts as in
    :class:`~everyskill.pricing.TokenUsage`; ``latency_ms`` None means the
    runner measures the call's wall time."""

    output: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    latency_ms: int | None = None


@runtime_checkable
class ModelClient(Protocol):
    """Calls models; one client may serve models of several providers."""

    def provider_of(self, model: str) -> str:
        """The provider serving ``model``: its results are priced as its."""
        ...

    async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion:
        """The model's answer to ``prompt``, with ``system`` as system prompt."""
        ...


@dataclass(frozen=True)
class ScorerCall:
    """A model call a scorer made to score an output (a judge's): what it
    used, recorded as a token measurement of the run. Tokens as in
    :class:`~everyskill.pricing.TokenUsage`."""

    model_provider: str
    model_name: str
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    latency_ms: int | None = None


@dataclass(frozen=True)
class Score:
    """How good an output is: quality 0-100, whether it matches, notes, and
    the model calls made to tell (none for an offline scorer)."""

    quality: int | None
    matches: bool | None
    notes: str | None = None
    calls: tuple[ScorerCall, ...] = ()


class Scorer(Protocol):
    """Scores an output against the expected output (None when unknown)."""

    def __call__(self, output: str, expected: str | None, /) -> Score: ...


@runtime_checkable
class CaseScorer(Protocol):
    """Scores an output knowing the whole test case (its input too); may
    call a model to do it."""

    async def score_case(self, case: TestCase, output: str, /) -> Score: ...


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands: ``done`` of ``total`` (model, test case) pairs
    have a result; ``model``, ``test_case_index`` and ``error`` describe the
    result just recorded (None at the start)."""

    done: int
    total: int
    model: str | None = None
    test_case_index: int | None = None
    error: bool | None = None


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def default_scorer(output: str, expected: str | None, /) -> Score:
    """Exact match (whitespace and case aside) is 100, else the similarity."""
    if expected is None:
        return Score(None, None, "no expected output")
    got, wanted = _normalised(output), _normalised(expected)
    if got == wanted:
        return Score(100, True, "exact match")
    ratio = difflib.SequenceMatcher(None, got, wanted, autojunk=False).ratio()
    return Score(round(100 * ratio), False, f"similarity {ratio:.3f}")


# -- the runner ---------------------------------------------------------------------


@dataclass
class _Progress:
    first_error: str | None = None


def _checked_score(score: Score) -> Score:
    """The scorer's verdict, or ValidationError: a broken scorer stops the run."""
    quality = score.quality
    if quality is not None and (
        isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100
    ):
        raise ValidationError.of("quality_score", f"the scorer gave {quality!r}, not 0-100")
    return score


_TRUNCATED = " …[truncated]"


def fitted(text: str | None) -> str | None:
    """``text`` cut to the longest a result field holds, marked when cut:
    what the runner records of a case's input, output and expected output
    (before redaction)."""
    if text is None or len(text) <= benchmarks.MAX_TEXT_LENGTH:
        return text
    return text[: benchmarks.MAX_TEXT_LENGTH - len(_TRUNCATED)] + _TRUNCATED


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    if len(text) > benchmarks.MAX_ERROR_LENGTH:
        text = text[: benchmarks.MAX_ERROR_LENGTH - 1] + "…"
    return text


def _checked(concurrency: object, test_cases: object) -> list[TestCase]:
    problems: list[tuple[str, str]] = []
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        problems.append(("concurrency", "must be an integer of at least 1"))
    cases: list[TestCase] = []
    if isinstance(test_cases, (str, bytes)) or not isinstance(test_cases, Iterable):
        problems.append(("test_cases", "must be a list of TestCase"))
    else:
        cases = list(test_cases)
        if not cases:
            problems.append(("test_cases", "must hold at least one test case"))
        for index, case in enumerate(cases):
            if not isinstance(case, TestCase) or not isinstance(case.input, str):
                problems.append((f"test_cases[{index}]", "must be a TestCase with text input"))
    if problems:
        raise ValidationError(problems)
    return cases


async def run_benchmark(
    tenant_id: str,
    run_id: str,
    client: ModelClient,
    test_cases: Iterable[TestCase],
    *,
    scorer: Scorer | CaseScorer = default_scorer,
    concurrency: int = 4,
    on_progress: Callable[[RunProgress], None] | None = None,
    resumable: bool = False,
) -> BenchmarkRun:
    """Run every model of the run on every test case; see the module's contract."""
    cases = _checked(concurrency, test_cases)
    refuse_inside_scope(
            "run_benchmark opens a short tenant scope per step; call it outside"
            " `async with tenant_scope(...)`"
        )

    steps = _Steps(tenant_id)

    async def prepare() -> tuple[BenchmarkRun, str | None, set[tuple[str, int]]]:
        run = await benchmarks.get_run(run_id)
        if run.status == BenchmarkStatus.pending.value:
            try:
                run = await benchmarks.start_run(run_id)
            except InvalidTransitionError:
                run = await benchmarks.get_run(run_id)  # another runner started it
        if run.status != BenchmarkStatus.running.value:
            raise InvalidTransitionError(
                "benchmark run",
                run_id,
                run.status,
                "run",
                [BenchmarkStatus.pending.value, BenchmarkStatus.running.value],
            )
        content = await benchmarks.benchmarked_content(run_id)
        return run, content, await benchmarks.recorded_cases(run_id)

    try:
        run, content, done = await steps.run(prepare)
    except asyncio.CancelledError as error:
        await steps.settle()
        if not resumable:
            await _fail_quietly(steps, run_id, "the benchmark runner was cancelled", error)
        raise

    progress = _Progress()
    semaphore = asyncio.Semaphore(concurrency)
    total = len(run.models) * len(cases)
    finished = len({(model, index) for model, index in done if index < len(cases)})

    def report(model: str | None = None, index: int | None = None, error: bool | None = None) -> None:
        if on_progress is not None:
            on_progress(RunProgress(finished, total, model, index, error))

    report()

    def scorer_measurements(score: Score) -> list[dict[str, Any]]:
        """The scorer's model calls as token measurements of the run."""
        return [
            {
                "skill_id": run.skill_id,
                "user_id": run.triggered_by,
                "usage_event_id": run_id,
                "source": benchmarks.SCORING_SOURCE,
                "model_provider": call.model_provider,
                "model_name": call.model_name,
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
                "cache_read_tokens": call.cache_read_tokens,
                "cache_write_tokens": call.cache_write_tokens,
                "latency_ms": call.latency_ms,
            }
            for call in score.calls
        ]

    async def record(model: str, index: int, measurements: list[dict[str, Any]], **fields: Any) -> None:
        nonlocal finished
        await steps.record(run_id, measurements, model_name=model, test_case_index=index, **fields)
        finished += 1
        report(model, index, fields.get("error_message") is not None)

    async def failed(
        model: str,
        index: int,
        case: TestCase,
        elapsed: int,
        message: str,
        measurements: list[dict[str, Any]] | None = None,
    ) -> None:
        """Record the case as an error result; remember the run's first error."""
        if progress.first_error is None:
            progress.first_error = f"{model} on test case {index}: {message}"
        await record(
            model,
            index,
            measurements or [],
            model_provider=client.provider_of(model),
            input_used=fitted(case.input),
            expected_output=fitted(case.expected_output),
            latency_ms=elapsed,
            error_message=message,
        )

    async def one(model: str, index: int, case: TestCase) -> None:
        async with semaphore:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                completion = await client.complete(model, case.input, system=content)
            except Exception as error:  # the model's failure is a result
                elapsed = round((loop.time() - started) * 1000)
                await failed(model, index, case, elapsed, _error_text(error))
                return
            elapsed = round((loop.time() - started) * 1000)
            if isinstance(scorer, CaseScorer):
                score = await scorer.score_case(case, completion.output)
            else:
                score = scorer(completion.output, case.expected_output)
            score = _checked_score(score)
            measurements = scorer_measurements(score)
            try:
                await record(
                    model,
                    index,
                    measurements,
                    model_provider=client.provider_of(model),
                    input_used=fitted(case.input),
                    output_produced=fitted(completion.output),
                    expected_output=fitted(case.expected_output),
                    input_tokens=completion.input_tokens,
                    output_tokens=completion.output_tokens,
                    cache_read_tokens=completion.cache_read_tokens,
                    cache_write_tokens=completion.cache_write_tokens,
                    latency_ms=(
                        completion.latency_ms if completion.latency_ms is not None else elapsed
                    ),
                    quality_score=score.quality,
                    quality_notes=score.notes,
                    matches_expected=score.matches,
                )
            except ValidationError as refused:
                # The client's report does not fit a result (a negative token
                # count, say): the case is an error, the run goes on.
                message = f"the answer could not be recorded: {_error_text(refused)}"
                await failed(model, index, case, elapsed, message, measurements)

    tasks = [
        asyncio.create_task(one(model, index, case), name=f"benchmark {run_id} {model} #{index}")
        for model in run.models
        for index, case in enumerate(cases)
        if (model, index) not in done
    ]
    try:
        if tasks:
            ended, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in ended:
                task.result()  # the first error escapes
        # Decided from the run's results, those of an earlier runner included.
        summary = await steps.run(lambda: benchmarks.run_summary(run_id))
        results = sum(model.results for model in summary)
        errors = sum(model.errors for model in summary)
        try:
            if results and errors == results:
                message = (
                    f"every model call failed ({errors} of {results})"
                    + (f"; first error: {progress.first_error}" if progress.first_error else "")
                )[: benchmarks.MAX_ERROR_LENGTH]
                return await steps.run(
                    lambda: benchmarks.fail_run(run_id, error_message=message)
                )
            return await steps.run(lambda: benchmarks.complete_run(run_id))
        except InvalidTransitionError:
            # Another runner of the same run ended it first.
            return await steps.run(lambda: benchmarks.get_run(run_id))
    except BaseException as error:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await steps.settle()
        if resumable and isinstance(error, asyncio.CancelledError):
            raise  # the run stays running, to be resumed
        reason = (
            "the benchmark runner was cancelled"
            if isinstance(error, asyncio.CancelledError)
            else f"the benchmark runner stopped: {_error_text(error)}"
        )
        await _fail_quietly(steps, run_id, reason, error)
        raise


_StepT = TypeVar("_StepT")


class _Steps:
    """The runner's database steps, each in its own short tenant scope.

    A step runs in a task of its own and is shielded: cancelling the runner
    lets a step that has begun finish (commit or roll back) instead of
    interrupting a transaction half-way, which could leave a pooled
    connection checked out. :meth:`settle` waits for the steps still going.
    """

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.going: set[asyncio.Task[Any]] = set()

    async def run(self, step: Callable[[], Awaitable[_StepT]]) -> _StepT:
        async def scoped() -> _StepT:
            async with tenant_scope(self.tenant_id):
                return await step()

        task = asyncio.create_task(scoped())
        self.going.add(task)
        task.add_done_callback(self.going.discard)
        return await asyncio.shield(task)

    async def record(
        self, run_id: str, measurements: list[dict[str, Any]], **fields: Any
    ) -> None:
        """Record a result and the measurements of its scoring in one
        transaction: both or neither."""

        async def step() -> None:
            await benchmarks.record_result(run_id, **fields)
            if measurements:
                await usage.record_measurements(measurements)

        try:
            await self.run(step)
        except ConflictError:
            pass  # another runner of the same run recorded this case first
        except RunNotRunningError:
            pass  # another runner ended the run: the end of this one says so

    async def settle(self) -> None:
        while self.going:
            await asyncio.gather(*list(self.going), return_exceptions=True)


async def _fail_quietly(steps: _Steps, run_id: str, reason: str, cause: BaseException) -> None:
    """Fail the run after the runner stopped; never hide why it stopped."""
    try:
        await steps.run(
            lambda: benchmarks.fail_run(run_id, error_message=reason[: benchmarks.MAX_ERROR_LENGTH])
        )
    except InvalidTransitionError:
        pass  # it completed or failed already: nothing to record
    except Exception as error:  # the original error matters more
        cause.add_note(f"failing benchmark run {run_id!r} failed too: {_error_text(error)}")


# -- an offline client ----------------------------------------------------------------


class OfflineModelError(RuntimeError):
    """A failure :class:`OfflineModelClient` simulates."""


_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
_NO_ANSWER = "I do not know."


def _stream(*parts: str) -> Iterator[int]:
    """An endless, reproducible stream of bytes derived from ``parts``."""
    seed = "\x1f".join(parts).encode()
    counter = 0
    while True:
        yield from hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1


def _fraction(*parts: str) -> float:
    """A reproducible number in [0, 1) derived from ``parts``."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _tokens(text: str) -> int:
    return len(text) // 4 + 1


@dataclass
class OfflineModelClient:
    """A deterministic model client: no network, no waiting.

    ``answers`` maps a prompt to its right answer (a prompt without one is
    answered :data:`_NO_ANSWER`). A model answers a prompt right with the
    probability ``accuracy[model]`` (else ``default_accuracy``), decided by
    a hash of (``seed``, model, prompt); a wrong answer is a reproducible
    garbling of the right one. ``failures`` lists (model, prompt) pairs that
    raise :class:`OfflineModelError`, and ``failure_rate`` makes that share
    of the other pairs raise too (by hash). Tokens are ``len(text) // 4 + 1``
    (system and prompt for the input); latency is derived from the hash and
    the output length. ``calls`` records every (model, prompt) asked. A
    model is served by ``providers[model]``, else by ``provider``.
    """

    answers: Mapping[str, str]
    accuracy: Mapping[str, float] = field(default_factory=dict)
    default_accuracy: float = 0.8
    provider: str = "anthropic"
    providers: Mapping[str, str] = field(default_factory=dict)
    failures: Collection[tuple[str, str]] = ()
    failure_rate: float = 0.0
    seed: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        rates = [("default_accuracy", self.default_accuracy), ("failure_rate", self.failure_rate)]
        rates += [(f"accuracy[{model!r}]", value) for model, value in self.accuracy.items()]
        problems = [
            (name, "must be a number from 0 to 1")
            for name, value in rates
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1
        ]
        for name, value in [("provider", self.provider)] + [
            (f"providers[{model!r}]", given) for model, given in self.providers.items()
        ]:
            if not isinstance(value, str) or not value.strip():
                problems.append((name, "must be a non-empty name"))
        if problems:
            raise ValidationError(problems)

    def provider_of(self, model: str) -> str:
        """``providers[model]``, else ``provider``."""
        return self.providers.get(model, self.provider)

    def answers_right(self, model: str, prompt: str) -> bool:
        """Whether ``model`` answers ``prompt`` right (when it does not fail)."""
        accuracy = self.accuracy.get(model, self.default_accuracy)
        return _fraction(self.seed, "right", model, prompt) < accuracy

    def fails(self, model: str, prompt: str) -> bool:
        """Whether the call of ``model`` on ``prompt`` raises."""
        return (model, prompt) in self.failures or (
            _fraction(self.seed, "fail", model, prompt) < self.failure_rate
        )

    def answer(self, model: str, prompt: str) -> str:
        """What ``model`` answers to ``prompt``."""
        right = self.answers.get(prompt, _NO_ANSWER)
        if self.answers_right(model, prompt):
            return right
        return _garbled(right, _stream(self.seed, "garble", model, prompt))

    async def complete(self, model: str, prompt: str, *, system: str | None = None) -> Completion:
        self.calls.append((model, prompt))
        await asyncio.sleep(0)
        if self.fails(model, prompt):
            raise OfflineModelError(f"simulated failure of {model} (offline client)")
        output = self.answer(model, prompt)
        noise = next(_stream(self.seed, "latency", model, prompt))
        output_tokens = _tokens(output)
        return Completion(
            output=output,
            input_tokens=_tokens((system or "") + prompt),
            output_tokens=output_tokens,
            latency_ms=40 + noise + 3 * output_tokens,
        )


def _garbled(right: str, randomness: Iterator[int]) -> str:
    """A reproducible wrong version of ``right``: about a third of its
    letters and digits replaced; never equal to it once normalised."""
    if not right.strip():
        return _NO_ANSWER
    characters = list(right)
    for position, character in enumerate(characters):
        if character.isalnum() and next(randomness) % 3 == 0:
            characters[position] = _ALPHABET[next(randomness) % len(_ALPHABET)]
    garbled = "".join(characters)
    if _normalised(garbled) == _normalised(right):
        garbled = f"{garbled} (unsure)"
    return garbled
