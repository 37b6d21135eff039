"""The scenario: one typed, frozen description of a simulated world.

Every default lives here, in the schema (not as ``config.get('x', 1)`` strings scattered through
components). A scenario file names only what differs from the defaults. Unknown keys are errors
(``extra="forbid"``). Reading files, overrides and error messages are in :mod:`sim.scenario_load`;
the building blocks (money, distributions) in :mod:`sim.scenario_types`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, field_validator, model_validator

from services.contracts import FundingMode, OrphanPolicy, TaxPolicy
from services.flows.config import fee_rule, tier_rule, top_up_rule
from services.money import DEFAULT_ASSETS, Asset, AssetRegistry, MoneyError
from sim.scenario_direct import DirectSpec
from sim.scenario_slo import SERVICE_NAMES, Slo, SloText, slo_metric_paths
from sim.scenario_types import (
    AmountDist,
    Bps,
    ConstantTime,
    Kzt,
    LognormalAmount,
    Model,
    NonNeg,
    Pos,
    PriceKzt,
    Share,
    TimeDist,
    UniformAmount,
    Window,
    kzt_minor,
)

__all__ = [
    "SERVICE_NAMES",
    "AmountDist",
    "ArrivalsSpec",
    "Scenario",
    "ServiceSpec",
    "Slo",
    "TaxPolicy",
    "TimeDist",
    "kzt_minor",
    "slo_metric_paths",
]



# -- market ----------------------------------------------------------------------------------
class Jumps(Model):
    rate_per_day: NonNeg = Field(0.0, description="Poisson rate of price jumps")
    mean_pct: float = Field(0.0, description="mean size of a jump, as a log-return in percent")
    sd_pct: NonNeg = Field(0.0, description="standard deviation of a jump's size (normal in log space)")


class PriceMove(Model):
    """A scripted move: the mid changes by ``change_pct`` spread evenly over ``over_s``."""

    at_s: NonNeg = Field(description="when the move starts")
    change_pct: Annotated[float, Field(gt=-100)] = Field(description="total change of the mid, e.g. -30")
    over_s: NonNeg = Field(0.0, description="spread evenly (in log space) over this long; 0: a jump")


class BookSpec(Model):
    """The bid side the exchange's market makers keep below the mid (the domain's ``BookConfig``).

    Level ``k`` bids ``mid × (1 − spread/2 − k·step)`` and holds ``depth_per_level_kzt`` of tenge
    when full; ``replenish_per_s`` of the missing depth is restored per second.
    """

    spread_bps: Annotated[int, Field(ge=0, le=5_000)] = Field(
        10, description="bid-ask spread; the best bid is half of it below the mid")
    levels: Annotated[int, Field(ge=1, le=1_000)] = Field(10, description="price levels on the bid side")
    level_step_bps: Annotated[int, Field(ge=0, le=1_000)] = Field(
        5, description="each level bids this much further below the mid than the one above")
    depth_per_level_kzt: Kzt = Field(Decimal("50000000"), description="tenge a full level pays for crypto")
    replenish_per_s: Share = Field(0.02, description="share of a level's missing depth restored per second")

    @model_validator(mode="after")
    def _positive_prices(self) -> BookSpec:
        if self.spread_bps + 2 * self.level_step_bps * (self.levels - 1) >= 20_000:
            raise ValueError("the deepest level's price would not be positive: reduce spread_bps, "
                             "level_step_bps or levels")
        return self


class AssetMarket(Model):
    """One traded asset: its mid-price process (GBM with jumps and scripted moves) and its book."""

    start_price_kzt: PriceKzt = Field(description="the mid price of one whole unit at t = 0")
    mu_per_year: float = Field(0.0, description="drift of the geometric Brownian motion")
    sigma_per_year: NonNeg = Field(0.6, description="annualised volatility of the geometric Brownian motion")
    jumps: Jumps = Field(Jumps(), description="Poisson price jumps (Merton's model)")
    moves: tuple[PriceMove, ...] = Field((), description="scripted moves, e.g. a crash at 18:00")
    halts: tuple[Window, ...] = Field((), description="trading halts: no sales of this asset inside them")
    book: BookSpec = Field(BookSpec(), description="the bid side the market makers keep")


def _default_market_assets() -> dict[str, AssetMarket]:
    return {
        "BTC": AssetMarket(start_price_kzt=Decimal("45000000"), sigma_per_year=0.6),
        "ETH": AssetMarket(start_price_kzt=Decimal("1600000"), sigma_per_year=0.75),
        "USDT": AssetMarket(start_price_kzt=Decimal("505"), sigma_per_year=0.01),
    }


class MarketSpec(Model):
    """The crypto market the exchange sells into: one mid-price path and one order book per asset."""

    tick_s: Pos = Field(10.0, description="how often the mid prices move and the books are replenished")
    maker_withdrawals: tuple[Window, ...] = Field(
        (), description="windows in which market makers stop refilling the books (liquidity pulled in a crash)")
    assets: dict[str, AssetMarket] = Field(
        default_factory=_default_market_assets,
        description="traded assets by code; the tenge stablecoin has no entry (it is redeemed 1:1)")


# -- population ------------------------------------------------------------------------------
class LotSpec(Model):
    """Purchase lots of a holding: how many, and how their prices spread around
    ``today × (1 − mean_discount_pct)`` (uniformly within ± ``price_spread_pct``)."""

    count_min: Annotated[int, Field(ge=1, le=50)] = Field(1, description="fewest purchase lots per holding")
    count_max: Annotated[int, Field(ge=1, le=50)] = Field(3, description="most purchase lots per holding")
    price_spread_pct: Annotated[float, Field(ge=0, lt=100)] = Field(
        40.0, description="lot prices spread uniformly within ± this around the centre price")
    # Positive: the day's sales realize gains on average; 0: as many losses as gains.
    mean_discount_pct: Annotated[float, Field(gt=-100, lt=100)] = Field(
        20.0, description="holders bought, on average, this much below today's price")

    @model_validator(mode="after")
    def _ordered(self) -> LotSpec:
        if self.count_max < self.count_min:
            raise ValueError("count_max must not be below count_min")
        return self


class HoldingSpec(Model):
    """Who holds one asset, how much (valued at the start price), and the lots it was bought in."""

    share: Share = Field(1.0, description="share of cardholders who hold this asset")
    value_kzt: AmountDist = Field(
        LognormalAmount(dist="lognormal", mean_kzt=300_000, cv=1.5, min_kzt=1_000, max_kzt=100_000_000),
        description="value of a holder's position at the start price")
    lots: LotSpec = Field(LotSpec(), description="the purchase lots that make up the cost basis")


class PriorityOption(Model):
    """One liquidation order (which asset a JIT sale takes first) and how common it is."""

    order: Annotated[tuple[str, ...], Field(min_length=1)] = Field(
        description="asset codes, sold first to last (restricted to what each holder holds)")
    weight: Pos = Field(1.0, description="relative share of cardholders with this order")


def _default_holdings() -> dict[str, HoldingSpec]:
    return {"BTC": HoldingSpec(share=0.8), "ETH": HoldingSpec(share=0.5), "USDT": HoldingSpec(share=0.3)}


class CardholdersSpec(Model):
    """The Crypto Card holders: one card each, linked to a custodial wallet at the exchange."""

    count: Annotated[int, Field(ge=1, le=10_000_000)] = Field(20_000, description="cardholders, one card each")
    resident_share: Share = Field(
        0.7, description="share of tax residents (PIT 10 %); the rest are non-residents (PIT 20 %)")
    kyc_tiers: dict[str, Pos] = Field(
        default_factory=lambda: {"basic": 0.5, "standard": 0.4, "premium": 0.1},
        description="relative shares of KYC tiers; each tier needs an issuer.tiers entry",
    )
    funding_modes: dict[FundingMode, NonNeg] = Field(
        default_factory=lambda: {FundingMode.JIT: 1.0},
        description="relative shares of the funding modes; at least one positive",
    )
    card_balance_kzt: AmountDist = Field(
        UniformAmount(dist="uniform", min_kzt=1, max_kzt=5_000),
        description="tenge already on every card at the start")
    prefund_kzt: AmountDist = Field(
        LognormalAmount(dist="lognormal", mean_kzt=150_000, cv=0.8, min_kzt=10_000, max_kzt=5_000_000),
        description="extra tenge loaded on pre-funded cards at the start")
    stablecoin_kzt: AmountDist = Field(
        LognormalAmount(dist="lognormal", mean_kzt=200_000, cv=0.8, min_kzt=10_000, max_kzt=10_000_000),
        description="tenge stablecoin held by stablecoin-mode cardholders")
    holdings: dict[str, HoldingSpec] = Field(
        default_factory=_default_holdings, description="crypto holdings by asset code")
    asset_priority: Annotated[tuple[PriorityOption, ...], Field(min_length=1)] = Field(
        (
            PriorityOption(order=("BTC", "ETH", "USDT"), weight=0.6),
            PriorityOption(order=("USDT", "ETH", "BTC"), weight=0.4),
        ),
        description="liquidation orders and their weights",
    )

    @field_validator("funding_modes")
    @classmethod
    def _some_mode(cls, value: dict[FundingMode, float]) -> dict[FundingMode, float]:
        if sum(value.values()) <= 0:
            raise ValueError("at least one funding mode needs a positive share")
        return value


class CategorySpec(Model):
    """A merchant category: how many payments go to it and how large they are."""

    weight: Pos = Field(1.0, description="relative share of merchants (and so of payments) in this category")
    amount: AmountDist = Field(
        LognormalAmount(dist="lognormal", mean_kzt=8_000, cv=1.2), description="payment amounts")


def _default_categories() -> dict[str, CategorySpec]:
    return {
        "food": CategorySpec(weight=5, amount=LognormalAmount(dist="lognormal", mean_kzt=4_500, cv=0.9)),
        "retail": CategorySpec(weight=3, amount=LognormalAmount(dist="lognormal", mean_kzt=18_000, cv=1.3)),
        "transport": CategorySpec(weight=2, amount=LognormalAmount(dist="lognormal", mean_kzt=2_500, cv=0.6)),
        "hotel": CategorySpec(weight=0.5, amount=LognormalAmount(dist="lognormal", mean_kzt=65_000, cv=0.8)),
    }


class MerchantsSpec(Model):
    """The merchants: category, CryptoCity zone flag and acquirer of each."""

    count: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        2_000, description="merchants; at least one per category")
    categories: dict[str, CategorySpec] = Field(
        default_factory=_default_categories, min_length=1, description="merchant categories by name")
    cryptocity_share: Share = Field(
        0.3, description="share of merchants inside the CryptoCity pilot zone (direct: their payments may go direct)")
    acquirers: dict[str, Pos] = Field(
        default_factory=lambda: {"acq-1": 0.5, "acq-2": 0.3, "acq-3": 0.2}, min_length=1,
        description="acquirer ids and the relative share of merchants each serves",
    )


class PopulationSpec(Model):
    """Who pays and who is paid."""

    cardholders: CardholdersSpec = Field(CardholdersSpec(), description="the Crypto Card holders")
    merchants: MerchantsSpec = Field(MerchantsSpec(), description="the merchants they pay")


# -- arrivals --------------------------------------------------------------------------------
class Burst(Model):
    """A window in which the arrival rate is multiplied (a rush after fireworks, a crash)."""

    start_s: NonNeg = Field(description="when the burst starts")
    duration_s: Pos = Field(description="how long it lasts")
    multiplier: Pos = Field(description="the arrival rate is multiplied by this inside it")


class ArrivalsSpec(Model):
    """Open-loop Poisson arrivals: rate × rate_scale × hourly multiplier (× burst multiplier)."""

    rate_per_s: Pos = Field(0.5, description="base arrival rate of payments")
    rate_scale: Pos = Field(1.0, description="multiplies the rate (load sweeps: 2 = twice the payments)")
    hourly_profile: Annotated[tuple[NonNeg, ...], Field(min_length=24, max_length=24)] = Field(
        (1.0,) * 24, description="24 multipliers of the rate, for 00:00 … 23:00")
    start_hour: Annotated[int, Field(ge=0, le=23)] = Field(0, description="hour of the day at simulated t = 0")
    bursts: tuple[Burst, ...] = Field((), description="windows of multiplied arrival rate")


# -- services --------------------------------------------------------------------------------
def _capacity(value: object) -> int | Literal["unlimited"]:
    if value == "unlimited":
        return "unlimited"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise ValueError(f"capacity must be an integer from 1 to 100000 or 'unlimited', got {value!r}")
    return value


Capacity = Annotated[int | Literal["unlimited"], PlainValidator(_capacity)]


class ServiceSpec(Model):
    """One service of the chain: a pool of workers with a service-time distribution and faults."""

    capacity: Capacity = Field(16, description="workers serving in parallel; unlimited: no queue")
    service_time: TimeDist = Field(ConstantTime(mean_ms=10.0), description="time a worker spends on one leg")
    timeout_ms: Pos | None = Field(
        None, description="the caller gives up an attempt after this (queue + service); null: waits forever")
    retries: Annotated[int, Field(ge=0, le=20)] = Field(0, description="further attempts after a timeout")
    backoff_ms: NonNeg = Field(100.0, description="wait before the first retry; doubles each attempt")
    outages: tuple[Window, ...] = Field((), description="windows in which the service serves nothing")
    return_service_time: TimeDist | None = Field(
        None, description="a worker leg for the response on its way back (network, acquirer); null: none")


def _svc(description: str, capacity: int | Literal["unlimited"], dist: str, mean_ms: float, **kw: Any) -> Any:
    return Field(default_factory=lambda: ServiceSpec.model_validate(
        {"capacity": capacity, "service_time": {"dist": dist, "mean_ms": mean_ms, **kw}}
    ), description=description)


class ServicesSpec(Model):
    """The six services a payment's legs pass through, each with its own workers and faults."""

    acquirer: ServiceSpec = _svc("the acquirer's front end: POS to network, and back", 64, "lognormal", 15.0,
                                 cv=0.5)
    network: ServiceSpec = _svc("the card network's switch", 128, "lognormal", 10.0, cv=0.4)
    issuer: ServiceSpec = _svc("the issuer's authorization host (screening and finalizing)", 32, "lognormal",
                               40.0, cv=0.6)
    exchange: ServiceSpec = _svc("the AIFC exchange's matching of a JIT sale", 16, "lognormal", 80.0, cv=0.8)
    custody: ServiceSpec = _svc("the exchange's custody: moving the sold crypto", 16, "lognormal", 30.0, cv=0.5)
    bank: ServiceSpec = _svc("the banks moving the sale's tenge to the issuer", 16, "lognormal", 60.0, cv=0.7)

    @model_validator(mode="before")
    @classmethod
    def _merge_onto_service_defaults(cls, data: Any) -> Any:
        """A written service block changes only the fields it names; the rest keep that service's
        defaults. Without this, ``--set services.exchange.capacity=4`` on a file with no exchange
        block would also swap the exchange's 80 ms lognormal for the generic class default."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field_info in cls.model_fields.items():
            given = data.get(name)
            if isinstance(given, dict) and field_info.default_factory is not None:
                default = field_info.default_factory()  # type: ignore[call-arg]
                merged[name] = {**default.model_dump(exclude_unset=True), **given}
        return merged

    def get(self, name: str) -> ServiceSpec:
        spec: ServiceSpec = getattr(self, name)
        return spec


# -- the chain's rules -----------------------------------------------------------------------
class StandIn(Model):
    """What the network does alone when the issuer misses the deadline."""

    enabled: bool = Field(True, description="approve up to the limit; false: the network declines (91)")
    limit_kzt: Kzt = Field(Decimal("50000"), description="the largest payment the network approves alone")


class NetworkSpec(Model):
    """The card network's deadline and stand-in, and the opening balances of the scheme side."""

    deadline_ms: Pos = Field(
        3_000.0, description="how long the network waits for the issuer (real networks: 2, 3, 5 or 10 s)")
    stand_in: StandIn = Field(StandIn(), description="the network's decision when the issuer is late")
    network_float_kzt: Kzt = Field(Decimal(0), description="the network's opening balance at its bank")
    acquirer_float_kzt: Kzt = Field(
        Decimal("10000000"), description="each acquirer's opening balance; covers merchants whose refunds "
                                         "exceed their sales")
    bank_count: Annotated[int, Field(ge=1, le=100)] = Field(
        3, description="banks the parties are spread over, round-robin")


