"""
everyskill.pricing: the unit, known prices worked out by hand, agreement with
genai-prices' own calculation for every model it prices by tokens, what
cannot be priced, the cache rates of a tenant's price that has none
(worked out by hand, and held to genai-prices' own cache-to-input ratios for
every model it lists with cache prices), and the tenant's own prices through
the API.
"""

from __future__ import annotations

import datetime
import logging
import math
import random
import socket
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any, Literal

import asyncpg
import genai_prices
import pytest
from genai_prices import data_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from everyskill import pricing
from everyskill.errors import NotFoundError, TenantScopeError, ValidationError
from everyskill.pricing import (
    COST_MAX,
    CostWarning,
    Pricer,
    Rate,
    Rates,
    TokenUsage,
    catalogue_rates,
    tenant_rates,
    total_tokens,
    usd_per_mtok,
)
from everyskill.tenancy import tenant_scope
from everyskill.usage import record_measurement
from tests.support import TenantRows

SONNET = ("anthropic", "claude-sonnet-4-5")


def table_cost(
    provider: str, model: str, usage: TokenUsage, at: datetime.datetime | None = None
) -> int:
    """genai-prices' own price of a call (now, or ``at``), in whole microcents."""
    calculation = genai_prices.calc_price(
        genai_prices.Usage(
            # genai-prices counts cache tokens inside input_tokens.
            input_tokens=usage.all_input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        ),
        model,
        provider_id=provider,
        genai_request_timestamp=at,
    )
    exact = calculation.total_price * 100_000_000
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def priced_models() -> list[tuple[str, str]]:
    """Every (provider, model) of the table that is priced by tokens."""
    found = []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            if catalogue_rates(provider.id, model.id) is not None:
                found.append((provider.id, model.id))
    return found


PRICED = priced_models()


def test_the_unit_is_the_true_microcent() -> None:
    """$3 per million tokens is 300 microcents (1e-8 USD) per token."""
    assert usd_per_mtok(3) == 300
    assert usd_per_mtok("0.075") == Decimal("7.5")
    rates = catalogue_rates(*SONNET)
    assert rates is not None
    assert (rates.input.base, rates.output.base) == (300, 1500)
    assert rates.cache_read is not None and rates.cache_write is not None
    assert (rates.cache_read.base, rates.cache_write.base) == (30, 375)


@pytest.mark.parametrize(
    ("model", "usage", "microcents"),
    [
        # 1,000 input tokens at 300 and 200 output at 1,500: $0.006.
        (SONNET, TokenUsage(1000, 200), 600_000),
        # Cache reads at 30 and writes at 375, each at its own rate.
        (SONNET, TokenUsage(1000, 200, cache_read_tokens=10_000), 900_000),
        (SONNET, TokenUsage(1000, 200, cache_write_tokens=2_000), 1_350_000),
        # Above 200k input tokens in all (cache included), the long-context
        # tier: 600 and 2,250 per token.
        (SONNET, TokenUsage(150_000, 1000, cache_read_tokens=60_000), 150_000 * 600 + 60_000 * 60 + 1000 * 2250),
        (("anthropic", "claude-haiku-4-5"), TokenUsage(1000, 1000), 100_000 + 500_000),
        (("openai", "gpt-4o"), TokenUsage(1000, 100), 250_000 + 100_000),
        # A dated snapshot name is the same model.
        (("anthropic", "claude-sonnet-4-5-20250929"), TokenUsage(1000, 200), 600_000),
        # Half a microcent rounds up: one cached token of gpt-4o-mini is 7.5.
        (("openai", "gpt-4o-mini"), TokenUsage(0, 0, cache_read_tokens=1), 8),
        (("openai", "gpt-4o-mini"), TokenUsage(0, 0), 0),
    ],
)
def test_known_costs(model: tuple[str, str], usage: TokenUsage, microcents: int) -> None:
    rates = catalogue_rates(*model)
    assert rates is not None
    assert rates.cost(usage) == microcents
    assert table_cost(*model, usage) == microcents


