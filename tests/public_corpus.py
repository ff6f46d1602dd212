"""The public recall corpus and the benign corpus of test_redaction_public.py.

Secrets: every provider format of :mod:`tests.public_secret_formats`, each
token drawn at random (seeded) from its format and written in each of
:data:`SYNTAXES`, under a variable named after the provider the way people
name them (``ADAFRUIT_API_KEY``, ``adafruitApiKey``...).

Benign texts: what must come back byte for byte (see :func:`benign_texts`).
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tests.public_secret_formats import FORMATS, Piece


@dataclass(frozen=True)
class Case:
    provider: str
    rule: str
    syntax: str
    text: str
    token: str


def provider_of(rule_id: str) -> str:
    return re.sub(r"\.\d+$", "", rule_id).split("-")[0]


def _alphabet(spec: str) -> str:
    chars: list[str] = []
    index = 0
    while index < len(spec):
        if (
            index + 2 < len(spec)
            and spec[index + 1] == "-"
            and spec[index].isalnum()
            and spec[index + 2].isalnum()
        ):
            chars.extend(chr(code) for code in range(ord(spec[index]), ord(spec[index + 2]) + 1))
            index += 3
        else:
            chars.append(spec[index])
            index += 1
    return "".join(dict.fromkeys(chars))


def token(pieces: tuple[Piece, ...], rng: random.Random) -> str:
    parts: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            parts.append(piece)
        else:
            alphabet, length = _alphabet(piece[0]), piece[1]
            parts.append("".join(rng.choice(alphabet) for _ in range(length)))
    return "".join(parts)


def _words(rule_id: str, keyword: str | None) -> list[str]:
    """The words of a variable's name: the provider's keyword and what the
    rule says the token is (``api key``, ``token``, ``secret``)."""
    base = [word for word in re.split(r"[^A-Za-z0-9]+", keyword or provider_of(rule_id)) if word]
    if base[0][:1].isdigit():
        base = ["op", *base] if base[0].startswith("1") else ["x", *base]
    last = base[-1].lower()
    if last.endswith(("key", "token", "secret", "password")):
        return base
    rule = rule_id.lower()
    if "secret" in rule:
        return [*base, "secret"]
    if "token" in rule:
        return [*base, "token"]
    return [*base, "api", "key"]


def _upper(words: list[str]) -> str:
    return "_".join(word.upper() for word in words)


def _lower(words: list[str]) -> str:
    return "_".join(word.lower() for word in words)


def _camel(words: list[str]) -> str:
    first, *rest = (word.lower() for word in words)
    return first + "".join(word.capitalize() for word in rest)


_Template = Callable[[list[str], str, str], str]

#: Syntax name -> (words of the name, provider, token) -> text.
SYNTAXES: dict[str, _Template] = {
    "shell": lambda w, p, t: f'export {_upper(w)}="{t}"\n./deploy.sh --env prod\n',
    "dotenv": lambda w, p, t: f"# {p}\n{_upper(w)}={t}\nDEBUG=false\n",
    "yaml": lambda w, p, t: f"{p}:\n  {_lower(w)}: {t}\n  timeout: 30\n",
    "json": lambda w, p, t: f'{{"name": "{p}", "{_camel(w)}": "{t}", "retries": 3}}',
    "toml": lambda w, p, t: f'[{p}]\n{_lower(w)} = "{t}"\nenabled = true\n',
    "xml": lambda w, p, t: f"<settings>\n  <{_camel(w)}>{t}</{_camel(w)}>\n</settings>\n",
    "makefile ?=": lambda w, p, t: f"{_upper(w)} ?= {t}\n\nbuild:\n\tgo build ./...\n",
    "makefile ::=": lambda w, p, t: f"{_upper(w)} ::= {t}\n",
    "php .=": lambda w, p, t: f'<?php\n${_camel(w)} = "";\n${_camel(w)} .= "{t}";\n',
    "go": lambda w, p, t: f'func main() {{\n\t{_camel(w)} := "{t}"\n\trun({_camel(w)})\n}}\n',
    "java": lambda w, p, t: f'System.setProperty("{_upper(w)}", "{t}");\n',
    "python": lambda w, p, t: f'client = Client({_lower(w)}="{t}", timeout=30)\n',
    "curl header": lambda w, p, t: (
        f"curl -s -H 'Authorization: Bearer {t}' https://api.{p}.example/v1/me\n"
    ),
    "url": lambda w, p, t: f"GET https://api.{p}.example/v1/items?{_lower(w)}={t}&page=2\n",
}


def secret_cases(seed: int = 16) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    for rule_id, keyword, pieces in FORMATS:
        provider = provider_of(rule_id)
        words = _words(rule_id, keyword)
        for syntax, template in SYNTAXES.items():
            value = token(pieces, rng)
            cases.append(Case(provider, rule_id, syntax, template(words, provider, value), value))
    return cases


_MARKER = re.compile(r"\[REDACTED:[a-z0-9_]+\]")


def leftovers(value: str, text: str, redacted: str, size: int = 8) -> list[str]:
    """Pieces of the secret ``value`` of ``size`` characters still in
    ``redacted``, the redaction of ``text``: markers aside (a kind's name
    may repeat a token's prefix), a piece found more often than in the rest
    of ``text`` (a variable may be named like the token's prefix)."""
    kept = _MARKER.sub(" ", redacted)
    rest = text.replace(value, " ")
    pieces = {value[index : index + size] for index in range(len(value) - size + 1)}
    return sorted(piece for piece in pieces if kept.count(piece) > rest.count(piece))


# --------------------------------------------------------------------------
# Benign texts.

_PROSE = [
    "The summarise skill dropped the last table of the PDF again.",
    "Great skill! It saved me an hour on the quarterly report.",
    "It answered in French although the prompt was in English.",
    "Please add a setting for the output length; 300 tokens is too short.",
    "The token count was 4,812 for a two-page document, which seems high.",
    "I had to reset my password before the skill could reach the drive.",
    "The API key field in the settings page is confusing: where does it go?",
    "Works well with Sonnet, less well with the smaller model.",
    "The secret to good results is a short, precise prompt.",
    "Version 2.3 fixed the date parsing bug from 2.2.",
    "Bearer authentication is described in the docs, but the example is outdated.",
    "The key insight is that the skill caches nothing between runs.",
    "Correction: the total should be 1,204.50 EUR, not 1,240.50 EUR.",
    "Thumbs down: it hallucinated a reference to a paper that does not exist.",
    "Use a private key file rather than a password for the deploy step.",
]

_DOC_URLS = [
    "https://docs.python.org/3/library/secrets.html",
    "https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Authorization",
    "https://docs.github.com/en/authentication/keeping-your-account-and-data-secure",
    "https://platform.openai.com/docs/api-reference/authentication",
    "https://docs.anthropic.com/en/api/getting-started",
    "https://stripe.com/docs/keys#obtain-api-keys",
    "https://cloud.google.com/docs/authentication/api-keys",
    "https://www.postgresql.org/docs/current/libpq-pgpass.html",
    "https://en.wikipedia.org/wiki/JSON_Web_Token",
    "https://github.com/gitleaks/gitleaks/blob/master/README.md",
]

_PLACEHOLDERS = [
    "<your-token>",
    "<YOUR_API_KEY>",
    "xxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "AKIAIOSFODNN7EXAMPLE",
    "sk-...",
    "sk-xxxxxxxx",
    "your_api_key_here",
    "changeme",
    "${API_TOKEN}",
    "{{ secrets.API_TOKEN }}",
    "$GITHUB_TOKEN",
    "********",
    "REPLACE_ME",
    "...",
]

_IDENTIFIERS = [
    "tokenizer",
    "max_tokens",
    "get_api_key",
    "SecretManagerServiceClient",
    "password_reset_token_ttl",
    "KeyError",
    "parse_private_key",
    "access_token_expires_in",
    "useAuthToken",
    "TOKEN_ENDPOINT",
]


def _sha1(rng: random.Random) -> str:
    return hashlib.sha1(rng.randbytes(16)).hexdigest()


def _sha256(rng: random.Random) -> str:
    return hashlib.sha256(rng.randbytes(16)).hexdigest()


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(bytes=rng.randbytes(16), version=4))


def _publishable(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    body = "".join(rng.choice(alphabet) for _ in range(24))
    return rng.choice(["pk_live_", "pk_test_"]) + body


def _ssh_public(rng: random.Random) -> str:
    import base64

    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + rng.randbytes(32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " dev@laptop"


def benign_texts(seed: int = 16) -> list[str]:
    """At least 500 texts that hold no secret, of the syntaxes of the recall
    corpus and of ordinary feedback prose."""
    rng = random.Random(seed)
    texts: list[str] = list(_PROSE)
    for prose in _PROSE:
        for url in _DOC_URLS[:4]:
            texts.append(f"{prose} See {url}")
    for placeholder in _PLACEHOLDERS:
        texts.extend(
            [
                f'export API_TOKEN="{placeholder}"\n',
                f"API_KEY={placeholder}\n",
                f"api:\n  token: {placeholder}\n",
                f'{{"apiKey": "{placeholder}"}}',
                f'[service]\napi_key = "{placeholder}"\n',
                f"<apiKey>{placeholder}</apiKey>\n",
                f"API_TOKEN ?= {placeholder}\n",
                f'System.setProperty("API_TOKEN", "{placeholder}");\n',
                f"curl -H 'Authorization: Bearer {placeholder}' https://api.example.com/v1/me\n",
                f"Set your key: client = Client(api_key=\"{placeholder}\")\n",
            ]
        )
    for _ in range(40):
        sha1, sha256, ident = _sha1(rng), _sha256(rng), _uuid(rng)
        texts.extend(
            [
                f"Fixed in commit {sha1}; see the diff.",
                f"git checkout {sha1[:12]} && git log -1 {sha1}",
                f"sha256: {sha256}  skill-2.3.tar.gz",
                f'{{"id": "{ident}", "skill_id": "{_uuid(rng)}", "rating": 4}}',
                f"The run {ident} failed after 3 retries.",
            ]
        )
    for _ in range(30):
        texts.append(f'const stripe = Stripe("{_publishable(rng)}");')
        texts.append(f"{_ssh_public(rng)}\n")
    for name in ("OPENAI_API_KEY", "STRIPE_SECRET_KEY", "GITHUB_TOKEN", "DB_PASSWORD"):
        texts.extend(
            [
                f'api_key = os.environ["{name}"]\n',
                f"const key = process.env.{name};\n",
                f"token: ${{{{ secrets.{name} }}}}\n",
                f'{name}="$(vault kv get -field=value secret/{name.lower()})"\n',
            ]
        )
    for name in _IDENTIFIERS:
        texts.extend(
            [
                f"def {name}(self) -> str:\n    return self._{name}\n",
                f"{name} = settings.{name}\n",
                f"if ({name} == null) {{ throw new IllegalStateException(); }}",
            ]
        )
    for url in _DOC_URLS:
        texts.extend([f"Docs: {url}", f"[link]({url}) explains the token format."])
    # AWS's documented example pair (IAM User Guide, "Managing access keys").
    key_id, secret = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    texts.extend(
        [
            f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n",
            f"export AWS_ACCESS_KEY_ID={key_id}\nexport AWS_SECRET_ACCESS_KEY={secret}\n",
            f'{{"AccessKeyId": "{key_id}", "SecretAccessKey": "{secret}"}}',
            f"The docs' example secret is {secret}, not a real one.",
            f"{secret}",
        ]
    )
    return texts
