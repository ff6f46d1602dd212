"""
Redaction on a corpus built from public material (tests/public_corpus.py):
the token formats of at least 200 providers (tests/public_secret_formats.py
says where they come from), each written in every syntax of
``public_corpus.SYNTAXES``; and benign texts of the same syntaxes and of
feedback prose that must come back byte for byte.

A secret counts as caught when something was redacted and no piece of it of
8 characters or more is left. Recall is asserted overall and for each
syntax (each names the variable after the provider), and measured without a
secret-sounding name (in prose, or a neutral variable) against a floor; the
figures are printed (``pytest -s``).
"""

from __future__ import annotations

import random
import subprocess
import tomllib
from collections import Counter
from pathlib import Path

import betterleaks
import pytest
from betterleaks._lib import get_binding

from everyskill import secret_rules
from everyskill.redaction import KINDS, redact
from tests import public_corpus as corpus

OVERALL_RECALL = 0.98
SYNTAX_RECALL = 0.98
BENIGN_UNCHANGED = 0.99
MIN_PROVIDERS = 200
MIN_SYNTAXES = 10
MIN_BENIGN = 500
#: Redactions that leave a piece of 8 or more characters of the secret.
MAX_LEFTOVERS = 0


def test_the_corpus_is_as_wide_as_promised() -> None:
    cases = corpus.secret_cases()
    providers = {case.provider for case in cases}
    assert len(providers) >= MIN_PROVIDERS
    syntaxes_of: dict[str, set[str]] = {}
    for case in cases:
        syntaxes_of.setdefault(case.provider, set()).add(case.syntax)
    assert min(len(syntaxes) for syntaxes in syntaxes_of.values()) >= MIN_SYNTAXES
    assert len(corpus.benign_texts()) >= MIN_BENIGN
    assert corpus.secret_cases() == cases  # seeded


def test_tokens_follow_their_format() -> None:
    # The generator makes what a row says, and nothing of a detector's.
    rng = random.Random(1)
    value = corpus.token(("ghp_", ("0-9A-Za-z", 36)), rng)
    assert value.startswith("ghp_") and len(value) == 40 and value[4:].isalnum()
    assert corpus._alphabet("-0-9a-f") == "-0123456789abcdef"


def test_leftovers_are_found() -> None:
    text = 'TOKEN="abcdefghijklmnop1234"'
    assert corpus.leftovers("abcdefghijklmnop1234", text, 'TOKEN="[REDACTED:x]1234"') == []
    assert corpus.leftovers("abcdefghijklmnop1234", text, 'TOKEN="[REDACTED:x]mnop1234"') == [
        "mnop1234"
    ]


def test_public_corpus_recall_and_benign_texts(capsys: pytest.CaptureFixture[str]) -> None:
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    with_leftovers: list[str] = []
    for case in corpus.secret_cases():
        result = redact(case.text)
        total[case.syntax] += 1
        left = corpus.leftovers(case.token, case.text, result.text)
        if result.found and not left:
            caught[case.syntax] += 1
        else:
            missed[case.rule] += 1
            if result.found:
                with_leftovers.append(f"{case.rule} in {case.syntax}")
        assert set(result.found) <= KINDS

    benign = corpus.benign_texts()
    changed: Counter[str] = Counter()
    for text in benign:
        result = redact(text)
        if result.text != text:
            changed.update(result.found)
        else:
            assert not result.found
    unchanged = 1 - sum(1 for text in benign if redact(text).text != text) / len(benign)

    recall = sum(caught.values()) / sum(total.values())
    by_syntax = {syntax: caught[syntax] / total[syntax] for syntax in total}
    with capsys.disabled():
        print(
            f"\npublic corpus: {sum(total.values())} secrets of "
            f"{len(corpus.FORMATS)} formats, recall {recall:.4f}; "
            f"{len(benign)} benign texts, unchanged {unchanged:.4f}"
        )
        for syntax, share in by_syntax.items():
            print(f"  {syntax:<14} recall {share:.3f} ({caught[syntax]}/{total[syntax]})")
        if missed:
            print(f"  missed, by rule: {dict(missed.most_common())}")
        if changed:
            print(f"  benign texts changed, by kind reported: {dict(changed)}")
        if with_leftovers:
            print(f"  redacted but with a piece of 8+ characters left: {with_leftovers}")

    assert recall >= OVERALL_RECALL, missed
    assert min(by_syntax.values()) >= SYNTAX_RECALL, by_syntax
    assert unchanged >= BENIGN_UNCHANGED, dict(changed)
    assert len(with_leftovers) <= MAX_LEFTOVERS, with_leftovers


#: Without a secret-sounding name, a token is found only by its own shape
#: (a provider's prefix, a known format); many formats are bare random
#: strings. Measured, not a target: a floor just under the measured figure,
#: so that a change that loses more is noticed.
PROSE_RECALL_FLOOR = 0.65
PROSE_SYNTAXES = {
    "prose": "I pasted {t} into the config and the call failed with 401.",
    "prose, quoted": 'it worked after I set the value to "{t}" in settings',
    "neutral name": 'export MY_VAR="{t}"',
}