def test_every_model_of_the_table_costs_what_the_table_says() -> None:
    """The fast arithmetic agrees with genai-prices for every model priced by
    tokens, across tiers, cache reads and writes."""
    rng = random.Random(20261125)
    assert len(PRICED) > 1000
    for provider, model in PRICED:
        rates = catalogue_rates(provider, model)
        assert rates is not None
        for _ in range(3):
            usage = TokenUsage(
                rng.randint(0, 400_000),
                rng.randint(0, 60_000),
                rng.choice([None, rng.randint(0, 300_000)]),
                rng.choice([None, rng.randint(0, 100_000)]),
            )
            assert rates.cost(usage) == table_cost(provider, model, usage), (provider, model, usage)


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(PRICED),
    input_tokens=st.integers(0, 2_000_000),
    output_tokens=st.integers(0, 200_000),
    cache_read=st.none() | st.integers(0, 2_000_000),
    cache_write=st.none() | st.integers(0, 500_000),
)
def test_costs_agree_with_the_table_for_any_usage(
    model: tuple[str, str],
    input_tokens: int,
    output_tokens: int,
    cache_read: int | None,
    cache_write: int | None,
) -> None:
    usage = TokenUsage(input_tokens, output_tokens, cache_read, cache_write)
    rates = catalogue_rates(*model)
    assert rates is not None
    assert rates.cost(usage) == table_cost(*model, usage)


def test_prices_that_change_with_the_time_of_day_change_to_the_minute() -> None:
    """deepseek-chat is cheaper off-peak, from 16:30 to 00:30 UTC: each side
    of both half hours, the price is genai-prices' own at that moment."""
    usage = TokenUsage(10_000, 1_000, cache_read_tokens=5_000)
    costs = set()
    for hour, minute in ((0, 15), (0, 45), (16, 15), (16, 45), (0, 29), (0, 30)):
        moment = datetime.datetime(2026, 12, 7, hour, minute, 59, tzinfo=datetime.timezone.utc)
        rates = catalogue_rates("deepseek", "deepseek-chat", moment)
        assert rates is not None
        assert rates.cost(usage) == table_cost("deepseek", "deepseek-chat", usage, moment), moment
        costs.add(rates.cost(usage))
    assert len(costs) == 2


