"""The people: cardholders (residency, KYC tier, funding mode, holdings with purchase lots, asset
priority) and merchants (category, CryptoCity zone, acquirer), drawn from the scenario.

Each trait is drawn on its own named stream (``population.residency``, ``population.holdings.BTC``,
``population.merchants.category``…), so adding an asset or a category leaves the other traits of
everyone unchanged. Draws are vectorised: a population of a million is built in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from services.contracts import (
    CardholderSpec,
    FundingMode,
    Holding,
    Lot,
    MerchantSpec,
    Residency,
)
from services.money import AssetRegistry, D
from sim.distributions import amount_sampler
from sim.rng import Streams
from sim.scenario import Scenario

__all__ = ["Population", "build_population"]

_DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Population:
    cardholders: list[CardholderSpec]
    merchants: list[MerchantSpec]
    merchants_by_category: dict[str, list[int]]  # category -> merchant indexes


def _choice(rng: np.random.Generator, keys: list[str], weights: list[float], n: int) -> list[str]:
    p = np.asarray(weights, dtype=float)
    idx = rng.choice(len(keys), size=n, p=p / p.sum())
    return [keys[i] for i in idx.tolist()]


def _quantity_minor(value_tiyn: int, price_kzt: Decimal, unit: int) -> int:
    """How many minor units of an asset ``value_tiyn`` buys at ``price_kzt`` per major unit."""
    return int(Decimal(value_tiyn) * unit / (price_kzt * 100))


def _holdings(scenario: Scenario, streams: Streams, registry: AssetRegistry, n: int) -> list[list[Holding]]:
    out: list[list[Holding]] = [[] for _ in range(n)]
    for code, spec in scenario.population.cardholders.holdings.items():
        rng = streams[f"population.holdings.{code}"]
        unit = registry.get(code).unit
        price = scenario.market.assets[code].start_price_kzt
        has = rng.random(n) < spec.share
        value = amount_sampler(spec.value_kzt, rng)
        lots_n = rng.integers(spec.lots.count_min, spec.lots.count_max + 1, n)
        spread = spec.lots.price_spread_pct / 100.0
        centre = 1.0 - spec.lots.mean_discount_pct / 100.0
        for i in np.flatnonzero(has).tolist():
            qty = _quantity_minor(value(), price, unit)
            k = int(lots_n[i])
            if qty < k:
                continue
            factors = centre * rng.uniform(1.0 - spread, 1.0 + spread, k)
            ages_s = np.sort(rng.uniform(0.0, 365.0 * _DAY_S, k))[::-1]
            share, rest = divmod(qty, k)
            lots = tuple(
                Lot(share + (rest if j == k - 1 else 0), D(f"{float(price) * factors[j]:.2f}"),
                    -float(ages_s[j]))
                for j in range(k)
            )
            out[i].append(Holding(code, lots))
    return out


def build_population(scenario: Scenario, streams: Streams) -> Population:
    registry = scenario.registry()
    spec = scenario.population.cardholders
    n = spec.count
    resident = streams["population.residency"].random(n) < spec.resident_share
    tiers = _choice(streams["population.kyc"], list(spec.kyc_tiers), list(spec.kyc_tiers.values()), n)
    modes = _choice(streams["population.funding"], [m.value for m in spec.funding_modes],
                    list(spec.funding_modes.values()), n)
    prio_rng = streams["population.priority"]
    options = spec.asset_priority
    p = np.asarray([o.weight for o in options], dtype=float)
    prio_idx = prio_rng.choice(len(options), size=n, p=p / p.sum()).tolist()
    holdings = _holdings(scenario, streams, registry, n)
    balance = amount_sampler(spec.card_balance_kzt, streams["population.card_balance"])
    prefund = amount_sampler(spec.prefund_kzt, streams["population.prefund"])
    stable = amount_sampler(spec.stablecoin_kzt, streams["population.stablecoin"])
    cardholders: list[CardholderSpec] = []
    for i in range(n):
        mode = FundingMode(modes[i])
        held = holdings[i]
        held_codes = {h.asset for h in held}
        order = tuple(code for code in options[prio_idx[i]].order if code in held_codes)
        if not order:  # holds nothing in the chosen order: fall back to anything traded
            order = options[prio_idx[i]].order
        card_kzt = balance()
        stable_minor = 0
        if mode is FundingMode.PREFUNDED:
            card_kzt += prefund()
        elif mode is FundingMode.STABLECOIN:
            stable_minor = stable()
        cardholders.append(CardholderSpec(
            holder_id=f"h{i}", card_id=f"c{i}",
            residency=Residency.RESIDENT if resident[i] else Residency.NON_RESIDENT,
            kyc_tier=tiers[i], funding_mode=mode, asset_priority=order, holdings=tuple(held),
            card_balance_kzt=card_kzt, stablecoin_minor=stable_minor,
        ))
    return Population(cardholders, *_merchants(scenario, streams))


def _merchants(scenario: Scenario, streams: Streams) -> tuple[list[MerchantSpec], dict[str, list[int]]]:
    spec = scenario.population.merchants
    m = spec.count
    cats = list(spec.categories)
    categories = _choice(streams["population.merchants.category"], cats,
                         [c.weight for c in spec.categories.values()], m)
    if set(categories) != set(cats):  # every category needs a merchant: give each one the first
        for j, cat in enumerate(cats):
            categories[j] = cat
    zone = streams["population.merchants.zone"].random(m) < spec.cryptocity_share
    acquirers = _choice(streams["population.merchants.acquirer"], list(spec.acquirers),
                        list(spec.acquirers.values()), m)
    merchants = [MerchantSpec(f"m{j}", acquirers[j], categories[j], bool(zone[j])) for j in range(m)]
    by_category: dict[str, list[int]] = {c: [] for c in cats}
    for j, cat in enumerate(categories):
        by_category[cat].append(j)
    return merchants, by_category
