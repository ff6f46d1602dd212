"""Model prices: what the tokens of a model call cost, in microcents.

Contract
--------
- :func:`total_tokens` derives (or checks) a call's ``total_tokens``: every
  input token (uncached, cache read, cache write) plus the output tokens.
- The unit is the microcent: 1e-6 cent, 1e-8 USD. A price of $3 per million
  tokens is 300 microcents per token (:func:`usd_per_mtok` converts). A cost
  is rounded half up to a whole microcent, once per call.
- Token counts follow Anthropic's usage report (:class:`TokenUsage`):
  ``input_tokens`` are the input tokens that neither came from nor went to
  the prompt cache; ``cache_read_tokens`` and ``cache_write_tokens`` are
  counted apart, and each kind is priced at its own rate. (OpenAI's
  ``prompt_tokens`` include cached tokens: subtract them before recording.)
- Where a price comes from, first match wins:

  1. the tenant's own price for the (provider, model) pair, set with
     :func:`set_model_price` (a negotiated rate; stored in ``model_prices``,
     one per pair, case aside). It applies to calls of the same names, case
     aside, and to other names the table knows as the same model (a dated
     snapshot of it);
  2. the maintained price table of PyPI ``genai-prices``, read from the data
     the installed package ships (never fetched: this works offline). It
     matches model names the way providers write them (dated snapshots,
     aliases), knows prices that changed over time or change with the time
     of day (to the minute: DeepSeek's off-peak hours), and prices long
     prompts at their tier (above 200k input tokens for some models).
     Upgrading the pinned package updates the prices.

  Cache writes are priced at the 5-minute rate. A model of the table that
  lists no cache price has its cache tokens priced at the input rate, as
  the table itself prices them.
- A tenant's price may leave out its cache rates. A cache rate it lacks is
  the table's cache-to-input ratio for that model (cache-read or
  cache-write price over input price, as listed when the call is priced)
  times the tenant's input rate: a tenant paying $2.40 per million input tokens of
  ``claude-sonnet-4-5``, which the table lists at $3 input and $0.30 cache
  read, pays $0.24 per million cache-read tokens. The ratio is that of the
  table's base prices (those below any long-prompt tier), at every prompt
  length, because the tenant's input rate is itself one rate at every
  length. (For most tiered models the ratio is the same in every tier; for
  a few it is not, such as openrouter's ``x-ai/grok-4-fast``, whose cache
  reads stay at $0.05 while its input doubles above 128k tokens: the base
  ratio, 1/4, applies at every length.) A ratio need not be a finite
  decimal (1/12 for some models): the derived rate is then an exact
  :class:`~fractions.Fraction`, and costs stay exact.
- With no ratio known (the table does not know the model, prices it by
  something other than tokens, lists no cache price of that kind for it,
  or lists its input as free) the cache rate is unknown: a call with
  tokens of that kind gets no cost (NULL) and a :class:`CostWarning` that
  says to set the rate, rather than a guessed one; a call without such
  tokens is priced as usual.
- A model that neither knows gets no cost: :meth:`Pricer.cost` returns None
  and the caller receives a :class:`CostWarning`, never a silent 0. So does a
  call without both input and output token counts, one with cache tokens
  whose rate is unknown (above), and a cost too big for the 32-bit cost
  column.
- :class:`Pricer` prices many calls at once: it reads the tenant's prices
  in one query, looks each model up once, and then costs a call with exact
  integer arithmetic (the table's own per-call routine is about a hundred
  times slower). The tests hold the two to the same result for every model
  the table knows, and a tenant's derived cache rates to the table's own
  ratios.
- :func:`set_model_price`, :func:`get_model_price`, :func:`list_model_prices`
  and :func:`delete_model_price` manage the tenant's prices inside the
  current tenant scope; :func:`price_of` says which price applies to a model
  now; :func:`tenant_rates` makes the rates of a tenant's price (cache rates
  derived as above) without a database.
"""

from __future__ import annotations

import datetime
import functools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

import asyncpg
import pydantic
from genai_prices import data_snapshot
from genai_prices import types as genai_types