def test_the_table_is_read_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prices come from the data the package ships: no connection is made."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the price table tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    pricing._catalogue_rates.cache_clear()
    pricing._catalogue_listed.cache_clear()
    rates = catalogue_rates("openai", "gpt-4o", datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
    assert rates is not None and rates.input.base == 250


def test_what_the_table_does_not_know() -> None:
    assert catalogue_rates("anthropic", "claude-imaginary-9") is None
    assert catalogue_rates("no-such-provider", "gpt-4o") is None


def test_a_pricer_warns_instead_of_a_silent_zero() -> None:
    pricer = Pricer([], datetime.datetime.now(datetime.timezone.utc))
    assert pricer.cost("anthropic", "claude-imaginary-9", TokenUsage(10, 10)) is None
    assert pricer.cost("anthropic", "claude-imaginary-9", TokenUsage(20, 20)) is None
    # Without output tokens a cost would be too low: none at all instead.
    assert pricer.cost(*SONNET, TokenUsage(10, None)) is None
    # claude-opus-4-1 output is 7,500 microcents a token: 300k tokens do not
    # fit in a 32-bit cost column.
    assert pricer.cost("anthropic", "claude-opus-4-1", TokenUsage(0, 300_000)) is None
    assert pricer.cost(*SONNET, TokenUsage(10, 10)) == 18_000
    warnings = pricer.warnings()
    assert all(isinstance(warning, CostWarning) for warning in warnings)
    summary = sorted((w.model_name, w.rows) for w in warnings)
    assert summary == [("claude-imaginary-9", 2), ("claude-opus-4-1", 1), ("claude-sonnet-4-5", 1)]
    unknown = next(w for w in warnings if w.model_name == "claude-imaginary-9")
    assert "set_model_price" in str(unknown) and "2 rows" in str(unknown)
    too_big = next(w for w in warnings if w.model_name == "claude-opus-4-1")
    assert str(COST_MAX) in too_big.reason


def test_tiers_choose_by_all_input_tokens() -> None:
    rate = Rate(Decimal(300), ((200_000, Decimal(600)),))
    assert rate.at(200_000) == 300
    assert rate.at(200_001) == 600
    rates = Rates("p", "m", "tenant", rate, Rate(Decimal(0)), Rate(Decimal(30)), Rate(Decimal(0)))
    # 100k uncached + 100,001 cached: above the threshold for every kind.
    assert rates.cost(TokenUsage(100_000, 0, cache_read_tokens=100_001)) == 100_000 * 600 + 100_001 * 30


def test_total_tokens_counts_every_input_token_and_the_output() -> None:
    assert total_tokens(TokenUsage(100, 20, 1000, 50), None) == 1170
    assert total_tokens(TokenUsage(100, 20), 120) == 120
    # Without input or output counts nothing is derived; a given total stays.
    assert total_tokens(TokenUsage(None, 20), None) is None
    assert total_tokens(TokenUsage(None, 20), 500) == 500
    with pytest.raises(ValueError, match="1170"):
        total_tokens(TokenUsage(100, 20, 1000, 50), 120)  # cache tokens left out
    with pytest.raises(ValueError, match="less than"):
        total_tokens(TokenUsage(None, 20, 1000), 500)
    with pytest.raises(ValueError, match="a row holds"):
        total_tokens(TokenUsage(2**31, 1), None)


###############################################################################
# The tenant's own prices, through the API.


async def test_a_tenant_price_wins_over_the_table(tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        # make_tenant gives this tenant 250 / 1,250 for claude-sonnet-4-5.
        rates = await pricing.price_of("claude-sonnet-4-5")
        assert rates is not None and rates.source == "tenant"
        assert rates.cost(TokenUsage(1000, 200)) == 250_000 + 250_000
        # Without cache rates of its own, cache tokens cost the input rate
        # times the table's ratios for Sonnet (0.30 / 3 and 3.75 / 3):
        # 10 x 25 + 10 x 312.5 = 3,375.
        assert rates.cost(TokenUsage(0, 0, 10, 10)) == 3375
        await pricing.delete_model_price("claude-sonnet-4-5")
        rates = await pricing.price_of("claude-sonnet-4-5")
        assert rates is not None and rates.source == "genai-prices"
        assert rates.cost(TokenUsage(1000, 200)) == 600_000


async def test_set_get_list_and_replace_prices(tenant: TenantRows, owner: asyncpg.Connection) -> None:
    async with tenant_scope(tenant.tenant_id):
        price = await pricing.set_model_price(
            "my-finetune",
            model_provider="openai",
            input_microcents_per_token=usd_per_mtok("1.20"),
            output_microcents_per_token="480",
            cache_read_microcents_per_token=12,
            note="contract 2026-07",
        )
        assert price.input_microcents_per_token == Decimal(120)
        assert price.cache_write_microcents_per_token is None
        first_updated = price.updated_at
        again = await pricing.set_model_price(
            "my-finetune",
            model_provider="openai",
            input_microcents_per_token=100,
            output_microcents_per_token=400,
        )
        assert again.id == price.id and again.input_microcents_per_token == 100
        assert again.updated_at >= first_updated and again.note is None
        fetched = await pricing.get_model_price("my-finetune", model_provider="openai")
        assert fetched.output_microcents_per_token == 400
        listed = await pricing.list_model_prices()
        assert [(p.model_provider, p.model_name) for p in listed] == [
            ("anthropic", "claude-sonnet-4-5"),
            ("openai", "my-finetune"),
        ]
        rates = await pricing.price_of("my-finetune", model_provider="openai")
        assert rates is not None and rates.cost(TokenUsage(10, 1)) == 1400
    assert await owner.fetchval(
        "SELECT count(*) FROM model_prices WHERE tenant_id = $1", tenant.tenant_id
    ) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"input_microcents_per_token": -1}, "input_microcents_per_token"),
        ({"output_microcents_per_token": 0.5}, "output_microcents_per_token"),
        ({"input_microcents_per_token": "0.0000001"}, "input_microcents_per_token"),
        ({"cache_read_microcents_per_token": "NaN"}, "cache_read_microcents_per_token"),
        ({"model_name": "  "}, "model_name"),
        ({"model_provider": ""}, "model_provider"),
    ],
)
async def test_bad_prices_are_refused(
    tenant: TenantRows, owner: asyncpg.Connection, change: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {
        "model_name": "refused-model",
        "model_provider": "anthropic",
        "input_microcents_per_token": 1,
        "output_microcents_per_token": 2,
        **change,
    }
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await pricing.set_model_price(**arguments)
    assert refused.value.field == field
    assert await owner.fetchval(
        "SELECT count(*) FROM model_prices WHERE model_name = 'refused-model'"
    ) == 0


async def test_prices_are_the_tenants_own(tenant: TenantRows, other_tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        await pricing.set_model_price(
            "gpt-4o", model_provider="openai",
            input_microcents_per_token=1, output_microcents_per_token=1,
        )
    async with tenant_scope(other_tenant.tenant_id):
        with pytest.raises(NotFoundError):
            await pricing.get_model_price("gpt-4o", model_provider="openai")
        with pytest.raises(NotFoundError):
            await pricing.delete_model_price("gpt-4o", model_provider="openai")
        rates = await pricing.price_of("gpt-4o", model_provider="openai")
        assert rates is not None and rates.source == "genai-prices"
        assert {p.model_name for p in await pricing.list_model_prices()} == {"claude-sonnet-4-5"}


async def test_prices_need_a_scope() -> None:
    with pytest.raises(TenantScopeError):
        await pricing.list_model_prices()


async def test_a_tenant_price_applies_whatever_the_case_and_to_dated_names(
    tenant: TenantRows, owner: asyncpg.Connection
) -> None:
    """The table matches names without regard to case and knows dated
    snapshots: a tenant's price must win over it for the same calls."""
    async with tenant_scope(tenant.tenant_id):
        await pricing.set_model_price(
            "Claude-Haiku-4-5", model_provider="Anthropic",
            input_microcents_per_token=1, output_microcents_per_token=2,
        )
        for provider, model in (
            ("anthropic", "claude-haiku-4-5"),
            ("ANTHROPIC", "CLAUDE-HAIKU-4-5"),
            ("anthropic", "claude-haiku-4-5-20251001"),
        ):
            rates = await pricing.price_of(model, model_provider=provider)
            assert rates is not None and rates.source == "tenant", (provider, model)
            assert rates.cost(TokenUsage(1000, 1000)) == 3000
        # Setting it again in another case replaces it: one price per model.
        await pricing.set_model_price(
            "claude-haiku-4-5", model_provider="anthropic",
            input_microcents_per_token=5, output_microcents_per_token=5,
        )
        fetched = await pricing.get_model_price("CLAUDE-haiku-4-5")
        assert (fetched.model_name, fetched.input_microcents_per_token) == ("claude-haiku-4-5", 5)
        # A price for the dated name itself is the more specific one.
        await pricing.set_model_price(
            "claude-haiku-4-5-20251001", input_microcents_per_token=7, output_microcents_per_token=7,
        )
        dated = await pricing.price_of("claude-haiku-4-5-20251001")
        assert dated is not None and dated.input.base == 7
        plain = await pricing.price_of("claude-haiku-4-5")
        assert plain is not None and plain.input.base == 5
    assert await owner.fetchval(
        "SELECT count(*) FROM model_prices WHERE tenant_id = $1 AND model_name ILIKE 'claude-haiku%'",
        tenant.tenant_id,
    ) == 2


###############################################################################
# A tenant's price without cache rates.

CacheKind = Literal["cache_read", "cache_write"]


def table_cache_ratio(
    provider: str, model: str, kind: CacheKind, at: datetime.datetime, tokens: int = 1000
) -> Fraction | None:
    """genai-prices' own ratio of a cache price to the input price, from its
    public calc_price: what ``tokens`` tokens of the cache kind cost over
    what as many uncached input tokens cost (1,000 tokens is below every tier
    of its table). None when it lists no such cache price."""
    plain = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=tokens),
        model, provider_id=provider, genai_request_timestamp=at,
    )
    if getattr(plain.model_price, f"{kind}_mtok") is None or plain.input_price == 0:
        return None
    cached = genai_prices.calc_price(
        # genai-prices counts cache tokens inside input_tokens: all of them are cached.
        genai_prices.Usage(input_tokens=tokens, **{f"{kind}_tokens": tokens}),
        model, provider_id=provider, genai_request_timestamp=at,
    )
    return Fraction(cached.input_price) / Fraction(plain.input_price)


