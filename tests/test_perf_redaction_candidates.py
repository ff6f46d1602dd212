"""``python -m perf.redaction_candidates`` runs every candidate and writes
its table (``--quick``: a slice of the corpora; figures are reported by it,
not judged here), and its run of gitleaks' rules follows gitleaks'
semantics."""

from __future__ import annotations

import json
from pathlib import Path

from perf import redaction_candidates as candidates

CANDIDATES = {"previous", "detect-secrets", "gitleaks", "betterleaks", "chosen"}


def test_the_candidates_benchmark_runs(tmp_path: Path) -> None:
    assert candidates.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "redaction_candidates.json").read_text())
    assert result["quick"] and result["note"] == ""
    figures = result["candidates"]
    assert set(figures) == CANDIDATES
    for name, row in figures.items():
        assert 0 <= row["worst_recall"] <= row["recall"] <= 1, name
        assert row["secrets"] == candidates.QUICK_FORMATS * result["syntaxes"], name
        assert 0 <= row["benign_unchanged_share"] <= 1, name
        assert 0 < row["p50_ms"] <= row["p99_ms"], name
        assert row["packages"] and all(package["bytes"] for package in row["packages"]), name
    # The corpus's formats are caught by the chosen scanner (the tests' own
    # figure); each rule set alone misses some syntaxes.
    assert figures["chosen"]["recall"] >= 0.98
    assert figures["chosen"]["benign_unchanged_share"] >= 0.98
    assert figures["betterleaks"]["recall"] > 0.5 and figures["gitleaks"]["recall"] > 0.5
    table = (tmp_path / "redaction_candidates.md").read_text()
    for row in figures.values():
        assert f"| {row['description']} |" in table
    assert "QUICK" in table


def test_found_means_covered_by_a_replaced_span() -> None:
    text = "a = 'abcdefghijklmnop'"
    assert candidates.replace_spans(text, [(5, 21), (7, 12)]) == "a = '[REDACTED:secret]'"
    assert candidates.replace_spans(text, []) == text


_RULES = """
[allowlist]
regexes = ['''^EXAMPLE''']
stopwords = ['''notreal''']

[[rules]]
id = "demo-token"
regex = '''(?i)demo[_-]?token\\s*=\\s*([a-z0-9]{16})'''
keywords = ["demo"]
entropy = 3.0

[[rules]]
id = "grouped"
regex = '''(x)-(grp_[a-z]{8})'''
secretGroup = 2
keywords = ["grp_"]
[[rules.allowlists]]
regexTarget = "line"
regexes = ['''skip-this-line''']

[[rules]]
id = "gated"
regex = '''gated_[a-z0-9]{12}'''
keywords = ["needle"]

[[rules]]
id = "plaid-client-id"
regex = '''plaid_[a-z0-9]{12}'''
keywords = ["plaid"]

[[rules]]
id = "needs-a-file"
regex = '''file_[a-z]{8}'''
path = '''\\.env$'''
keywords = ["file_"]
"""


def test_gitleaks_semantics(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(_RULES)
    rules = candidates.GitleaksRules(path)
    assert [rule.id for rule in rules.rules] == ["demo-token", "grouped", "gated"]
    assert rules.skipped == ["needs-a-file"]
    # An identifier rule (as in everyskill.secret_rules.IGNORED_RULES) is not run.
    assert rules.ignored == ["plaid-client-id"]
    assert rules.spans("plaid_q8w7e6r5t4y3") == []

    text = "DEMO_TOKEN = q8w7e6r5t4y3u2i1"
    # The keyword is matched case-insensitively; the secret is the group.
    assert rules.spans(text) == [(13, 29)]
    # Low entropy, an allow-listed secret, a stop word, the allow signature.
    assert rules.spans("demo_token = aaaaaaaabbbbbbbb") == []
    assert rules.spans("demo_token = EXAMPLEq8w7e6r5t") == []
    assert rules.spans("demo_token = q8notreal7e6r5t4") == []
    assert rules.spans(text + " # gitleaks:allow") == []
    # No keyword, no run: the pre-filter decides before the regex (which
    # does not hold the keyword).
    assert rules.spans("gated_q8w7e6r5t4y3") == []
    assert rules.spans("NEEDLE gated_q8w7e6r5t4y3") == [(7, 25)]
    # secretGroup; an allow-list on the line.
    assert rules.spans("x-grp_abcdefgh") == [(2, 14)]
    assert rules.spans("x-grp_abcdefgh skip-this-line") == []
    # A rule with a path never runs on a text.
    assert rules.spans("file_abcdefgh") == []


def test_shannon_entropy_is_gitleaks() -> None:
    assert candidates.shannon_entropy("") == 0
    assert candidates.shannon_entropy("aaaa") == 0
    assert candidates.shannon_entropy("abcd") == 2
