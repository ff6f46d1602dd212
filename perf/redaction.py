"""``python -m perf.redaction``: the speed of secret redaction.

A benchmark of its own, outside ``python -m perf``: it needs no database,
and it runs the scanner this project used before the rule set (the module
as of :data:`PREVIOUS_COMMIT`, read from git history) in the same process
as :func:`everyskill.redaction.redact`, so both are timed on the same
machine at the same moment.

Figures:

- ``comment``: redacting one comment of 1 KB (feedback prose, a third of
  them with one secret in them), p50 and p99 over ``--comments`` comments,
  each timed once per round for ``--rounds`` rounds, the two scanners
  interleaved. Reported against the previous scanner's; no target (the
  rule set does more: its cost is reported, not judged).
- ``growth``: each input family of :data:`FAMILIES` at 25,000 and 100,000
  characters, best of three: target 0.25 s at 100,000 characters (the
  longest a field may be). The families are the tests' crafted inputs
  (:mod:`perf.redaction_inputs`); the tests check that their time grows
  linearly.

The results are printed and written to ``perf/results/redaction.json`` and
``redaction.md`` (``--out`` to choose the directory). Without git or
without that commit, the previous scanner is left out and said so.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from everyskill.redaction import redact
from perf.redaction_inputs import CRAFTED

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The last commit of the hand-written scanner (24 kinds, no rule set).
PREVIOUS_COMMIT = "d61679e0cf7fa3c281201169ad93c8e4f2bdb90c"
GROWTH_BOUND_SECONDS = 0.25
COMMENT_CHARS = 1024

_PROSE = (
    "The summarise skill dropped the last table of the PDF again. "
    "It answered in French although the prompt was in English. "
    "Please add a setting for the output length; 300 tokens is too short. "
    "The token count was 4,812 for a two-page document, which seems high. "
    "I had to reset my password before the skill could reach the drive. "
    "Correction: the total should be 1,204.50 EUR, not 1,240.50 EUR. "
    "See https://docs.python.org/3/library/secrets.html for the details. "
)


def _secret(rng: random.Random) -> str:
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

    def run(length: int) -> str:
        return "".join(rng.choice(alnum) for _ in range(length))

    return rng.choice(
        [
            f"export GITHUB_TOKEN=ghp_{run(36)}",
            f'mailgun_api_key = "key-{run(32).lower()}"',
            f"curl -H 'Authorization: Bearer {run(40)}' https://api.example.com/v1",
            f"DATABASE_URL=postgres://app:{run(16)}@db.internal:5432/app",
            f"SLACK_BOT_TOKEN ?= xoxb-{rng.randrange(10**11, 10**12)}-"
            f"{rng.randrange(10**12, 10**13)}-{run(24)}",
        ]
    )


def comments(count: int, seed: int = 16) -> list[str]:
    """``count`` comments of :data:`COMMENT_CHARS` characters; every third
    one holds a secret in its middle."""
    rng = random.Random(seed)
    made: list[str] = []
    for index in range(count):
        words = _PROSE.split(" ")
        rng.shuffle(words)
        prose = " ".join(words * 3)
        if index % 3 == 0:
            secret = _secret(rng)
            half = (COMMENT_CHARS - len(secret)) // 2
            text = prose[:half] + "\n" + secret + "\n" + prose[half:]
        else:
            text = prose
        made.append(text[:COMMENT_CHARS].ljust(COMMENT_CHARS, "."))
    return made


#: Input families: every crafted input of the tests (the rule set's keywords
#: and prefixes packed densely, the own detectors' tell-tales, prose).
FAMILIES: dict[str, Callable[[int], str]] = CRAFTED


def previous_scanner() -> ModuleType | None:
    """The scanner as of :data:`PREVIOUS_COMMIT`, or None without it."""
    try:
        source = subprocess.run(
            ["git", "show", f"{PREVIOUS_COMMIT}:everyskill/redaction.py"],
            cwd=PROJECT_ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    directory = Path(tempfile.mkdtemp(prefix="redaction-previous-"))
    path = directory / "redaction_previous.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("redaction_previous", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["redaction_previous"] = module
    spec.loader.exec_module(module)
    return module


def _quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def time_comments(
    scanners: dict[str, Callable[[str], object]], texts: list[str], rounds: int
) -> dict[str, dict[str, float]]:
    timings: dict[str, list[float]] = {name: [] for name in scanners}
    for text in texts[:20]:  # warm-up: the engine's first call loads it
        for scan in scanners.values():
            scan(text)
    for round_number in range(rounds):
        order = list(scanners.items())
        if round_number % 2:
            order.reverse()
        for text in texts:
            for name, scan in order:
                started = time.perf_counter()
                scan(text)
                timings[name].append(time.perf_counter() - started)
    return {
        name: {
            "p50_ms": statistics.median(values) * 1e3,
            "p99_ms": _quantile(values, 0.99) * 1e3,
            "mean_ms": statistics.fmean(values) * 1e3,
        }
        for name, values in timings.items()
    }


def _best(scan: Callable[[str], object], text: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        scan(text)
        best = min(best, time.perf_counter() - started)
    return best


def time_growth(
    scanners: dict[str, Callable[[str], object]],
) -> dict[str, dict[str, dict[str, float]]]:
    results: dict[str, dict[str, dict[str, float]]] = {}
    for family, make in FAMILIES.items():
        short, long = make(25_000), make(100_000)
        results[family] = {
            name: {"25k_s": _best(scan, short), "100k_s": _best(scan, long)}
            for name, scan in scanners.items()
        }
    return results


def report(result: dict[str, Any]) -> str:
    lines = [
        "# Redaction benchmark",
        "",
        f"date: {result['date']}, Python: {result['python']}, CPUs: {result['cpus']}, "
        f"comments: {result['comments']} × {result['rounds']} rounds",
        "",
        "## One comment of 1 KB",
        "",
        "| scanner | p50 | p99 | mean |",
        "|---|---|---|---|",
    ]
    for name, figures in result["comment"].items():
        lines.append(
            f"| {name} | {figures['p50_ms']:.3f} ms | {figures['p99_ms']:.3f} ms "
            f"| {figures['mean_ms']:.3f} ms |"
        )
    lines += [
        "",
        f"## Growth: 25,000 -> 100,000 characters (target: current ≤ "
        f"{GROWTH_BOUND_SECONDS} s at 100,000)",
        "",
        "| family | " + " | ".join(f"{name} 25k | {name} 100k" for name in result["scanners"]) + " | met |",
        "|---|" + "---|---|" * len(result["scanners"]) + "---|",
    ]
    for family, by_scanner in result["growth"].items():
        cells = " | ".join(
            f"{by_scanner[name]['25k_s'] * 1e3:.1f} ms | {by_scanner[name]['100k_s'] * 1e3:.1f} ms"
            for name in result["scanners"]
        )
        met = by_scanner["current"]["100k_s"] <= GROWTH_BOUND_SECONDS
        lines.append(f"| {family} | {cells} | {'yes' if met else 'MISSED'} |")
    if result["note"]:
        lines += ["", result["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.redaction", description=__doc__)
    parser.add_argument("--comments", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "perf" / "results")
    args = parser.parse_args(argv)

    scanners: dict[str, Callable[[str], object]] = {"current": redact}
    previous = previous_scanner()
    note = ""
    if previous is not None:
        scanners["previous"] = previous.redact
    else:
        note = f"The previous scanner (commit {PREVIOUS_COMMIT[:12]}) was not found: left out."

    texts = comments(args.comments)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        comment = time_comments(scanners, texts, args.rounds)
        growth = time_growth(scanners)
    finally:
        if gc_was_enabled:
            gc.enable()
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "comments": args.comments,
        "rounds": args.rounds,
        "scanners": list(scanners),
        "comment": comment,
        "growth": growth,
        "growth_bound_s": GROWTH_BOUND_SECONDS,
        "growth_met": all(
            figures["current"]["100k_s"] <= GROWTH_BOUND_SECONDS for figures in growth.values()
        ),
        "note": note,
    }
    text = report(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redaction.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "redaction.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