def half_up(exact: Fraction) -> int:
    return math.floor(exact + Fraction(1, 2))


THIS_HOUR = datetime.datetime.now(datetime.timezone.utc).replace(minute=0, second=0, microsecond=0)


def test_the_readme_tenant_pays_the_tables_cache_ratios_of_its_input_price() -> None:
    """The Python API's example (docs/python-api.md): Globex pays $2.40 per million input tokens of
    claude-sonnet-4-5 (240 microcents a token) and 1,200 an output token,
    with no cache rates of its own.

    genai-prices lists Sonnet 4.5 at $3 input, $0.30 cache read and $3.75
    cache write per million tokens: ratios 0.30 / 3 = 1/10 and 3.75 / 3 = 5/4,
    so a cache read costs 240 / 10 = 24 and a cache write 240 x 5/4 = 300.

    1,000 input + 200 output + 100,000 cache-read tokens:
      1,000 x 240 + 200 x 1,200 + 100,000 x 24
      = 240,000 + 240,000 + 2,400,000 = 2,880,000 microcents ($0.0288).
    (At the full input rate the cache reads alone were 24,000,000, the call
    24,480,000: 8.5 times as much.)
    With 2,000 cache-write tokens too: + 2,000 x 300 = 600,000 -> 3,480,000.
    """
    # The table's prices, through its own calculation: 100k tokens of each kind.
    plain = genai_prices.calc_price(genai_prices.Usage(input_tokens=100_000), "claude-sonnet-4-5")
    read = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=100_000, cache_read_tokens=100_000), "claude-sonnet-4-5"
    )
    write = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=100_000, cache_write_tokens=100_000), "claude-sonnet-4-5"
    )
    assert (plain.input_price, read.input_price, write.input_price) == (
        Decimal("0.3"), Decimal("0.03"), Decimal("0.375"),
    )

    rates = tenant_rates(
        *SONNET,
        input_microcents_per_token=usd_per_mtok("2.40"),
        output_microcents_per_token=1200,
    )
    assert rates.source == "tenant"
    assert rates.cache_read == Rate(Decimal(24)) and rates.cache_write == Rate(Decimal(300))
    assert rates.cost(TokenUsage(1000, 200, cache_read_tokens=100_000)) == 2_880_000
    assert rates.cost(TokenUsage(1000, 200, 100_000, 2_000)) == 3_480_000
    # The tenant's rates are one rate at every prompt length: above Sonnet's
    # 200k tier, 150,000 x 240 + 60,000 x 24 + 1,000 x 1,200 = 38,640,000.
    assert rates.cost(TokenUsage(150_000, 1000, cache_read_tokens=60_000)) == 38_640_000
    # A rate of its own wins over the ratio.
    own = tenant_rates(
        *SONNET, input_microcents_per_token=240, output_microcents_per_token=1200,
        cache_read_microcents_per_token=20,
    )
    assert own.cache_read == Rate(Decimal(20)) and own.cache_write == Rate(Decimal(300))


