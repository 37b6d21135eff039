"""The chain's configuration: every knob of the Crypto Card chain, with defaults, in one immutable
object that both drivers read (``ccsim run`` through :class:`services.chain.InProcessChain`, ``ccsim
serve`` through the party services' seed).

Every ``_kzt`` amount is ``int`` minor units (tiyn); every ``_bps`` is basis points (1/10,000);
every ``_s`` is seconds of the injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from decimal import Decimal

from services.contracts import OrphanPolicy, TaxPolicy
from services.errors import ConfigError
from services.exchange import ExchangeConfig
from services.issuer import IssuerConfig
from services.money import D
from services.network import FeeSchedule
from services.tax import CostMethod

__all__ = ["DEFAULT_TIER_LIMITS_KZT", "ChainConfig", "fee_rule", "tier_rule", "top_up_rule"]


# -- the rules a configuration must keep, stated once (the scenario schema asks the same) ------------
def fee_rule(mdr_bps: int, interchange_bps: int, scheme_fee_bps: int) -> str | None:
    """The merchant discount must pay the interchange and the scheme fee out of itself."""
    if mdr_bps < interchange_bps + scheme_fee_bps:
        return "mdr_bps must cover interchange_bps + scheme_fee_bps"
    return None


def tier_rule(per_txn: Decimal | int, daily: Decimal | int, monthly: Decimal | int) -> str | None:
    """A KYC tier's limits grow from one payment to a day to a month."""
    if not 0 < per_txn <= daily <= monthly:
        return "need 0 < per_txn_kzt <= daily_kzt <= monthly_kzt"
    return None


def top_up_rule(below: Decimal | int, to: Decimal | int) -> str | None:
    """An auto top-up fills the card to at least the threshold that triggers it."""
    if not 0 < below <= to:
        return "top_up_to_kzt must be at least top_up_below_kzt, and both above 0"
    return None


def _in_tier(tier: str, problem: str | None) -> str | None:
    return None if problem is None else f"tier {tier}: {problem}"

# tier -> (per transaction, per day, per 30-day month), tiyn. Illustrative values for a KYC ladder.
DEFAULT_TIER_LIMITS_KZT: dict[str, tuple[int, int, int]] = {
    "basic": (200_000_00, 500_000_00, 2_000_000_00),
    "standard": (1_000_000_00, 3_000_000_00, 15_000_000_00),
    "premium": (5_000_000_00, 20_000_000_00, 100_000_000_00),
}