from everyskill.errors import NotFoundError, ValidationError
from everyskill.redaction import redact_fields_async
from everyskill.rows import row_from_record
from everyskill.tenancy import operation
from tables import ModelPrice

__all__ = [
    "CATALOGUE",
    "COST_MAX",
    "TOTAL_TOKENS_RULE",
    "CostWarning",
    "Price",
    "Pricer",
    "Rate",
    "Rates",
    "TokenUsage",
    "catalogue_rates",
    "delete_model_price",
    "get_model_price",
    "list_model_prices",
    "price_of",
    "set_model_price",
    "tenant_rates",
    "total_tokens",
    "usd_per_mtok",
]

#: Name of the maintained price table, as it appears in :attr:`Rates.source`.
CATALOGUE: Literal["genai-prices"] = "genai-prices"
#: The largest cost one row holds: the cost columns are 32-bit integers.
COST_MAX = 2**31 - 1

_MICROCENTS_PER_USD = Decimal(100_000_000)
_TOKENS_PER_MTOK = Decimal(1_000_000)

#: A price in microcents per token: a Decimal, or an exact Fraction for a
#: derived cache rate that is no finite decimal.
Price = Decimal | Fraction


def usd_per_mtok(usd: Decimal | int | str) -> Decimal:
    """Microcents per token for a price in USD per million tokens ($3 -> 300)."""
    return Decimal(usd) * _MICROCENTS_PER_USD / _TOKENS_PER_MTOK


@dataclass(frozen=True)
class TokenUsage:
    """The tokens of one model call (see the module's contract for the convention)."""

    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None

    @property
    def all_input_tokens(self) -> int:
        """Uncached input plus cache reads and writes: what tiers are chosen by."""
        return (
            (self.input_tokens or 0)
            + (self.cache_read_tokens or 0)
            + (self.cache_write_tokens or 0)
        )


#: How total_tokens is counted, for the messages that refuse a wrong one.
TOTAL_TOKENS_RULE = (
    "total_tokens counts every input token (uncached input, cache reads and cache"
    " writes) plus the output tokens; input_tokens exclude the cache tokens, as in"
    " Anthropic's usage report (subtract cached tokens from OpenAI's prompt_tokens)"
)


def total_tokens(usage: TokenUsage, given: int | None) -> int | None:
    """A call's ``total_tokens``: derived from ``usage`` when not ``given``
    (if its input and output counts are known), else ``given``, checked.

    Raises ``ValueError`` with the reason when ``given`` disagrees with the
    counts, or when the total does not fit a 32-bit column.
    """
    parts = usage.all_input_tokens + (usage.output_tokens or 0)
    complete = usage.input_tokens is not None and usage.output_tokens is not None
    if given is None:
        if not complete:
            return None
        if parts > COST_MAX:
            raise ValueError(f"the tokens add up to {parts}, more than the {COST_MAX} a row holds")
        return parts
    if complete and given != parts:
        raise ValueError(
            f"is {given}, but input + cache read + cache write + output tokens"
            f" = {parts}: {TOTAL_TOKENS_RULE}"
        )
    if given < parts:
        raise ValueError(f"is {given}, less than the {parts} tokens given: {TOTAL_TOKENS_RULE}")
    return given


@dataclass(frozen=True)
class Rate:
    """Microcents per token, with tiers: above ``start`` input tokens, ``price``."""

    base: Price
    tiers: tuple[tuple[int, Price], ...] = ()

    def at(self, all_input_tokens: int) -> Price:
        """The price per token for a call with this many input tokens in all."""
        # genai-prices' rule: the highest tier whose start the input exceeds.
        for start, price in reversed(self.tiers):
            if all_input_tokens > start:
                return price
        return self.base


