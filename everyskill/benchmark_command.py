"""``piccolo everyskill run_benchmark``: a skill against models, from a terminal.

Contract
--------
- ``piccolo everyskill run_benchmark --tenant SLUG --skill SLUG --models
  a,b,c --cases FILE.jsonl [--judge MODEL] [--concurrency N]`` creates a
  benchmark run of the tenant's skill (its latest version, or ``--version
  N``) over the models, triggered by ``--user`` (an email or id of the
  tenant; by default the skill's author), and runs it with
  :func:`everyskill.benchmark_runner.run_benchmark`: each model answers each
  case with the skill as its system prompt, through
  :class:`~everyskill.providers.AnthropicClient` or
  :class:`~everyskill.providers.OpenAIClient`
  (:func:`~everyskill.providers.model_routes`: ``claude-*`` is Anthropic's,
  ``gpt-*`` and ``o1``/``o3``/``o4`` OpenAI's, ``openai:NAME`` anything
  served by an OpenAI-compatible server).
- Scoring: with ``--judge MODEL``, :class:`~everyskill.judge.ModelJudge`
  with that model (its cost is the run's); without, the offline
  :func:`~everyskill.benchmark_runner.default_scorer`.
- The cases file is JSON Lines: one object per line with ``input`` (text)
  and optionally ``expected_output`` (text or null); blank lines are
  skipped; anything else is refused naming the line.
- Keys come from the environment only (``ANTHROPIC_API_KEY``,
  ``OPENAI_API_KEY``; never options, which shells keep in their history):
  only the providers the models and the judge need are asked for. Base URLs:
  ``--anthropic-base-url`` and ``--openai-base-url`` (else
  ``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL``); ``--openai-provider NAME``
  prices an OpenAI-compatible server's models as that provider's. One
  client serves each provider's API: ``gpt-*`` names and ``openai:NAME``
  share the OpenAI client, its base URL and its provider name, so
  ``--openai-provider`` other than ``openai`` with a name known as OpenAI's
  (without the ``openai:`` prefix, the judge's included) is refused. The
  bound on each call: ``--max-retries`` (2), ``--timeout`` seconds per
  attempt (120), ``--deadline`` seconds per call, retries included (600);
  see :mod:`everyskill.providers`.
- While it runs, a progress bar over the (model, case) pairs is drawn on
  standard error (``rich``), with the errors recorded so far (an earlier
  runner's included); when it ends, standard output has a table per model
  (results, errors, quality, match rate, latency, the average cost of a
  costed result and the sum of the model's known costs: the sums add up to
  the run's model calls), how many answers the judge could not score, the
  picks (best, cheapest) and the run's cost, judging included
  (:func:`everyskill.benchmarks.run_cost`).
- Ctrl-C (SIGINT) or SIGTERM stops it: calls under way are abandoned,
  results recorded stay, and the run stays ``running``; the command prints
  how to resume it: the same command with ``--resume RUN_ID``, every option
  given again (``--skill``, ``--user`` and ``--version`` are the run's),
  quoted for a POSIX shell. ``--skill`` and ``--models`` may be left out,
  and must agree with the run when given. A resumed run calls only the
  (model, case) pairs without a result, and refuses (exit 2):
  - a cases file that is not the run's, as far as the run recorded it: a
    case with a result that is not in the file at its position, or whose
    input or expected output differ from those recorded. (The run does not
    record how many cases its file had: cases after the last one with a
    result cannot be told from cases added since. Each model still
    answers the same cases.)
  - a ``--judge`` other than the run's: the run's answers are scored by one
    scorer. The judge of a run is read from its results' notes (a judge's
    begin ``judge <model>: ``, :data:`everyskill.judge.NOTES_PREFIX`); the
    message says which ``--judge`` to pass, or to pass none.
- Exit codes (:data:`EXIT_CODES`): 0 the run completed and every call
  answered; 3 it completed, but some calls failed: a model's (the result is
  an error) or the judge's (the answer is not judged); 1 it failed (every
  model call failed, or the runner stopped on an error); 2 nothing was run:
  bad options, cases file, tenant, skill, user, version, run or judge to
  resume, or a missing key; 130 interrupted, the run can be resumed.
- The tenant is found as the owner (``DATABASE_URL``, as ``create_api_key``
  does); everything else runs in that tenant's scope as the application's
  login, under row-level security.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from everyskill import benchmarks
from everyskill.benchmark_runner import (
    RunProgress,
    Scorer,
    TestCase,
    default_scorer,
    fitted,
    run_benchmark,
)
from everyskill.errors import EverySkillError, ValidationError
from everyskill.overview import dollars
from everyskill.redaction import redact_fields_async
from everyskill.tenancy import tenant_scope

if TYPE_CHECKING:
    from everyskill.judge import ModelJudge
    from everyskill.providers import ModelRouter

# The providers' SDKs are imported when the command runs, not with the
# module: piccolo_app imports it, and importing both SDKs takes seconds
# that every other piccolo command (migrations included) would pay.

__all__ = [
    "EXIT_CODES",
    "EXIT_COMPLETED",
    "EXIT_ERRORS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "load_cases",
    "main",
    "run_benchmark_command",
]

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ERRORS = 3
EXIT_INTERRUPTED = 130
#: What each exit code means.
EXIT_CODES = {
    EXIT_COMPLETED: "the run completed and every call answered",
    EXIT_FAILED: "the run failed: every model call failed, or the runner stopped on an error",
    EXIT_USAGE: "nothing was run: an option, the cases file, a name or a key is wrong",
    EXIT_ERRORS: "the run completed, but some calls failed: a model's (its result is an error)"
    " or the judge's (the answer is not judged)",
    EXIT_INTERRUPTED: "interrupted: the run stays running and can be resumed",
}

_COMMAND = "run_benchmark"


class _Usage(Exception):
    """A problem found before anything was run: exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"piccolo everyskill {_COMMAND}",
        description="Run a skill against models over test cases.",
        epilog="Exit codes: "
        + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()),
    )
    parser.add_argument("--tenant", required=True, help="the tenant's slug (or id)")
    parser.add_argument("--skill", help="the skill's slug (or id)")
    parser.add_argument("--models", help="comma-separated model names, e.g. claude-haiku-4-5,gpt-4.1-mini")
    parser.add_argument("--cases", required=True, help="a JSON Lines file of test cases")
    parser.add_argument("--judge", help="the model that grades the answers (default: text similarity)")
    parser.add_argument("--concurrency", type=int, default=4, help="model calls at a time (4)")
    parser.add_argument("--user", help="who triggers the run: an email or id (default: the skill's author)")
    parser.add_argument("--version", type=int, help="the skill's version to run (default: the latest)")
    parser.add_argument("--resume", metavar="RUN_ID", help="resume an interrupted run")
    parser.add_argument("--anthropic-base-url", "--anthropic_base_url", dest="anthropic_base_url")
    parser.add_argument("--openai-base-url", "--openai_base_url", dest="openai_base_url")
    parser.add_argument(
        "--openai-provider", "--openai_provider", dest="openai_provider",
        help="the provider an OpenAI-compatible server's models are priced as (openai)",
    )
    parser.add_argument("--max-retries", "--max_retries", dest="max_retries", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per attempt (120)")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds per call, retries included (600)")
    parser.add_argument("--max-tokens", "--max_tokens", dest="max_tokens", type=int, default=1024)
    return parser