class TierLimits(Model):
    """Spending limits of one KYC tier (a payment over any of them is declined 61)."""

    per_txn_kzt: Kzt = Field(description="largest single payment")
    daily_kzt: Kzt = Field(description="approved per card per day (buckets of 86,400 s)")
    monthly_kzt: Kzt = Field(description="approved per card per 30-day month")

    @model_validator(mode="after")
    def _ordered(self) -> TierLimits:
        problem = tier_rule(self.per_txn_kzt, self.daily_kzt, self.monthly_kzt)
        if problem:
            raise ValueError(problem)
        return self


def _default_tiers() -> dict[str, TierLimits]:
    return {
        "basic": TierLimits(per_txn_kzt=Decimal(200_000), daily_kzt=Decimal(500_000),
                            monthly_kzt=Decimal(2_000_000)),
        "standard": TierLimits(per_txn_kzt=Decimal(1_000_000), daily_kzt=Decimal(3_000_000),
                               monthly_kzt=Decimal(15_000_000)),
        "premium": TierLimits(per_txn_kzt=Decimal(5_000_000), daily_kzt=Decimal(20_000_000),
                              monthly_kzt=Decimal(100_000_000)),
    }


class AmlSpec(Model):
    """The issuer's anti-money-laundering rules: velocity (declined 65) and structuring (declined 59)."""

    velocity_max_payments: Annotated[int, Field(ge=1)] = Field(
        20, description="approvals per card within the velocity window; the next is declined 65")
    velocity_window_s: Pos = Field(3_600.0, description="the velocity rule's window")
    structuring_band_bps: Bps = Field(
        500, description="an amount this close under the per-transaction limit counts as near it")
    structuring_max_near: Annotated[int, Field(ge=1)] = Field(
        3, description="near-limit approvals within the window; the next near-limit payment is declined 59")
    structuring_window_s: Pos = Field(86_400.0, description="the structuring rule's window")