def test_a_ratio_that_is_no_finite_decimal_is_kept_exact() -> None:
    """avian's deepseek/deepseek-v4-pro: $1.305 input, $0.10875 cache read:
    a ratio of 0.10875 / 1.305 = 1/12. At 1 microcent an input token a cache
    read costs 1/12 microcent: 6 of them exactly 1/2, rounded half up to 1
    (a 28-digit decimal 1/12 would make it 0.4999... and round down to 0);
    5 are 5/12 -> 0; 18 are 3/2 -> 2. The table lists no cache-write price."""
    model = ("avian", "deepseek/deepseek-v4-pro")
    assert table_cache_ratio(*model, "cache_read", THIS_HOUR) == Fraction(1, 12)
    rates = tenant_rates(
        *model, input_microcents_per_token=1, output_microcents_per_token=2, at=THIS_HOUR
    )
    assert rates.cache_read == Rate(Fraction(1, 12))
    assert rates.cost(TokenUsage(0, 0, cache_read_tokens=6)) == 1
    assert rates.cost(TokenUsage(0, 0, cache_read_tokens=5)) == 0
    assert rates.cost(TokenUsage(0, 0, cache_read_tokens=18)) == 2
    # 100 input + 10 output + 6 cache reads: 100 + 20 + 1/2 = 120.5 -> 121.
    assert rates.cost(TokenUsage(100, 10, cache_read_tokens=6)) == 121
    assert rates.cache_write is None
    assert rates.cost(TokenUsage(100, 10, cache_write_tokens=1)) is None


