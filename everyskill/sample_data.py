"""Sample data: two tenants of a product, to look at in the admin.

Contract
--------
- :func:`load_sample_data` fills an empty database (no tenant yet) with:

  - two tenants, each with four users;
  - five skills each (ten in all), with one to three versions;
  - about 150 feedback items each, of every type and every review status,
    some of them carrying secrets that were redacted before they were
    stored;
  - about 2,500 token measurements each over six weeks, across five models
    of two providers, a few of a model no price table knows (their cost is
    NULL); one tenant has negotiated its own price for one model;
  - completed benchmark runs with their results, a failed run and a
    pending one.

  Everything but the tenants is written through the query API, as the
  application writes it (so redaction, pricing and the aggregates apply);
  only the creation times are then spread over the past weeks, as the
  owner. The same ``seed`` gives the same contents (ids and times aside).
- On a database that already has a tenant it does nothing and returns
  None, unless ``force=True`` (which adds two more tenants).
- It needs Piccolo's engine (``piccolo_conf.DB``), its pool started or not,
  and must be called outside a tenant scope.
- ``piccolo everyskill sample_data`` runs it on its own; ``main.py`` runs it
  when the database is empty.
"""

from __future__ import annotations

import datetime
import random
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from piccolo.engine.postgres import PostgresEngine

from everyskill import benchmarks, catalogue, feedback, pricing, usage
from everyskill.benchmark_runner import OfflineModelClient, TestCase, run_benchmark
from everyskill.tenancy import refuse_inside_scope, tenant_scope
from tables import FeedbackStatus

__all__ = ["SampleData", "load_sample_data", "sample_data"]

#: How far back the sample's creation times reach.
HISTORY = datetime.timedelta(weeks=6)

TENANTS = [("Acme Robotics", "acme-robotics"), ("Globex Health", "globex-health")]
USERS = [
    ("Ada Lovelace", "ada"),
    ("Grace Hopper", "grace"),
    ("Alan Turing", "alan"),
    ("Katherine Johnson", "katherine"),
]

# (slug, name, description, versions' content)
SKILLS = [
    ("review-code", "Review code", "Reviews a diff for bugs, style and risk.", [
        "Review the diff. List bugs first, then risky changes.",
        "Review the diff. List bugs first, then risky changes, then style. Be brief.",
    ]),
    ("write-tests", "Write tests", "Writes pytest tests for a function.", [
        "Write pytest tests for the function, covering edge cases.",
    ]),
    ("summarise-incident", "Summarise an incident", "Turns an incident log into a summary.", [
        "Summarise the incident: impact, cause, timeline, follow-ups.",
        "Summarise the incident in five bullet points: impact, cause, timeline, "
        "follow-ups, owner.",
        "Summarise the incident in five bullet points; quote error messages exactly.",
    ]),
    ("draft-release-notes", "Draft release notes", "Drafts release notes from merged PRs.", [
        "Draft release notes grouped by feature, fix and chore.",
    ]),
    ("explain-sql", "Explain SQL", "Explains what a SQL query does and how it performs.", [
        "Explain the query in plain words, then its likely plan.",
        "Explain the query in plain words, then its likely plan and missing indexes.",
    ]),
    ("triage-ticket", "Triage a ticket", "Labels and routes a support ticket.", [
        "Label the ticket (bug, question, feature) and name the team that owns it.",
    ]),
    ("translate-ui", "Translate UI strings", "Translates interface strings, keeping placeholders.", [
        "Translate the strings; keep {placeholders} and HTML tags as they are.",
    ]),
    ("refactor-python", "Refactor Python", "Suggests a refactoring of a Python module.", [
        "Suggest one refactoring at a time, with a diff.",
        "Suggest one refactoring at a time, with a diff and the tests it needs.",
    ]),
    ("answer-faq", "Answer FAQ", "Answers customer questions from the FAQ.", [
        "Answer from the FAQ only; say when the FAQ has no answer.",
    ]),
    ("check-accessibility", "Check accessibility", "Checks a page's HTML for WCAG issues.", [
        "List WCAG 2.2 issues of the HTML with the criterion of each.",
    ]),
]

# (provider, model, share of the calls)
MODELS = [
    ("anthropic", "claude-sonnet-4-5", 0.40),
    ("anthropic", "claude-haiku-4-5", 0.30),
    ("anthropic", "claude-opus-4-1", 0.08),
    ("openai", "gpt-4o", 0.12),
    ("openai", "gpt-4o-mini", 0.08),
    # A model of the tenant's own, which no price table knows.
    ("acme", "acme-internal-7b", 0.02),
]

