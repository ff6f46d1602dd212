"""Crafted inputs for the redaction's cost: each family is a worst case for
some detector or rule, packed densely, made at any length asked.

``CRAFTED`` maps a family's name to a function of the length. The tests
(``tests/test_redaction.py``) check that each family's time grows linearly
with its length; the benchmark (``python -m perf.redaction``) times every
family at 25,000 and 100,000 characters against the 0.25 s bound.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable

__all__ = ["CRAFTED"]

_PROSE = (
    "The summarise skill dropped the last table of the PDF again. "
    "It answered in French although the prompt was in English. "
    "Please add a setting for the output length; 300 tokens is too short. "
)


def _repeat(unit: str, *, head: str = "", last: str = "") -> Callable[[int], str]:
    def make(length: int) -> str:
        body = length - len(head) - len(last)
        return head + (unit * (body // len(unit) + 1))[:body] + last

    return make


def _base64_of_text(length: int) -> str:
    """Base64 of prose that holds base64 of prose, and so on."""
    text = "the summary skill dropped the table again " * 2
    while len(text) < length:
        text = f"see {base64.b64encode(text.encode()).decode()} and the rest of the log"
    return text[:length]


def _distinct_names(length: int) -> str:
    """Assignments to names never seen before: no cache helps."""
    return "".join(f"k{i}_password=v{i} " for i in range(length // 10))[:length]


def _base64_run(length: int) -> str:
    raw = random.Random("test_redaction base64 run").randbytes(length)
    return base64.b64encode(raw).decode()[:length]


_RSA_BEGIN = "-----BEGIN RSA PRIVATE KEY-----"
_RSA_END = "-----END RSA PRIVATE KEY-----"

CRAFTED: dict[str, Callable[[int], str]] = {
    # text with nothing in it
    "prose": _repeat(_PROSE),
    "one character": _repeat("a"),
    # private_key, and the public blocks that shield
    "PEM BEGIN lines, one END": _repeat(_RSA_BEGIN + "\n", last=_RSA_END),
    "PEM BEGIN lines in headers": _repeat(_RSA_BEGIN + "\nComment: ", last="\n" + _RSA_END),
    "PEM BEGIN lines on one line": _repeat(_RSA_BEGIN, last=_RSA_END),
    "PEM escaped BEGIN lines": _repeat(_RSA_BEGIN + "\\n", last=_RSA_END),
    "PEM body of spaces": _repeat(" ", head=_RSA_BEGIN + "\n", last="!\n" + _RSA_END),
    "PEM cut short": _repeat(_RSA_BEGIN + "\nProc-Type: 4,ENCRYPTED\nQUFBQUFBQUFBQUFBQUFBQUFB\n"),
    "PuTTY headers, one MAC": _repeat(
        "PuTTY-User-Key-File-2: ssh-rsa\n", last="Private-MAC: 0123abcd"
    ),
    "SSH2 BEGIN lines, one END": _repeat(
        "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\n",
        last="---- END SSH2 ENCRYPTED PRIVATE KEY ----",
    ),
    "certificate BEGIN lines, one END": _repeat(
        "-----BEGIN CERTIFICATE-----\n", last="-----END CERTIFICATE-----"
    ),
    "certificate header lines": _repeat(
        "-----BEGIN CERTIFICATE-----\nComment: ", last="\n-----END CERTIFICATE-----"
    ),
    # provider tokens
    "eyJ": _repeat("eyJ"),
    "eyJa.": _repeat("eyJa."),
    "sk-": _repeat("sk-"),
    "sk-ant-": _repeat("sk-ant-"),
    "ghp_": _repeat("ghp_"),
    "glagent-": _repeat("glagent-"),
    "xoxb-1-a": _repeat("xoxb-1-a"),
    "xoxa- with tails": _repeat("xoxa-aaaaaaaaaa_"),
    "sk_live_": _repeat("sk_live_"),
    "AIza": _repeat("AIza"),
    "npm_": _repeat("npm_"),
    ".npmrc //a/:_auth=": _repeat("//a/:_auth="),
    ".npmrc on one line": _repeat("x/:_authToken=", head="//registry.npmjs.org/"),
    "hf_": _repeat("hf_"),
    "SG.": _repeat("SG."),
    "pypi-": _repeat("pypi-AgEIcHlwaS5vcmc"),
    "Twilio SK": _repeat("SK0123456789abcdef0123456789abcdef"),
    "AccountKey=": _repeat("AccountKey="),
    "AKIA": _repeat("AKIA"),
    "aws_secret_access_key": _repeat("aws_secret_access_key = "),
    # URLs and authorization schemes
    "postgres://a:": _repeat("postgres://a:"),
    "://a:": _repeat("://a:"),
    "Bearer ": _repeat("Bearer "),
    "one long bearer token": _repeat("a1", head="Bearer "),
    "Authorization: token": _repeat("Authorization: token "),
    "Basic ": _repeat("Basic "),
    "-u a:": _repeat("-u a:"),
    # password_assignment
    "password=": _repeat("password="),
    'password="': _repeat('password="'),
    "pwd=/ (paths)": _repeat("pwd=/"),
    "token=a( (calls)": _repeat("token=a("),
    'token="...", names inside': _repeat('token="' + "token=" * 150 + '..."\n'),
    "pwd=a& (query parameters)": _repeat("pwd=a&"),
    "distinct names": _distinct_names,
    "tuple targets": _repeat("(a," * 16 + "password="),
    "password and spaces": _repeat(" ", head="password"),
    "<password>": _repeat("<password>"),
    # base64_blob
    "base64 run": _base64_run,
    "base64 of base64 of text": _base64_of_text,
    "base64 path": _repeat("a/"),
    # the rule set's keywords and context
    "curl -H headers": _repeat("curl -H 'Authorization: "),
    "curl on one line, -u late": _repeat("a ", head="curl ", last=" -u a:b"),
    "provider keywords, no values": _repeat("adafruit_api_key = "),
    "keyword per line": _repeat("discord_token = x\n"),
    "sk-ant-api03- prefixes": _repeat("sk-ant-api03-"),
    # markers
    "markers": _repeat("[REDACTED:jwt]"),
    "marker shapes": _repeat("[REDACTED:"),
    # passwords given to clients and in credential files
    "mysql commands": _repeat("mysql -u a "),
    "mysql -p": _repeat("mysql -pa "),
    "docker login": _repeat("docker login -u "),
    "pgpass ports": _repeat("a:1:"),
    "pgpass lines": _repeat("h:1:d:u:p "),
    "netrc": _repeat("machine h login u "),
    "discord shapes": _repeat("MTA4NjY3ODk2NzU0MzIxMDk4Nw."),
    "unquoted values with parentheses": _repeat("password=f(" + ")x" * 300 + "# "),
    "values in parentheses": _repeat("password = ('"),
    "%q(": _repeat("api_key = %q("),
    "[[": _repeat("secret = [["),
    "$'": _repeat("TOKEN=$'"),
    "YAML block indicators": _repeat("token: |\n  "),
    "YAML block of lines": _repeat("Xk9mQ2vL7pR4\n  ", head="token: |\n  "),
    "query parameters with values": _repeat("pwd=1&pwd="),
}