@dataclass(frozen=True)
class Rates:
    """What one model's tokens cost, and where that price comes from.

    ``cache_read`` or ``cache_write`` is None when that rate is unknown (a
    tenant's price without it, for a model whose ratio the table does not
    know): a call with such tokens then has no cost.
    """

    model_provider: str
    model_name: str
    source: Literal["tenant", "genai-prices"]
    input: Rate
    output: Rate
    cache_read: Rate | None
    cache_write: Rate | None
    #: A fixed price per call, in microcents (a few models have one).
    per_call: Decimal = Decimal(0)

    def unknown_rates(self, usage: TokenUsage) -> tuple[str, ...]:
        """The kinds of token the call has but this price has no rate for:
        ``"cache read"``, ``"cache write"``, or none."""
        return tuple(
            kind
            for kind, tokens, rate in (
                ("cache read", usage.cache_read_tokens, self.cache_read),
                ("cache write", usage.cache_write_tokens, self.cache_write),
            )
            if tokens and rate is None
        )

    def cost(self, usage: TokenUsage) -> int | None:
        """The cost of a call in whole microcents (rounded half up), or None
        without input and output token counts, or with cache tokens whose
        rate is unknown (:meth:`unknown_rates`).

        Computed exactly in integers: every price is a decimal or a
        fraction, so scaled by the least common multiple of their
        denominators it is a whole number. A batch prices each of its rows,
        and this is several times faster than the same sum in Decimal.
        """
        if usage.input_tokens is None or usage.output_tokens is None:
            return None
        all_input = usage.all_input_tokens
        factor, inputs, outputs, reads, writes, per_call = self._scaled
        exact = (
            usage.input_tokens * _price_at(inputs, all_input)
            + usage.output_tokens * _price_at(outputs, all_input)
            + per_call
        )
        if usage.cache_read_tokens:
            if reads is None:
                return None
            exact += usage.cache_read_tokens * _price_at(reads, all_input)
        if usage.cache_write_tokens:
            if writes is None:
                return None
            exact += usage.cache_write_tokens * _price_at(writes, all_input)
        # Half up, for the non-negative sum: floor(exact / factor + 1/2).
        return (2 * exact + factor) // (2 * factor)

    @functools.cached_property
    def _scaled(
        self,
    ) -> tuple[int, _Scaled, _Scaled, _Scaled | None, _Scaled | None, int]:
        """The prices as whole numbers of 1/``factor`` microcents."""
        rates = (self.input, self.output, self.cache_read, self.cache_write)
        prices = [Fraction(self.per_call)] + [
            Fraction(price)
            for rate in rates
            if rate is not None
            for price in (rate.base, *(p for _, p in rate.tiers))
        ]
        factor = math.lcm(*(price.denominator for price in prices))

        def whole(price: Price) -> int:
            scaled = Fraction(price) * factor
            assert scaled.denominator == 1
            return scaled.numerator

        def scaled(rate: Rate | None) -> _Scaled | None:
            if rate is None:
                return None
            return whole(rate.base), tuple((start, whole(price)) for start, price in rate.tiers)

        input_, output, reads, writes = (scaled(rate) for rate in rates)
        assert input_ is not None and output is not None
        return factor, input_, output, reads, writes, whole(self.per_call)


# A price in whole numbers of 1/factor microcents: its base and its tiers.
_Scaled = tuple[int, tuple[tuple[int, int], ...]]


def _price_at(rate: _Scaled, all_input_tokens: int) -> int:
    """:meth:`Rate.at` of a scaled price."""
    base, tiers = rate
    for start, price in reversed(tiers):
        if all_input_tokens > start:
            return price
    return base


class CostWarning(UserWarning):
    """Rows were written without a cost; says which model and why."""

    def __init__(self, model_provider: str, model_name: str, rows: int, reason: str) -> None:
        self.model_provider = model_provider
        self.model_name = model_name
        self.rows = rows
        self.reason = reason
        plural = "row" if rows == 1 else "rows"
        super().__init__(
            f"{rows} {plural} of model {model_name!r} ({model_provider}) recorded"
            f" without a cost: {reason}"
        )


def _rate_from_catalogue(price: object) -> Rate | None:
    if price is None:
        return None
    if isinstance(price, genai_types.TieredPrices):
        return Rate(
            usd_per_mtok(price.base),
            tuple((tier.start, usd_per_mtok(tier.price)) for tier in price.tiers),
        )
    assert isinstance(price, Decimal)
    return Rate(usd_per_mtok(price))