def test_recall_without_a_secret_name(capsys: pytest.CaptureFixture[str]) -> None:
    tokens = [case.token for case in corpus.secret_cases() if case.syntax == "shell"]
    shares = {}
    for syntax, template in PROSE_SYNTAXES.items():
        caught = 0
        for value in tokens:
            text = template.format(t=value)
            result = redact(text)
            caught += bool(result.found) and not corpus.leftovers(value, text, result.text)
        shares[syntax] = caught / len(tokens)
    with capsys.disabled():
        for syntax, share in shares.items():
            print(f"\n  {syntax:<14} recall {share:.3f} ({len(tokens)} formats, no secret name)")
    assert min(shares.values()) >= PROSE_RECALL_FLOOR, shares


def test_rule_ids_are_the_engines() -> None:
    """RULE_IDS (and so the kinds) is the pinned engine's rule list: an
    upgrade that adds or renames rules must update it."""
    binary = Path(betterleaks.__file__).parent / "bin" / "betterleaks"
    listed = subprocess.run(
        [str(binary), "config", "show", "ids"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    assert tuple(listed) == secret_rules.RULE_IDS


def _engine(*arguments: str) -> str:
    binary = Path(betterleaks.__file__).parent / "bin" / "betterleaks"
    return subprocess.run(
        [str(binary), *arguments], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def test_the_engines_configuration_changes_only_generic_passwords_filter() -> None:
    """secret_rules.toml keeps every embedded rule, and generic-password's
    regex, keywords and component as they are embedded: only its filter is
    its own (its verdicts: the next test)."""
    assert tuple(_engine("config", "show", "ids", "-c", str(secret_rules.CONFIG)).split()) == (
        secret_rules.RULE_IDS
    )
    embedded = tomllib.loads(_engine("config", "show", "toml"))["rules"]
    ours = tomllib.loads(secret_rules.CONFIG.read_text(encoding="utf-8"))["rules"]
    assert [rule["id"] for rule in ours] == ["generic-password"]
    (original,) = (rule for rule in embedded if rule["id"] == "generic-password")
    assert original.pop("filter") != ours[0].pop("filter")
    assert ours[0] == original


#: Texts for each part of generic-password's filter: values it keeps and
#: values it drops (placeholders, references, algorithm names, encrypted
#: values, nested assignments), its login() form, and context lines.
_GENERIC_PASSWORD_TEXTS = (
    'password = "Xk9mQ2vL7pR4"\n',
    'db = connect(host="h", user="bob", password="Xk9mQ2vL7pR4")\n',
    "client.login(username, 'Xk9mQ2vL7pR4')",
    'authenticate(user_name, "Xk9mQ2vL7pR4")',
    "DB_PW=Xk9mQ2vL7pR4\n",
    'psw = "Xk9mQ2vL7pR4"',
    "# password: Xk9mQ2vL7pR4\n",
    'password = "correct horse battery staple"\n',
    "password: 123456\n",
    'hashed_password = "SHA256"\n',
    'x = 1\nhashed_password = "Blowfish"\n',
    'password = "SHA256"\n',
    'password = "AES-256-GCM"\n',
    "password: ENC[AES256,abc]\n",
    'password = "<secret>"',
    'password = "your_password"',
    "password=$PW\n",
    "password=foo.bar()\n",
    "password = config.password\n",
    "password=a,b=c\n",
    "password: null\n",
    "password: string\n",
    "PGPASSWORD=DB_PASSWORD\n",
    "password=${DB_PASSWORD}\n",
    "password=f(" + ")x" * 30 + "# ",
    "user=bob\nhost=db\npassword=Xk9mQ2vL7pR4\nport=5432\n",
)


def _findings(text: str, config: str | None) -> list[tuple[str, str, str]]:
    data = get_binding().scan_string(text, config).get("data") or []
    return sorted(
        (str(f["rule_id"]), str(f["match"]["value"]), str(f["location"])) for f in data
    )


def test_generic_passwords_filter_gives_the_embedded_filters_verdicts() -> None:
    found = 0
    for text in _GENERIC_PASSWORD_TEXTS:
        embedded = _findings(text, None)
        assert _findings(text, str(secret_rules.CONFIG)) == embedded, text
        found += any(rule == "generic-password" for rule, _, _ in embedded)
    assert 8 <= found < len(_GENERIC_PASSWORD_TEXTS)


def test_ignored_rules_exist() -> None:
    assert secret_rules.IGNORED_RULES <= set(secret_rules.RULE_IDS)


def test_text_the_engine_cannot_take_is_still_scanned() -> None:
    # A NUL would end the engine's C string; a lone surrogate cannot be
    # encoded. Offsets stay right around both.
    token = "ghp_" + "R8bQz4Lk2mN7pX9vT3wY6cH1jF5dS0aEuK4i"
    for odd in ("\0", "\ud800", "é😀\udfff"):
        result = redact(f"a{odd}b token {token} after")
        assert result.text == f"a{odd}b token [REDACTED:github_token] after"


def test_secrets_across_window_edges_are_found_whole() -> None:
    token = "ghp_" + "R8bQz4Lk2mN7pX9vT3wY6cH1jF5dS0aEuK4i"
    window = secret_rules.WINDOW
    for offset in range(-len(token), 8, 7):
        text = "x " * ((window + offset) // 2) + token + " and more" + " y" * window
        result = redact(text)
        assert token[:8] not in result.text and result.found == {"github_token": 1}, offset


def test_threads_get_the_same_redactions() -> None:
    # redact_fields_async redacts long texts in worker threads: the engine
    # is called from several at once.
    from concurrent.futures import ThreadPoolExecutor

    texts = [case.text * 3 for case in corpus.secret_cases()[:300]]
    alone = [redact(text) for text in texts]
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(redact, texts)) == alone
