"""The scenario's rules as the domain's configuration: :class:`services.chain.ChainConfig`.

The simulation decides nothing itself: every knob that changes a decision (limits, padding,
slippage cap, fees, stand-in, tax, books, floats) goes to the domain here, once, and the domain
applies it in the simulation exactly as the live services do.
"""

from __future__ import annotations

from services.exchange import ExchangeConfig
from services.exchange.config import BookConfig
from services.flows import ChainConfig
from services.money import D
from sim.scenario import Scenario, kzt_minor

__all__ = ["chain_config"]


def chain_config(scenario: Scenario) -> ChainConfig:
    issuer, fees, net = scenario.issuer, scenario.fees, scenario.network
    books = {
        code: BookConfig(
            levels=a.book.levels, level_step_bps=a.book.level_step_bps,
            depth_per_level_kzt=kzt_minor(a.book.depth_per_level_kzt), spread_bps=a.book.spread_bps,
            replenish_per_s=D(repr(a.book.replenish_per_s)),
        )
        for code, a in scenario.market.assets.items()
        if code != scenario.exchange.stablecoin_asset
    }
    exchange = ExchangeConfig(
        taker_fee_bps=fees.taker_fee_bps, max_slippage_bps=issuer.max_slippage_bps,
        quote_ttl_s=issuer.quote_ttl_s, books=books, stablecoin_code=scenario.exchange.stablecoin_asset,
        stablecoin_fee_bps=fees.stablecoin_fee_bps, house_kzt_minor=kzt_minor(scenario.exchange.kzt_cash_kzt),
    )
    return ChainConfig(
        hold_padding_bps=issuer.hold_padding_bps, hold_expiry_s=issuer.hold_expiry_s,
        max_slippage_bps=issuer.max_slippage_bps, quote_ttl_s=issuer.quote_ttl_s,
        stablecoin_asset=scenario.exchange.stablecoin_asset,
        tier_limits_kzt={
            tier: (kzt_minor(t.per_txn_kzt), kzt_minor(t.daily_kzt), kzt_minor(t.monthly_kzt))
            for tier, t in issuer.tiers.items()
        },
        aml_velocity_max_payments=issuer.aml.velocity_max_payments,
        aml_velocity_window_s=issuer.aml.velocity_window_s,
        aml_structuring_band_bps=issuer.aml.structuring_band_bps,
        aml_structuring_max_near=issuer.aml.structuring_max_near,
        aml_structuring_window_s=issuer.aml.structuring_window_s,
        stand_in_enabled=net.stand_in.enabled, stand_in_limit_kzt=kzt_minor(net.stand_in.limit_kzt),
        orphan_policy=issuer.orphan_policy,
        mdr_bps=fees.mdr_bps, interchange_bps=fees.interchange_bps, scheme_fee_bps=fees.scheme_fee_bps,
        exchange=exchange, tax_policy=scenario.tax.policy, cost_basis=scenario.tax.cost_basis,
        tax_compliance_rate=D(repr(scenario.tax.compliance_rate)),
        acquirer_ids=tuple(scenario.population.merchants.acquirers),
        bank_count=net.bank_count, issuer_float_kzt=kzt_minor(issuer.float_kzt),
        network_float_kzt=kzt_minor(net.network_float_kzt),
        acquirer_float_kzt=kzt_minor(net.acquirer_float_kzt),
        top_up_below_kzt=kzt_minor(issuer.top_up_below_kzt), top_up_to_kzt=kzt_minor(issuer.top_up_to_kzt),
        direct_fee_bps=scenario.direct.fee_bps, direct_quote_ttl_s=scenario.direct.quote_ttl_s,
    )