@functools.lru_cache(maxsize=4096)
def _catalogue_listed(
    model_provider: str, model_name: str, minute: datetime.datetime
) -> Rates | None:
    """The table's prices of a model as listed: a cache rate it does not
    list is None. None for a model it does not know or prices by something
    other than tokens."""
    snapshot = data_snapshot.get_snapshot()
    try:
        provider, model = snapshot.find_provider_model(model_name, None, model_provider, None)
    except LookupError:
        return None
    prices = model.get_prices(minute)
    input_rate = _rate_from_catalogue(prices.input_mtok)
    output_rate = _rate_from_catalogue(prices.output_mtok)
    if input_rate is None or output_rate is None:
        # Priced by something other than tokens (audio hours, pages...).
        return None
    requests = prices.requests_kcount
    per_call = Decimal(0)
    if isinstance(requests, Decimal):
        per_call = requests * _MICROCENTS_PER_USD / 1000
    return Rates(
        model_provider=model_provider,
        model_name=model_name,
        source=CATALOGUE,
        input=input_rate,
        output=output_rate,
        cache_read=_rate_from_catalogue(prices.cache_read_mtok),
        cache_write=_rate_from_catalogue(prices.cache_write_mtok),
        per_call=per_call,
    )


@functools.lru_cache(maxsize=4096)
def _catalogue_rates(
    model_provider: str, model_name: str, minute: datetime.datetime
) -> Rates | None:
    listed = _catalogue_listed(model_provider, model_name, minute)
    if listed is None:
        return None
    # The table prices the cache tokens of a model without cache prices as input.
    return Rates(
        model_provider=listed.model_provider,
        model_name=listed.model_name,
        source=CATALOGUE,
        input=listed.input,
        output=listed.output,
        cache_read=listed.cache_read or listed.input,
        cache_write=listed.cache_write or listed.input,
        per_call=listed.per_call,
    )


def _minute(at: datetime.datetime | None) -> datetime.datetime:
    """The minute a price is looked up at (now by default), in UTC: the
    table's prices change at whole minutes (DeepSeek's off-peak hours start
    at half past), so looking them up by the minute loses nothing."""
    moment = at or datetime.datetime.now(datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).replace(second=0, microsecond=0)


def catalogue_rates(
    model_provider: str, model_name: str, at: datetime.datetime | None = None
) -> Rates | None:
    """The maintained table's price of a model at a time (now by default), or None."""
    return _catalogue_rates(model_provider.strip().lower(), model_name.strip(), _minute(at))


def _exact(price: Fraction) -> Price:
    """A price as a Decimal when it is a finite decimal, else the Fraction."""
    denominator = price.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return price
    places = max(twos, fives)
    # From a string, exactly: no context precision applies.
    return Decimal(f"{price.numerator * (10**places // price.denominator)}E-{places}")


def _derived_cache_rate(input_price: Decimal, kind: Rate | None, listed_input: Rate) -> Rate | None:
    """``input_price`` times the table's ratio of a cache price (``kind``)
    to its input price, both below any tier; None without a ratio."""
    if kind is None or listed_input.base == 0:
        return None
    ratio = Fraction(kind.base) / Fraction(listed_input.base)
    return Rate(_exact(Fraction(input_price) * ratio))


def _checked_price(**fields: Any) -> _PriceInput:
    """A price as given, checked (ValidationError naming each bad field)."""
    try:
        return _PriceInput(**fields)
    except pydantic.ValidationError as error:
        raise ValidationError.from_pydantic(error) from None


def tenant_rates(
    model_provider: str,
    model_name: str,
    *,
    input_microcents_per_token: Decimal | int | str,
    output_microcents_per_token: Decimal | int | str,
    cache_read_microcents_per_token: Decimal | int | str | None = None,
    cache_write_microcents_per_token: Decimal | int | str | None = None,
    at: datetime.datetime | None = None,
) -> Rates:
    """The rates of a tenant's price of a model (see the module's contract).

    A cache rate not given is the input rate times the table's
    cache-to-input ratio for the model at ``at`` (now by default), or None
    (unknown) when the table gives no ratio. Names and prices are checked
    as :func:`set_model_price` checks them
    (:class:`~everyskill.errors.ValidationError`).
    """
    values = _checked_price(
        model_name=model_name,
        model_provider=model_provider,
        input_microcents_per_token=input_microcents_per_token,
        output_microcents_per_token=output_microcents_per_token,
        cache_read_microcents_per_token=cache_read_microcents_per_token,
        cache_write_microcents_per_token=cache_write_microcents_per_token,
    )
    return _tenant_rates(
        values.model_provider,
        values.model_name,
        values.input_microcents_per_token,
        values.output_microcents_per_token,
        values.cache_read_microcents_per_token,
        values.cache_write_microcents_per_token,
        _minute(at),
    )


