"""
A generated corpus for the redaction tests: secrets of every kind in varied
surroundings, and benign texts that must come back unchanged.

Every secret is made at run time from a seeded ``random.Random`` by a
generator of that kind's shape, so no realistic secret is written in the
source. :func:`secret_cases` and :func:`benign_texts` are deterministic for a
given seed.
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

UPPER = string.ascii_uppercase
LOWER = string.ascii_lowercase
DIGITS = string.digits
LETTERS = string.ascii_letters
ALNUM = LETTERS + DIGITS
UPPER_DIGITS = UPPER + DIGITS
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"


@dataclass(frozen=True)
class SecretCase:
    """A text holding one secret of ``kind``."""

    kind: str
    text: str
    #: Parts of the secret: none may survive redaction.
    fragments: tuple[str, ...]
    #: Parts of the text that must survive it (names, scheme words).
    keep: tuple[str, ...] = ()


# --------------------------------------------------------------------------
# Shapes


def chars(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def mixed(rng: random.Random, alphabet: str, length: int) -> str:
    """Random characters with at least one upper, one lower case letter and one digit."""
    while True:
        value = chars(rng, alphabet, length)
        if (
            any(c.isupper() for c in value)
            and any(c.islower() for c in value)
            and any(c.isdigit() for c in value)
        ):
            return value


def b64(rng: random.Random, nbytes: int, *, urlsafe: bool = False, pad: bool = True) -> str:
    raw = rng.randbytes(nbytes)
    text = (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()
    return text if pad else text.rstrip("=")


def b64_mixed(rng: random.Random, nbytes: int, *, urlsafe: bool = False, pad: bool = True) -> str:
    while True:
        value = b64(rng, nbytes, urlsafe=urlsafe, pad=pad)
        if (
            any(c.isupper() for c in value)
            and any(c.islower() for c in value)
            and any(c.isdigit() for c in value)
        ):
            return value


def b64url_json(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def a_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def aws_key_id(rng: random.Random) -> str:
    return rng.choice(["AKIA", "ASIA"]) + chars(rng, UPPER_DIGITS, 16)


def aws_secret(rng: random.Random) -> str:
    return mixed(rng, B64, 40)


def password_value(rng: random.Random) -> str:
    """A password as people write them: letters, digits, a few symbols."""
    shape = rng.randrange(4)
    if shape == 0:
        words = rng.sample(
            ["orbit", "maple", "copper", "lantern", "violet", "tundra", "harbor", "quartz"], 3
        )
        return "-".join(words) + "-" + chars(rng, DIGITS, 2)
    if shape == 1:
        return chars(rng, HEX, 32)
    while True:
        value = (
            rng.choice(ALNUM)
            + chars(rng, ALNUM + "!@#%^*-_+=", rng.randint(8, 20))
            + rng.choice(ALNUM)
        )
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def url_password(rng: random.Random) -> str:
    while True:
        value = (
            rng.choice(ALNUM) + chars(rng, ALNUM + "-._~", rng.randint(8, 22)) + rng.choice(ALNUM)
        )
        if any(c.isdigit() for c in value) and "..." not in value:
            return value


def pem_body(rng: random.Random) -> list[str]:
    lines = [b64(rng, 48) for _ in range(rng.randint(3, 9))]
    lines.append(b64(rng, rng.randint(5, 40)))
    return lines


# --------------------------------------------------------------------------
# Secrets by kind: each generator returns (text, fragments, keep).

Generated = tuple[str, tuple[str, ...], tuple[str, ...]]


def _fill(rng: random.Random, templates: list[str], secret: str, **extra: str) -> str:
    return rng.choice(templates).format(s=secret, **extra)


def gen_private_key(rng: random.Random) -> Generated:
    label = rng.choice(
        [
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "DSA PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
        ]
    )
    body = pem_body(rng)
    headers: list[str] = []
    if label == "RSA PRIVATE KEY" and rng.random() < 0.4:
        headers = [
            "Proc-Type: 4,ENCRYPTED",
            f"DEK-Info: AES-128-CBC,{chars(rng, HEX, 32).upper()}",
            "",
        ]
    if label.startswith("PGP"):
        headers = ["Version: GnuPG v2", ""]
    lines = [f"-----BEGIN {label}-----", *headers, *body, f"-----END {label}-----"]
    style = rng.choice(["plain", "crlf", "json", "yaml", "cut_short", "plain"])
    if style == "plain":
        block = "\n".join(lines)
        text = _fill(
            rng,
            [
                "Here is the key the skill used:\n\n{s}\n\nIt worked on staging.",
                "```\n{s}\n```",
                "$ cat ~/.ssh/id_deploy\n{s}\n$ ssh -i ~/.ssh/id_deploy deploy@build01",
                "{s}",
            ],
            block,
        )
    elif style == "crlf":
        text = "Key file (Windows line endings):\r\n" + "\r\n".join(lines) + "\r\nEnd of paste."
    elif style == "json":
        escaped = "\\n".join(lines) + "\\n"
        text = (
            '{\n  "type": "service_account",\n  "project_id": "skills-prod",\n'
            f'  "private_key_id": "{chars(rng, HEX, 40)}",\n'
            f'  "private_key": "{escaped}",\n'
            '  "client_email": "skills@skills-prod.iam.gserviceaccount.com"\n}'
        )
    elif style == "yaml":
        indented = "\n".join("    " + line if line else "" for line in lines)
        text = f"tls:\n  cert: ./certs/server.crt\n  key: |\n{indented}\nport: 8443"
    else:
        cut = [f"-----BEGIN {label}-----", *headers, *body[: max(2, len(body) - 2)]]
        body = body[: max(2, len(body) - 2)]
        text = (
            "The paste got cut off:\n"
            + "\n".join(cut)
            + "\n\nsorry about that, the rest is on my laptop."
        )
    return text, tuple(line for line in body if len(line) >= 4), ()


def gen_aws_access_key(rng: random.Random) -> Generated:
    key_id = aws_key_id(rng)
    text = _fill(
        rng,
        [
            "aws_access_key_id = {s}",
            '"AccessKeyId": "{s}",',
            "I rotated {s} yesterday but the skill still uses the old one.",
            "AWS_ACCESS_KEY_ID={s}",
            'boto3.client("s3", region_name="eu-west-1", aws_access_key_id="{s}")',
            "| prod | {s} | active |",
        ],
        key_id,
    )
    return text, (key_id,), ()


def gen_aws_secret_key(rng: random.Random) -> Generated:
    secret, key_id = aws_secret(rng), aws_key_id(rng)
    text = _fill(
        rng,
        [
            "[default]\naws_access_key_id = {k}\naws_secret_access_key = {s}\nregion = eu-west-1",
            "AWS_SECRET_ACCESS_KEY={s}",
            'export AWS_SECRET_ACCESS_KEY="{s}"',
            '{{\n  "Credentials": {{\n    "AccessKeyId": "{k}",\n    "SecretAccessKey": "{s}",\n    "Expiration": "2025-01-01T00:00:00Z"\n  }}\n}}',
            "aws configure set aws_secret_access_key {s}",
            "User name,Access key ID,Secret access key\nci-bot,{k},{s}",
            's3 = boto3.client("s3", aws_access_key_id="{k}", aws_secret_access_key="{s}")',
            "aws_secret_key: {s}",
        ],
        secret,
        k=key_id,
    )
    return text, (secret,), ()


def gen_github_token(rng: random.Random) -> Generated:
    if rng.random() < 0.3:
        token = "github_pat_" + chars(rng, ALNUM, 22) + "_" + chars(rng, ALNUM, 59)
    else:
        token = rng.choice(["ghp", "gho", "ghu", "ghs", "ghr"]) + "_" + chars(rng, ALNUM, 36)
    text = _fill(
        rng,
        [
            "GITHUB_TOKEN={s}",
            "git clone https://x-access-token:{s}@github.com/acme/skills.git",
            'curl -H "Authorization: token {s}" https://api.github.com/user',
            "I pasted my token {s} into the skill config by mistake, please delete it.",
            "github:\n  token: {s}\n  org: acme",
            "gh auth login --with-token <<< {s}",
        ],
        token,
    )
    return text, (token,), ()


def gen_anthropic_key(rng: random.Random) -> Generated:
    key = "sk-ant-" + rng.choice(["api03", "admin01"]) + "-" + chars(rng, B64URL, 93) + "AA"
    text = _fill(
        rng,
        [
            "ANTHROPIC_API_KEY={s}",
            'client = anthropic.Anthropic(api_key="{s}")',
            'curl https://api.anthropic.com/v1/messages -H "x-api-key: {s}" -H "content-type: application/json"',
            "The summarise skill returns 401 with {s} even though the key is active.",
            "api_key: {s}",
        ],
        key,
    )
    return text, (key,), ()


def gen_openai_key(rng: random.Random) -> Generated:
    shape = rng.randrange(4)
    if shape == 0:
        key = "sk-" + chars(rng, ALNUM, 20) + "T3BlbkFJ" + chars(rng, ALNUM, 20)
    elif shape == 1:
        key = "sk-proj-" + mixed(rng, B64URL, rng.randint(40, 156))
    elif shape == 2:
        key = "sk-svcacct-" + mixed(rng, B64URL, rng.randint(40, 120))
    else:
        key = "sk-" + mixed(rng, ALNUM, 48)
    text = _fill(
        rng,
        [
            "OPENAI_API_KEY={s}",
            'openai.api_key = "{s}"',
            'curl https://api.openai.com/v1/models -H "Authorization: Bearer {s}"',
            "Using {s} the benchmark ran fine on gpt-4o.",
            'client = OpenAI(api_key="{s}", timeout=30)',
        ],
        key,
    )
    return text, (key,), ()


def gen_bearer_token(rng: random.Random) -> Generated:
    shape = rng.randrange(3)
    if shape == 0:
        token = b64_mixed(rng, rng.randint(24, 48), urlsafe=True, pad=False)
    elif shape == 1:
        token = "ya29." + b64_mixed(rng, rng.randint(45, 90), urlsafe=True, pad=False)
    else:
        token = chars(rng, HEX, 40)
    text = _fill(
        rng,
        [
            "Authorization: Bearer {s}",
            'curl -H "Authorization: Bearer {s}" https://api.example.com/v2/skills',
            'headers = {{"Authorization": "Bearer {s}", "Accept": "application/json"}}',
            "> GET /v1/feedback HTTP/1.1\n> Host: api.example.com\n> Authorization: Bearer {s}\n> Accept: */*",
            "The request used Bearer {s} and got a 401.",
        ],
        token,
    )
    return text, (token,), ("Bearer",)


def gen_jwt(rng: random.Random) -> Generated:
    header = {"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    if rng.random() < 0.5:
        header["kid"] = chars(rng, HEX, 16)
    payload = {
        "sub": a_uuid(rng),
        "iat": rng.randint(1_600_000_000, 1_700_000_000),
        "exp": rng.randint(1_700_000_000, 1_800_000_000),
    }
    if rng.random() < 0.5:
        payload["name"] = rng.choice(["Alice Martin", "Bob Chen", "Zoë Petit"])
    signature = b64(rng, rng.choice([32, 48, 64, 256]), urlsafe=True, pad=False)
    token = f"{b64url_json(header)}.{b64url_json(payload)}.{signature}"
    text = _fill(
        rng,
        [
            "Cookie: session={s}; theme=dark",
            '{{"access_token": "{s}", "token_type": "Bearer", "expires_in": 3600}}',
            "Authorization: Bearer {s}",
            "https://app.example.com/callback#id_token={s}&state=af0ifjsldkj",
            "The JWT {s} expired after five minutes instead of an hour.",
        ],
        token,
    )
    return text, (token, signature), ()


def gen_database_url(rng: random.Random) -> Generated:
    while True:
        password = (
            rng.choice(ALNUM)
            + chars(rng, ALNUM + "-_.~%!*", rng.randint(8, 22))
            + rng.choice(ALNUM)
        )
        if any(c.isdigit() for c in password) and "..." not in password:
            break
    scheme, port, path = rng.choice(
        [
            ("postgresql", "5432", "/skills"),
            ("postgres", "5432", "/skills?sslmode=require"),
            ("postgresql+asyncpg", "5432", "/everyskill"),
            ("mysql", "3306", "/skills"),
            ("mysql+pymysql", "3306", "/skills?charset=utf8mb4"),
            ("mongodb", "27017", "/skills?authSource=admin"),
            ("mongodb+srv", "", "/skills?retryWrites=true&w=majority"),
            ("redis", "6379", "/0"),
            ("rediss", "6380", "/1"),
        ]
    )
    user = (
        ""
        if scheme.startswith("redis") and rng.random() < 0.5
        else rng.choice(["app", "postgres", "admin", "everyskill", "svc_reader"])
    )
    host = rng.choice(
        [
            "db.internal",
            "10.0.3.17",
            "skills-prod.cluster-abc.eu-west-1.rds.amazonaws.com",
            "localhost",
            "cache",
        ]
    )
    url = f"{scheme}://{user}:{password}@{host}{':' + port if port else ''}{path}"
    text = _fill(
        rng,
        [
            "DATABASE_URL={s}",
            'engine = create_engine("{s}")',
            "database:\n  url: {s}\n  pool_size: 10",
            "The skill fails to connect to {s} since the migration.",
            'psql "{s}" -c "select count(*) from skills"',
            "    environment:\n      - DATABASE_URL={s}",
        ],
        url,
    )
    return text, (password,), (host,)


def gen_slack_token(rng: random.Random) -> Generated:
    shape = rng.randrange(4)
    if shape == 0:
        token = f"xoxb-{chars(rng, DIGITS, 12)}-{chars(rng, DIGITS, 13)}-{chars(rng, ALNUM, 24)}"
    elif shape == 1:
        token = f"xoxp-{chars(rng, DIGITS, 12)}-{chars(rng, DIGITS, 12)}-{chars(rng, DIGITS, 13)}-{chars(rng, HEX, 32)}"
    elif shape == 2:
        token = f"{rng.choice(['xoxa', 'xoxr', 'xoxs'])}-2-{chars(rng, DIGITS, 12)}-{chars(rng, DIGITS, 13)}-{chars(rng, HEX, 32)}"
    else:
        token = (
            f"xapp-1-A{chars(rng, UPPER_DIGITS, 10)}-{chars(rng, DIGITS, 13)}-{chars(rng, HEX, 64)}"
        )
    text = _fill(
        rng,
        [
            "SLACK_BOT_TOKEN={s}",
            'app = App(token="{s}", signing_secret=os.environ["SLACK_SIGNING_SECRET"])',
            "The notifier skill posts with {s} but messages never arrive.",
            "slack:\n  bot_token: {s}\n  channel: '#alerts'",
        ],
        token,
    )
    return text, (token,), ()


def gen_slack_webhook(rng: random.Random) -> Generated:
    path = f"T{chars(rng, UPPER_DIGITS, rng.randint(8, 10))}/B{chars(rng, UPPER_DIGITS, rng.randint(8, 10))}/{chars(rng, ALNUM, 24)}"
    url = "https://hooks.slack.com/services/" + path
    text = _fill(
        rng,
        [
            "SLACK_WEBHOOK_URL={s}",
            "curl -X POST -H 'Content-type: application/json' --data '{{\"text\":\"deploy done\"}}' {s}",
            'notify:\n  webhook: "{s}"',
            "Alerts go to {s} (the #skills-alerts channel).",
        ],
        url,
    )
    return text, (path,), ()


def gen_stripe_key(rng: random.Random) -> Generated:
    prefix = rng.choice(["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"])
    key = prefix + chars(rng, ALNUM, 32 if prefix == "whsec_" else rng.choice([24, 99]))
    text = _fill(
        rng,
        [
            "STRIPE_SECRET_KEY={s}",
            'stripe.api_key = "{s}"',
            "Billing skill: charges fail with {s} in test mode.",
            "stripe:\n  secret: {s}\n  currency: eur",
        ],
        key,
    )
    return text, (key,), ()


def gen_google_api_key(rng: random.Random) -> Generated:
    key = "AIza" + chars(rng, B64URL, 35)
    text = _fill(
        rng,
        [
            "https://maps.googleapis.com/maps/api/geocode/json?address=Paris&key={s}",
            "GOOGLE_API_KEY={s}",
            'genai.configure(api_key="{s}")',
            "The translate skill calls Gemini with {s} and hits the quota.",
        ],
        key,
    )
    return text, (key,), ()


def gen_npm_token(rng: random.Random) -> Generated:
    if rng.random() < 0.75:
        token = "npm_" + chars(rng, ALNUM, 36)
        templates = [
            "//registry.npmjs.org/:_authToken={s}",
            "NPM_TOKEN={s}",
            "npm publish failed although {s} has publish rights.",
            "- run: npm ci\n  env:\n    NODE_AUTH_TOKEN: {s}",
        ]
    else:
        token = a_uuid(rng)
        templates = [
            "//registry.npmjs.org/:_authToken={s}",
            "registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken={s}\nalways-auth=true",
        ]
    return _fill(rng, templates, token), (token,), ()


def gen_huggingface_token(rng: random.Random) -> Generated:
    token = "hf_" + chars(rng, LETTERS, 34)
    while not (any(c.isupper() for c in token) and any(c.islower() for c in token[3:])):
        token = "hf_" + chars(rng, LETTERS, 34)
    text = _fill(
        rng,
        [
            "HF_TOKEN={s}",
            "huggingface-cli login --token {s}",
            'login(token="{s}")',
            'model = AutoModel.from_pretrained("meta-llama/Llama-3.1-8B", token="{s}")',
        ],
        token,
    )
    return text, (token,), ()


def gen_password_assignment(rng: random.Random) -> Generated:
    value = password_value(rng)
    url_safe = url_password(rng)
    template = rng.choice(
        [
            ('password = "{s}"', "password"),
            ("DB_PASSWORD={s}", "DB_PASSWORD"),
            ('{{"username": "alice", "password": "{s}"}}', '"password"'),
            ("database:\n  user: app\n  db_password: {s}\n", "db_password"),
            ("export SECRET={s}", "export SECRET="),
            ("mysql --user=app --password={s} skills", "--password="),
            ('API_KEY: "{s}"', "API_KEY"),
            ("client_secret='{s}'", "client_secret"),
            ("$password = '{s}';", "$password"),
            ("SECRET_KEY = '{s}'", "SECRET_KEY"),
            ("Server=db.internal;Database=skills;User Id=app;Password={s};", "Password="),
            ("ALTER ROLE app WITH PASSWORD '{s}';", "PASSWORD"),
            ("<password>{s}</password>", "<password>"),
            ('auth_token: "{s}"', "auth_token"),
            ("GET /export?access_token={u}&page=2", "access_token="),
            ('conn = psycopg.connect(host="db", user="app", password="{s}")', "password="),
            ("I can log in with password: {s} but the skill cannot.", "password:"),
            ("spring.datasource.password={s}", "spring.datasource.password"),
        ]
    )
    if "{u}" in template[0]:
        return template[0].format(u=url_safe), (url_safe,), (template[1],)
    return template[0].format(s=value), (value,), (template[1],)


def gen_base64_blob(rng: random.Random) -> Generated:
    blob = b64_mixed(rng, rng.randint(30, 90), urlsafe=rng.random() < 0.4, pad=rng.random() < 0.6)
    text = _fill(
        rng,
        [
            '"signature": "{s}"',
            "session_cookie={s}",
            "X-Signature: {s}",
            "Here is the blob from the logs: {s}",
            'encrypted = b"{s}"',
            "data:\n  payload: {s}",
            "| {s} | used in prod |",
            "nonce={s}",
        ],
        blob,
    )
    return text, (blob.rstrip("="),), ()


def gen_url_credentials(rng: random.Random) -> Generated:
    password = url_password(rng)
    user = rng.choice(["alice", "deploy", "ci", "guest", "svc-skills"])
    text = _fill(
        rng,
        [
            "BROKER_URL=amqp://{u}:{s}@rabbit.internal:5672/skills",
            "pip install --index-url https://{u}:{s}@pypi.internal.example.com/simple skills-sdk",
            "git remote add origin https://{u}:{s}@git.example.com/acme/skills.git",
            "The crawler skill fetches ftp://{u}:{s}@files.example.org/exports/ every night.",
            "proxy: http://{u}:{s}@proxy.corp.example:3128",
        ],
        password,
        u=user,
    )
    return text, (password,), (user,)


def gen_basic_auth(rng: random.Random) -> Generated:
    user = rng.choice(["alice", "admin", "ci-bot", "api"])
    credentials = base64.b64encode(f"{user}:{url_password(rng)}".encode()).decode()
    text = _fill(
        rng,
        [
            "Authorization: Basic {s}",
            'curl -H "Authorization: Basic {s}" https://jenkins.example.com/api/json',
            'req.headers["Authorization"] = "Basic {s}"',
            "< HTTP/1.1 401 Unauthorized\n> Authorization: Basic {s}",
        ],
        credentials,
    )
    return text, (credentials,), ("Basic",)


def gen_twilio_key(rng: random.Random) -> Generated:
    key = rng.choice(["AC", "SK"]) + chars(rng, HEX, 32)
    while not any(c.isdigit() for c in key[2:]) or not any(c.isalpha() for c in key[2:]):
        key = key[:2] + chars(rng, HEX, 32)
    text = _fill(
        rng,
        [
            "TWILIO_ACCOUNT_SID={s}",
            'client = Client("{s}", auth_token)',
            "The SMS skill uses account {s} and gets error 20003.",
        ],
        key,
    )
    return text, (key,), ()


def gen_sendgrid_key(rng: random.Random) -> Generated:
    key = "SG." + chars(rng, B64URL, 22) + "." + chars(rng, B64URL, 43)
    text = _fill(
        rng,
        [
            "SENDGRID_API_KEY={s}",
            'sg = SendGridAPIClient("{s}")',
            "Emails stopped after we rotated to {s} on Monday.",
        ],
        key,
    )
    return text, (key,), ()


def gen_gitlab_token(rng: random.Random) -> Generated:
    token = rng.choice(["glpat-", "gldt-", "glrt-"]) + mixed(rng, ALNUM, 20)
    text = _fill(
        rng,
        [
            "GITLAB_TOKEN={s}",
            "git clone https://oauth2:{s}@gitlab.com/acme/skills.git",
            'curl --header "PRIVATE-TOKEN: {s}" https://gitlab.com/api/v4/projects',
            "CI fails since {s} expired.",
        ],
        token,
    )
    return text, (token,), ()


def gen_pypi_token(rng: random.Random) -> Generated:
    token = "pypi-AgEIcHlwaS5vcmc" + chars(rng, B64URL, rng.randint(70, 150))
    text = _fill(
        rng,
        [
            "TWINE_PASSWORD={s}",
            "[pypi]\n  username = __token__\n  password = {s}",
            "uv publish --token {s}",
            "The upload with {s} returned 403.",
        ],
        token,
    )
    return text, (token,), ()


def gen_azure_storage_key(rng: random.Random) -> Generated:
    key = b64(rng, 64)
    text = _fill(
        rng,
        [
            "DefaultEndpointsProtocol=https;AccountName=skillsstore;AccountKey={s};EndpointSuffix=core.windows.net",
            'AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;AccountName=skills;AccountKey={s}"',
            "conn = BlobServiceClient.from_connection_string('AccountName=skills;AccountKey={s}')",
        ],
        key,
    )
    return text, (key.rstrip("="),), ("AccountKey=",)


def gen_discord_bot_token(rng: random.Random) -> Generated:
    # The bot's user id (a snowflake) in base64url, a timestamp, an HMAC.
    user_id = str(rng.randrange(10**17, 10**19))
    first = base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")
    token = ".".join([first, chars(rng, B64URL, 6), mixed(rng, B64URL, rng.choice([27, 38]))])
    text = _fill(
        rng,
        [
            "DISCORD_BOT_TOKEN={s}",
            'client.run("{s}")',
            "The bot logged in with {s} and was kicked at once.",
        ],
        token,
    )
    return text, (token,), ()


def gen_mailchimp_api_key(rng: random.Random) -> Generated:
    key = chars(rng, HEX, 32) + "-us" + str(rng.randrange(1, 21))
    while not any(c.isdigit() for c in key[:32]) or not any(c.isalpha() for c in key[:32]):
        key = chars(rng, HEX, 32) + key[32:]
    text = _fill(
        rng,
        [
            "MAILCHIMP_API_KEY={s}",
            'client.set_config({{"api_key": "{s}", "server": "us6"}})',
            "The newsletter skill still sends with {s}, can you rotate it?",
        ],
        key,
    )
    return text, (key,), ()


def gen_google_oauth_client_secret(rng: random.Random) -> Generated:
    secret = "GOCSPX-" + mixed(rng, B64URL, 28)
    text = _fill(
        rng,
        [
            '{{"installed": {{"client_id": "1234-abc.apps.googleusercontent.com", "client_secret": "{s}"}}}}',
            "GOOGLE_CLIENT_SECRET={s}",
            "The consent screen works but the exchange fails with secret {s}.",
        ],
        secret,
    )
    return text, (secret,), ()


GENERATORS: dict[str, Callable[[random.Random], Generated]] = {
    "private_key": gen_private_key,
    "aws_access_key": gen_aws_access_key,
    "aws_secret_key": gen_aws_secret_key,
    "github_token": gen_github_token,
    "anthropic_key": gen_anthropic_key,
    "openai_key": gen_openai_key,
    "bearer_token": gen_bearer_token,
    "jwt": gen_jwt,
    "database_url": gen_database_url,
    "slack_token": gen_slack_token,
    "slack_webhook": gen_slack_webhook,
    "stripe_key": gen_stripe_key,
    "google_api_key": gen_google_api_key,
    "npm_token": gen_npm_token,
    "huggingface_token": gen_huggingface_token,
    "password_assignment": gen_password_assignment,
    "base64_blob": gen_base64_blob,
    "url_credentials": gen_url_credentials,
    "basic_auth": gen_basic_auth,
    "twilio_key": gen_twilio_key,
    "sendgrid_key": gen_sendgrid_key,
    "gitlab_token": gen_gitlab_token,
    "pypi_token": gen_pypi_token,
    "azure_storage_key": gen_azure_storage_key,
    "discord_bot_token": gen_discord_bot_token,
    "mailchimp_api_key": gen_mailchimp_api_key,
    "google_oauth_client_secret": gen_google_oauth_client_secret,
}

# Surroundings a secret is pasted into.
_BEFORE = [
    "",
    "",
    "Hi team,\n\n",
    "The skill broke after the last deploy. Config below:\n",
    "Steps to reproduce:\n1. set the env\n2. run the skill\n\n",
    "```\n",
    "FYI — ",
    "# settings.py\nDEBUG = False\nALLOWED_HOSTS = ['skills.example.com']\n",
    "2024-06-11T10:22:33Z ERROR worker-3 ",
]
_AFTER = [
    "",
    "",
    "\n\nThanks!",
    "\nCan you check what is wrong?",
    "\n```",
    " (this one is the production value, oops)",
    "\nThe output was 300 tokens shorter than expected.",
    "\n\n-- sent from the feedback widget",
]


def secret_cases(seed: int = 20240611, per_kind: int = 24) -> list[SecretCase]:
    """``per_kind`` texts per kind, each holding one secret, in varied surroundings."""
    rng = random.Random(seed)
    cases = []
    for kind, generate in GENERATORS.items():
        for _ in range(per_kind):
            text, fragments, keep = generate(rng)
            text = rng.choice(_BEFORE) + text + rng.choice(_AFTER)
            cases.append(SecretCase(kind, text, fragments, keep))
    return cases


# --------------------------------------------------------------------------
# Benign texts: none holds a secret, each must come back unchanged.

_PROSE = [
    "Please reset your password before the demo, the old one expired.",
    "The token count was 300 on average, well under the budget.",
    "I forgot my password twice this week; the reset email took ten minutes.",
    "Could the skill show how many tokens each answer used?",
    "The secret to a good prompt is a clear role and examples.",
    "Our API key rotation policy is every 90 days.",
    "The password field should accept at least 64 characters.",
    "Use the Bearer scheme in the Authorization header, as the docs say.",
    "Basic authentication is disabled on the new gateway.",
    "Token limits: 4096 input, 1024 output.",
    "Keep your private key on your machine and never paste it here.",
    "Great skill! It summarised a 40-page contract in seconds.",
    "The answer cited the wrong section; it should be 4.2, not 4.3.",
    "Tried it with Claude and GPT-4o: Claude was shorter and more accurate.",
    "The key insight is that the model needs the schema first.",
    "Secrets are read from the vault at start-up, not from the repository.",
    "The password manager filled the wrong field.",
    "It keeps asking for a token even though I'm logged in.",
    "password reset flow is confusing — three screens for one field",
    "Access token expired errors appear every hour on the dashboard.",
    "Would love a dark mode. Also, the export to CSV drops the last row.",
    "Latency went from 800 ms to 2.1 s after the update.",
    "The skill misread 'pwd' as the Unix command, which was actually right.",
    "Rate limit hit: 429 after 60 requests per minute.",
    "The summary was fine but the tone was too formal for a Slack message.",
]

_CODE = [
    'api_key = os.environ["OPENAI_API_KEY"]',
    'token = os.getenv("GITHUB_TOKEN")',
    "password = getpass.getpass()",
    "password = getpass()",
    "const token = process.env.TOKEN;",
    "const apiKey = process.env.ANTHROPIC_API_KEY ?? '';",
    'token = request.headers.get("x-skill-token")',
    "env:\n  GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}\n  NPM_TOKEN: ${{ secrets.NPM_TOKEN }}",
    "services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}",
    'export API_KEY="$(vault kv get -field=key secret/skills)"',
    "password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt())",
    "if not token:\n    raise PermissionError('missing token')",
    "def login(username: str, password: str) -> Session:\n    return client.login(username, password=password)",
    "self.api_key = api_key\nself.secret = settings.SECRET_KEY",
    "secret_key = config.get('security', 'secret_key')",
    "let token = req.body.token;",
    "max_tokens = 4096\ntemperature = 0.2",
    "tokenizer = AutoTokenizer.from_pretrained(model_id)\ntokens = tokenizer(text)['input_ids']",
    '{"bos_token": "<s>", "eos_token": "</s>", "pad_token": "[PAD]", "unk_token": "<unk>"}',
    "tokenizer.pad_token = tokenizer.eos_token",
    "SELECT skill_id, sum(total_tokens) FROM token_measurements GROUP BY skill_id;",
    "CREATE TABLE users (id text PRIMARY KEY, password_hash text NOT NULL);",
    "UPDATE users SET password_hash = $1 WHERE id = $2",
    "func (c *Client) Token() string { return c.token }",
    "valueFrom:\n  secretKeyRef:\n    name: db-credentials\n    key: password",
    "secretName: skills-tls",
    "password: str = Field(min_length=12)",
    "var password string",
    "api_key: Optional[str] = None",
    'parser.add_argument("--password", help="the password, read from stdin when omitted")',
    "usage: skills login [--token TOKEN] [--password PASSWORD]",
    "if password == confirm_password:\n    save(user)",
    "headers = {'Authorization': f'Bearer {token}'}",
    'curl -H "Authorization: Bearer $TOKEN" https://api.example.com/v1/skills',
    'auth = ("api", os.environ["MAILGUN_KEY"])',
    "password = None  # set by the caller",
    "token_count = len(tokens)",
    "PWD=/home/alice/work",
    "secret = secrets.token_urlsafe(32)",
    "api_key = load_api_key()",
]

_HARD = [
    "The word password appears here: password: required",
    "password: 8 characters minimum",
    "token: expired",
    "See https://github.com/Yelp/detect-secrets/blob/01886c8a910c64595c47f9128a5fd1fcd4ab4ea5/detect_secrets/core/scan.py",
    "src/main/java/com/example/skills/AbstractSkillFeedbackRepository2Impl.java",
    "AbstractSingletonProxyFactoryBeanDefinitionParserDelegate2",
    'import { FeedbackFormSubmitButtonWithConfirmationDialog2 } from "./components";',
    "The model is claude-3-5-sonnet-20241022 and gpt-4o-2024-08-06",
    "kebab-case-slug-for-a-really-long-blog-post-title-2024-06-11",
    "node_modules/@babel/runtime/helpers/esm/objectWithoutPropertiesLoose.js",
    'password = os.environ.get("PASSWORD", "")',
    "DB_PASS=${DB_PASS:-}",
    'token = jwt.encode(payload, key, algorithm="HS256")',
    "secret: !vault |",
    "api_key = None",
    '"password": null,',
    "password: !ENV ${PASSWORD}",
    '--token "$GITHUB_TOKEN"',
    '"apiKey": apiKey,',
    "apiKey: string;",
    "  password?: string;",
    "private readonly token: string = '';",
    '@Value("${app.secret}") private String secret;',
    'SECRET_KEY = env.str("SECRET_KEY")',
    "API_TOKEN = settings.API_TOKEN",
    "The passwd file is /etc/passwd and pwd prints the working directory.",
    "Run `pwd` then `cd ..`",
    "GOOGLE_APPLICATION_CREDENTIALS=/secrets/gcp.json",
    'token_url = "https://oauth2.googleapis.com/token"',
    "The secret ingredient is love",
    "token=12345",
    'eos_token: "<|endoftext|>"',
    "In the UI, go to Settings > API Keys > Create.",
    "Bearer tokens are great. The bearer must present the token.",
    "Use bearer authentication with basic fallback.",
    "password=password",
    'passwords = ["a", "b"]',
    "ghp_ is the prefix of GitHub tokens, sk- is OpenAI's, sk-ant- Anthropic's",
    "The AKIA prefix marks long-term AWS keys.",
    "AWS says aws_secret_access_key must be 40 characters long.",
    "skills_sdk-2.0.0rc1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "wandb: Run data is saved locally in /home/alice/wandb/run-20240611_102233-3f9a8b7c",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PLrAXtmErZgOeiKm4sgNOknGvNjby9efdf",
    "Error: ENOENT: no such file or directory, open '/Users/alice/Library/Application Support/Code/User/settings.json'",
    "SELECT * FROM users WHERE password = crypt('x', password);",
    "psql -U postgres -W\nmysql -u root -p skills",
    "const secret = crypto.randomBytes(32).toString('hex');",
    'token = "$(cat /run/secrets/token)"',
    'password := os.Getenv("PASSWORD")',
    "$password = $_POST['password'];",
    "password = params[:password]",
    "user.password = hashed",
    "passphrase: the quick brown fox",
    "the token is gpt-4o",
    "the password is incorrect",
    'curl -u "$USER:$PASS" https://api.example.com',
    "The SKU is SK-1234 and the AC unit is fine.",
    'resource "aws_db_instance" "skills" {\n  password = var.db_password\n  username = "app"\n}',
    '- name: create user\n  user:\n    name: deploy\n    password: "{{ vault_deploy_password }}"',
    "let password = Zeroizing::new(read_password()?);",
    'String token = request.getHeader("X-Token");',
    "if (password.length < 12) { return 'too short'; }",
    "Traceback (most recent call last):\n  File \"/app/skills/auth.py\", line 42, in login\n    token = issue_token(user)\nKeyError: 'secret'",
    "user_id,skill_id,tokens,cost\n42,summarise,1200,0.31\n43,translate,800,0.12",
    "ALTER TABLE users ADD COLUMN password_reset_token text;",
    "Password reset link: https://app.example.com/reset?user=42",
    "token_type: bearer\nexpires_in: 3600\nscope: read write",
    "GitHub Actions: uses: actions/checkout@v4 with token: ${{ github.token }}",
    "POSTGRES_PASSWORD_FILE=/run/secrets/db_password",
    "secretKeyRef:\n  name: skills-db\n  key: password",
]

_PLACEHOLDERS = [
    'password = "<your-password>"',
    'api_key="..."',
    'token: "xxx"',
    "PASSWORD=changeme",
    'api_key = "YOUR_API_KEY"',
    '"token": "{token}"',
    'password: "********"',
    "OPENAI_API_KEY=sk-...",
    "export ANTHROPIC_API_KEY=<your key>",
    'client_secret = "your_client_secret_here"',
    "DATABASE_URL=postgresql://user:password@localhost:5432/skills",
    "postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}/skills",
    'password = ""',
    "secret: {{ .Values.secret }}",
    "api_key = %(api_key)s",
    'token = "REPLACE_ME"',
    "Authorization: Bearer <token>",
    "Authorization: Bearer YOUR_TOKEN_HERE",
    'GITHUB_TOKEN="${GITHUB_TOKEN}"',
    'api_key: "OPENAI_API_KEY"',
]

_MARKDOWN = [
    "# Feedback\n\n- **Accuracy**: good\n- **Speed**: slow\n\n> The skill ignored the table.",
    "| model | tokens | cost |\n|---|---|---|\n| claude | 1200 | 0.3 |\n| gpt-4o | 1400 | 0.4 |",
    "## Steps\n\n1. Open the skill\n2. Paste the contract\n3. Click *Summarise*\n\n```bash\nskills run summarise --input contract.pdf\n```",
    "See [the docs](https://docs.example.com/skills/summarise#options) and ![chart](./img/chart.png).",
]


def _diff(rng: random.Random) -> str:
    a, b = chars(rng, HEX, 7), chars(rng, HEX, 7)
    return (
        f"diff --git a/everyskill/auth.py b/everyskill/auth.py\nindex {a}..{b} 100644\n"
        "--- a/everyskill/auth.py\n+++ b/everyskill/auth.py\n@@ -10,7 +10,7 @@ def login(user):\n"
        "-    password = input('Password: ')\n+    password = getpass.getpass()\n"
        "     token = issue_token(user)\n     return token\n"
    )


def _log(rng: random.Random) -> str:
    return (
        f"2024-06-{rng.randint(10, 28)}T{rng.randint(10, 23)}:{rng.randint(10, 59)}:{rng.randint(10, 59)}.{rng.randint(100, 999)}Z "
        f"INFO request_id={a_uuid(rng)} tenant={a_uuid(rng)} skill=summarise "
        f"latency_ms={rng.randint(80, 4000)} input_tokens={rng.randint(100, 9000)} output_tokens={rng.randint(10, 900)} status=200"
    )


def _identifier(rng: random.Random) -> str:
    words = [
        "skill",
        "feedback",
        "tenant",
        "version",
        "benchmark",
        "result",
        "token",
        "count",
        "average",
        "latency",
        "export",
        "handler",
        "factory",
        "provider",
        "review",
    ]
    parts = rng.sample(words, rng.randint(4, 6))
    if rng.random() < 0.5:
        return "_".join(parts) + str(rng.randint(1, 99))
    return "".join(p.capitalize() for p in parts) + str(rng.randint(1, 99))


def _benign_generated(rng: random.Random) -> str:
    shape = rng.randrange(16)
    if shape == 0:
        return f"Skill {a_uuid(rng)} failed for tenant {a_uuid(rng)}; retried twice."
    if shape == 1:
        return f"commit {chars(rng, HEX, 40)}\nAuthor: Alice Martin <alice@example.com>\n\n    Fix the token counter"
    if shape == 2:
        return f"Fixed in {chars(rng, HEX, 7)}, see git checkout {chars(rng, HEX, 40)}"
    if shape == 3:
        return f"{chars(rng, HEX, 64)}  skills-1.4.2.tar.gz"
    if shape == 4:
        return f'"digest": "sha256:{chars(rng, HEX, 64)}",\n"image": "ghcr.io/acme/skills@sha256:{chars(rng, HEX, 64)}"'
    if shape == 5:
        slug = "-".join(
            rng.sample(["summarise", "contract", "legal", "fast", "review", "tone", "french"], 3)
        )
        return rng.choice(
            [
                f"https://docs.example.com/skills/{slug}?page={rng.randint(2, 9)}&sort=desc",
                f"https://github.com/acme/skills/pull/{rng.randint(100, 9999)}#discussion_r{rng.randint(10**8, 10**9)}",
                "postgres://localhost:5432/skills",
                "redis://cache:6379/0",
                "https://alice@git.example.com/acme/skills.git",
                f"ssh://git@github.com:22/acme/{slug}.git",
                f"Open https://app.example.com/tenants/{a_uuid(rng)}/skills/{a_uuid(rng)}/feedback to see it.",
            ]
        )
    if shape == 6:
        return rng.choice(
            [
                "/home/alice/projects/everyskill/tests/test_redaction.py",
                "C:\\Users\\bob\\AppData\\Local\\Programs\\skills\\config.json",
                "src/components/FeedbackForm/FeedbackFormSubmitButton.tsx",
                "/var/lib/postgresql/data/pg_wal/000000010000000000000001",
                f"/srv/skills/releases/{rng.randint(2020, 2024)}{rng.randint(10, 12)}{rng.randint(10, 28)}/bin/skills-worker",
            ]
        )
    if shape == 7:
        return f"The header was X-Request-Nonce: {b64(rng, rng.randint(6, 24))} (short base64)."
    if shape == 8:
        return _diff(rng)
    if shape == 9:
        return _log(rng)
    if shape == 10:
        return f"class {_identifier(rng).capitalize()}:\n    def run_{_identifier(rng).lower()}(self) -> None: ..."
    if shape == 11:
        key = "pk_" + rng.choice(["live", "test"]) + "_" + chars(rng, ALNUM, rng.choice([24, 99]))
        return f'const stripe = Stripe("{key}");'
    if shape == 12:
        return f"ssh-ed25519 {b64(rng, 51)} alice@laptop"
    if shape == 13:
        return f'<script src="https://cdn.example.com/lib.js" integrity="sha384-{b64(rng, 48)}" crossorigin="anonymous"></script>'
    if shape == 14:
        body = "\n".join(b64(rng, 48) for _ in range(rng.randint(3, 6)))
        return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----"
    return f"Order #{rng.randint(1000, 99999)} on {rng.randint(1, 28)}/06/2024 at 10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}, total ${rng.randint(1, 900)}.{rng.randint(10, 99)}"


def benign_texts(seed: int = 20240612, generated: int = 160) -> list[str]:
    """Texts without secrets: prose, code, configs, placeholders, ids, hashes, URLs, logs."""
    rng = random.Random(seed)
    texts = [*_PROSE, *_CODE, *_HARD, *_PLACEHOLDERS, *_MARKDOWN]
    texts += [_benign_generated(rng) for _ in range(generated)]
    # A few longer mixtures, as feedback often is.
    for _ in range(20):
        parts = rng.sample(_PROSE, 2) + rng.sample(_CODE + _HARD, 2) + [_benign_generated(rng)]
        rng.shuffle(parts)
        texts.append("\n\n".join(parts))
    return texts