# -- the cases file --------------------------------------------------------------------


def load_cases(path: str | Path) -> list[TestCase]:
    """The test cases of a JSON Lines file; ValidationError naming the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValidationError.of("cases", f"cannot read {str(path)!r}: {error}") from None
    cases: list[TestCase] = []
    problems: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        field = f"cases line {number}"
        try:
            item = json.loads(line)
        except ValueError as error:
            problems.append((field, f"is not JSON: {error}"))
            continue
        if not isinstance(item, dict):
            problems.append((field, 'must be an object: {"input": ..., "expected_output": ...}'))
            continue
        unknown = sorted(set(item) - {"input", "expected_output"})
        if unknown:
            problems.append((field, f"has unknown keys {', '.join(unknown)}: only input and expected_output"))
        given, expected = item.get("input"), item.get("expected_output")
        fine = not unknown
        if not isinstance(given, str) or not given.strip():
            problems.append((f"{field}.input", "must be non-empty text"))
            fine = False
        if expected is not None and not isinstance(expected, str):
            problems.append((f"{field}.expected_output", "must be text or null"))
            fine = False
        if fine:
            cases.append(TestCase(str(given), expected))
    if problems:
        raise ValidationError(problems)
    if not cases:
        raise ValidationError.of("cases", f"{str(path)!r} holds no test case")
    return cases


# -- the run -----------------------------------------------------------------------------


@dataclass
class _Target:
    tenant_id: str
    run_id: str
    models: list[str]
    resumed: bool
    #: How many of the run's recorded results are errors.
    errors: int = 0


async def _tenant_id(tenant: str) -> str:
    """The tenant's id, looked up as the owner (slug or id)."""
    from tables import Tenant

    rows = await Tenant.select(Tenant.id).where((Tenant.slug == tenant) | (Tenant.id == tenant))
    if not rows:
        raise ValidationError.of("tenant", f"no tenant has the slug or id {tenant!r}")
    return str(rows[0]["id"])