def _tenant_rates(
    model_provider: str,
    model_name: str,
    input_price: Decimal,
    output_price: Decimal,
    cache_read: Decimal | None,
    cache_write: Decimal | None,
    minute: datetime.datetime,
) -> Rates:
    """:func:`tenant_rates` of prices already checked, at a minute of :func:`_minute`."""
    listed = None
    if cache_read is None or cache_write is None:
        listed = _catalogue_listed(model_provider.strip().lower(), model_name.strip(), minute)

    def cache_rate(given: Decimal | None, kind: Literal["read", "write"]) -> Rate | None:
        if given is not None:
            return Rate(given)
        if listed is None:
            return None
        return _derived_cache_rate(
            input_price, listed.cache_read if kind == "read" else listed.cache_write, listed.input
        )

    return Rates(
        model_provider=model_provider,
        model_name=model_name,
        source="tenant",
        input=Rate(input_price),
        output=Rate(output_price),
        cache_read=cache_rate(cache_read, "read"),
        cache_write=cache_rate(cache_write, "write"),
    )


def _rates_from_row(record: asyncpg.Record, at: datetime.datetime) -> Rates:
    """The rates of a ``model_prices`` row (checked when it was written) at a time."""

    def price(name: str) -> Decimal | None:
        value = record[name]
        return None if value is None else Decimal(value)

    return _tenant_rates(
        record["model_provider"],
        record["model_name"],
        Decimal(record["input_microcents_per_token"]),
        Decimal(record["output_microcents_per_token"]),
        price("cache_read_microcents_per_token"),
        price("cache_write_microcents_per_token"),
        _minute(at),
    )


@functools.lru_cache(maxsize=4096)
def _catalogue_model_id(model_provider: str, model_name: str) -> str | None:
    """The table's id of a model name (dated snapshots and aliases resolved)."""
    try:
        _provider, model = data_snapshot.get_snapshot().find_provider_model(
            model_name, None, model_provider, None
        )
    except LookupError:
        return None
    return model.id


def _key(model_provider: str, model_name: str) -> tuple[str, str]:
    """How a price and a call are matched: case aside, and by the table's id
    of the model when it knows the name (``claude-sonnet-4-5-20250929`` is
    ``claude-sonnet-4-5``)."""
    provider, name = model_provider.strip().lower(), model_name.strip().lower()
    return provider, _catalogue_model_id(provider, name) or name