COMMENTS = [
    "Exactly what I needed.",
    "Too verbose for a quick review.",
    "Missed the off-by-one in the loop.",
    "Great summary, the timeline was spot on.",
    "It ignored the placeholders in two strings.",
    "Worked well on a 2,000-line diff.",
    "The answer invented a FAQ entry.",
    "Could you make it mention the owner team?",
]
# Comments that carry a secret, as users paste them; stored redacted.
LEAKY_COMMENTS = [
    "It failed on our config: aws_access_key_id = " + "AKIA" + "IOSFODNN7EXAMPLQ",
    "Reproduce with DATABASE_URL=postgresql://app:" + "S3cr3t-pass" + "@db.internal:5432/app",
    "The token in the log was ghp_" + "1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R",
]
SUGGESTIONS = [
    ("suggested_content", "Start with a one-line verdict, then the details."),
    ("suggested_diff", "- List bugs first.\n+ List bugs first, with file and line.\n"),
    ("suggested_content", "Ask for the team's style guide before reviewing style."),
]
EXAMPLES = [
    ("def area(r): return 3.14 * r * r", "Use math.pi instead of 3.14.", "Looks fine."),
    ("SELECT * FROM orders WHERE created_at > now() - interval '1 day'",
     "Scans orders by created_at; an index on created_at helps.", "Reads all orders."),
    ("Ticket: app crashes when I upload a 2 GB file", "bug; team: storage", "question; team: web"),
    ("Translate: 'Hello, {name}!' to French", "Bonjour, {name} !", "Bonjour, {nom} !"),
]
BUGS = [
    "Crashes on an empty diff.",
    "Returns Markdown tables the ticket tool cannot render.",
    "Drops the last bullet point when the log is long.",
]
TEST_CASES = [
    TestCase("What does `git rebase --onto` do?", "It moves a branch onto another base."),
    TestCase("Is `x == None` good Python?", "No: use `x is None`."),
    TestCase("Name the HTTP status for a missing resource.", "404 Not Found."),
    TestCase("What does EXPLAIN ANALYZE add to EXPLAIN?", "It runs the query and adds timings."),
    TestCase("Which WCAG criterion covers text contrast?", "1.4.3 Contrast (Minimum)."),
    TestCase("What is the French for 'thank you'?", "Merci."),
]
BENCHMARK_MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "gpt-4o"]
PROVIDERS = {model: provider for provider, model, _share in MODELS}


@dataclass(frozen=True)
class SampleData:
    """What :func:`load_sample_data` wrote, by tenant id."""

    tenant_ids: tuple[str, ...]
    feedback: int
    measurements: int
    benchmark_runs: int


def _default_engine() -> PostgresEngine:
    from tables import Tenant

    engine = Tenant._meta.db
    assert isinstance(engine, PostgresEngine)
    return engine


async def load_sample_data(*, seed: int = 20261125, force: bool = False) -> SampleData | None:
    """Fill an empty database with sample data; see the module's contract."""
    refuse_inside_scope("load the sample data outside a tenant scope")
    engine = _default_engine()
    rng = random.Random(seed)
    async with engine.transaction() as transaction:
        owner: asyncpg.Connection = transaction.connection
        if not force and await owner.fetchval("SELECT EXISTS (SELECT FROM tenants)"):
            return None
        tenant_ids = []
        for name, slug in TENANTS:
            if force:
                slug = f"{slug}-{uuid.uuid4().hex[:6]}"
            tenant_ids.append(
                await owner.fetchval(
                    "INSERT INTO tenants (name, slug) VALUES ($1, $2) RETURNING id", name, slug
                )
            )
    counts = [0, 0, 0]
    now = datetime.datetime.now(datetime.timezone.utc)
    for number, tenant_id in enumerate(tenant_ids):
        skills = SKILLS[number * 5 : number * 5 + 5]
        users, skill_ids = await _catalogue(tenant_id, skills, rng)
        counts[0] += await _feedback(tenant_id, users, skill_ids, rng)
        counts[1] += await _measurements(tenant_id, users, skill_ids, rng, negotiated=number == 1)
        counts[2] += await _benchmarks(tenant_id, users, skill_ids, rng, f"{seed}-{number}")
    await _spread_over_history(engine, tenant_ids, now, rng)
    return SampleData(tuple(tenant_ids), *counts)