async def _skill(slug: str) -> dict[str, Any]:
    from tables import Skill

    from everyskill.catalogue import folded_slug

    rows = await Skill.select(Skill.id, Skill.author_id).where(
        (Skill.slug == folded_slug(slug)) | (Skill.id == slug)
    )
    if not rows:
        raise ValidationError.of("skill", f"the tenant has no skill with the slug or id {slug!r}")
    return dict(rows[0])


async def _user_id(user: str | None, author: str | None) -> str:
    from tables import User

    if user is None:
        if author is None:
            raise ValidationError.of("user", "the skill has no author: say who runs it with --user")
        return author
    rows = await User.select(User.id).where((User.email == user) | (User.id == user))
    if not rows:
        raise ValidationError.of("user", f"the tenant has no user with the email or id {user!r}")
    return str(rows[0]["id"])


async def _version_id(skill_id: str, version: int | None) -> str | None:
    from tables import SkillVersion

    if version is None:
        return None
    rows = await SkillVersion.select(SkillVersion.id).where(
        (SkillVersion.skill_id == skill_id) & (SkillVersion.version == version)
    )
    if not rows:
        raise ValidationError.of("version", f"the skill has no version {version}")
    return str(rows[0]["id"])


@dataclass(frozen=True)
class _Recorded:
    """What a result of the run says of its case and of how it was scored."""

    index: int
    input_used: str | None
    expected_output: str | None
    quality_notes: str | None
    error: bool


async def _recorded(run_id: str) -> list[_Recorded]:
    from tables import BenchmarkResult

    rows = await BenchmarkResult.select(
        BenchmarkResult.test_case_index,
        BenchmarkResult.input_used,
        BenchmarkResult.expected_output,
        BenchmarkResult.quality_notes,
        BenchmarkResult.error_message,
    ).where(BenchmarkResult.benchmark_run_id == run_id)
    return [
        _Recorded(
            row["test_case_index"], row["input_used"], row["expected_output"],
            row["quality_notes"], row["error_message"] is not None,
        )
        for row in rows
    ]


async def _check_providers(run_id: str, models: str, openai_provider: str | None) -> None:
    """Refuse to resume a run with a model served by another provider than
    its recorded results were (``openai:claude-...`` through a compatible
    server, resumed without the prefix, would go to Anthropic)."""
    from everyskill.providers import model_routes
    from tables import BenchmarkResult

    routes = model_routes([name for name in models.split(",") if name.strip()])
    rows = await BenchmarkResult.select(
        BenchmarkResult.model_name, BenchmarkResult.model_provider
    ).where(BenchmarkResult.benchmark_run_id == run_id).distinct()
    for row in rows:
        served_by = routes.get(row["model_name"])
        if served_by == "openai" and openai_provider:
            served_by = openai_provider  # the name an OpenAI-compatible server is priced by
        if served_by is not None and served_by != row["model_provider"]:
            raise ValidationError.of(
                "models",
                f"the run's results for {row['model_name']!r} came from"
                f" {row['model_provider']}: resume with --models naming"
                f" {row['model_provider']}:{row['model_name']}",
            )


async def _check_cases(recorded: Sequence[_Recorded], cases: Sequence[TestCase]) -> None:
    """Refuse a cases file that is not the one the run started with: every
    case the run has a result for must be in the file, at its position,
    with the input and expected output recorded for it (as the runner
    stores them: cut to a field's length, redacted)."""
    beyond = [result.index for result in recorded if result.index >= len(cases)]
    if beyond:
        raise ValidationError.of(
            "cases", f"the run has results for case {max(beyond)}, but the file has {len(cases)} cases"
        )
    texts: dict[str, str | None] = {}
    for index in {result.index for result in recorded}:
        texts[f"{index} input"] = fitted(cases[index].input)
        texts[f"{index} expected output"] = fitted(cases[index].expected_output)
    stored, _ = await redact_fields_async(texts)
    for result in sorted(recorded, key=lambda result: result.index):
        if result.input_used is None:
            continue  # not a result the runner recorded: it says nothing of its case
        for what, used in (("input", result.input_used), ("expected output", result.expected_output)):
            if stored[f"{result.index} {what}"] != used:
                raise ValidationError.of(
                    "cases",
                    f"case {result.index} (line order) differs from the {what} the run recorded for it",
                )