class Pricer:
    """Prices the calls of one batch; collects what could not be priced.

    Make one with :meth:`load` inside an operation of the tenant scope, call
    :meth:`cost` per call, then read :meth:`warnings`.

    A tenant's price applies to a call of the same provider and model, case
    aside: the same name first, else a name the table knows as the same
    model (a price for ``claude-sonnet-4-5`` applies to calls of
    ``claude-sonnet-4-5-20250929``).
    """

    def __init__(self, tenant_rates: Iterable[Rates], at: datetime.datetime) -> None:
        self._same_name: dict[tuple[str, str], Rates] = {}
        self._same_model: dict[tuple[str, str], Rates] = {}
        for rates in tenant_rates:
            provider, name = rates.model_provider.strip().lower(), rates.model_name.strip().lower()
            self._same_name[(provider, name)] = rates
            self._same_model.setdefault(_key(provider, name), rates)
        self._at = at
        # A pricer prices at one moment: each model's price is looked up once.
        self._known: dict[tuple[str, str], Rates | None] = {}
        self._uncosted: Counter[tuple[str, str, str]] = Counter()

    @classmethod
    async def load(
        cls, connection: asyncpg.Connection, at: datetime.datetime | None = None
    ) -> Pricer:
        """A pricer for the current tenant, on its scope's ``connection``: the
        tenant's prices (a handful of rows) in one query."""
        records = await connection.fetch("SELECT * FROM model_prices")
        moment = at or datetime.datetime.now(datetime.timezone.utc)
        return cls([_rates_from_row(record, moment) for record in records], moment)

    def rates(self, model_provider: str, model_name: str) -> Rates | None:
        """The price that applies to a model: the tenant's, else the table's."""
        given = (model_provider, model_name)
        if given not in self._known:
            provider, name = model_provider.strip().lower(), model_name.strip().lower()
            tenant = self._same_name.get((provider, name)) or self._same_model.get(
                _key(provider, name)
            )
            self._known[given] = (
                tenant
                if tenant is not None
                else catalogue_rates(model_provider, model_name, self._at)
            )
        return self._known[given]

    def cost(self, model_provider: str, model_name: str, usage: TokenUsage) -> int | None:
        """The cost of one call in microcents, or None (and a warning later)."""
        rates = self.rates(model_provider, model_name)
        if rates is None:
            self._uncosted[(model_provider, model_name, "unknown")] += 1
            return None
        cost = rates.cost(usage)
        if cost is None:
            if usage.input_tokens is None or usage.output_tokens is None:
                why = "tokens"
            else:  # cache tokens of a kind whose rate is unknown
                why = " and ".join(rates.unknown_rates(usage))
            self._uncosted[(model_provider, model_name, why)] += 1
        elif cost > COST_MAX:
            self._uncosted[(model_provider, model_name, "too big")] += 1
            return None
        return cost

    def warnings(self) -> tuple[CostWarning, ...]:
        """One warning per model and reason, with how many calls it covers."""
        reasons = {
            "unknown": (
                f"no price for this model, neither the tenant's nor in {CATALOGUE};"
                " set one with everyskill.pricing.set_model_price"
            ),
            "tokens": "a cost needs both input_tokens and output_tokens",
            "too big": f"the cost exceeds {COST_MAX} microcents, the most a row holds",
        }
        for kinds, fields in (
            ("cache read", "cache_read_microcents_per_token"),
            ("cache write", "cache_write_microcents_per_token"),
            (
                "cache read and cache write",
                "cache_read_microcents_per_token and cache_write_microcents_per_token",
            ),
        ):
            reasons[kinds] = (
                f"the calls have {kinds} tokens, but the tenant's price of this model"
                f" has no {kinds} rate, and {CATALOGUE} has no {kinds} price of the"
                " model to derive one from (as its ratio to a non-zero input price);"
                f" set {fields} with everyskill.pricing.set_model_price"
            )
        return tuple(
            CostWarning(provider, name, rows, reasons[why])
            for (provider, name, why), rows in sorted(self._uncosted.items())
        )


###############################################################################
# The tenant's own prices.

_Name = pydantic.constr(strip_whitespace=True, min_length=1, max_length=200)
_Price = pydantic.condecimal(ge=0, max_digits=14, decimal_places=6, allow_inf_nan=False)