class IssuerSpec(Model):
    """The card issuer's rules: holds, the sale it asks for, limits, AML, orphans, auto top-up."""

    hold_padding_bps: Bps = Field(
        200, description="JIT sells the shortfall plus this share of the amount; the room for over-capture")
    hold_expiry_s: Pos = Field(7 * 86_400.0, description="an uncaptured hold is released after this")
    max_slippage_bps: Bps = Field(100, description="the issuer's cap on each sale leg's slippage (else 05)")
    quote_ttl_s: Pos = Field(2.0, description="lifetime of the exchange's quote (an expired quote: 05)")
    tiers: dict[str, TierLimits] = Field(
        default_factory=_default_tiers, min_length=1, description="limits by KYC tier name")
    aml: AmlSpec = Field(AmlSpec(), description="anti-money-laundering rules")
    orphan_policy: OrphanPolicy = Field(
        OrphanPolicy.KEEP_TENGE, description="what happens to a sale that finished after the deadline")
    float_kzt: Kzt = Field(Decimal("1000000000"), description="the issuer's opening balance at its bank")
    top_up_below_kzt: Kzt = Field(
        Decimal(0), description="pre-funded cards: after a payment leaves less than this, sell crypto (0: off)")
    top_up_to_kzt: Kzt = Field(Decimal(0), description="the auto top-up brings the card back up to this")

    @model_validator(mode="after")
    def _top_up(self) -> IssuerSpec:
        problem = top_up_rule(self.top_up_below_kzt, self.top_up_to_kzt) if self.top_up_below_kzt else None
        if problem:
            raise ValueError(problem)
        return self