#: How the notes of a result a judge scored begin: ``judge <model>: ``
#: (:data:`everyskill.judge.NOTES_PREFIX`); other notes are the offline
#: scorer's.
_JUDGED = re.compile(r"judge (\S+): ")


def _check_scorer(recorded: Sequence[_Recorded], judge: str | None) -> None:
    """Refuse to score the rest of a run otherwise than its recorded
    answers were: by the same judge, or offline when they were."""
    scorers = {
        found.group(1) if (found := _JUDGED.match(result.quality_notes or "")) else None
        for result in recorded
        if not result.error
    }
    if not scorers or judge in scorers:
        return
    if len(scorers) > 1:
        names = ", ".join(sorted("offline" if name is None else name for name in scorers))
        raise ValidationError.of(
            "judge", f"the run's answers were scored by {names}: resume it with one of them"
        )
    (recorded_judge,) = scorers
    if recorded_judge is None:
        raise ValidationError.of(
            "judge", "the run's answers were scored offline (text similarity): resume it without --judge"
        )
    from everyskill.providers import model_routes

    try:
        model_routes([recorded_judge], "judge")
        option = f"--judge {recorded_judge}"
    except ValidationError:
        option = f"--judge openai:{recorded_judge} (or anthropic:{recorded_judge}, as it was given)"
    raise ValidationError.of(
        "judge", f"the run's answers were judged by {recorded_judge}: resume it with {option}"
    )


async def _target(options: argparse.Namespace, cases: Sequence[TestCase]) -> _Target:
    tenant_id = await _tenant_id(options.tenant)
    given_models = _models_option(options.models)
    async with tenant_scope(tenant_id):
        if options.resume:
            try:
                run = await benchmarks.get_run(options.resume)
            except EverySkillError as error:
                raise ValidationError.of("resume", str(error)) from None
            if run.status not in ("pending", "running"):
                raise ValidationError.of("resume", f"the run is {run.status}: there is nothing to resume")
            if options.skill is not None:
                skill = await _skill(options.skill)
                if skill["id"] != run.skill_id:
                    raise ValidationError.of("skill", "is not the skill of the run to resume")
            if given_models is not None and given_models != list(run.models):
                raise ValidationError.of(
                    "models", f"the run to resume compares {', '.join(run.models)}"
                )
            recorded = await _recorded(str(run.id))
            await _check_providers(
                str(run.id), options.models or ",".join(run.models), options.openai_provider
            )
            await _check_cases(recorded, cases)
            _check_scorer(recorded, _judge_model(options))
            errors = sum(result.error for result in recorded)
            return _Target(tenant_id, str(run.id), list(run.models), True, errors)
        if options.skill is None or given_models is None:
            raise ValidationError.of("skill" if options.skill is None else "models", "is required (or --resume)")
        skill = await _skill(options.skill)
        user_id = await _user_id(options.user, skill["author_id"])
        version_id = await _version_id(skill["id"], options.version)
        created = await benchmarks.create_run(
            skill_id=skill["id"], models=given_models, triggered_by=user_id, skill_version_id=version_id
        )
    return _Target(tenant_id, str(created.row.id), list(created.row.models), False)


def _models_option(models: str | None) -> list[str] | None:
    """The models named by ``--models``, provider prefixes removed."""
    from everyskill.providers import model_routes

    if models is None:
        return None
    return list(model_routes([name for name in models.split(",") if name.strip()]))


