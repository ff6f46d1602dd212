"""
everyskill.pricing: the unit, known prices worked out by hand, agreement with
genai-prices' own calculation for every model it prices by tokens, what
cannot be priced, and the tenant's own prices through the API.
"""

from __future__ import annotations

import datetime
import random
import socket
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

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
    total_tokens,
    usd_per_mtok,
)
from everyskill.tenancy import tenant_scope
from tests.support import TenantRows

SONNET = ("anthropic", "claude-sonnet-4-5")


def table_cost(provider: str, model: str, usage: TokenUsage) -> int:
    """genai-prices' own price of a call, in whole microcents."""
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


def test_the_table_is_read_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prices come from the data the package ships: no connection is made."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the price table tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    pricing._catalogue_rates.cache_clear()
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
        # Without cache rates of its own, cache tokens cost the input rate.
        assert rates.cost(TokenUsage(0, 0, 10, 10)) == 5000
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