class ExchangeSpec(Model):
    """The AIFC exchange's own money and its tenge stablecoin."""

    kzt_cash_kzt: Kzt = Field(
        Decimal("500000000"), description="the exchange's tenge at its bank at the start, to pay out proceeds")
    stablecoin_asset: str = Field("KZTE", description="the tenge stablecoin's asset code (redeemed 1:1)")


class FeesSpec(Model):
    """Fees of the exchange and of the card scheme."""

    taker_fee_bps: Bps = Field(10, description="the exchange's fee on each sale leg's gross proceeds")
    stablecoin_fee_bps: Bps = Field(5, description="the redemption fee of the tenge stablecoin")
    mdr_bps: Bps = Field(150, description="merchant discount rate, kept by the acquirer from each capture")
    interchange_bps: Bps = Field(80, description="paid by the acquirer to the issuer per cleared payment")
    scheme_fee_bps: Bps = Field(10, description="the network's fee per cleared payment, paid by the acquirer")

    @model_validator(mode="after")
    def _mdr_covers(self) -> FeesSpec:
        problem = fee_rule(self.mdr_bps, self.interchange_bps, self.scheme_fee_bps)
        if problem:
            raise ValueError(problem)
        return self


class ClearingSpec(Model):
    """What merchants do after an approval: capture (in full, partly, a little more), reverse, or nothing."""

    delay_min_s: NonNeg = Field(600.0, description="presentment arrives uniformly between this and delay_max_s")
    delay_max_s: NonNeg = Field(7_200.0, description="latest presentment after approval")
    partial_rate: Share = Field(0.03, description="share of captures below the authorized amount")
    partial_min_pct: Annotated[float, Field(gt=0, le=100)] = Field(
        50.0, description="a partial capture takes uniformly between this and 100 % of the amount")
    over_capture_rate: Share = Field(0.02, description="share of captures above the amount, within the padding")
    reversal_rate: Share = Field(0.005, description="share of approvals reversed instead of captured")
    capture_rate: Share = Field(1.0, description="share of approvals ever presented (the rest expire)")
    expiry_check_s: Pos = Field(3_600.0, description="how often expired holds are released")

    @model_validator(mode="after")
    def _ordered(self) -> ClearingSpec:
        if self.delay_max_s < self.delay_min_s:
            raise ValueError("delay_max_s must not be below delay_min_s")
        if self.partial_rate + self.over_capture_rate > 1:
            raise ValueError("partial_rate + over_capture_rate must not exceed 1")
        return self