def _router(options: argparse.Namespace, models: Sequence[str]) -> ModelRouter:
    """A client for each provider the models and the judge need."""
    from everyskill.providers import (
        AnthropicClient,
        JsonModelClient,
        ModelRouter,
        OpenAIClient,
        model_routes,
    )

    given = [name for name in (options.models or "").split(",") if name.strip()]
    # The names as given (with their provider prefixes) when they are the run's.
    names = given or list(models)
    routes = model_routes(names)
    if options.judge:
        names.append(options.judge)
        for model, provider in model_routes([options.judge], "judge").items():
            routes.setdefault(model, provider)
    _check_openai_provider(options.openai_provider, names)
    settings = {
        "max_retries": options.max_retries,
        "timeout": options.timeout,
        "deadline": options.deadline,
        "max_tokens": options.max_tokens,
    }
    clients: dict[str, JsonModelClient] = {}
    if "anthropic" in routes.values():
        clients["anthropic"] = AnthropicClient(base_url=options.anthropic_base_url, **settings)
    if "openai" in routes.values():
        clients["openai"] = OpenAIClient(
            base_url=options.openai_base_url, provider=options.openai_provider, **settings
        )
    return ModelRouter(clients, routes)


def _check_openai_provider(provider: str | None, names: Sequence[str]) -> None:
    """Refuse to price OpenAI's own models as another provider's.

    One OpenAI client serves every model of OpenAI's API: ``gpt-*`` and
    ``o1``/``o3``/``o4`` names and ``openai:NAME``, with one base URL and one
    provider name. ``--openai-provider`` names the provider of an
    OpenAI-compatible server; a name known as OpenAI's, given without the
    ``openai:`` prefix, would be sent to that server and priced as its.
    """
    from everyskill.providers import PROVIDERS, model_routes

    if provider is None or provider.strip() in ("", "openai"):
        return
    for name in names:
        prefix, _, rest = name.strip().partition(":")
        if prefix in PROVIDERS and rest.strip():
            continue  # its provider said: served by the compatible server
        if model_routes([name])[name.strip()] == "openai":
            raise ValidationError.of(
                "openai_provider",
                f"would send {name.strip()} to the OpenAI-compatible server and price it as"
                f" {provider.strip()}'s: one client serves every model of OpenAI's API. Benchmark"
                f" OpenAI's own models in another run, or write openai:{name.strip()} if that"
                " server serves a model of that name",
            )


def _judge_model(options: argparse.Namespace) -> str | None:
    from everyskill.providers import model_routes

    if not options.judge:
        return None
    return next(iter(model_routes([options.judge], "judge")))


# -- output ------------------------------------------------------------------------------


#: The options a resumed run is run with again, as the command line spells them.
_RESUMED_OPTIONS = (
    ("models", "--models"),
    ("judge", "--judge"),
    ("concurrency", "--concurrency"),
    ("anthropic_base_url", "--anthropic-base-url"),
    ("openai_base_url", "--openai-base-url"),
    ("openai_provider", "--openai-provider"),
    ("max_retries", "--max-retries"),
    ("timeout", "--timeout"),
    ("deadline", "--deadline"),
    ("max_tokens", "--max-tokens"),
)


def _option_number(value: float) -> str:
    """A number as given, in full (``30``, ``0.1234567``, ``1234567``)."""
    return str(int(value)) if value.is_integer() else repr(value)


def _resume_command(options: argparse.Namespace, run_id: str) -> str:
    """The command that resumes the run with the options it was given
    (those left at their defaults left out), quoted for a POSIX shell."""
    parser = _parser()
    words = [
        "piccolo", "everyskill", _COMMAND, "--tenant", options.tenant, "--cases", options.cases,
        "--resume", run_id,
    ]
    for name, option in _RESUMED_OPTIONS:
        value = getattr(options, name)
        if value is None or value == "" or value == parser.get_default(name):
            continue
        words += [option, _option_number(value) if isinstance(value, float) else str(value)]
    return shlex.join(words)


def _number(value: float | None, places: int = 0, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{places}f}{suffix}"


