"""The market: mid-price paths per asset, book replenishment and trading halts.

Each asset's mid follows a geometric Brownian motion with Poisson jumps (Merton's model) on its
own rng stream, plus scripted moves ("−30 % over 10 minutes at 18:00") applied in log space
evenly over their span. In a ``maker_withdrawals`` window the market makers stop refilling the
books, so sales walk deeper levels (slippage) and can exhaust them. Every ``tick_s`` the new mids go to the domain
(:meth:`PaymentChain.set_mid_price`) and the market makers restore depth
(:meth:`PaymentChain.replenish_books`). The path is a statistical model in floats; each mid becomes
an exact ``Decimal`` (to the tiyn) at the edge, as the domain's prices must be.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from decimal import Decimal
from typing import Any

import numpy as np
import simpy

from services.contracts import PaymentChain
from services.money import D
from sim.rng import Streams
from sim.scenario import AssetMarket, MarketSpec

__all__ = ["AssetPrice", "Market"]

_SECONDS_PER_YEAR = 365.0 * 86_400.0


class AssetPrice:
    """One asset's mid path; :meth:`step` advances it by ``dt_s`` ending at ``t_s``."""

    def __init__(self, code: str, spec: AssetMarket, rng: np.random.Generator) -> None:
        self.code = code
        self.spec = spec
        self.rng = rng
        self.log_price = math.log(float(spec.start_price_kzt))
        self.moves = [(m.at_s, m.over_s, math.log1p(m.change_pct / 100.0)) for m in spec.moves]

    @property
    def price(self) -> float:
        return math.exp(self.log_price)

    def step(self, t_s: float, dt_s: float) -> None:
        spec = self.spec
        dt_y = dt_s / _SECONDS_PER_YEAR
        sigma = spec.sigma_per_year
        change = (spec.mu_per_year - sigma * sigma / 2.0) * dt_y
        if sigma > 0.0:
            change += sigma * math.sqrt(dt_y) * float(self.rng.standard_normal())
        jumps = spec.jumps
        if jumps.rate_per_day > 0.0:
            n = int(self.rng.poisson(jumps.rate_per_day * dt_s / 86_400.0))
            if n:
                change += float(self.rng.normal(jumps.mean_pct / 100.0, jumps.sd_pct / 100.0, n).sum())
        t0 = t_s - dt_s
        for at_s, over_s, log_change in self.moves:
            if over_s <= 0.0:
                if t0 <= at_s < t_s:
                    change += log_change
            else:
                overlap = min(t_s, at_s + over_s) - max(t0, at_s)
                if overlap > 0.0:
                    change += log_change * overlap / over_s
        self.log_price += change

    def decimal_price(self) -> Decimal:
        return D(f"{self.price:.2f}")


class Market:
    """Moves every asset's mid each tick and applies halts, through the chain."""

    def __init__(self, env: simpy.Environment, spec: MarketSpec, chain: PaymentChain, streams: Streams) -> None:
        self.env = env
        self.spec = spec
        self.chain = chain
        self.assets = {code: AssetPrice(code, a, streams[f"market.{code}"]) for code, a in spec.assets.items()}
        self.halted: dict[str, bool] = dict.fromkeys(spec.assets, False)
        for code, path in self.assets.items():
            chain.set_mid_price(code, path.decimal_price())

    def start(self) -> None:
        self.env.process(self._ticks())
        for code, a in self.spec.assets.items():
            for halt in a.halts:
                self.env.process(self._halt(code, halt.start_s, halt.duration_s))

    def _ticks(self) -> Generator[simpy.Event, Any, None]:
        tick_s = self.spec.tick_s
        while True:
            yield self.env.timeout(tick_s)
            now = self.env.now
            for code, path in self.assets.items():
                path.step(now, tick_s)
                self.chain.set_mid_price(code, path.decimal_price())
            if not self._makers_away(now - tick_s, now):
                self.chain.replenish_books(tick_s)

    def _makers_away(self, t0: float, t1: float) -> bool:
        return any(w.start_s < t1 and t0 < w.start_s + w.duration_s for w in self.spec.maker_withdrawals)

    def _halt(self, code: str, start_s: float, duration_s: float) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(start_s)
        self.halted[code] = True
        self.chain.set_halted(code, True)
        yield self.env.timeout(duration_s)
        self.halted[code] = False
        self.chain.set_halted(code, False)

    def mid_prices(self) -> dict[str, float]:
        return {code: path.price for code, path in self.assets.items()}