def test_the_base_ratio_applies_at_every_prompt_length() -> None:
    """openrouter's x-ai/grok-4-fast lists input at $0.20, $0.40 above 128k
    tokens, and cache reads at $0.05 at any length: a ratio of 1/4 below the
    tier and 1/8 above it. A tenant's input rate is one rate at every length,
    so its cache rate is too: the base ratio, 1/4. At 16 microcents an input
    token, 100,000 input and 100,000 cache-read tokens (200k in all, above
    the tier): 100,000 x 16 + 100,000 x 4 = 2,000,000."""
    model = ("openrouter", "x-ai/grok-4-fast")
    assert table_cache_ratio(*model, "cache_read", THIS_HOUR) == Fraction(1, 4)
    assert table_cache_ratio(*model, "cache_read", THIS_HOUR, tokens=200_000) == Fraction(1, 8)
    rates = tenant_rates(
        *model, input_microcents_per_token=16, output_microcents_per_token=40, at=THIS_HOUR
    )
    assert rates.cache_read == Rate(Decimal(4))
    assert rates.cost(TokenUsage(100_000, 0, cache_read_tokens=100_000)) == 2_000_000
    assert rates.cost(TokenUsage(1_000, 0, cache_read_tokens=1_000)) == 20_000


def models_with_cache_prices(kind: CacheKind) -> list[tuple[str, str, Fraction]]:
    """Every model priced by tokens whose table entry lists a price of the
    cache kind, with genai-prices' own ratio of it to the input price."""
    found = []
    for provider, model in PRICED:
        ratio = table_cache_ratio(provider, model, kind, THIS_HOUR)
        if ratio is not None:
            found.append((provider, model, ratio))
    return found


@pytest.mark.parametrize("kind", ["cache_read", "cache_write"])
def test_derived_cache_rates_agree_with_the_tables_ratios(kind: CacheKind) -> None:
    """For every model of the table with a price of the cache kind: a tenant
    price without it charges the tenant's input rate times genai-prices'
    ratio, exactly, rounded half up, whatever the prompt length; for every
    other model priced by tokens the rate is unknown and there is no cost."""
    rng = random.Random(f"{kind}-20261207")
    listed = models_with_cache_prices(kind)
    assert len(listed) > 100
    listed_names = {(provider, model) for provider, model, _ in listed}
    for provider, model, ratio in listed:
        for _ in range(3):
            # Any price the column holds: 14 digits, six of them decimal places.
            input_price = Decimal(rng.randrange(0, 10**8)).scaleb(-rng.randrange(0, 7))
            tokens = rng.choice([1, rng.randrange(1, 1000), rng.randrange(1, 2_000_000)])
            rates = tenant_rates(
                provider, model,
                input_microcents_per_token=input_price,
                output_microcents_per_token=1,
                at=THIS_HOUR,
            )
            call = TokenUsage(0, 0, **{f"{kind}_tokens": tokens})
            expected = half_up(Fraction(input_price) * tokens * ratio)
            assert rates.cost(call) == expected, (provider, model, input_price, tokens, ratio)
    unlisted = [name for name in PRICED if name not in listed_names]
    assert unlisted
    for provider, model in unlisted:
        rates = tenant_rates(
            provider, model, input_microcents_per_token=100, output_microcents_per_token=100,
            at=THIS_HOUR,
        )
        assert getattr(rates, kind) is None, (provider, model)
        assert rates.cost(TokenUsage(10, 10, **{f"{kind}_tokens": 1})) is None
        assert rates.cost(TokenUsage(10, 10, **{f"{kind}_tokens": 0})) == 2000