async def _print_summary(
    tenant_id: str, run_id: str, console: Console, judged: bool
) -> list[benchmarks.ModelSummary]:
    """Print the run's table, picks and cost; return its summary."""
    async with tenant_scope(tenant_id):
        run = await benchmarks.get_run(run_id)
        summary = await benchmarks.run_summary(run_id)
        cost = await benchmarks.run_cost(run_id)
        providers = {
            row["model_name"]: row["model_provider"]
            for row in await _providers(run_id)
        }
    table = Table(title=f"Benchmark run {run_id} ({run.status})")
    for heading in ("model", "provider", "results", "errors", "avg quality", "match rate",
                    "avg latency", "p95 latency", "avg cost", "cost"):
        table.add_column(heading, justify="left" if heading in ("model", "provider") else "right")
    for model in summary:
        table.add_row(
            model.model_name,
            providers.get(model.model_name, "-"),
            str(model.results),
            str(model.errors),
            _number(model.avg_quality, 1),
            _number(None if model.match_rate is None else 100 * model.match_rate, 0, "%"),
            _number(model.avg_latency_ms, 0, " ms"),
            _number(model.p95_latency_ms, 0, " ms"),
            dollars(None if model.avg_cost_microcents is None else round(model.avg_cost_microcents), places=6),
            dollars(model.cost_microcents, places=6),
        )
    console.print(table)
    picks = Table(title="Picks", show_header=True)
    picks.add_column("pick")
    picks.add_column("model")
    picks.add_column("by", justify="right")
    picks.add_row(
        "best", run.best_model or "-",
        "-" if run.best_quality_score is None else f"avg quality {run.best_quality_score}",
    )
    picks.add_row(
        "cheapest", run.cheapest_model or "-",
        "-" if run.cheapest_cost_microcents is None
        else f"avg cost {dollars(run.cheapest_cost_microcents, places=6)}",
    )
    console.print(picks)
    unpriced = cost.unpriced_results + cost.unpriced_judgements
    console.print(
        f"Run cost: {dollars(cost.total_microcents, places=6)}"
        f" = model calls {dollars(cost.results_microcents, places=6)}"
        f" + judging {dollars(cost.judging_microcents, places=6)}"
        f" ({cost.judgements} judgements)"
        + (f"; {unpriced} calls without a price are not counted" if unpriced else "")
    )
    unjudged = sum(model.unscored for model in summary) if judged else 0
    if unjudged:
        console.print(
            f"Not judged: {unjudged} answers (the judge failed, or answered off its schema;"
            " their quality_notes say why)"
        )
    if run.error_message:
        console.print(f"The run failed: {run.error_message}")
    return summary


async def _providers(run_id: str) -> list[dict[str, Any]]:
    from tables import BenchmarkResult

    rows = await BenchmarkResult.select(
        BenchmarkResult.model_name, BenchmarkResult.model_provider
    ).where(BenchmarkResult.benchmark_run_id == run_id).distinct()
    return [dict(row) for row in rows]


# -- the command -------------------------------------------------------------------------