class SettlementSpec(Model):
    """When the network nets positions and the money moves between banks."""

    every_s: Pos = Field(21_600.0, description="a settlement window closes every this many seconds")
    offset_s: NonNeg = Field(0.0, description="the first window closes at offset_s + every_s")
    settle_at_end: bool = Field(True, description="close one last window when the run ends")


class DisputesSpec(Model):
    """Money going back to the card after a capture."""

    refund_rate: Share = Field(0.01, description="share of captured payments refunded (20–100 % of the capture)")
    refund_delay_s: NonNeg = Field(7_200.0, description="a refund comes this long after the capture")
    chargeback_rate: Share = Field(0.001, description="share of captured payments charged back in full")
    chargeback_delay_s: NonNeg = Field(14_400.0, description="a chargeback comes this long after the capture")


class TaxSpec(Model):
    """Personal income tax on gains from crypto sales (seed §2.2): who collects it and how gains are costed."""

    policy: TaxPolicy = Field(
        TaxPolicy.WITHHOLD, description="withhold: the exchange withholds PIT at source; self_declare: holders do")
    compliance_rate: Share = Field(
        1.0, description="with self_declare: share of the PIT to self-declare that is declared; the rest is the gap")
    cost_basis: Literal["fifo", "average"] = Field(
        "fifo", description="which purchase lots a sale consumes: oldest first, or the running average cost")