@dataclass(frozen=True)
class ChainConfig:
    """Every knob of the chain, with defaults. Immutable: one run, one configuration."""

    # -- issuer: funding and holds ------------------------------------------------------------
    hold_padding_bps: int = 200  # JIT sells shortfall + this much of the amount; over-capture room
    hold_expiry_s: float = 7 * 86_400.0  # an uncaptured hold is released after this
    max_slippage_bps: int = 100  # the issuer's cap on each sale (SellOrder.max_slippage_bps)
    quote_ttl_s: float = 2.0  # the issuer's quote time-to-live (SellOrder.quote_ttl_s)
    stablecoin_asset: str = "KZTE"  # redeemed 1:1 in stablecoin mode
    # -- issuer: limits by KYC tier ------------------------------------------------------------
    tier_limits_kzt: dict[str, tuple[int, int, int]] = field(default_factory=lambda: dict(DEFAULT_TIER_LIMITS_KZT))
    # -- issuer: AML rules ---------------------------------------------------------------------
    aml_velocity_max_payments: int = 20  # approvals per card within the window; the next is declined 65
    aml_velocity_window_s: float = 3_600.0
    aml_structuring_band_bps: int = 500  # an amount within 5 % under the per-transaction limit is "near"
    aml_structuring_max_near: int = 3  # this many near-limit approvals in the window → the next is 59
    aml_structuring_window_s: float = 86_400.0
    # -- network: deadline fallback ------------------------------------------------------------
    stand_in_enabled: bool = True  # False: the network declines (91) when the issuer is late
    stand_in_limit_kzt: int = 50_000_00  # the network approves up to this without the issuer
    orphan_policy: OrphanPolicy = OrphanPolicy.KEEP_TENGE
    # -- fees ----------------------------------------------------------------------------------
    mdr_bps: int = 150  # merchant discount rate, kept by the acquirer (must cover the next two)
    interchange_bps: int = 80  # acquirer → issuer per cleared payment
    scheme_fee_bps: int = 10  # network's fee per cleared payment, paid by the acquirer side
    # -- exchange and tax ----------------------------------------------------------------------
    # The exchange's fees, books and opening tenge; ``tax_policy`` and ``cost_basis`` below
    # override the ones inside it, so a scenario states them once.
    exchange: ExchangeConfig = field(default_factory=ExchangeConfig)
    tax_policy: TaxPolicy = TaxPolicy.SELF_DECLARE
    cost_basis: CostMethod = "fifo"  # "fifo" or "average"
    tax_compliance_rate: Decimal = field(default_factory=lambda: D("1"))  # self-declarers who declare
    # -- parties and their banks ---------------------------------------------------------------
    issuer_id: str = "issuer"
    network_id: str = "network"
    exchange_id: str = "exchange"
    acquirer_ids: tuple[str, ...] = ("acq-1", "acq-2", "acq-3")
    bank_count: int = 3  # banks "bank-1".."bank-N"; parties are spread over them round-robin
    issuer_float_kzt: int = 1_000_000_000_00  # the issuer's opening balance at its bank
    network_float_kzt: int = 0
    acquirer_float_kzt: int = 10_000_000_00  # covers merchants whose refunds exceed their sales
    # -- the direct rail (CryptoCity, services.flows.direct) ---------------------------------------
    direct_fee_bps: int = 0  # the exchange's fee on a direct payment, out of the merchant's receipt
    direct_quote_ttl_s: float = 60.0  # a direct quote's time-to-live: the holder confirms within it
    # -- pre-funded cards: auto top-up (0 = off) -------------------------------------------------
    top_up_below_kzt: int = 0  # when a pre-funded card's tenge falls below this after a payment…
    top_up_to_kzt: int = 0  # …sell crypto to bring it back up to this

    def __post_init__(self) -> None:
        if self.hold_padding_bps < 0 or self.max_slippage_bps < 0:
            raise ConfigError("padding and slippage cap must not be negative")
        if min(self.mdr_bps, self.interchange_bps, self.scheme_fee_bps) < 0:
            raise ConfigError("fees must not be negative")
        if not 0 <= self.direct_fee_bps < 10_000 or self.direct_quote_ttl_s <= 0:
            raise ConfigError("direct_fee_bps must be within 0..9999 and direct_quote_ttl_s above 0")
        if self.bank_count < 1 or not self.acquirer_ids:
            raise ConfigError("need at least one bank and one acquirer")
        if self.cost_basis not in ("fifo", "average"):
            raise ConfigError(f"cost_basis must be 'fifo' or 'average', not {self.cost_basis!r}")
        if not D(0) <= self.tax_compliance_rate <= D(1):
            raise ConfigError("tax_compliance_rate must be within 0..1")
        problem = fee_rule(self.mdr_bps, self.interchange_bps, self.scheme_fee_bps)
        for tier, (per_txn, daily, monthly) in self.tier_limits_kzt.items():
            problem = problem or _in_tier(tier, tier_rule(per_txn, daily, monthly))
        if self.top_up_below_kzt:
            problem = problem or top_up_rule(self.top_up_below_kzt, self.top_up_to_kzt)
        if problem:
            raise ConfigError(problem)

    def issuer_config(self) -> IssuerConfig:
        """The issuer's rules: every field of :class:`IssuerConfig` is a field of this chain's, by
        the same name (one list of issuer knobs, here)."""
        values = {f.name: getattr(self, f.name) for f in fields(IssuerConfig)}
        values["tier_limits_kzt"] = dict(self.tier_limits_kzt)
        return IssuerConfig(**values)

    def fee_schedule(self) -> FeeSchedule:
        return FeeSchedule(self.mdr_bps, self.interchange_bps, self.scheme_fee_bps)

    def exchange_config(self) -> ExchangeConfig:
        """The exchange's configuration with this chain's tax policy and cost-basis method."""
        return replace(
            self.exchange,
            tax_policy=self.tax_policy,
            cost_basis=self.cost_basis,
            stablecoin_code=self.stablecoin_asset,
        )