def test_without_a_ratio_cache_tokens_get_no_cost_and_a_warning() -> None:
    """A model the table does not know has no ratio; gpt-4o has a cache-read
    price ($1.25 against $2.50 input: 1/2) but no cache-write price."""
    own_model = tenant_rates(
        "openai", "my-finetune", input_microcents_per_token=100, output_microcents_per_token=400
    )
    assert (own_model.cache_read, own_model.cache_write) == (None, None)
    gpt = tenant_rates("openai", "gpt-4o", input_microcents_per_token=200, output_microcents_per_token=800)
    assert gpt.cache_read == Rate(Decimal(100)) and gpt.cache_write is None
    pricer = Pricer([own_model, gpt], datetime.datetime.now(datetime.timezone.utc))
    # Without cache tokens (or with none of the unknown kind) a call is priced.
    assert pricer.cost("openai", "my-finetune", TokenUsage(10, 1)) == 1400
    assert pricer.cost("openai", "my-finetune", TokenUsage(10, 1, 0, 0)) == 1400
    assert pricer.cost("openai", "gpt-4o", TokenUsage(10, 1, cache_read_tokens=10)) == 3800
    # With them: no cost, and a warning that says what to set.
    assert pricer.cost("openai", "my-finetune", TokenUsage(10, 1, cache_read_tokens=5)) is None
    assert pricer.cost("openai", "my-finetune", TokenUsage(10, 1, 5, 5)) is None
    for _ in range(2):  # the warning counts the calls
        assert pricer.cost("openai", "gpt-4o", TokenUsage(10, 1, cache_write_tokens=5)) is None
    warnings = sorted((w.model_name, w.rows, w.reason) for w in pricer.warnings())
    assert [(name, rows) for name, rows, _ in warnings] == [
        ("gpt-4o", 2), ("my-finetune", 1), ("my-finetune", 1),
    ]
    (_, _, gpt_write), (_, _, own_read), (_, _, own_both) = sorted(
        warnings, key=lambda w: (w[0], "and cache" in w[2])
    )
    # Each says what to set: the rate of the kind the calls had.
    assert "cache_write_microcents_per_token with" in gpt_write and "cache_read_" not in gpt_write
    assert "cache_read_microcents_per_token with" in own_read and "cache_write_" not in own_read
    assert (
        "cache_read_microcents_per_token and cache_write_microcents_per_token with" in own_both
    )
    assert all("everyskill.pricing.set_model_price" in reason for _, _, reason in warnings)


def test_tenant_rates_check_their_input() -> None:
    with pytest.raises(ValidationError) as refused:
        tenant_rates(*SONNET, input_microcents_per_token=-1, output_microcents_per_token=1)
    assert refused.value.field == "input_microcents_per_token"
    with pytest.raises(ValidationError) as refused:
        tenant_rates(" ", "m", input_microcents_per_token=1, output_microcents_per_token=1)
    assert refused.value.field == "model_provider"


async def test_a_measurement_of_the_tenant_is_charged_the_derived_cache_rates(
    tenant: TenantRows, owner: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The Python API's example (docs/python-api.md) through the API: 2,880,000 microcents, as worked
    out above; a model without a ratio is stored without a cost."""
    with caplog.at_level(logging.WARNING, logger="everyskill.usage"):
        async with tenant_scope(tenant.tenant_id):
            await pricing.set_model_price(
                "claude-sonnet-4-5", model_provider="anthropic",
                input_microcents_per_token=usd_per_mtok("2.40"), output_microcents_per_token=1200,
            )
            await pricing.set_model_price(
                "my-finetune", model_provider="openai",
                input_microcents_per_token=100, output_microcents_per_token=400,
            )
            price = await pricing.price_of("claude-sonnet-4-5")
            sonnet = await record_measurement(
                skill_id=tenant.skill_id, model_name="claude-sonnet-4-5",
                input_tokens=1_000, output_tokens=200, cache_read_tokens=100_000,
            )
            unknown = await record_measurement(
                skill_id=tenant.skill_id, model_name="my-finetune", model_provider="openai",
                input_tokens=1_000, output_tokens=200, cache_read_tokens=100_000,
            )
            uncached = await record_measurement(
                skill_id=tenant.skill_id, model_name="my-finetune", model_provider="openai",
                input_tokens=1_000, output_tokens=200,
            )
    assert price is not None and price.cache_read == Rate(Decimal(24))
    assert sonnet.warnings == () and uncached.warnings == ()
    records = await owner.fetch(
        "SELECT id, estimated_cost_microcents FROM token_measurements WHERE id = ANY($1)",
        [sonnet.row.id, unknown.row.id, uncached.row.id],
    )
    stored = {record["id"]: record["estimated_cost_microcents"] for record in records}
    assert stored == {
        sonnet.row.id: 2_880_000,
        unknown.row.id: None,
        uncached.row.id: 1_000 * 100 + 200 * 400,
    }
    (warning,) = unknown.warnings
    assert isinstance(warning, CostWarning)
    assert (warning.model_name, warning.rows) == ("my-finetune", 1)
    assert "cache_read_microcents_per_token" in warning.reason
    assert str(warning) in caplog.text