async def _catalogue(
    tenant_id: str, skills: list[Any], rng: random.Random
) -> tuple[list[str], list[str]]:
    """The tenant's users, skills and versions, through the catalogue API."""
    async with tenant_scope(tenant_id) as scope:
        domain = (await scope.connection.fetchval("SELECT slug FROM tenants")) + ".example.com"
        users = [
            (await catalogue.create_user(email=f"{handle}@{domain}", name=name)).row.id
            for name, handle in USERS
        ]
        skill_ids = []
        for slug, name, description, versions in skills:
            author = rng.choice(users)
            skill = await catalogue.create_skill(
                slug=slug, name=name, description=description, author_id=author
            )
            for version, content in enumerate(versions, start=1):
                await catalogue.publish_version(
                    skill.row.id,
                    content=content,
                    changelog=None if version == 1 else f"Version {version}: clearer instructions.",
                    author_id=author,
                )
            skill_ids.append(skill.row.id)
    return users, skill_ids


async def _feedback(
    tenant_id: str, users: list[str], skill_ids: list[str], rng: random.Random
) -> int:
    """About 150 feedback items of every type, a third of them reviewed."""
    kinds = ["thumbs_up"] * 6 + ["thumbs_down"] * 3 + [
        "suggestion", "training_example", "training_example", "bug_report"
    ]
    written = 0
    async with tenant_scope(tenant_id):
        for index in range(150):
            kind = kinds[index % len(kinds)] if index < len(kinds) else rng.choice(kinds)
            fields: dict[str, Any] = {
                "skill_id": rng.choice(skill_ids),
                "feedback_type": kind,
                "user_id": rng.choice(users + [None]),
                "source": rng.choice(["web", "web", "mcp", "hook", "api"]),
            }
            if kind in ("thumbs_up", "thumbs_down") and rng.random() < 0.4:
                fields["comment"] = rng.choice(COMMENTS)
            if kind == "suggestion":
                name, text = rng.choice(SUGGESTIONS)
                fields[name] = text
            if kind == "training_example":
                given, wanted, produced = rng.choice(EXAMPLES)
                fields.update(example_input=given, expected_output=wanted, example_output=produced,
                              quality_score=rng.randint(4, 10))
            if kind == "bug_report":
                fields["comment"] = rng.choice(BUGS)
            if index % 25 == 7:
                fields["comment"] = LEAKY_COMMENTS[(index // 25) % len(LEAKY_COMMENTS)]
                if kind in ("thumbs_up", "thumbs_down", "suggestion", "training_example"):
                    fields["feedback_type"] = "bug_report"
                    for name in ("suggested_content", "suggested_diff", "example_input",
                                 "expected_output", "example_output"):
                        fields.pop(name, None)
            saved = await feedback.record_feedback(**fields)
            written += 1
            if saved.row.feedback_type in ("thumbs_up", "thumbs_down") or rng.random() < 0.45:
                continue  # thumbs and most of the rest stay pending
            reviewer = rng.choice(users)
            accepted = rng.random() < 0.65
            await feedback.review_feedback(
                saved.row.id, reviewer_id=reviewer,
                decision=FeedbackStatus.accepted if accepted else FeedbackStatus.dismissed,
                notes="Useful, planned for the next version." if accepted else "Not reproducible.",
            )
            if accepted and rng.random() < 0.4:
                await feedback.mark_implemented(
                    saved.row.id, reviewer_id=reviewer, notes="Shipped in the latest version."
                )
    return written


async def _measurements(
    tenant_id: str, users: list[str], skill_ids: list[str], rng: random.Random, *,
    negotiated: bool,
) -> int:
    """About 2,500 measurements in one batch; one tenant has its own price."""
    models = [(provider, model) for provider, model, _ in MODELS]
    weights = [share for _, _, share in MODELS]
    rows = []
    for _ in range(2500):
        provider, model = rng.choices(models, weights)[0]
        cached = rng.random() < 0.3
        rows.append({
            "skill_id": rng.choice(skill_ids),
            "user_id": rng.choice(users),
            "model_provider": provider,
            "model_name": model,
            "input_tokens": rng.randint(300, 6000),
            "output_tokens": rng.randint(50, 1500),
            "cache_read_tokens": rng.randint(1000, 20000) if cached else None,
            "cache_write_tokens": rng.randint(500, 4000) if cached and rng.random() < 0.2 else None,
            "latency_ms": int(rng.lognormvariate(7, 0.5)),
            "usage_event_id": f"evt-{rng.getrandbits(48):012x}",
            "source": rng.choice(["hook", "hook", "mcp", "api"]),
        })
    async with tenant_scope(tenant_id):
        if negotiated:
            await pricing.set_model_price(
                "claude-sonnet-4-5", model_provider="anthropic",
                input_microcents_per_token=pricing.usd_per_mtok("2.40"),
                output_microcents_per_token=pricing.usd_per_mtok("12"),
                note="Enterprise agreement, 20% off list price.",
            )
        saved = await usage.record_measurements(rows)
    return saved.count


async def _benchmarks(
    tenant_id: str, users: list[str], skill_ids: list[str], rng: random.Random, seed: str
) -> int:
    """Two completed runs, a failed one and a pending one."""
    client = OfflineModelClient(
        answers={case.input: case.expected_output or "" for case in TEST_CASES},
        accuracy={"claude-sonnet-4-5": 0.85, "claude-haiku-4-5": 0.6, "gpt-4o": 0.75},
        providers=PROVIDERS,
        seed=seed,
    )
    runs = 0
    for skill_id in skill_ids[:2]:
        async with tenant_scope(tenant_id):
            run = (await benchmarks.create_run(
                skill_id=skill_id, models=BENCHMARK_MODELS, triggered_by=rng.choice(users)
            )).row
        await run_benchmark(tenant_id, run.id, client, TEST_CASES, concurrency=3)
        runs += 1
    async with tenant_scope(tenant_id):
        failed = (
            await benchmarks.create_run(
                skill_id=skill_ids[2], models=BENCHMARK_MODELS[:2], triggered_by=users[0]
            )
        ).row
        await benchmarks.start_run(failed.id)
        await benchmarks.fail_run(failed.id, error_message="Provider quota exceeded (HTTP 429).")
        await benchmarks.create_run(
            skill_id=skill_ids[3], models=BENCHMARK_MODELS, triggered_by=users[1]
        )
    return runs + 2


async def _spread_over_history(
    engine: PostgresEngine, tenant_ids: list[str], now: datetime.datetime, rng: random.Random
) -> None:
    """Move the creation times of the sample's rows back over :data:`HISTORY`,
    keeping each row's order of events (created before reviewed, started,
    completed). As the owner: the API stamps rows with the present."""
    seconds = int(HISTORY.total_seconds())
    async with engine.transaction() as transaction:
        owner: asyncpg.Connection = transaction.connection
        for table in ("token_measurements", "skill_feedback"):
            ids = [
                row["id"]
                for row in await owner.fetch(
                    f"SELECT id FROM {table} WHERE tenant_id = ANY($1::text[]) ORDER BY id",
                    tenant_ids,
                )
            ]
            ages = [rng.randint(60, seconds) for _ in ids]
            await owner.execute(
                f"""
                UPDATE {table} t SET created_at = $2::timestamptz - make_interval(secs => a.age)
                  FROM unnest($1::text[], $3::int[]) AS a(id, age)
                 WHERE t.id = a.id
                """,
                ids, now, ages,
            )
        # Reviews happened after the feedback was given: within two days of it.
        await owner.execute(
            """
            UPDATE skill_feedback
               SET reviewed_at = least(
                       created_at + (abs(hashtext(id)) % 172800) * interval '1 second', $2)
             WHERE tenant_id = ANY($1::text[]) AND reviewed_at IS NOT NULL
            """,
            tenant_ids, now,
        )
        for table in ("users", "skills", "skill_versions"):
            await owner.execute(
                f"UPDATE {table} SET created_at = $2::timestamptz - $3::interval"
                " WHERE tenant_id = ANY($1::text[])",
                tenant_ids, now, HISTORY + datetime.timedelta(days=1),
            )


async def sample_data(force: bool = False) -> None:
    """Load the sample data into a database without tenants.

    :param force:
        Load it even when the database has tenants (two more are added).
    """
    loaded = await load_sample_data(force=force)
    if loaded is None:
        print("The database already has tenants: nothing loaded (--force adds more).")
        return
    print(
        f"Loaded {len(loaded.tenant_ids)} tenants: {loaded.feedback} feedback items,"
        f" {loaded.measurements} token measurements, {loaded.benchmark_runs} benchmark runs."
    )