class _PriceInput(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    model_name: _Name  # type: ignore[valid-type]
    model_provider: _Name  # type: ignore[valid-type]
    input_microcents_per_token: _Price  # type: ignore[valid-type]
    output_microcents_per_token: _Price  # type: ignore[valid-type]
    cache_read_microcents_per_token: _Price | None = None  # type: ignore[valid-type]
    cache_write_microcents_per_token: _Price | None = None  # type: ignore[valid-type]
    note: pydantic.constr(max_length=10_000) | None = None  # type: ignore[valid-type]

    @pydantic.field_validator("*", mode="before")
    @classmethod
    def _no_floats(cls, value: object) -> object:
        # A float has already lost the exact price; ask for text or Decimal.
        if isinstance(value, float):
            raise ValueError("give prices as Decimal, int or str, not float")
        return value


async def set_model_price(
    model_name: str,
    *,
    model_provider: str = "anthropic",
    input_microcents_per_token: Decimal | int | str,
    output_microcents_per_token: Decimal | int | str,
    cache_read_microcents_per_token: Decimal | int | str | None = None,
    cache_write_microcents_per_token: Decimal | int | str | None = None,
    note: str | None = None,
) -> ModelPrice:
    """Set (or replace) the tenant's price of a model; it wins over the table.

    Prices are microcents per token: ``usd_per_mtok("3")`` is 300. Secrets in
    ``note`` are redacted (:mod:`everyskill.redaction`) before it is stored.
    """
    values = _checked_price(
        model_name=model_name,
        model_provider=model_provider,
        input_microcents_per_token=input_microcents_per_token,
        output_microcents_per_token=output_microcents_per_token,
        cache_read_microcents_per_token=cache_read_microcents_per_token,
        cache_write_microcents_per_token=cache_write_microcents_per_token,
        note=note,
    ).model_dump()
    texts, _found = await redact_fields_async({"note": values["note"]})
    values["note"] = texts["note"]
    async with operation(values) as scope:
        record = await scope.connection.fetchrow(
            """
            INSERT INTO model_prices (
                tenant_id, model_provider, model_name,
                input_microcents_per_token, output_microcents_per_token,
                cache_read_microcents_per_token, cache_write_microcents_per_token, note)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (tenant_id, lower(model_provider), lower(model_name)) DO UPDATE SET
                model_provider = excluded.model_provider,
                model_name = excluded.model_name,
                input_microcents_per_token = excluded.input_microcents_per_token,
                output_microcents_per_token = excluded.output_microcents_per_token,
                cache_read_microcents_per_token = excluded.cache_read_microcents_per_token,
                cache_write_microcents_per_token = excluded.cache_write_microcents_per_token,
                note = excluded.note
            RETURNING *
            """,
            scope.tenant_id,
            values["model_provider"],
            values["model_name"],
            values["input_microcents_per_token"],
            values["output_microcents_per_token"],
            values["cache_read_microcents_per_token"],
            values["cache_write_microcents_per_token"],
            values["note"],
        )
    assert record is not None
    return row_from_record(ModelPrice, record)


def _names(model_name: object, model_provider: object) -> tuple[str, str]:
    problems = [
        (field, "must be a non-empty string")
        for field, value in (("model_name", model_name), ("model_provider", model_provider))
        if not isinstance(value, str) or not value.strip()
    ]
    if problems:
        raise ValidationError(problems)
    assert isinstance(model_name, str) and isinstance(model_provider, str)
    return model_name.strip(), model_provider.strip()


async def get_model_price(model_name: str, *, model_provider: str = "anthropic") -> ModelPrice:
    """The tenant's own price of a model, or NotFoundError."""
    name, provider = _names(model_name, model_provider)
    async with operation() as scope:
        record = await scope.connection.fetchrow(
            "SELECT * FROM model_prices"
            " WHERE lower(model_provider) = lower($1) AND lower(model_name) = lower($2)",
            provider,
            name,
        )
    if record is None:
        raise NotFoundError("model price", f"{provider}/{name}")
    return row_from_record(ModelPrice, record)


async def list_model_prices() -> list[ModelPrice]:
    """The tenant's own prices, by provider and model name."""
    async with operation() as scope:
        records = await scope.connection.fetch(
            "SELECT * FROM model_prices ORDER BY model_provider, model_name"
        )
    return [row_from_record(ModelPrice, record) for record in records]


async def delete_model_price(model_name: str, *, model_provider: str = "anthropic") -> None:
    """Remove the tenant's price of a model (the table's applies again)."""
    name, provider = _names(model_name, model_provider)
    async with operation() as scope:
        deleted = await scope.connection.fetchval(
            "DELETE FROM model_prices"
            " WHERE lower(model_provider) = lower($1) AND lower(model_name) = lower($2)"
            " RETURNING id",
            provider,
            name,
        )
    if deleted is None:
        raise NotFoundError("model price", f"{provider}/{name}")


async def price_of(model_name: str, *, model_provider: str = "anthropic") -> Rates | None:
    """The price that applies to the tenant's calls of a model now, or None.

    For a tenant's price, cache rates it lacks are derived as the module's
    contract says (None when unknown).
    """
    name, provider = _names(model_name, model_provider)
    async with operation() as scope:
        pricer = await Pricer.load(scope.connection)
    return pricer.rates(provider, name)
