"""Secret redaction for free text, before it is stored.

Contract
--------
- Free text written by users (feedback comments, corrections, ...) ends up in
  training data, so secrets must never be stored. Before such a field is
  written the application passes it through :func:`redact`, or a row's text
  fields through :func:`redact_fields`; in a coroutine, through
  :func:`redact_fields_async`, which gives the same result and does not block
  the event loop: values of more than 4,096 characters in all are redacted
  in a worker thread (:func:`asyncio.to_thread`), shorter ones inline (a
  thread costs more than scanning a comment).
- Each secret found is replaced with :func:`marker` of its kind,
  ``[REDACTED:<kind>]``; everything else is kept byte for byte. A text with no
  secret comes back unchanged (the very same string) with an empty ``found``.
- Two detectors find secrets, once per call: Betterleaks' rule set
  (:mod:`everyskill.secret_rules`: 465 maintained rules of provider formats,
  one engine call per text) and this module's own detectors, for what a rule
  set of provider formats lacks (passwords assigned to secret names in any
  syntax, credentials in URLs and ``Authorization`` schemes, private key
  blocks, the AWS secret after its key id, JWTs, long base64 runs). Their
  spans are merged (:func:`_merge`): where they overlap, one marker replaces
  both, so no piece of either secret is left. ``docs/redaction.md`` gives
  the choice of the rule set and the figures.
- :data:`KINDS` names every kind :func:`redact` reports: the rule set's
  kinds (a rule's id, ``slack-bot-token`` -> ``slack_bot_token``; see
  :func:`everyskill.secret_rules.kind_of`) and :data:`OWN_KINDS`, those of
  this module's detectors, which are:

  ``private_key``
      a PEM private key block (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP or plain
      ``PRIVATE KEY``), BEGIN and END lines included; also escaped in a JSON
      string, SSH2 and PuTTY key files, and a block cut short before its END
      line (the BEGIN line and the base64 lines after it).
  ``aws_access_key``, ``aws_secret_key``
      an access key id (``AKIA``/``ASIA``... 20 characters); a 40-character
      secret access key named as such (``aws_secret_access_key = ...``,
      ``"SecretAccessKey": ...``) or written just after an access key id.
  ``github_token``, ``gitlab_token``, ``openai_key``, ``stripe_key``,
  ``npm_token``, ``twilio_key``
      a provider's token, known by its prefix or shape, in the shapes the
      rule set lacks (it reports these kinds too, as it does
      ``anthropic_key``, ``slack_token``, ``slack_webhook``,
      ``google_api_key``, ``huggingface_token``, ``sendgrid_key``,
      ``pypi_token`` and ``azure_storage_key``, kept from this module's
      earlier detectors). ``stripe_key`` covers
      secret and restricted keys, live and test (``sk_``, ``rk_``) and
      webhook secrets (``whsec_``); publishable keys (``pk_live_``,
      ``pk_test_``) are public by design and kept. ``npm_token`` also covers
      the value of an ``.npmrc`` ``:_authToken=`` / ``:_auth=`` /
      ``:_password=`` line. ``twilio_key`` covers ``AC``/``SK`` ids, as
      detect-secrets does.
  ``discord_bot_token``, ``mailchimp_api_key``, ``google_oauth_client_secret``
      a Discord bot token (base64url of the bot's user id, a timestamp and
      an HMAC), a Mailchimp API key (32 hex digits and ``-us<n>``), a Google
      OAuth client secret (``GOCSPX-`` and 28 characters), wherever written.
  ``jwt``
      a JSON Web Token whose header and payload decode to JSON.
  ``bearer_token``, ``basic_auth``
      the credentials of ``Bearer <token>`` (or ``Authorization: Token
      <token>``) and of ``Basic <base64 of user:password>``; the scheme word
      is kept. A token with a more specific kind (a JWT, a GitHub token...)
      is reported as that kind, still after the kept word ``Bearer``.
  ``database_url``, ``url_credentials``
      the password of a URL with ``user:password@``: ``database_url`` for
      PostgreSQL, MySQL/MariaDB, MongoDB, Redis, SQL Server and CockroachDB
      schemes, ``url_credentials`` for any other scheme. Only the password
      is replaced; scheme, user, host, port, path and query are kept
      (``postgresql://app:[REDACTED:database_url]@db:5432/app``). A URL
      without a password is left alone.
  ``password_assignment``
      the literal value assigned to a secret-sounding name (password,
      passwd, pwd, pass, passphrase, secret, token, api key, access/secret/
      private/client key, ...): ``password = "hunter2"``, ``API_KEY: ...``,
      ``"token": "..."``, ``export SECRET=...``, ``--password=...``,
      ``<password>...</password>``, ``PASSWORD 'x'`` in SQL. The value alone
      is replaced; the name, operator and quotes are kept. Also the password
      given to a client on its command line (``mysql -p<password>``, the
      ``-p`` glued to it and kept; ``sshpass -p``, ``docker login -p``,
      ``redis-cli -a``), of a ``.pgpass`` line (``host:port:db:user:pw``)
      and of a ``.netrc`` entry (``machine h login u password pw``).
  ``base64_blob``
      a base64 (or base64url) string of 40 characters or more, with upper
      and lower case letters and digits and a high Shannon entropy, that no
      other kind claimed. That includes such a segment of a URL's path: a
      share link's id or a webhook's token is a credential.

- Left alone, by design:

  - an environment or config lookup (``os.environ["API_KEY"]``,
    ``process.env.TOKEN``, ``${{ secrets.X }}``, ``$PASSWORD``,
    ``getpass()``, ``request.headers.get(...)``), a call, a subscript, a
    dotted name, and an unquoted word or identifier in code (``password =
    pw``); an unquoted word is taken as a value only in shell and ``.env``
    style ``NAME=value`` and in ``--flag=value``;
  - placeholders: ``"<your-password>"``, ``"..."``, ``"xxx"``, ``"***"``,
    ``"changeme"``, ``"your_api_key_here"``, ``"{token}"``, ``[PAD]``,
    templating (``{{ }}``, ``%(x)s``), an environment variable's name
    (``"OPENAI_API_KEY"``), a keyword and digits (``"token123"``), a
    capitalised or non-ASCII word (a label: ``"Password": "Passwort"``);
  - a value of fewer than 4 characters; for this module's detectors, an
    unquoted value of digits only (a count, a port) and a quoted value with
    a space in it (a label or a sentence), a file name or a path, a
    comparison with a variable, a tuple assignment (``user, password =
    "admin", make()``: which value is whose?). The rule set's
    ``generic-password`` does take a value of 5 or more characters assigned
    to a password name, with spaces or of digits (``password: 123456`` is
    redacted as ``generic_password``); it keeps labels as above;
  - a bearer token shorter than 12 characters or without a digit (prose:
    "Bearer authentication");
  - UUIDs, hexadecimal digests and commit hashes (their entropy is too low
    for ``base64_blob``); base64 of readable text that holds no secret;
    public keys and certificates (``ssh-ed25519 AAAA...``, a well-formed
    ``-----BEGIN CERTIFICATE-----`` or ``PUBLIC KEY`` block: base64 lines
    between its BEGIN line and its own END line; a PGP public key's header
    lines are still scanned, and a BEGIN line without its END line, or with
    anything else before it, hides nothing), Subresource Integrity and
    ``go.sum`` hashes,
    ``data:`` URIs; a lone ``BEGIN ... PRIVATE KEY`` line without key
    material (code that parses keys);
  - the words password, token, secret or key in prose ("reset your
    password", "the token count was 300"), except ``my password is x``,
    ``API key: x`` and ``the token is <value>`` or ``the secret is
    <value>`` when the value looks random (12 characters or more, upper and
    lower case and digits: "the token is expired", "... is gpt-4o-mini"
    are kept).
- Idempotent: a marker (exactly ``[REDACTED:<kind>]`` with a kind of
  :data:`KINDS`) is never redacted again, so ``redact(redact(x).text)``
  returns the same text with an empty ``found``. Text glued to a marker is
  still scanned (``password=[REDACTED:jwt]hunter2secret`` loses its
  password), and what only looks like a marker (``[REDACTED:other]``) hides
  nothing.
- Values never leave this module except in the text they were found in:
  ``found`` holds counts by kind, errors name types only (:func:`redact`
  raises :class:`TypeError` for anything but a ``str``), nothing is logged,
  and a :class:`Redaction`'s repr shows the redacted text.
- Linear cost: the rule set's engine scans long texts in windows
  (:data:`everyskill.secret_rules.WINDOW`); for this module's detectors, a pre-filter looks for the
  detectors' tell-tale prefixes and keywords (substring tests on the
  lower-cased text) and for a long base64-like run; a text with none of them
  returns at once, and each detector runs only when its own tell-tales are
  there. Keyword and scheme patterns are tried where their keyword occurs,
  not at every position. However a text is made (a prefix or a BEGIN line
  repeated thousands of times), each part of it is read a bounded number of
  times: a pattern reads a bounded stretch from where it starts (a value,
  at most 1,024 characters) or skips the starts inside what it read last, a
  key block's body holds no other BEGIN line, and no pattern backtracks
  over a run for each character of it.

Detectors come from detect-secrets where its patterns are sound (its
plugins' ``denylist`` regexes, its JWT check, its entropy measure and
templating heuristics), used directly: its ``analyze_line`` machinery reads
global settings and is built for files, not for finding spans to replace.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import concurrent.futures
import functools
import heapq
import itertools
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from everyskill import secret_rules

from detect_secrets.filters.heuristic import is_sequential_string, is_templated_secret
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import DENYLIST as KEYWORD_DENYLIST
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

__all__ = ["KINDS", "OWN_KINDS", "Redaction", "marker", "redact", "redact_fields", "redact_fields_async"]


@dataclass(frozen=True)
class Redaction:
    """The result of :func:`redact`."""

    #: The text with each secret replaced by its :func:`marker`.
    text: str
    #: Kind -> how many secrets of that kind were replaced; empty when none.
    found: Mapping[str, int]


def marker(kind: str) -> str:
    """The text that replaces a secret of ``kind``: ``[REDACTED:<kind>]``."""
    if kind not in KINDS:
        raise ValueError(f"unknown redaction kind {kind!r}")
    return f"[REDACTED:{kind}]"


# --------------------------------------------------------------------------
# Building blocks.
#
# A finder gets the text (with the spans claimed so far masked) and the same
# text lower-cased, of the same length, and yields the spans to replace.

_Span = tuple[int, int]
_Finder = Callable[[str, str], Iterable[_Span]]

_ALNUM = frozenset(string.ascii_letters + string.digits)
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+.-")
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-]*")
_WORD_TAIL = re.compile(r"[A-Za-z0-9_]*")
_ALNUM_TAIL = re.compile(r"[A-Za-z0-9]*")
#: Stands in for claimed characters while later detectors run (see redact).
_MASK = "\0"

_ENTROPY = Base64HighEntropyString()


def _lower(text: str) -> str:
    """``text`` lower-cased, keeping every offset."""
    lowered = text.lower()
    if len(lowered) != len(text):
        # Only U+0130 lengthens when lower-cased (to "i" and a combining dot).
        lowered = text.replace("\u0130", "i").lower()
    return lowered


def _occurrences(haystack: str, needle: str) -> Iterator[int]:
    index = haystack.find(needle)
    while index >= 0:
        yield index
        index = haystack.find(needle, index + 1)


def _has_classes(value: str, *, upper: bool = True, lower: bool = True, digit: bool = True) -> bool:
    return (
        (not upper or any("A" <= c <= "Z" for c in value))
        and (not lower or any("a" <= c <= "z" for c in value))
        and (not digit or any("0" <= c <= "9" for c in value))
    )


def _pattern(
    pattern: re.Pattern[str],
    group: int | str = 0,
    *,
    tail: re.Pattern[str] | None = None,
    left: frozenset[str] | None = _ALNUM,
    right: frozenset[str] | None = None,
    accept: Callable[[str], bool] | None = None,
) -> _Finder:
    """Spans of ``group`` of each match of ``pattern``.

    ``tail`` extends a match over more token characters (a library pattern
    of fixed length must not leave the end of a longer token behind);
    ``left``/``right`` refuse a match glued to one of those characters;
    ``accept`` vets the value.

    A match starting inside the tail of the match before it is skipped: it
    would be glued to that one, or overlap it, and reading its own tail
    would read the rest of a long run once for each match in it.
    """

    def find(text: str, lowered: str) -> Iterator[_Span]:
        tail_end = 0
        for match in pattern.finditer(text):
            if match.start() < tail_end:
                continue
            start, end = match.span(group)
            if start < 0:
                continue
            if left is not None and start > 0 and text[start - 1] in left:
                continue
            if tail is not None:
                tail_match = tail.match(text, end)
                if tail_match is not None:
                    end = tail_end = tail_match.end()
            if right is not None and end < len(text) and text[end] in right:
                continue
            if accept is not None and not accept(text[start:end]):
                continue
            yield start, end

    return find


def _anchored(
    pattern: re.Pattern[str],
    needles: tuple[str, ...],
    group: int | str = 0,
    *,
    back: frozenset[str] | None = None,
    accept: Callable[[str], bool] | None = None,
) -> _Finder:
    """Spans of ``group`` of ``pattern`` matched where a needle occurs.

    The needles are looked for in the lower-cased text; the match starts
    there, or earlier over the ``back`` characters (a URL's scheme before
    ``://``). Much cheaper than a search for a pattern with no literal
    prefix, and linear however the text is made.
    """

    def find(text: str, lowered: str) -> Iterator[_Span]:
        tried: set[int] = set()
        for needle in needles:
            for index in _occurrences(lowered, needle):
                start = index
                if back is not None:
                    while start > 0 and text[start - 1] in back:
                        start -= 1
                if start in tried:
                    continue
                tried.add(start)
                match = pattern.match(text, start)
                if match is None:
                    continue
                value_start, value_end = match.span(group)
                if value_start >= 0 and (accept is None or accept(text[value_start:value_end])):
                    yield value_start, value_end

    return find


def _chain(*finders: _Finder) -> _Finder:
    def find(text: str, lowered: str) -> Iterator[_Span]:
        for finder in finders:
            yield from finder(text, lowered)

    return find


# --------------------------------------------------------------------------
# Placeholders: values that stand for a secret without being one.

_PLACEHOLDER_WORDS = frozenset("""
    password passwd pass pwd passphrase secret secrets token tokens key apikey
    api_key api-key secret_key secretkey access_token auth_token private_key
    changeme changeit change_me change-me changethis example examples sample
    placeholder dummy fake test testing none null nil undefined redacted
    hidden masked filtered removed default foo bar baz foobar qux todo tbd
    fixme value string str required optional empty notset not_set unset
    secret123 password123 mypassword yourpassword
    """.split())
_PLACEHOLDER = re.compile(r"""(?ix)
    ^(?:
        [x*.\-_#?•]+                           # xxxx, ****, ...., ----
      | <.*> | \[.*\] | \{.*\} | \(.*\)        # <your-key>, [PAD], {token}
      | .*\{\{.*  | .*\$\{.*  | .*%\(\w+\)s.* | %s | %\w+%   # templating
      | .*change[_\-]?(?:me|it|this).*
    )$
    """)
#: Filler that marks a value as an example: "sk-xxxxx", "abc***", "ab...",
#: "your-api-key", "enter_key", "api_key_here". What remains without it
#: decides (see _only_filler): "Xk9mQ2vL7pR4wZ8..." is a real value cut short.
_FILLER = re.compile(
    r"(?i)x{5,}|\*{3,}|\.{3,}|…+|^(?:your|enter|insert|put|add|replace)(?:[_\-\s]|(?=[a-z]))"
    r"|[_\-](?:here|goes[_\-]here)$"
)
_ALNUM_SEGMENT = re.compile(r"[A-Za-z0-9]{8,}")


def _only_filler(value: str) -> bool:
    """Whether ``value`` has filler and, without it, nothing that looks like
    a secret: no run of 8 or more letters and digits of two classes or more
    (upper, lower, digit) that is not a sequence and not of low entropy."""
    rest, count = _FILLER.subn(" ", value)
    if not count:
        return False
    for segment in _ALNUM_SEGMENT.findall(rest):
        classes = (
            any("A" <= c <= "Z" for c in segment)
            + any("a" <= c <= "z" for c in segment)
            + any("0" <= c <= "9" for c in segment)
        )
        if (
            classes >= 2
            and not is_sequential_string(segment)
            and _ENTROPY.calculate_shannon_entropy(segment) > 2.5
        ):
            return False
    return True
# "token123", "password1", "secret_2": an example's value.
_KEYWORD_AND_DIGITS = re.compile(
    r"(?i)(?:my|your|the|test|example|sample|dummy)?[_\-]?"
    r"(?:password|passwd|pass|pwd|secret|token|key|apikey|api_key|test|example|changeme)"
    r"[_\-]?\d{0,4}"
)
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_PATH_OR_FILE = re.compile(r"""(?x)
    (?:/|\./|\.\./|~/|[A-Za-z]:\\)\S*                       # a path
    | [\w\-./]+\.(?:pem|key|crt|cer|der|p12|pfx|jks|json|txt|ya?ml|env|ini|toml|cfg|conf
                    |gpg|asc|pub)
    """)


@functools.lru_cache(maxsize=4096)
def _is_placeholder(value: str) -> bool:
    stripped = value.strip()
    if not stripped:
        return True
    if stripped.lower() in _PLACEHOLDER_WORDS or len(set(stripped.lower())) == 1:
        return True
    if stripped.endswith(("EXAMPLE", "EXAMPLEKEY")):
        # AWS's documented example keys (AKIAIOSFODNN7EXAMPLE, ...EXAMPLEKEY).
        return True
    return (
        bool(_PLACEHOLDER.match(stripped))
        or _only_filler(stripped)
        or bool(_KEYWORD_AND_DIGITS.fullmatch(stripped))
        or is_templated_secret(stripped)
    )


# --------------------------------------------------------------------------
# private_key. The library's PrivateKeyDetector matches the BEGIN line
# only; the whole block is wanted, and its variants.

_PEM_BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----")
# A line break, real or escaped in a JSON string.
_NL = r"(?:\r?\n|\\r?\\n)"
# A whole line of base64 of at least {0} characters, perhaps after a blank line.
_BASE64_LINE = (
    _NL + r"(?:[ \t]*+" + _NL + r")?[ \t]*+[A-Za-z0-9+/=]{{{0},}}+(?=[ \t]*+(?:" + _NL + r"|$))"
)
_PEM_CUT_SHORT = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    + r"(?:"
    + _NL
    + r"[A-Za-z][\w\-]*+: [^\r\n\\]*+){0,8}"  # Proc-Type:, DEK-Info:, Version:
    + _BASE64_LINE.format(16)  # a first long line
    + r"(?:"
    + _BASE64_LINE.format(4)
    + r")*"
)
_SSH2_BEGIN = re.compile(r"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----")
_SSH2_END_LINE = "---- END SSH2 ENCRYPTED PRIVATE KEY ----"
_PUTTY_BEGIN = re.compile(r"PuTTY-User-Key-File-\d+:")
_PUTTY_END = re.compile(r"Private-MAC: [0-9a-fA-F]+")
#: A key block holds, between its first and last line, base64 lines and
#: "Name: value" headers, perhaps in a JSON string or indented in YAML. Code
#: between two such lines (a key parser's source) is not a key.
_KEY_BODY_LINE = re.compile(r"[ \t]*+(?:[A-Za-z0-9+/=\-]*+|[A-Za-z][\w\-]*+: [^\n]*+)[ \t]*+\r?")
_LINE_BREAK = re.compile(r"\n|\\n")


def _lines(text: str, start: int, end: int) -> Iterator[_Span]:
    """The lines of ``text[start:end]``, split at real and escaped line breaks."""
    position = start
    for line_break in _LINE_BREAK.finditer(text, start, end):
        yield position, line_break.start()
        position = line_break.end()
    yield position, end


def _key_body_ok(text: str, start: int, end: int) -> bool:
    return all(_KEY_BODY_LINE.fullmatch(text, a, b) for a, b in _lines(text, start, end))


class _Next:
    """``text.find(needle, position)`` for positions that never decrease.

    Each part of the text is searched once, however many positions ask.
    """

    __slots__ = ("_found", "_needle", "_text")

    def __init__(self, text: str, needle: str) -> None:
        self._text = text
        self._needle = needle
        self._found = -2  # not searched yet

    def __call__(self, position: int) -> int:
        if self._found == -1 or self._found >= position:
            return self._found
        self._found = self._text.find(self._needle, position)
        return self._found


#: A block: (start, body start, body end, end).
_Block = tuple[int, int, int, int]


def _blocks(
    text: str,
    begins: Iterable[re.Match[str]],
    begin_needle: str,
    end_needle: str,
    end_of: Callable[[str, re.Match[str], int], int],
) -> Iterator[_Block]:
    """Blocks from each BEGIN line in ``begins`` to the first END line after it.

    A block ends at the first ``end_needle`` after its BEGIN line, which
    ``end_of`` reads (-1 when it is not that BEGIN line's END line), and
    holds no other ``begin_needle``: a BEGIN line before it is a block cut
    short, or prose. So the bodies of the blocks found never overlap, and
    reading them all is linear, as are the searches for the needles,
    however many BEGIN and END lines there are.
    """
    next_begin = _Next(text, begin_needle)
    next_end = _Next(text, end_needle)
    for begin in begins:
        body_start = begin.end()
        body_end = next_end(body_start)
        if body_end < 0:
            return
        following = next_begin(body_start)
        if 0 <= following < body_end:
            continue
        end = end_of(text, begin, body_end)
        if end >= 0:
            yield begin.start(), body_start, body_end, end


def _pem_end(text: str, begin: re.Match[str], position: int) -> int:
    end_line = f"-----END {begin.group(1)}-----"
    return position + len(end_line) if text.startswith(end_line, position) else -1


def _ssh2_end(text: str, begin: re.Match[str], position: int) -> int:
    return position + len(_SSH2_END_LINE) if text.startswith(_SSH2_END_LINE, position) else -1


def _putty_end(text: str, begin: re.Match[str], position: int) -> int:
    mac = _PUTTY_END.match(text, position)
    return -1 if mac is None else mac.end()


def _find_private_keys(text: str, lowered: str) -> Iterator[_Span]:
    # Whole blocks first; for a block cut short, what is left (redact drops
    # a span that overlaps one found before it).
    blocks = itertools.chain(
        _blocks(text, _PEM_BEGIN.finditer(text), "-----BEGIN", "-----END", _pem_end),
        _blocks(text, _SSH2_BEGIN.finditer(text), "---- BEGIN SSH2 ", "---- END SSH2 ", _ssh2_end),
        _blocks(
            text, _PUTTY_BEGIN.finditer(text), "PuTTY-User-Key-File-", "Private-MAC: ", _putty_end
        ),
    )
    for start, body_start, body_end, end in blocks:
        if _key_body_ok(text, body_start, body_end):
            yield start, end
    for match in _PEM_CUT_SHORT.finditer(text):
        yield match.span()


# --------------------------------------------------------------------------
# jwt. The library's pattern ends with a lazy, unanchored signature, so it
# matches without the signature; its formal check (header and payload
# decode to JSON) is sound and used on them. The signature is not checked:
# a token whose signature was cut short, or glued to a marker, is still a
# token (and once its signature is claimed, the rest would be one anyway).

_JWT = re.compile(
    r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]+={0,2}\.[A-Za-z0-9_\-]+={0,2}"
    r"(?:\.[A-Za-z0-9_\-+/]*={0,2})?(?![A-Za-z0-9_\-])"
)


def _jwt_ok(value: str) -> bool:
    header, _, rest = value.partition(".")
    payload = rest.partition(".")[0]
    return JwtTokenDetector.is_formally_valid(f"{header}.{payload}")


# --------------------------------------------------------------------------
# Provider tokens: the few shapes the rule set does not cover (OpenAI's
# older keys and ones without the "T3BlbkFJ" infix, GitHub tokens of other
# lengths, GitLab's, Stripe's webhook secrets and short keys, .npmrc lines,
# Twilio's AC/SK ids). Those it covers are its (everyskill.secret_rules).

# The library's OpenAI pattern needs the "T3BlbkFJ" infix of older keys
# (project, service-account and admin keys do not always carry it), and its
# leading "[A-Za-z0-9-_]*" backtracks over the whole run for each "sk-" in
# it, quadratic on crafted input. This pattern covers its keys too.
_OPENAI = re.compile(r"sk-(?!ant-)(?:(?:proj|svcacct|admin|None)-)?[A-Za-z0-9_\-]{20,}")
_GITHUB_PAT = re.compile(r"github_pat_[A-Za-z0-9_]{22,}")
_STRIPE_OTHER = re.compile(r"(?:sk|rk)_(?:live|test)_[0-9a-zA-Z]{16,}|whsec_[A-Za-z0-9]{24,}")
_NPM_TOKEN = re.compile(r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])")
# The library's NpmDetector captures from the token to the end of the line;
# only the value is wanted here. Tried where "/:_" occurs, in a "//host/" run.
# A value is vetted on its first 1,024 characters (a token, or base64 of
# user:password, is far shorter) and replaced whole.
_NPMRC = re.compile(
    r"(?i)/:_(?:authToken|auth|password)[ \t]*+=[ \t]*+(?P<v>[^\s'\"]{1,1024})(?P<rest>[^\s'\"]*+)"
)
_NPMRC_REGISTRY = re.compile(r"//[^\s/]+")
#: How far back from "/:_" its "//host" may start.
_NPMRC_LINE_MAX = 300


def _find_npmrc(text: str, lowered: str) -> Iterator[_Span]:
    value_end = 0
    for index in _occurrences(lowered, "/:_"):
        if index < value_end:
            continue  # in the value read last
        match = _NPMRC.match(text, index)
        if match is None:
            continue
        value_end = match.end()
        if not _url_password_ok(match.group("v")):
            continue
        back = index - _NPMRC_LINE_MAX
        line_start = (
            max(text.rfind("\n", max(0, back), index), text.rfind(" ", max(0, back), index), back)
            + 1
        )
        if _NPMRC_REGISTRY.match(text, line_start):
            yield match.start("v"), match.end()


def _openai_ok(value: str) -> bool:
    return _has_classes(value[3:])  # a random body, not a hyphenated word or slug


def _twilio_ok(value: str) -> bool:
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value[2:])


# Discord bot tokens, Mailchimp API keys and Google OAuth client secrets:
# the rule set has no rule for them. Discord's bot token is three base64url
# parts: the bot's user id (a snowflake of 17 to 19 digits: 23 to 26
# characters, starting M, N or O), a timestamp (6) and an HMAC (27, 38 in
# newer tokens); detect-secrets' DiscordBotTokenDetector allows 23 to 25 for
# the first part, too few for today's ids, so its shape is widened here.
# Mailchimp's key is 32 hex digits and its data center ("-us14"), as
# detect-secrets' MailchimpDetector has it. Google's OAuth client secrets
# carry the "GOCSPX-" prefix and 28 base64url characters since 2021
# (Google Cloud's "OAuth client secret" format).
_DISCORD_BOT = re.compile(r"[MNO][A-Za-z\d_\-]{22,27}\.[A-Za-z\d_\-]{6}\.[A-Za-z\d_\-]{27,}")
_MAILCHIMP = MailchimpDetector.denylist[0]
_GOOGLE_OAUTH_SECRET = re.compile(r"GOCSPX-[A-Za-z0-9_\-]{28}")


def _discord_bot_ok(value: str) -> bool:
    user_id, _, rest = value.partition(".")
    try:
        decoded = base64.urlsafe_b64decode(user_id + "=" * (-len(user_id) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        decoded = ""
    if decoded.isdigit():
        return True  # the bot's user id
    hmac = rest.partition(".")[2]
    return _has_classes(hmac) and _ENTROPY.calculate_shannon_entropy(hmac) > 3.5


def _mailchimp_ok(value: str) -> bool:
    key = value.partition("-")[0]
    return _has_classes(key, upper=False) and not _is_placeholder(key)


# --------------------------------------------------------------------------
# Passwords given to command-line clients and in credential files, where
# no secret-sounding name precedes them: "mysql -u root -p<password>" (and
# mysqldump, mysqladmin..., MariaDB's; "-p" is glued to its value, "-p x"
# asks for the password), "sshpass -p <password>", "docker login -p
# <password>", "redis-cli -a <password>"; a .pgpass line
# ("host:port:database:user:password", PostgreSQL's libpq documentation)
# and a .netrc entry ("machine <host> login <user> password <password>").

_CLI_VALUE = r"""(?:'(?P<sq>[^'\n]{1,256})'|"(?P<dq>[^"\n]{1,256})"|(?P<bare>[^\s'"`|;&]{1,256}))"""
#: (needles, the command at a needle, its password option).
_CLI_COMMANDS: tuple[tuple[tuple[str, ...], re.Pattern[str], re.Pattern[str]], ...] = (
    (
        ("mysql", "mariadb"),
        re.compile(r"(?:mysql|mariadb)[\w\-]{0,12}[ \t]"),
        re.compile(r"(?<=[ \t])-p" + _CLI_VALUE),
    ),
    (
        ("sshpass",),
        re.compile(r"sshpass[ \t]"),
        re.compile(r"(?<=[ \t])-p[ \t]*" + _CLI_VALUE),
    ),
    (
        ("docker", "podman", "nerdctl"),
        re.compile(r"(?:docker|podman|nerdctl)[ \t]+login[ \t]"),
        re.compile(r"(?<=[ \t])(?:-p|--password)(?:[ \t]+|=)" + _CLI_VALUE),
    ),
    (
        ("redis-cli",),
        re.compile(r"redis-cli[ \t]"),
        re.compile(r"(?<=[ \t])(?:-a|--pass)[ \t]+" + _CLI_VALUE),
    ),
)
#: How far after its command a password option is looked for (one line).
_CLI_LINE = 300


def _cli_value(match: re.Match[str]) -> _Span:
    for group in ("sq", "dq", "bare"):
        if match.group(group) is not None:
            return match.span(group)
    return match.span()  # pragma: no cover - one group always matches


def _find_cli_passwords(text: str, lowered: str) -> Iterator[_Span]:
    for needles, command, option in _CLI_COMMANDS:
        reached = 0
        starts = sorted(index for needle in needles for index in _occurrences(lowered, needle))
        for index in starts:
            if index < reached or (index > 0 and text[index - 1] in _TOKEN_CHARS):
                continue
            if command.match(text, index) is None:
                continue
            line_end = text.find("\n", index, index + _CLI_LINE)
            reached = line_end if line_end >= 0 else min(len(text), index + _CLI_LINE)
            # The first password option only: what follows may be another
            # command's ("sshpass -p x ssh -p 2222 host").
            found = option.search(text, index, reached)
            if found is not None:
                start, end = _cli_value(found)
                if _literal_ok(text[start:end]):
                    yield start, end


_PGPASS_PORT = re.compile(r":(?:\d{1,5}|\*):")
_PGPASS_HOST_CHARS = frozenset(string.ascii_letters + string.digits + "_.-*")
_PGPASS_BEFORE = frozenset(" \t\r\n'\"`(>")
_PGPASS_REST = re.compile(
    r"(?:\\.|[^\s:\\]){1,128}:(?:\\.|[^\s:\\]){1,128}:(?P<v>(?:\\.|[^\s:\\'\"`]){1,256})"
    r"(?![^\s'\"`)\]<])"
)


def _find_pgpass(text: str, lowered: str) -> Iterator[_Span]:
    for port in _PGPASS_PORT.finditer(text):
        host_start = port.start()
        while host_start > 0 and text[host_start - 1] in _PGPASS_HOST_CHARS:
            host_start -= 1
            if port.start() - host_start > 253:
                break
        if host_start == port.start() or (
            host_start > 0 and text[host_start - 1] not in _PGPASS_BEFORE
        ):
            continue
        rest = _PGPASS_REST.match(text, port.end())
        if rest is None:
            continue
        value = rest.group("v")
        if _literal_ok(value) and not _NUMBER.fullmatch(value) and not _WORDS.fullmatch(value):
            yield rest.span("v")  # not a number or a word: "8080:80:tcp:udp:http"


_NETRC = re.compile(
    r"(?:machine[ \t]+\S{1,256}|default)"
    r"(?:[ \t\r\n]{1,64}(?:login|account|port)[ \t]+\S{1,256}){0,3}"
    r"[ \t\r\n]{1,64}password[ \t]+(?P<v>\S{1,256})"
)


# --------------------------------------------------------------------------
# AWS.

_AWS_KEY_ID = AWSKeyDetector.denylist[0]
_AWS_KEY_ID_NEEDLES = ("a3t", "abia", "acca", "akia", "asia")
_AWS_SECRET_QUOTED = AWSKeyDetector.denylist[1]
_AWS_SECRET_NAMED = re.compile(
    r"(?i)(?:aws[\w.\-]{0,30}?(?:secret|key)|secret_?access_?key)[\w\-]{0,30}(?:\\?[\"'\]]){0,3}"
    r"(?:[ \t]*(?::=|=>|=|:)[ \t]*|[ \t]+)(?:\\?[\"'])?"
    r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)
_AWS_SECRET_SHAPE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}")
_AWS_SECRET_CHARS = frozenset(string.ascii_letters + string.digits + "/+=")
_HEX = re.compile(r"[0-9a-fA-F]+")


def _aws_secret_ok(value: str) -> bool:
    return _has_classes(value) and not _HEX.fullmatch(value) and not _is_placeholder(value)


def _aws_key_id_ok(value: str) -> bool:
    # AWS's documentation writes its example keys with an EXAMPLE suffix.
    return not _is_placeholder(value)


def _find_aws_secret_after_key_id(text: str, lowered: str) -> Iterator[_Span]:
    """A secret access key written just after an access key id (CSV, CLI output)."""
    for key_id in _AWS_KEY_ID.finditer(text):
        window = text[key_id.end() : key_id.end() + 120]
        for candidate in _AWS_SECRET_SHAPE.finditer(window):
            start, end = key_id.end() + candidate.start(), key_id.end() + candidate.end()
            if end < len(text) and text[end] in _AWS_SECRET_CHARS:
                continue
            if _aws_secret_ok(candidate.group()):
                yield start, end
                break


# --------------------------------------------------------------------------
# Credentials in URLs.

_DATABASE_URL = re.compile(
    r"(?i)(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|mssql|sqlserver|cockroachdb)"
    r"(?:\+[a-z0-9]+)?://"
    r"[^\s:/?#@'\"`<>\[\]]{0,256}:(?P<password>[^\s/?#'\"`<>\[\]]{1,256})@(?=[\w\[])"
)
_URL_CREDENTIALS = BasicAuthDetector.denylist[0]


def _url_password_ok(value: str) -> bool:
    return not _is_placeholder(value) and value[0] not in "$%{"


# --------------------------------------------------------------------------
# Authorization schemes.

# A ":" inside: an id and secret pair (Etsy's, Telegram bot tokens).
_BEARER = re.compile(r"(?i)(?<![\w\-])bearer[ \t]+(?P<v>[A-Za-z0-9\-._~+/:]+=*)")
_AUTH_TOKEN = re.compile(
    r"(?i)authorization[\"']?[ \t]*[:=][ \t]*[\"']?token[ \t]+(?P<v>[A-Za-z0-9\-._~+/]+=*)"
)
_BASIC = re.compile(r"(?i)(?<![\w\-])basic[ \t]+(?P<v>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])")
# curl -u user:password
_USER_OPTION = re.compile(r"(?<![\w\-])(?:-u|--user)[ \t]+[\"']?[^\s:\"'$]+:(?P<v>[^\s\"']+)")


def _opaque_token_ok(value: str) -> bool:
    if len(value) < 12 or _is_placeholder(value):
        return False
    has_letter = any(c.isalpha() for c in value)
    if any(c.isdigit() for c in value) and has_letter:
        return True
    return len(value) >= 20 and _has_classes(value, digit=False) and not value.isalpha()


def _basic_credentials_ok(value: str) -> bool:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, colon, password = decoded.partition(":")
    return bool(colon and user and password and decoded.isprintable())


def _find_bearer(text: str, lowered: str) -> Iterator[_Span]:
    for needle, pattern in (("bearer", _BEARER), ("authorization", _AUTH_TOKEN)):
        for index in _occurrences(lowered, needle):
            match = pattern.match(text, index)
            if match is None:
                continue
            value = match.group("v").rstrip(".")  # a full stop ends the sentence
            if _opaque_token_ok(value):
                yield match.start("v"), match.start("v") + len(value)


# --------------------------------------------------------------------------
# password_assignment. The library's KeywordDetector picks its patterns by
# file type, has no "token", and in config files takes an unquoted value to
# the end of the line ("password = getpass()" is a secret to it). Its keyword
# list is reused; the assignment pattern and the value checks are our own.

_KEYWORDS = "|".join(
    [keyword.replace("_?", r"[_\- ]?") for keyword in KEYWORD_DENYLIST]
    + [
        r"passphrase",
        r"(?<![a-z0-9])pass",
        r"token",
        r"(?:access|secret|encryption|signing|master)[_\- ]?key",
    ]
)
#: Every keyword contains one of these (lower case).
_KEYWORD_NEEDLES = ("pass", "pwd", "secret", "token", "key", "contrase")
#: A secret-sounding name ends with a keyword (perhaps "_confirmation", digits).
_SECRET_NAME = re.compile(
    r"(?:" + _KEYWORDS + r")(?:[_\-]?(?:base|value|confirm(?:ation)?))?\d*$", re.IGNORECASE
)
#: What follows such a name in an assignment, up to and with the value.
_ASSIGNED = re.compile(
    r"(?P<close>(?:\\?[\"'`\]]){0,3})"
    # A type annotation before "=": "password: str = ...", "var password string = ..."
    r"(?:[ \t]*:[ \t]*[A-Za-z_][\w.]{0,40}(?:\[[^\]\n]{0,80}\])?(?:[ \t]*\|[ \t]*None)?"
    # (a space before its "=": "token: abc=def" is a value with "=" in it)
    r"(?=[ \t]+=[^=>])"
    r"|[ \t]+[A-Za-z_][\w.]{0,40}(?=[ \t]*=[^=>]))?"
    r"(?:[ \t]*(?P<op>:=|=>|===?|!==?|=|:)[ \t]*|[ \t]+(?P<is>is)[ \t]+|(?P<ws>[ \t]+))"
    # A quoted value, perhaps in parentheses ("KEY = ('...')", after an
    # operator only) or ANSI-C quoted in shell ("$'...'"); Ruby's %q(...)
    # and Lua's [[...]]; a YAML block scalar ("key: |", then its lines, as
    # indented as the first).
    r"(?:(?P<paren>\()?(?:[rRbBuUfF]{0,2}\"(?P<dq>[^\"\n]{0,1024})\""
    r"|\$?[rRbBuUfF]{0,2}'(?P<sq>[^'\n]{0,1024})'|`(?P<bq>[^`\n]{0,1024})`)"
    r"|\\\"(?P<eq>[^\"\\\n]{0,1024})\\\""
    # (A long bracket's value holds no "[[", as a %q()'s holds no
    # parenthesis: the next name's opening stops a value never closed.)
    r"|%[qQ]\((?P<pq>[^()\n]{0,1024})\)|\[\[(?P<lq>(?:[^\[\]\n]|\[(?!\[)){0,1024})\]\]"
    r"|[|>][-+]?[1-9]?[ \t]*(?:\#[^\n]{0,200})?\r?\n(?:[ \t]*\r?\n){0,8}(?P<indent>[ \t]+)"
    r"(?P<yb>[^\s][^\n]{0,1023}(?:\n(?P=indent)[^\n]{0,1024}){0,49})"
    # An unquoted value runs to a space; a quote or a backslash inside it
    # is part of it ("Xk9m'Q2v", "Xk9m\\Q2v"), not a closing quote or an
    # escaped line break after it.
    # It stops before "&name=" (the next parameter), so that a query of
    # many parameters is not read over again from each one.
    r"|(?P<bare>[^\s\"'`\\](?:[^\s\"'`\\&]|&(?![\w.\-]{1,100}=)"
    r"|[\"'`](?=[^\s,;)\]}>\"'`\\])|\\(?=[^\s\"'`\\nrt])){0,1023}))"
)
_XML_ASSIGNMENT = re.compile(
    r"<(?P<tag>[\w\-.:]{0,80}?(?:" + _KEYWORDS + r"))>(?P<v>[^<\s][^<\n]{0,1024}?)</(?P=tag)>",
    re.IGNORECASE,
)
#: A call in an unquoted value: "auth.issue(", "get('x')", "f(x)"; not "Xk9m(Q2v".
_CALL = re.compile(r"""^[A-Za-z_$][A-Za-z_$.]*\(|[A-Za-z_$][\w.$]*\((?:["'`)]|$)|\)$""")
#: An unquoted value that is a whole call: "issue(user)", "f(x).g();".
_WHOLE_CALL = re.compile(
    r"""[A-Za-z_$][\w.$]*\([^()]{0,200}\)(?:\.[A-Za-z_$][\w$]*\([^()]{0,200}\))*[,;]?"""
)
_DOTTED_NAME = re.compile(r"[A-Za-z_$][\w$]*(?:(?:\.|->|::)[A-Za-z_$][\w$]*)+")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?[a-zA-Z%]{0,3}")
_WORDS = re.compile(r"[A-Za-z_\-]+")
_UPPER_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
#: Names whose "<name> is <value>" is taken as an assignment in prose.
_PROSE_NAME = re.compile(r"(?i)(?:passw(?:or)?d|passphrase|pwd|key|token|secret)$")
_TOKEN_OR_SECRET = re.compile(r"(?i)(?:token|secret)$")
_TUPLE_TARGET = re.compile(r"(?:^|[\n;(\[])[ \t]*[\w.]+[ \t]*,[ \t]*(?:[\w.]+[ \t]*,[ \t]*)*$")
_NEXT_PARAMETER = re.compile(r"&(?=[\w.\-]+=)")
_QUERY_END = re.compile(r"[&#]")


@functools.lru_cache(maxsize=1024)
def _literal_ok(value: str) -> bool:
    """Whether a literal (quoted, or known to be literal) value is a secret."""
    return (
        len(value) >= 4
        and not (value.isalpha() and (value.istitle() or not value.isascii()))  # a label
        and _MASK not in value
        and _WHITESPACE.search(value) is None
        and not _is_placeholder(value)
        and not _ENV_NAME.fullmatch(value)
        and not _PATH_OR_FILE.fullmatch(value)
        and not value.startswith(("$", "%", "{{", "http://", "https://"))
    )


@functools.lru_cache(maxsize=1024)
def _bare_ok(value: str, name: str, glued: bool, in_query: bool) -> bool:
    """Whether an unquoted value is a secret rather than code or a word."""
    if not _literal_ok(value) or value[0] in "-&*@!<([{" or _NUMBER.fullmatch(value):
        return False
    if (
        any(c in value for c in "[]")
        or _CALL.search(value)
        or (_DOTTED_NAME.fullmatch(value) and not in_query)
    ):
        return False  # a call, a subscript, an attribute: code
    if _WORDS.fullmatch(value):
        # A word or an identifier: in code a variable, in prose a word. Taken
        # literally only in shell and .env style NAME=value and --flag=value.
        return glued and (name.startswith("-") or bool(_UPPER_NAME.fullmatch(name)))
    return True


#: Masked characters, or what looks like a marker, in a value.
_OPAQUE = re.compile(r"\0+|\[REDACTED:\w{1,40}\]")
_WHITESPACE = re.compile(r"\s")
_NAME_RUN = re.compile(r"[\w.\-]*")
_NAME_MAX = 100
# Read in the reversed text: the name characters before a keyword, and the
# word before a name ("API key").
_NAME_BACK = re.compile(r"[\w.\-]{0,%d}" % (_NAME_MAX + 1))
_PREVIOUS_WORD = re.compile(r"[\w.\-]{1,%d}" % _NAME_MAX)


@functools.lru_cache(maxsize=512)
def _is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


class _Values:
    """The values read by _find_assignments: those found, and those read.

    A name can sit in the value of a name before it ("password=x;token=y"),
    and text made of names, "password=password=...", would have each value,
    up to 1,024 characters, read and vetted once per name in it. So a long
    value (over ``_SHORT_VALUE`` characters) that overlaps a long one found
    is not vetted (redact would drop it), and a name in the long reads (what
    follows a name, up to the end of its value, vetted or not: a tuple
    target's, a comparison's) of ``_VALUE_DEPTH`` names before it is not
    read: each character is read a bounded number of times. (Short values
    cost little to read, and nothing to leave out of this bookkeeping.)
    """

    __slots__ = ("ends", "found", "_last")

    def __init__(self) -> None:
        self.found = _Spans()
        #: A heap: the ends of the long reads (_find_assignments drops those
        #: before the name it reads).
        self.ends: list[int] = []
        self._last: _Span = (-1, -1)

    def read(self, start: int, end: int) -> None:
        if end - start > _SHORT_VALUE and (start, end) != self._last:  # "API key", "key": one read
            heapq.heappush(self.ends, end)
            self._last = (start, end)

    def worth_vetting(self, start: int, end: int) -> bool:
        return end - start <= _SHORT_VALUE or not (self.found and self.found.overlaps(start, end))

    def add_found(self, start: int, end: int) -> None:
        if end - start > _SHORT_VALUE:
            self.found.add(start, end)


_VALUE_DEPTH = 8
_SHORT_VALUE = 64


def _assignment_values(
    text: str, name_start: int, match: re.Match[str], values: _Values
) -> list[_Span]:
    """The span of the value assigned in ``match`` if it is a secret (or of its ends)."""
    name, op = text[name_start : match.start()], match.group("op")
    if (
        op == "="
        and text[max(0, name_start - 80) : name_start].rstrip(" \t").endswith(",")
        and _TUPLE_TARGET.search(text, max(0, name_start - 80), name_start)
    ):
        return []  # "user, password = 'admin', make_password()": which value is whose?
    if match.group("is") is not None and not _PROSE_NAME.search(name):
        return []  # "the name is ...": too often prose
    # "the token is expired", "the secret is SHA256", "the token is
    # gpt-4o-mini": a token or secret "is" a value only when the value looks
    # random (12 characters or more, upper and lower case and digits).
    opaque_only = match.group("is") is not None and _TOKEN_OR_SECRET.search(name) is not None
    # The value's group closes last: "dq", "sq", "bq", "eq", "pq", "lq", "yb" or "bare".
    quoted = match.lastgroup if match.lastgroup != "bare" else None
    if quoted is not None:
        if (
            match.group("ws") is not None
            and (quoted not in ("dq", "sq") or match.group("paren") is not None)
            and not name.startswith("-")
        ):
            return []  # "pass `x` to", 'the access key ("primary")': prose
        if quoted == "yb":
            return _block_lines(match, values, opaque_only)
        return [
            (start, start + len(piece))
            for piece, start in _value_pieces(match.group(quoted), match.start(quoted))
            if values.worth_vetting(start, start + len(piece))
            and _literal_ok(piece)
            and (not opaque_only or (len(piece) >= 12 and _has_classes(piece)))
        ]
    value, value_start = match.group("bare"), match.start("bare")
    if match.group("ws") is not None and not name.startswith("-"):
        return []  # "password reset", "token count": prose
    if op in ("==", "===", "!=", "!=="):
        return []  # a comparison with a variable
    in_query = name_start > 0 and text[name_start - 1] in "?&"
    if in_query:
        value = _QUERY_END.split(value, maxsplit=1)[0]  # a query parameter
    else:
        value = _NEXT_PARAMETER.split(value, maxsplit=1)[0]
    if _WHOLE_CALL.fullmatch(value):
        return []  # code
    value = value.rstrip(",;:)]}>")
    if value.endswith(".") and not value.endswith(".."):
        value = value[:-1]  # a full stop ends the sentence
    glued = text[match.start() : value_start] == "="  # NAME=value, --flag=value
    return [
        (start, start + len(piece))
        for piece, start in _value_pieces(value, value_start)
        if values.worth_vetting(start, start + len(piece))
        and _bare_ok(piece, name, glued, in_query)
        and (not opaque_only or (len(piece) >= 12 and _has_classes(piece)))
    ]


def _block_lines(match: re.Match[str], values: _Values, opaque_only: bool) -> list[_Span]:
    """The lines of a YAML block scalar that are secrets: each line of a
    block whose first line is one word (a key cut into lines, a token); none
    of a block of text (a sentence, a certificate's BEGIN line first)."""
    block, origin = match.group("yb"), match.start("yb")
    lines = block.split("\n")
    if _WHITESPACE.search(lines[0].strip()):
        return []
    spans: list[_Span] = []
    position = origin
    for line in lines:
        stripped = line.strip()
        start = position + (len(line) - len(line.lstrip()))
        position += len(line) + 1
        if not stripped:
            continue
        if _WHITESPACE.search(stripped):
            break  # the block goes on as text: not a value
        end = start + len(stripped)
        if (
            values.worth_vetting(start, end)
            and _literal_ok(stripped)
            and (not opaque_only or (len(stripped) >= 12 and _has_classes(stripped)))
        ):
            spans.append((start, end))
    return spans


def _value_pieces(value: str, start: int) -> Sequence[tuple[str, int]]:
    """What to vet of ``value``, at ``start``: the value, or the text at its ends.

    A value with masked characters in it (a marker, a secret found by a
    detector before) is vetted by its ends, each on its own: the text before
    the first masked character and the text after the last, when glued to
    them by a letter or a digit (``password=[REDACTED:jwt]hunter2`` still
    holds a password; in ``postgres://app:[REDACTED:database_url]@db`` the
    ends are no password). What only looks like a marker, of an unknown
    kind, is not shielded, but it is no password either: it splits a value
    in the same way.
    """
    if "[REDACTED:" not in value:
        first = value.find(_MASK)
        if first < 0:
            return ((value, start),)
        last = value.rfind(_MASK) + 1
    else:
        opaque = list(_OPAQUE.finditer(value))
        if not opaque:
            return ((value, start),)
        first, last = opaque[0].start(), opaque[-1].end()
    pieces = []
    if first > 0 and value[first - 1] in _ALNUM:
        pieces.append((value[:first], start))
    if last < len(value) and value[last] in _ALNUM:
        pieces.append((value[last:], start + last))
    return pieces


def _find_assignments(text: str, lowered: str) -> Iterator[_Span]:
    # Names are found from the keywords in them, checked (cached: the same
    # few names recur), and only then is the rest of the pattern tried; a
    # search would try the name part at every position. "API key", "secret
    # key" are names of two words. A name is scanned once however many
    # keywords it holds, and never further back than a name can be long.
    names: set[_Span] = set()
    name_end = -1
    backwards = text[::-1]  # names are read back from their keywords
    size = len(text)
    for index in sorted(i for needle in _KEYWORD_NEEDLES for i in _occurrences(lowered, needle)):
        if index < name_end:
            continue  # in the name found last
        run = _NAME_RUN.match(text, index)
        name_end = run.end() if run is not None else index + 1
        back = _NAME_BACK.match(backwards, size - index)
        start = index - (back.end() - back.start()) if back is not None else index
        names.add((start, name_end))
        if start > 1 and text[start - 1] == " ":
            word = _PREVIOUS_WORD.match(backwards, size - start + 1)
            if word is not None:
                word_start = start - 1 - (word.end() - word.start())
                # The word before makes a name that is no secret one alone
                # ("API key"), or a command line's option and its name
                # ("-p password", "--set auth.token="); before a secret
                # name that is no option ("my password") it adds nothing.
                if text[word_start] == "-" or not (
                    name_end - start <= _NAME_MAX and _is_secret_name(text[start:name_end])
                ):
                    names.add((word_start, name_end))
    values = _Values()
    ends = values.ends
    for start, end in sorted(names):
        if end - start > _NAME_MAX or not _is_secret_name(text[start:end]):
            continue
        if ends:
            while ends and ends[0] <= start:
                heapq.heappop(ends)
            if len(ends) >= _VALUE_DEPTH:
                continue
        match = _ASSIGNED.match(text, end)
        if match is not None:
            values.read(end, match.end())
            for span in _assignment_values(text, start, match, values):
                values.add_found(*span)
                yield span
    if "</" in text:
        for match in _XML_ASSIGNMENT.finditer(text):
            for value, start in _value_pieces(match.group("v"), match.start("v")):
                if _literal_ok(value):
                    yield start, start + len(value)


# --------------------------------------------------------------------------
# base64_blob: long base64-like runs with high entropy. The library's
# Base64HighEntropyString wants quoted strings and flags paths, identifiers
# and public material; candidates here are vetted further, with its
# entropy measure and sequence heuristic.

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{40,}={0,2}")
_BASE64_RUN_CHARS = frozenset(string.ascii_letters + string.digits + "+/_-")
_BASE64_RUN_AFTER = _BASE64_RUN_CHARS | {"="}
_BASE64_MIN = 40
_ENTROPY_LIMIT = 4.5
# Public by design: Subresource Integrity and lock-file hashes, publishable
# Stripe keys.
_PUBLIC_RUN_PREFIX = re.compile(r"sha(?:1|256|384|512)-|pk_(?:live|test)_")
# Public by design: go.sum hashes, data: URIs, SSH public keys.
_PUBLIC_RUN_CONTEXT = re.compile(
    r"(?:\bh1:|;base64,"
    r"|\b(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp\d+|sk-ssh-ed25519@openssh\.com)[ \t]+)$"
)
_WORDY_SEGMENT = re.compile(
    r"[A-Za-z][a-z]{2,}(?:[_\-.][A-Za-z0-9]+)*|[a-z0-9]+(?:[_\-][a-z0-9]+)+"
)


def _blob_ok(value: str) -> bool:
    body = value.rstrip("=")
    return (
        len(body) >= _BASE64_MIN
        and _has_classes(body)
        and _ENTROPY.calculate_shannon_entropy(body) > _ENTROPY_LIMIT
        and not is_sequential_string(body)
        and not _is_placeholder(body)  # AWS's documented ...EXAMPLEKEY
        and not _encodes_harmless_text(body)
    )


def _encodes_harmless_text(body: str) -> bool:
    """Whether ``body`` is base64 of readable text (words, lines) with no secret in it.

    Documentation shows base64 of sentences; a secret decodes to bytes, or to
    text that holds a secret (a credentials file), which redact finds.
    """
    altchars = b"-_" if "-" in body or "_" in body else None
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=altchars, validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return False
    readable = all(c.isprintable() or c in "\n\r\t" for c in decoded)
    if not readable or decoded.count(" ") + decoded.count("\n") < 2:
        return False
    return not redact(decoded).found


def _find_blobs(text: str, lowered: str) -> Iterator[_Span]:
    for match in _BASE64_RUN.finditer(text):
        start, end = match.span()
        if start > 0 and text[start - 1] in _BASE64_RUN_CHARS:
            continue  # the tail of a run glued to a mask or a marker
        if end < len(text) and text[end] in _BASE64_RUN_AFTER:
            continue
        run = match.group()
        if _PUBLIC_RUN_PREFIX.match(run) or _PUBLIC_RUN_CONTEXT.search(
            text, max(0, start - 40), start
        ):
            continue
        segments = run.split("/")
        wordy = sum(1 for segment in segments if _WORDY_SEGMENT.fullmatch(segment))
        if (len(segments) > 2 and wordy >= 2) or (run.startswith("/") and wordy >= 1):
            # A path, or a URL's path: only a long random segment of it is a secret.
            offset = start
            for segment in segments:
                if _blob_ok(segment):
                    yield offset, offset + len(segment)
                offset += len(segment) + 1
        elif _blob_ok(run):
            yield start, end


# --------------------------------------------------------------------------
# The detectors, in order of precedence: a span claimed by one is masked for
# the ones after it.


@dataclass(frozen=True)
class _Detector:
    kind: str
    #: The detector runs when one of these occurs in the lower-cased text...
    needles: tuple[str, ...]
    find: _Finder
    #: ...or when this matches the text.
    shape: re.Pattern[str] | None = None


# A URL query parameter named as a secret (?api_key=...&): the rule set's
# formats want a quote, a space or the end of a line after the value, and an
# unquoted value without a digit is not an assignment's here.
_QUERY_SECRET = re.compile(
    r"[?&][A-Za-z0-9_.\-]{0,40}?(?i:token|key|secret|pass|pwd)[A-Za-z0-9_.\-]{0,40}="
    r"(?P<v>[^&#\s'\"<>\\]{16,1024})"
)


def _query_secret_ok(value: str) -> bool:
    classes = (
        any(c.isupper() for c in value),
        any(c.islower() for c in value),
        any(c.isdigit() for c in value),
    )
    return (
        sum(classes) >= 2
        and not _is_placeholder(value)
        and _ENTROPY.calculate_shannon_entropy(value) >= 3.5
    )


_DETECTORS: tuple[_Detector, ...] = (
    _Detector("private_key", ("private key", "putty-user-key-file"), _find_private_keys),
    _Detector(
        "jwt",
        ("eyj",),
        _pattern(_JWT, accept=_jwt_ok),
    ),
    _Detector(
        "openai_key",
        ("sk-",),
        _pattern(_OPENAI, tail=_TOKEN_TAIL, left=_TOKEN_CHARS, accept=_openai_ok),
    ),
    _Detector(
        "github_token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        # finditer, not the library's findall: its group would yield the prefix only.
        _chain(
            _pattern(GitHubTokenDetector.denylist[0], tail=_WORD_TAIL),
            _pattern(_GITHUB_PAT),
        ),
    ),
    _Detector(
        "gitlab_token",
        (
            "glpat-",
            "gldt-",
            "glft-",
            "glsoat-",
            "glrt-",
            "glcbt-",
            "glimt-",
            "glptt-",
            "glagent-",
            "gloas-",
            "gr1348941",
        ),
        _chain(*(_pattern(pattern) for pattern in GitLabTokenDetector.denylist)),
    ),
    _Detector(
        "stripe_key",
        ("k_live_", "k_test_", "whsec_"),
        _chain(
            _pattern(StripeDetector.denylist[0], tail=_ALNUM_TAIL),
            _pattern(_STRIPE_OTHER, tail=_ALNUM_TAIL),
        ),
    ),
    _Detector(
        "npm_token",
        ("npm_", "/:_"),
        _chain(
            _pattern(_NPM_TOKEN),
            _find_npmrc,
        ),
    ),
    _Detector(
        "twilio_key",
        (),
        _chain(
            *(
                _pattern(pattern, right=_ALNUM, accept=_twilio_ok)
                for pattern in TwilioKeyDetector.denylist
            )
        ),
        shape=re.compile(r"AC[a-z0-9]{32}|SK[a-z0-9]{32}"),
    ),
    _Detector(
        "discord_bot_token",
        (),
        _pattern(_DISCORD_BOT, left=_TOKEN_CHARS, right=_TOKEN_CHARS, accept=_discord_bot_ok),
        shape=re.compile(r"[MNO][A-Za-z\d_\-]{22}"),
    ),
    _Detector(
        "mailchimp_api_key",
        ("-us",),
        _pattern(_MAILCHIMP, left=_TOKEN_CHARS, right=_ALNUM, accept=_mailchimp_ok),
    ),
    _Detector(
        "google_oauth_client_secret",
        ("gocspx-",),
        _pattern(_GOOGLE_OAUTH_SECRET, left=_TOKEN_CHARS, tail=_TOKEN_TAIL),
    ),
    # Before aws_access_key: it needs the key id still visible.
    _Detector("aws_secret_key", _AWS_KEY_ID_NEEDLES, _find_aws_secret_after_key_id),
    _Detector(
        "aws_access_key",
        _AWS_KEY_ID_NEEDLES,
        _pattern(_AWS_KEY_ID, right=_ALNUM, accept=_aws_key_id_ok),
    ),
    _Detector(
        "aws_secret_key",
        ("aws", "secret_access", "secretaccess"),
        _chain(
            _anchored(_AWS_SECRET_QUOTED, ("aws",), 1, accept=_aws_secret_ok),
            _anchored(_AWS_SECRET_NAMED, ("aws", "secret"), 1, accept=_aws_secret_ok),
        ),
    ),
    _Detector(
        "database_url",
        ("://",),
        _anchored(_DATABASE_URL, ("://",), "password", back=_SCHEME_CHARS, accept=_url_password_ok),
    ),
    _Detector(
        "url_credentials",
        ("://",),
        _pattern(_URL_CREDENTIALS, 1, left=None, accept=_url_password_ok),
    ),
    _Detector(
        "basic_auth",
        ("basic", "-u", "--user"),
        _chain(
            _anchored(_BASIC, ("basic",), "v", accept=_basic_credentials_ok),
            _anchored(_USER_OPTION, ("-u",), "v", back=frozenset("-"), accept=_url_password_ok),
        ),
    ),
    _Detector("bearer_token", ("bearer", "authorization"), _find_bearer),
    _Detector(
        "password_assignment",
        tuple(needle for needles, _, _ in _CLI_COMMANDS for needle in needles),
        _find_cli_passwords,
    ),
    _Detector(
        "password_assignment",
        ("machine", "default"),
        _anchored(_NETRC, ("machine", "default"), "v", accept=_literal_ok),
    ),
    _Detector("password_assignment", (), _find_pgpass, shape=_PGPASS_PORT),
    _Detector("password_assignment", _KEYWORD_NEEDLES, _find_assignments),
    _Detector(
        "password_assignment",
        _KEYWORD_NEEDLES,
        _pattern(_QUERY_SECRET, "v", left=None, accept=_query_secret_ok),
    ),
    _Detector(
        "base64_blob",
        (),
        _find_blobs,
        shape=re.compile(r"[A-Za-z0-9+/_\-]{40}"),
    ),
)

#: Every kind :func:`redact` can report.
#: The kinds this module's own detectors report.
OWN_KINDS: frozenset[str] = frozenset(detector.kind for detector in _DETECTORS)
#: Every kind :func:`redact` reports: its own and the rule set's.
KINDS: frozenset[str] = OWN_KINDS | secret_rules.RULE_KINDS

# The pre-filter: every detector's needles and shapes. Masking claimed spans
# never creates a needle or a shape, so what the text lacks, the masked text
# lacks too.
_NEEDLES = tuple(sorted({needle for detector in _DETECTORS for needle in detector.needles}))
_SHAPES = tuple(
    dict.fromkeys(detector.shape for detector in _DETECTORS if detector.shape is not None)
)


# Public material that looks like secrets: kept as is, and hidden from the
# detectors, as are markers already in the text.

#: An exact marker of a known kind; "[REDACTED:anything]" is text like any other.
_MARKER = re.compile(r"\[REDACTED:(?:" + "|".join(sorted(KINDS)) + r")\]")
_PUBLIC_BLOCK_BEGIN = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*(?:PUBLIC KEY(?: BLOCK)?|CERTIFICATE(?: REQUEST)?|X509 CRL))-----"
)
_PUBLIC_BODY_LINE = re.compile(r"[ \t]*+(?P<base64>[A-Za-z0-9+/=]*+)[ \t]*+\r?")
_HEADER_LINE = re.compile(r"[A-Za-z][\w\-]*+: [^\n]*+")


def _public_block_shields(text: str) -> Iterator[_Span]:
    """The well-formed public key and certificate blocks, to shield.

    A block's body is base64 lines, perhaps after "Name: value" header lines
    (a PGP public key's "Version:", "Comment:"): those are left to the
    detectors, the rest of the block is shielded. A BEGIN line without its
    own END line, or a body with anything else in it (another BEGIN or END
    line, prose, a secret), shields nothing.
    """
    blocks = _blocks(text, _PUBLIC_BLOCK_BEGIN.finditer(text), "-----BEGIN", "-----END", _pem_end)
    for start, body_start, body_end, end in blocks:
        headers_start = headers_end = -1
        in_base64 = False
        for index, (line_start, line_end) in enumerate(_lines(text, body_start, body_end)):
            line = _PUBLIC_BODY_LINE.fullmatch(text, line_start, line_end)
            if line is not None:
                in_base64 = in_base64 or line.end("base64") > line.start("base64")
            elif index > 0 and not in_base64 and _HEADER_LINE.fullmatch(text, line_start, line_end):
                headers_start = line_start if headers_start < 0 else headers_start
                headers_end = line_end
            else:
                break
        else:
            if headers_start < 0:
                yield start, end
            else:
                yield start, headers_start
                yield headers_end, end


def _shields(text: str) -> list[_Span]:
    spans = [match.span() for match in _MARKER.finditer(text)] if "[REDACTED:" in text else []
    if "-----BEGIN" in text:
        spans.extend(_public_block_shields(text))
    return spans


# --------------------------------------------------------------------------
# The API.


def redact(text: str) -> Redaction:
    """``text`` with every secret replaced by its :func:`marker`.

    Detectors run in order of precedence; each sees the text with the spans
    claimed before it masked, so a secret is replaced once, as the most
    specific kind. ``found`` counts the replacements by kind.
    """
    if not isinstance(text, str):
        raise TypeError(f"redact() takes a str, not {type(text).__name__}")
    try:
        return _redact(text)
    finally:
        # The caches of values and names vetted serve the calls running: none
        # outlives them (calls in other threads share them; each call's end
        # empties them).
        for cached in _VALUE_CACHES:
            cached.cache_clear()


def _redact(text: str) -> Redaction:
    shields = _shields(text)
    shield_spans = _Spans()
    for start, end in shields:
        shield_spans.add(start, end)
    if len(text) >= _PARALLEL_MIN:
        # The engine releases the interpreter while it scans: both at once.
        scanning = _pool().submit(_rule_spans, text)
        own_claims = _own_claims(text, shields)
        found = scanning.result()
    else:
        found = _rule_spans(text)
        own_claims = _own_claims(text, shields)
    rule_claims = [
        (start, end, kind)
        for start, end, kind in found
        if start < end
        and not shield_spans.overlaps(start, end)
        and not _is_placeholder(text[start:end])
        and not (kind in _GENERIC_RULE_KINDS and _is_label(text[start:end]))
    ]
    if rule_claims and own_claims:
        own_claims = _yield_to_providers(rule_claims, own_claims)
    if not rule_claims and not own_claims:
        return Redaction(text, MappingProxyType({}))
    merged = _whole(text, _merge(rule_claims, own_claims))
    pieces: list[str] = []
    position = 0
    for start, end, kind in merged:
        pieces.append(text[position:start])
        pieces.append(marker(kind))
        position = end
    pieces.append(text[position:])
    counts = Counter(kind for _, _, kind in merged)
    return Redaction("".join(pieces), MappingProxyType(dict(sorted(counts.items()))))


#: The vetting functions whose results are cached during a call of redact
#: (text packed with assignments repeats its values, and a value is vetted
#: again once its span is claimed); the names read are cached too (a name
#: read around a keyword may be a secret value itself).
_VALUE_CACHES = (_is_placeholder, _literal_ok, _bare_ok, _is_secret_name)


#: Own kinds that win over a rule's kind when their spans overlap: they are
#: more precise about what the secret is (a key block, a URL's password).
_OWN_FIRST = frozenset({"private_key", "database_url", "url_credentials", "aws_secret_key"})


#: Characters a token is made of: a span is widened over them (see _whole).
_TOKEN_BODY = frozenset(string.ascii_letters + string.digits + "_-+/!~")
_WIDEN_RIGHT = re.compile(r"(?:[A-Za-z0-9_\-+/!~=]|\.(?=[A-Za-z0-9]))*")
#: Kinds whose span is a part of a larger run on purpose.
_EXACT = frozenset({"private_key", "database_url", "url_credentials"})


def _whole(text: str, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Each span widened to the whole token it is part of, so that no piece
    of a secret is left beside its marker: a rule or a pattern that stops
    at a character the token has (an ``=`` inside it, a ``.``, an ``!``)
    would leave the rest. Rightwards over token characters, ``=`` and a
    ``.`` followed by one; leftwards over token characters and a ``.``
    after one (an ``=`` or ``:`` before a value is its name's: a token cut
    at an ``=`` inside it may still leave its first part). Spans that come to overlap are
    joined, keeping the first one's kind."""
    widened: list[tuple[int, int, str]] = []
    for start, end, kind in spans:
        # Each character is read once: a scan stops where the last span ended.
        reached = widened[-1][1] if widened else 0
        if kind not in _EXACT:
            widened_to = _WIDEN_RIGHT.match(text, max(end, reached))
            end = widened_to.end() if widened_to else max(end, reached)
            while start > reached and not _after_glued_option(text, start) and (
                text[start - 1] in _TOKEN_BODY
                or (text[start - 1] == "." and start - 1 > reached and text[start - 2] in _ALNUM)
            ):
                start -= 1
        if widened and start < reached:
            last_start, last_end, last_kind = widened[-1]
            widened[-1] = (last_start, max(last_end, end), last_kind)
        else:
            widened.append((start, end, kind))
    return widened


def _after_glued_option(text: str, start: int) -> bool:
    """Whether ``start`` follows a command-line option glued to its value
    (``mysql -p<password>``): the option is kept, not taken for the token."""
    return (
        start >= 2
        and text[start - 2 : start] == "-p"
        and (start == 2 or text[start - 3] in " \t")
    )


#: Texts of this many characters or more are scanned by the engine in a
#: worker thread while this module's detectors run.
_PARALLEL_MIN = 8192
_POOLS: list[concurrent.futures.ThreadPoolExecutor] = []


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    if not _POOLS:
        _POOLS.append(
            concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="redaction")
        )
    return _POOLS[0]


def _rule_spans(text: str) -> list[tuple[int, int, str]]:
    return list(secret_rules.find(text))


#: This module's kinds that give way to a provider rule's span they overlap:
#: the rule knows where the token ends (``AccountKey=...;EndpointSuffix=``
#: keeps its suffix) and what it is (``Bearer <GitHub token>`` is a
#: ``github_token``).
_YIELDING = frozenset({"password_assignment", "base64_blob", "bearer_token", "basic_auth"})


def _yield_to_providers(
    rule_claims: list[tuple[int, int, str]], own_claims: list[tuple[int, int, str]]
) -> list[tuple[int, int, str]]:
    providers = _Spans()
    joined: list[list[int]] = []
    for start, end, kind in sorted(rule_claims):
        if kind in _GENERIC_RULE_KINDS:
            continue
        if joined and start < joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    for start, end in joined:
        providers.add(start, end)
    return [
        (start, end, kind)
        for start, end, kind in own_claims
        if kind not in _YIELDING or not providers.overlaps(start, end)
    ]


def _is_label(value: str) -> bool:
    """A word that reads as a label or a translation (``"Password":
    "Passwort"``), not as a secret: letters only, capitalised or not ASCII."""
    return value.isalpha() and (value.istitle() or not value.isascii())


def _priority(kind: str) -> int:
    if kind in _OWN_FIRST:
        return 0
    if kind in secret_rules.RULE_KINDS and kind not in _GENERIC_RULE_KINDS:
        return 1
    if kind in _GENERIC_RULE_KINDS:
        return 3
    return 2


#: Rule kinds that name no provider: an own kind says more.
_GENERIC_RULE_KINDS = frozenset(
    {
        "generic_api_key",
        "generic_password",
        "generic_credential_uri",
        "curl_auth_header",
        "curl_auth_user",
    }
)


def _merge(
    rule_claims: list[tuple[int, int, str]], own_claims: list[tuple[int, int, str]]
) -> list[tuple[int, int, str]]:
    """Disjoint spans from overlapping claims, by precedence (:func:`_priority`).

    A span this module's detectors find of a kind of :data:`_OWN_FIRST`
    takes what overlaps it whole: those kinds replace a part of what a rule
    matched on purpose (a URL keeps its host, a key block is one secret).
    A URL's password that a provider rule knows (a GitHub token as the
    password of a clone URL) is reported as the provider's kind. Otherwise
    overlapping spans are joined, so no piece of either secret is left, and
    reported as the kind of highest precedence among them.
    """
    first = _Spans()
    for start, end, kind in own_claims:
        if kind in _OWN_FIRST:
            first.add(start, end)
    providers = sorted(
        (start, end, kind)
        for start, end, kind in rule_claims
        if kind not in _GENERIC_RULE_KINDS and first.overlaps(start, end)
    )
    provider_starts = [start for start, _, _ in providers]
    kept: list[tuple[int, int, str]] = []
    for start, end, kind in own_claims:
        if kind not in _OWN_FIRST:
            continue
        reported = kind
        if kind in ("url_credentials", "database_url"):
            index = bisect.bisect_left(provider_starts, start)
            if index < len(providers) and providers[index][0] < end:
                reported = providers[index][2]
        kept.append((start, end, reported))
    kept.extend(claim for claim in rule_claims if not first.overlaps(claim[0], claim[1]))
    kept.extend(
        claim
        for claim in own_claims
        if claim[2] not in _OWN_FIRST and not first.overlaps(claim[0], claim[1])
    )
    kept.sort()
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in kept:
        if merged and start < merged[-1][1]:
            last_start, last_end, last_kind = merged[-1]
            best = min(last_kind, kind, key=lambda name: (_priority(name), name))
            merged[-1] = (last_start, max(last_end, end), best)
        else:
            merged.append((start, end, kind))
    return merged


def _own_claims(text: str, shields: list[_Span]) -> list[tuple[int, int, str]]:
    """The spans the detectors of this module find (see :data:`_DETECTORS`).

    Each detector sees the text with the shields and the spans claimed
    before it masked.
    """
    lowered = _lower(text)
    needles = {needle for needle in _NEEDLES if needle in lowered}
    shapes = {shape for shape in _SHAPES if shape.search(text)}
    if not needles and not shapes:
        return []

    masked = text
    if shields:
        masked, lowered = _mask(masked, shields), _mask(lowered, shields)

    claims: list[tuple[int, int, str]] = []
    for detector in _DETECTORS:
        if needles.isdisjoint(detector.needles) and detector.shape not in shapes:
            continue
        spans = _Spans()
        for start, end in detector.find(masked, lowered):
            if (
                start < end
                and _MASK not in masked[start:end]
                and not _is_placeholder(masked[start:end])
            ):
                spans.add(start, end)
        if spans:
            masked, lowered = _mask(masked, spans), _mask(lowered, spans)
            claims.extend((start, end, detector.kind) for start, end in spans)
    return claims


def redact_fields(
    fields: Mapping[str, str | None],
) -> tuple[dict[str, str | None], dict[str, int]]:
    """Redact every non-None value; return the redacted fields and the summed counts by kind."""
    redacted: dict[str, str | None] = {}
    totals: Counter[str] = Counter()
    for name, value in fields.items():
        if value is None:
            redacted[name] = None
            continue
        result = redact(value)
        redacted[name] = result.text
        totals.update(result.found)
    return redacted, dict(sorted(totals.items()))


#: Above this many characters in all, redact_fields_async works in a thread.
_INLINE_LIMIT = 4096


async def redact_fields_async(
    fields: Mapping[str, str | None],
) -> tuple[dict[str, str | None], dict[str, int]]:
    """:func:`redact_fields` for a coroutine: the same result, without blocking the event loop.

    Values of more than 4,096 characters in all are redacted in a worker
    thread (:func:`asyncio.to_thread`); shorter ones inline, as a thread
    costs more than scanning a comment. The fields are read before the
    thread starts: the mapping may change while it runs.
    """
    snapshot = dict(fields)
    if sum(len(value) for value in snapshot.values() if value is not None) > _INLINE_LIMIT:
        return await asyncio.to_thread(redact_fields, snapshot)
    return redact_fields(snapshot)


def _mask(text: str, spans: Iterable[_Span]) -> str:
    pieces: list[str] = []
    position = 0
    for start, end in sorted(spans):
        start = max(start, position)
        pieces.append(text[position:start])
        pieces.append(_MASK * max(0, end - start))
        position = max(position, end)
    pieces.append(text[position:])
    return "".join(pieces)


class _Spans:
    """Disjoint spans; one that overlaps a span already there is dropped."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def overlaps(self, start: int, end: int) -> bool:
        index = bisect.bisect_right(self.starts, start)
        return (index > 0 and self.ends[index - 1] > start) or (
            index < len(self.starts) and self.starts[index] < end
        )

    def add(self, start: int, end: int) -> None:
        index = bisect.bisect_right(self.starts, start)
        if index > 0 and self.ends[index - 1] > start:
            return
        if index < len(self.starts) and self.starts[index] < end:
            return
        self.starts.insert(index, start)
        self.ends.insert(index, end)

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __iter__(self) -> Iterator[_Span]:
        return zip(self.starts, self.ends)