class MetricsSpec(Model):
    """What the run records besides the payments."""

    sample_s: Pos = Field(10.0, description="utilization, queue length and liquidity sampling interval")
    bucket_s: Pos = Field(60.0, description="width of the throughput and latency-percentile buckets")
    write_transfers: bool = Field(
        True, description="copy every party's ledger journal into results.db (streamed in batches during the run)")


# -- the scenario ----------------------------------------------------------------------------
class AssetSpec(Model):
    """An asset added to the built-in registry (KZT, BTC, ETH, USDT, KZTE)."""

    code: str = Field(description="the asset's code, e.g. SOL")
    scale: Annotated[int, Field(ge=0, le=18)] = Field(description="decimal places of its minor unit")
    name: str = Field("", description="a name for people")


class Scenario(Model):
    """A simulated world: who pays whom, how fast each service is, and the rules of the chain."""

    name: str = Field("", description="the scenario's name in reports (the file's stem when empty)")
    description: str = Field("", description="one line for people")
    duration_s: Pos = Field(
        86_400.0, description="arrivals run from 0 to this; in-flight payments then drain (at most an hour)")
    warmup_s: NonNeg = Field(600.0, description="payments arriving before this are left out of the statistics")
    cooldown_s: NonNeg = Field(0.0, description="and so are those arriving in the last cooldown_s")
    assets: tuple[AssetSpec, ...] = Field((), description="additions to the asset registry")
    market: MarketSpec = Field(MarketSpec(), description="prices and order books")
    population: PopulationSpec = Field(PopulationSpec(), description="cardholders and merchants")
    arrivals: ArrivalsSpec = Field(ArrivalsSpec(), description="when payments arrive")
    services: ServicesSpec = Field(ServicesSpec(), description="workers, service times and faults per service")
    network: NetworkSpec = Field(NetworkSpec(), description="deadline and stand-in")
    issuer: IssuerSpec = Field(IssuerSpec(), description="the issuer's rules")
    exchange: ExchangeSpec = Field(ExchangeSpec(), description="the exchange's tenge and stablecoin")
    fees: FeesSpec = Field(FeesSpec(), description="exchange and scheme fees")
    clearing: ClearingSpec = Field(ClearingSpec(), description="captures, reversals and expiry")
    settlement: SettlementSpec = Field(SettlementSpec(), description="settlement windows")
    disputes: DisputesSpec = Field(DisputesSpec(), description="refunds and chargebacks")
    tax: TaxSpec = Field(TaxSpec(), description="personal income tax on sales")
    direct: DirectSpec = Field(DirectSpec(), description="CryptoCity's direct rail (off while share is 0)")
    metrics: MetricsSpec = Field(MetricsSpec(), description="what is recorded")
    slos: tuple[SloText, ...] = Field(
        (), description="service-level objectives 'metric.path OP number'; a breach makes ccsim run exit 3")

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.warmup_s + self.cooldown_s >= self.duration_s:
            raise ValueError("warmup_s + cooldown_s must be shorter than duration_s")
        registry = self.registry()  # raises on a clash with a built-in asset
        crypto = set(self.market.assets)
        for code in crypto:
            if code not in registry:
                raise ValueError(f"market.assets: unknown asset {code!r}; known: {', '.join(registry.codes())}")
        holder = self.population.cardholders
        for code in holder.holdings:
            if code not in registry:
                raise ValueError(f"population.cardholders.holdings: unknown asset {code!r}")
            if code not in crypto:
                raise ValueError(f"population.cardholders.holdings: asset {code!r} has no market.assets entry")
        for option in holder.asset_priority:
            for code in option.order:
                if code not in crypto:
                    raise ValueError(f"population.cardholders.asset_priority: asset {code!r} is not traded "
                                     "(no market.assets entry)")
        stable = self.exchange.stablecoin_asset
        if stable not in registry:
            raise ValueError(f"exchange.stablecoin_asset: unknown asset {stable!r}")
        if stable in crypto:
            raise ValueError(f"market.assets: {stable} is the tenge stablecoin, redeemed 1:1; it has no "
                             "price process or order book")
        merchants = self.population.merchants
        if merchants.count < len(merchants.categories):
            raise ValueError("population.merchants.count: fewer merchants than categories")
        for tier in holder.kyc_tiers:
            if tier not in self.issuer.tiers:
                raise ValueError(f"population.cardholders.kyc_tiers: tier {tier!r} has no issuer.tiers entry")
        for segment in self.direct.segments:
            if segment not in merchants.categories:
                raise ValueError(f"direct.segments: unknown segment {segment!r}; the segments are the merchant "
                                 f"categories: {', '.join(merchants.categories)}")
        return self

    def registry(self) -> AssetRegistry:
        registry = AssetRegistry(DEFAULT_ASSETS)
        for spec in self.assets:
            try:
                registry.add(Asset(spec.code, spec.scale, spec.name))
            except MoneyError as exc:
                raise ValueError(f"assets: {exc}") from None
        return registry

    def parsed_slos(self) -> list[Slo]:
        return [Slo.parse(text) for text in self.slos]

    @property
    def measure_from_s(self) -> float:
        return self.warmup_s

    @property
    def measure_until_s(self) -> float:
        return self.duration_s - self.cooldown_s