async def main(argv: Sequence[str], *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run the command with ``argv`` (its options); return the exit code."""
    out = Console(file=stdout or sys.stdout, width=None if (stdout or sys.stdout).isatty() else 160)
    err = Console(file=stderr or sys.stderr, width=None if (stderr or sys.stderr).isatty() else 160)
    parser = _parser()
    try:
        options = parser.parse_args(list(argv))
    except SystemExit as exit:
        return EXIT_USAGE if exit.code else EXIT_COMPLETED
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    runner: asyncio.Task[Any] | None = None

    def interrupt() -> None:
        """The first Ctrl-C stops the run cleanly; a second one, the process."""
        interrupted.set()
        loop.remove_signal_handler(signal.SIGINT)
        if runner is not None:
            runner.cancel()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, interrupt)
    from everyskill.database import app_engine

    engine = app_engine()
    router: ModelRouter | None = None
    try:
        try:
            if options.concurrency < 1:
                raise ValidationError.of("concurrency", "must be at least 1")
            cases = load_cases(options.cases)
            _models_option(options.models)  # names checked before the database is touched
            _judge_model(options)
            # The keys are checked before a run is created (--models named).
            router = _router(options, []) if options.models else None
            await engine.start_connection_pool(min_size=1, max_size=options.concurrency + 2)
            target = await _target(options, cases)
            if router is None:
                router = _router(options, target.models)
        except EverySkillError as error:
            err.print(f"run_benchmark: {error}", markup=False, highlight=False)
            if router is not None:
                await router.aclose()
            return EXIT_USAGE
        from everyskill.judge import ModelJudge

        judge_model = _judge_model(options)
        scorer: Scorer | ModelJudge = (
            default_scorer if judge_model is None else ModelJudge(router, judge_model)
        )
        resume = _resume_command(options, target.run_id)
        if interrupted.is_set():
            err.print(
                f"Interrupted before run {target.run_id} started. Resume it with:\n  {resume}",
                markup=False, highlight=False, soft_wrap=True,
            )
            await router.aclose()
            return EXIT_INTERRUPTED
        err.print(
            f"{'Resuming' if target.resumed else 'Created'} benchmark run {target.run_id}:"
            f" {len(target.models)} models x {len(cases)} cases"
            + (f", judged by {judge_model}" if judge_model else ""),
            markup=False, highlight=False,
        )
        async with router:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[errors]} failed"),
                TimeElapsedColumn(),
                console=err,
            ) as bar:
                # The errors an earlier runner recorded count from the start.
                errors = target.errors
                task = bar.add_task("cases", total=len(target.models) * len(cases), errors=errors)

                def advance(progress: RunProgress) -> None:
                    nonlocal errors
                    errors += bool(progress.error)
                    bar.update(task, completed=progress.done, total=progress.total, errors=errors)

                runner = asyncio.create_task(
                    run_benchmark(
                        target.tenant_id, target.run_id, router, cases,
                        scorer=scorer, concurrency=options.concurrency,
                        on_progress=advance, resumable=True,
                    )
                )
                try:
                    run = await runner
                except asyncio.CancelledError:
                    if not interrupted.is_set():
                        raise
                    run = None
        if run is None:
            async with tenant_scope(target.tenant_id):
                done = len(await benchmarks.recorded_cases(target.run_id))
            err.print(
                f"Interrupted: {done} of {len(target.models) * len(cases)} results recorded;"
                f" run {target.run_id} stays running. Resume it with:\n  {resume}",
                markup=False, highlight=False, soft_wrap=True,
            )
            return EXIT_INTERRUPTED
        summary = await _print_summary(target.tenant_id, target.run_id, out, judge_model is not None)
        if run.status != "completed":
            return EXIT_FAILED
        # Failed calls: the models' (error results) and the judge's (answers
        # it could not score).
        failed = sum(
            model.errors + (model.unscored if judge_model is not None else 0) for model in summary
        )
        return EXIT_ERRORS if failed else EXIT_COMPLETED
    except Exception as error:  # the runner stopped: it failed the run
        err.print(f"run_benchmark: the run stopped: {type(error).__name__}: {error}", markup=False, highlight=False)
        return EXIT_FAILED
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)
        if engine.pool is not None:
            await engine.close_connection_pool()


async def run_benchmark_command(
    tenant: str = "",
    skill: str = "",
    models: str = "",
    cases: str = "",
    judge: str = "",
    concurrency: str = "4",
    user: str = "",
    version: str = "",
    resume: str = "",
    anthropic_base_url: str = "",
    openai_base_url: str = "",
    openai_provider: str = "",
    max_retries: str = "2",
    timeout: str = "120",
    deadline: str = "600",
    max_tokens: str = "1024",
    **_others: str,
) -> None:
    """Run a skill against models over test cases; show the best and the
    cheapest. Keys come from ANTHROPIC_API_KEY and OPENAI_API_KEY. Exit
    codes: 0 completed, 3 completed with failed calls, 1 failed, 2 bad
    input, 130 interrupted (resume with --resume RUN_ID).

    :param tenant:
        The tenant's slug (or id).
    :param skill:
        The skill's slug (or id).
    :param models:
        Comma-separated models: claude-*, gpt-*, o1/o3/o4, or provider:name
        (anthropic:... or openai:... for an OpenAI-compatible server).
    :param cases:
        A JSON Lines file: {"input": ..., "expected_output": ...} per line.
    :param judge:
        The model that grades the answers 0-100; none: text similarity.
    :param concurrency:
        Model calls at a time (4).
    :param user:
        Who runs it: an email or id of the tenant; none: the skill's author.
    :param version:
        The skill's version to run; none: the latest.
    :param resume:
        The id of an interrupted run to resume.
    :param anthropic_base_url:
        Anthropic's API address (else ANTHROPIC_BASE_URL, else Anthropic's).
    :param openai_base_url:
        An OpenAI-compatible server (else OPENAI_BASE_URL, else OpenAI's).
    :param openai_provider:
        The provider that server's models are priced as (openai).
    :param max_retries:
        Retries of a rate-limited or overloaded call (2).
    :param timeout:
        Seconds an attempt waits for an answer (120).
    :param deadline:
        Seconds a call may take, retries included (600).
    :param max_tokens:
        The most tokens an answer may have (1024).
    """
    # Piccolo's command line (targ) takes --option=value only, and maps the
    # words of "--option value" by position: the options are read from the
    # command line itself, so that both forms mean what they say.
    argv = sys.argv
    given = argv[argv.index(_COMMAND) + 1 :] if _COMMAND in argv else []
    code = await main(given)
    if code:
        raise SystemExit(code)
