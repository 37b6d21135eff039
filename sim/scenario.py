"""The scenario: one typed, frozen description of a simulated world.

Every default lives here, in the schema (not as ``config.get('x', 1)`` strings scattered through
components). A scenario file names only what differs from the defaults. Unknown keys are errors
(``extra="forbid"``). Reading files, overrides and error messages are in :mod:`sim.scenario_load`;
the building blocks (money, distributions) in :mod:`sim.scenario_types`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, PlainValidator, field_validator, model_validator

from services.contracts import FundingMode, OrphanPolicy, TaxPolicy
from services.money import DEFAULT_ASSETS, Asset, AssetRegistry, MoneyError
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

SERVICE_NAMES: Final = ("acquirer", "network", "issuer", "exchange", "custody", "bank")


# -- market ----------------------------------------------------------------------------------
class Jumps(Model):
    rate_per_day: NonNeg = 0.0  # Poisson rate of price jumps
    mean_pct: float = 0.0  # mean jump in log-return percent
    sd_pct: NonNeg = 0.0


class PriceMove(Model):
    """A scripted move: the mid changes by ``change_pct`` spread evenly over ``over_s``."""

    at_s: NonNeg
    change_pct: Annotated[float, Field(gt=-100)]
    over_s: NonNeg = 0.0


class BookSpec(Model):
    """The bid side the exchange's market makers keep below the mid (the domain's ``BookConfig``).

    Level ``k`` bids ``mid × (1 − spread/2 − k·step)`` and holds ``depth_per_level_kzt`` of tenge
    when full; ``replenish_per_s`` of the missing depth is restored per second.
    """

    spread_bps: Annotated[int, Field(ge=0, le=5_000)] = 10
    levels: Annotated[int, Field(ge=1, le=1_000)] = 10
    level_step_bps: Annotated[int, Field(ge=0, le=1_000)] = 5
    depth_per_level_kzt: Kzt = Decimal("50000000")
    replenish_per_s: Share = 0.02

    @model_validator(mode="after")
    def _positive_prices(self) -> BookSpec:
        if self.spread_bps + 2 * self.level_step_bps * (self.levels - 1) >= 20_000:
            raise ValueError("the deepest level's price would not be positive: reduce spread_bps, "
                             "level_step_bps or levels")
        return self


class AssetMarket(Model):
    start_price_kzt: PriceKzt
    mu_per_year: float = 0.0  # drift of the geometric Brownian motion
    sigma_per_year: NonNeg = 0.6  # annualised volatility
    jumps: Jumps = Jumps()
    moves: tuple[PriceMove, ...] = ()
    halts: tuple[Window, ...] = ()
    book: BookSpec = BookSpec()


def _default_market_assets() -> dict[str, AssetMarket]:
    return {
        "BTC": AssetMarket(start_price_kzt=Decimal("45000000"), sigma_per_year=0.6),
        "ETH": AssetMarket(start_price_kzt=Decimal("1600000"), sigma_per_year=0.75),
        "USDT": AssetMarket(start_price_kzt=Decimal("505"), sigma_per_year=0.01),
    }


class MarketSpec(Model):
    tick_s: Pos = 10.0  # how often the mid price moves and books are replenished
    # Windows in which market makers stop refilling the books (a crash: liquidity is pulled).
    maker_withdrawals: tuple[Window, ...] = ()
    assets: dict[str, AssetMarket] = Field(default_factory=_default_market_assets)


# -- population ------------------------------------------------------------------------------
class LotSpec(Model):
    """Purchase lots of a holding: how many, and how their prices spread around
    ``today × (1 − mean_discount_pct)`` (uniformly within ± ``price_spread_pct``)."""

    count_min: Annotated[int, Field(ge=1, le=50)] = 1
    count_max: Annotated[int, Field(ge=1, le=50)] = 3
    price_spread_pct: Annotated[float, Field(ge=0, lt=100)] = 40.0
    # Holders bought, on average, this much below today's price (positive: the day's sales realize
    # gains on average; 0: as many losses as gains).
    mean_discount_pct: Annotated[float, Field(gt=-100, lt=100)] = 20.0

    @model_validator(mode="after")
    def _ordered(self) -> LotSpec:
        if self.count_max < self.count_min:
            raise ValueError("count_max must not be below count_min")
        return self


class HoldingSpec(Model):
    share: Share = 1.0  # share of cardholders who hold this asset
    value_kzt: AmountDist = LognormalAmount(dist="lognormal", mean_kzt=300_000, cv=1.5,
                                            min_kzt=1_000, max_kzt=100_000_000)
    lots: LotSpec = LotSpec()


class PriorityOption(Model):
    order: Annotated[tuple[str, ...], Field(min_length=1)]
    weight: Pos = 1.0


def _default_holdings() -> dict[str, HoldingSpec]:
    return {"BTC": HoldingSpec(share=0.8), "ETH": HoldingSpec(share=0.5), "USDT": HoldingSpec(share=0.3)}


class CardholdersSpec(Model):
    count: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000
    resident_share: Share = 0.7  # the rest are non-residents (PIT 20 %)
    kyc_tiers: dict[str, Pos] = Field(
        default_factory=lambda: {"basic": 0.5, "standard": 0.4, "premium": 0.1}
    )
    funding_modes: dict[FundingMode, NonNeg] = Field(
        default_factory=lambda: {FundingMode.JIT: 1.0}
    )
    card_balance_kzt: AmountDist = UniformAmount(dist="uniform", min_kzt=1, max_kzt=5_000)
    prefund_kzt: AmountDist = LognormalAmount(dist="lognormal", mean_kzt=150_000, cv=0.8,
                                              min_kzt=10_000, max_kzt=5_000_000)
    stablecoin_kzt: AmountDist = LognormalAmount(dist="lognormal", mean_kzt=200_000, cv=0.8,
                                                 min_kzt=10_000, max_kzt=10_000_000)
    holdings: dict[str, HoldingSpec] = Field(default_factory=_default_holdings)
    asset_priority: Annotated[tuple[PriorityOption, ...], Field(min_length=1)] = (
        PriorityOption(order=("BTC", "ETH", "USDT"), weight=0.6),
        PriorityOption(order=("USDT", "ETH", "BTC"), weight=0.4),
    )

    @field_validator("funding_modes")
    @classmethod
    def _some_mode(cls, value: dict[FundingMode, float]) -> dict[FundingMode, float]:
        if sum(value.values()) <= 0:
            raise ValueError("at least one funding mode needs a positive share")
        return value


class CategorySpec(Model):
    weight: Pos = 1.0  # share of payments made at merchants of this category
    amount: AmountDist = LognormalAmount(dist="lognormal", mean_kzt=8_000, cv=1.2)


def _default_categories() -> dict[str, CategorySpec]:
    return {
        "food": CategorySpec(weight=5, amount=LognormalAmount(dist="lognormal", mean_kzt=4_500, cv=0.9)),
        "retail": CategorySpec(weight=3, amount=LognormalAmount(dist="lognormal", mean_kzt=18_000, cv=1.3)),
        "transport": CategorySpec(weight=2, amount=LognormalAmount(dist="lognormal", mean_kzt=2_500, cv=0.6)),
        "hotel": CategorySpec(weight=0.5, amount=LognormalAmount(dist="lognormal", mean_kzt=65_000, cv=0.8)),
    }


class MerchantsSpec(Model):
    count: Annotated[int, Field(ge=1, le=1_000_000)] = 2_000
    categories: dict[str, CategorySpec] = Field(default_factory=_default_categories, min_length=1)
    cryptocity_share: Share = 0.3  # share of merchants inside the CryptoCity pilot zone
    acquirers: dict[str, Pos] = Field(
        default_factory=lambda: {"acq-1": 0.5, "acq-2": 0.3, "acq-3": 0.2}, min_length=1
    )


class PopulationSpec(Model):
    cardholders: CardholdersSpec = CardholdersSpec()
    merchants: MerchantsSpec = MerchantsSpec()


# -- arrivals --------------------------------------------------------------------------------
class Burst(Model):
    start_s: NonNeg
    duration_s: Pos
    multiplier: Pos


class ArrivalsSpec(Model):
    """Open-loop Poisson arrivals: rate × rate_scale × hourly multiplier (× burst multiplier)."""

    rate_per_s: Pos = 0.5
    rate_scale: Pos = 1.0
    hourly_profile: Annotated[tuple[NonNeg, ...], Field(min_length=24, max_length=24)] = (1.0,) * 24
    start_hour: Annotated[int, Field(ge=0, le=23)] = 0  # wall-clock hour at simulated t = 0
    bursts: tuple[Burst, ...] = ()


# -- services --------------------------------------------------------------------------------
def _capacity(value: object) -> int | Literal["unlimited"]:
    if value == "unlimited":
        return "unlimited"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise ValueError(f"capacity must be an integer from 1 to 100000 or 'unlimited', got {value!r}")
    return value


Capacity = Annotated[int | Literal["unlimited"], PlainValidator(_capacity)]


class ServiceSpec(Model):
    capacity: Capacity = 16  # workers; "unlimited": no queue
    service_time: TimeDist = ConstantTime(mean_ms=10.0)
    timeout_ms: Pos | None = None  # the caller gives up an attempt after this (queue + service)
    retries: Annotated[int, Field(ge=0, le=20)] = 0
    backoff_ms: NonNeg = 100.0  # wait before a retry; doubles each attempt
    outages: tuple[Window, ...] = ()
    # The return trip (responses back through network and acquirer): None = no worker needed.
    return_service_time: TimeDist | None = None


def _svc(capacity: int | Literal["unlimited"], dist: str, mean_ms: float, **kw: Any) -> Any:
    return Field(default_factory=lambda: ServiceSpec.model_validate(
        {"capacity": capacity, "service_time": {"dist": dist, "mean_ms": mean_ms, **kw}}
    ))


class ServicesSpec(Model):
    acquirer: ServiceSpec = _svc(64, "lognormal", 15.0, cv=0.5)
    network: ServiceSpec = _svc(128, "lognormal", 10.0, cv=0.4)
    issuer: ServiceSpec = _svc(32, "lognormal", 40.0, cv=0.6)
    exchange: ServiceSpec = _svc(16, "lognormal", 80.0, cv=0.8)
    custody: ServiceSpec = _svc(16, "lognormal", 30.0, cv=0.5)
    bank: ServiceSpec = _svc(16, "lognormal", 60.0, cv=0.7)

    def get(self, name: str) -> ServiceSpec:
        spec: ServiceSpec = getattr(self, name)
        return spec


# -- the chain's rules -----------------------------------------------------------------------
class StandIn(Model):
    enabled: bool = True  # false: the network declines (91) when the issuer is late
    limit_kzt: Kzt = Decimal("50000")


class NetworkSpec(Model):
    deadline_ms: Pos = 3_000.0  # how long the network waits for the issuer (2, 3, 5 or 10 s)
    stand_in: StandIn = StandIn()
    network_float_kzt: Kzt = Decimal(0)
    acquirer_float_kzt: Kzt = Decimal("10000000")  # covers merchants whose refunds exceed sales
    bank_count: Annotated[int, Field(ge=1, le=100)] = 3  # banks the parties are spread over


class TierLimits(Model):
    per_txn_kzt: Kzt
    daily_kzt: Kzt
    monthly_kzt: Kzt

    @model_validator(mode="after")
    def _ordered(self) -> TierLimits:
        if not 0 < self.per_txn_kzt <= self.daily_kzt <= self.monthly_kzt:
            raise ValueError("need 0 < per_txn_kzt <= daily_kzt <= monthly_kzt")
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
    velocity_max_payments: Annotated[int, Field(ge=1)] = 20
    velocity_window_s: Pos = 3_600.0
    structuring_band_bps: Bps = 500
    structuring_max_near: Annotated[int, Field(ge=1)] = 3
    structuring_window_s: Pos = 86_400.0


class IssuerSpec(Model):
    hold_padding_bps: Bps = 200  # JIT sells shortfall + padding; the room for over-capture
    hold_expiry_s: Pos = 7 * 86_400.0
    max_slippage_bps: Bps = 100
    quote_ttl_s: Pos = 2.0
    tiers: dict[str, TierLimits] = Field(default_factory=_default_tiers, min_length=1)
    aml: AmlSpec = AmlSpec()
    orphan_policy: OrphanPolicy = OrphanPolicy.KEEP_TENGE
    float_kzt: Kzt = Decimal("1000000000")  # the issuer's opening balance at its bank
    # Pre-funded cards: when the card's tenge falls below this after a payment, sell crypto to
    # bring it back up to top_up_to_kzt (0: no auto top-up).
    top_up_below_kzt: Kzt = Decimal(0)
    top_up_to_kzt: Kzt = Decimal(0)

    @model_validator(mode="after")
    def _top_up(self) -> IssuerSpec:
        if self.top_up_below_kzt and not self.top_up_below_kzt <= self.top_up_to_kzt:
            raise ValueError("top_up_to_kzt must be at least top_up_below_kzt")
        return self


class ExchangeSpec(Model):
    kzt_cash_kzt: Kzt = Decimal("500000000")  # the exchange's tenge at its bank at the start
    stablecoin_asset: str = "KZTE"


class FeesSpec(Model):
    taker_fee_bps: Bps = 10  # the exchange's fee on each sale
    stablecoin_fee_bps: Bps = 5  # redemption fee of the tenge stablecoin
    mdr_bps: Bps = 150  # merchant discount rate
    interchange_bps: Bps = 80
    scheme_fee_bps: Bps = 10

    @model_validator(mode="after")
    def _mdr_covers(self) -> FeesSpec:
        if self.mdr_bps < self.interchange_bps + self.scheme_fee_bps:
            raise ValueError("mdr_bps must cover interchange_bps + scheme_fee_bps")
        return self


class ClearingSpec(Model):
    delay_min_s: NonNeg = 600.0  # presentment arrives uniformly between these after approval
    delay_max_s: NonNeg = 7_200.0
    partial_rate: Share = 0.03  # share of captures below the authorized amount
    partial_min_pct: Annotated[float, Field(gt=0, le=100)] = 50.0
    over_capture_rate: Share = 0.02  # share of captures above it, within the hold padding
    reversal_rate: Share = 0.005  # share of approvals the merchant reverses instead of capturing
    capture_rate: Share = 1.0  # share of approvals ever presented (the rest expire)
    expiry_check_s: Pos = 3_600.0

    @model_validator(mode="after")
    def _ordered(self) -> ClearingSpec:
        if self.delay_max_s < self.delay_min_s:
            raise ValueError("delay_max_s must not be below delay_min_s")
        if self.partial_rate + self.over_capture_rate > 1:
            raise ValueError("partial_rate + over_capture_rate must not exceed 1")
        return self


class SettlementSpec(Model):
    every_s: Pos = 21_600.0  # a settlement window closes every this many seconds
    offset_s: NonNeg = 0.0  # the first window closes at offset_s + every_s
    settle_at_end: bool = True  # close one last window when the run ends


class DisputesSpec(Model):
    refund_rate: Share = 0.01  # share of captured payments refunded
    refund_delay_s: NonNeg = 7_200.0  # after capture
    chargeback_rate: Share = 0.001
    chargeback_delay_s: NonNeg = 14_400.0


class TaxSpec(Model):
    policy: TaxPolicy = TaxPolicy.WITHHOLD
    compliance_rate: Share = 1.0  # with self_declare: share of holders who declare
    cost_basis: Literal["fifo", "average"] = "fifo"


class MetricsSpec(Model):
    sample_s: Pos = 10.0  # utilization, queue length and liquidity sampling interval
    bucket_s: Pos = 60.0  # throughput and latency-percentile buckets
    write_transfers: bool = True  # copy every party's ledger journal into results.db at the end


# -- SLOs ------------------------------------------------------------------------------------
_SLO_RE: Final = re.compile(r"^\s*([a-z0-9_]+(?:\.[a-z0-9_]+)*)\s*(<=|>=|<|>)\s*(-?[0-9]+(?:\.[0-9]+)?)\s*$")


def slo_metric_paths() -> frozenset[str]:
    """The numeric paths of ``summary.json`` an SLO may name."""
    paths = {f"auth_latency_ms.{p}" for p in ("mean", "p50", "p90", "p99", "p999", "max")}
    paths |= {"deadline_miss_rate", "payments.approval_rate", "payments.stand_in",
              "payments.orphaned_sales", "payments.attempted", "payments.approved"}
    for svc in SERVICE_NAMES:
        for m in ("mean_wait_ms", "p99_wait_ms", "mean_service_ms", "utilization", "mean_queue_len"):
            paths.add(f"legs.{svc}.{m}")
    paths |= {"throughput.approved_per_s_mean", "throughput.approved_per_s_peak"}
    paths |= {f"settlement_latency_s.{p}" for p in ("p50", "p99", "max")}
    paths |= {"market.slippage_bps_mean", "market.fees_kzt"}
    paths |= {"liquidity.exchange_peak_prefund_kzt", "liquidity.issuer_peak_prefund_kzt"}
    paths |= {f"tax.{k}" for k in ("realized_gain_kzt", "pit_due_kzt", "pit_withheld_kzt", "tax_gap_kzt")}
    return frozenset(paths)


class Slo(Model):
    text: str
    metric: str
    op: Literal["<", "<=", ">", ">="]
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Slo:
        m = _SLO_RE.match(text)
        if m is None:
            raise ValueError(f"SLO {text!r} is not 'metric.path OP number' (OP one of < <= > >=)")
        metric, op, threshold = m.group(1), m.group(2), float(m.group(3))
        if metric not in slo_metric_paths():
            raise ValueError(f"SLO {text!r}: unknown metric {metric!r}")
        return cls(text=f"{metric} {op} {m.group(3)}", metric=metric, op=op, threshold=threshold)

    def holds(self, value: float) -> bool:
        return {"<": value < self.threshold, "<=": value <= self.threshold,
                ">": value > self.threshold, ">=": value >= self.threshold}[self.op]


def _slo_text(text: str) -> str:
    return Slo.parse(text).text


SloText = Annotated[str, AfterValidator(_slo_text)]


# -- the scenario ----------------------------------------------------------------------------
class AssetSpec(Model):
    code: str
    scale: Annotated[int, Field(ge=0, le=18)]
    name: str = ""


class Scenario(Model):
    name: str = ""
    description: str = ""
    duration_s: Pos = 86_400.0  # arrivals run from 0 to duration_s; in-flight payments then drain
    warmup_s: NonNeg = 600.0  # payments arriving before this are excluded from the statistics
    cooldown_s: NonNeg = 0.0  # and those arriving in the last cooldown_s
    assets: tuple[AssetSpec, ...] = ()  # additions to the registry (KZT, BTC, ETH, USDT, KZTE)
    market: MarketSpec = MarketSpec()
    population: PopulationSpec = PopulationSpec()
    arrivals: ArrivalsSpec = ArrivalsSpec()
    services: ServicesSpec = ServicesSpec()
    network: NetworkSpec = NetworkSpec()
    issuer: IssuerSpec = IssuerSpec()
    exchange: ExchangeSpec = ExchangeSpec()
    fees: FeesSpec = FeesSpec()
    clearing: ClearingSpec = ClearingSpec()
    settlement: SettlementSpec = SettlementSpec()
    disputes: DisputesSpec = DisputesSpec()
    tax: TaxSpec = TaxSpec()
    metrics: MetricsSpec = MetricsSpec()
    slos: tuple[SloText, ...] = ()

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


