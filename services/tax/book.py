"""The tax book: cost-basis lots per holder and asset, realized gains, PIT, statements.

The rules come from the seed document (``../shared/seed/000_8b35b3341d1f33e8.txt``):

* §2.2 "Crypto Tax Policy": an individual who sells digital assets declares the gain from capital
  appreciation as personal income; the revenue from the sale of digital assets is exempt from VAT.
  So each sale leg realizes ``gain = proceeds - cost basis`` (in KZT) and is flagged VAT-exempt.
* §2.1.2 "Personal Income Tax": residents pay a flat 10 %, non-residents generally 20 %
  (residency: 183 days in any continuous 12 months, 90 days for AIFC investment activity; the
  residency itself is an input here, fixed per cardholder by the scenario).

Choices the seed leaves open, made here and documented in ``docs/model-exchange-and-tax.md``:

* PIT is computed per sale leg on the positive gain; a loss gives PIT 0 and is not carried against
  other gains (no loss offset), so the PIT of a year is the sum of the per-sale PIT.
* Rounding to the tiyn is half up, applied twice per sale: once to the basis (an exact fraction of
  tiyn, since a lot's price has many decimals), once to the PIT. Proceeds are already whole tiyn.
* The year of a sale is the UTC calendar year of ``epoch_unix_s + at_s``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Final

from services.contracts import Lot, Residency
from services.money import AssetRegistry, D
from services.tax.cost_basis import (
    AveragePool,
    Basis,
    CostMethod,
    FifoPool,
    new_pool,
    tiyn_per_minor,
)
from services.tax.reports import AuthoritySummary, HolderStatement, Realization, SaleRecord

__all__ = ["CIT_RATE", "CIT_RATES", "PIT_RATES", "TaxBook", "round_half_up"]

# Seed §2.1.2 (and §2.2 for digital assets): 10 % for residents, 20 % for non-residents.
PIT_RATES: Final[Mapping[Residency, Decimal]] = {
    Residency.RESIDENT: D("0.10"),
    Residency.NON_RESIDENT: D("0.20"),
}

# Seed §2.1.1: corporate income tax, 20 % for resident and non-resident enterprises alike. A zone
# merchant's gain or loss on the crypto it received, between receipt and sale, counts toward it;
# a TaxBook with these rates keeps the merchant's lots (services.exchange.direct). Its per-sale
# figure is not the CIT: CIT falls on the year's net income, so losses offset gains (the estimate
# is CIT_RATE times a positive net gain; docs/model-direct-rail.md).
CIT_RATE: Final = D("0.20")
CIT_RATES: Final[Mapping[Residency, Decimal]] = {
    Residency.RESIDENT: CIT_RATE,
    Residency.NON_RESIDENT: CIT_RATE,
}

_FULL_COMPLIANCE: Final = D(1)


def round_half_up(value: Fraction) -> int:
    """Round an exact amount of tiyn to the nearest tiyn, halves away from zero."""
    return _half_up(value.numerator, value.denominator)


def _half_up(num: int, den: int) -> int:
    """``num / den`` (den > 0) to the nearest integer, halves away from zero, in integers."""
    if num >= 0:
        return (2 * num + den) // (2 * den)
    return -((-2 * num + den) // (2 * den))


class _Totals:
    """Running aggregates for one (year, residency): keeps the authority summary O(1) per sale."""

    __slots__ = ("gain_kzt", "gains_kzt", "losses_kzt", "pit_due_kzt", "pit_withheld_kzt", "proceeds_kzt", "sales")

    def __init__(self) -> None:
        self.sales = 0
        self.proceeds_kzt = 0
        self.gain_kzt = 0
        self.gains_kzt = 0  # the taxable base: sales that realized a gain
        self.losses_kzt = 0  # as a positive number; under the per-sale rule they offset nothing
        self.pit_due_kzt = 0
        self.pit_withheld_kzt = 0


class TaxBook:
    """Lots, realizations and reports for every cardholder of one exchange.

    ``method`` is ``"fifo"`` (oldest lot sold first) or ``"average"`` (running average cost).
    ``rates`` defaults to :data:`PIT_RATES` (seed §2.1.2, §2.2). Realizations are idempotent by
    ``(holder_id, sale_id, asset)``: a replayed sale returns the first result and consumes no lot.
    """

    def __init__(
        self,
        method: CostMethod = "fifo",
        rates: Mapping[Residency, Decimal] | None = None,
        *,
        assets: AssetRegistry | None = None,
        epoch_unix_s: float = 0.0,
    ) -> None:
        if method not in ("fifo", "average"):
            raise ValueError(f"cost basis method must be 'fifo' or 'average', got {method!r}")
        self.method: CostMethod = method
        self.rates: dict[Residency, Fraction] = {
            r: Fraction(rate) for r, rate in (rates or PIT_RATES).items()
        }
        self._rate_ratios = {r: (f.numerator, f.denominator) for r, f in self.rates.items()}
        missing = set(Residency) - set(self.rates)
        if missing:
            raise ValueError(f"a PIT rate is needed for every residency; missing {sorted(missing)}")
        self.assets = assets or AssetRegistry()
        self.epoch_unix_s = epoch_unix_s
        self._residency: dict[str, Residency] = {}
        self._pools: dict[tuple[str, str], FifoPool | AveragePool] = {}
        self._realized: dict[tuple[str, str, str], Realization] = {}
        self._records: dict[str, list[SaleRecord]] = {}
        self._totals: dict[tuple[int, Residency], _Totals] = {}
        self._year_cache = (0.0, 0.0, 0)  # [start_s, end_s) of the last year seen, and the year

    # -- lots --------------------------------------------------------------------------------
    def register_holder(self, holder_id: str, residency: Residency) -> None:
        """Record (or update) a holder's residency; the rate applies at each realization."""
        self._residency[holder_id] = residency

    def add_lots(
        self, holder_id: str, residency: Residency, asset: str, lots: Iterable[Lot]
    ) -> None:
        """Register purchase lots in any order: FIFO sells them by ``Lot.acquired_at``, oldest
        first (equal times in the order given). Also sets the holder's residency."""
        self._residency[holder_id] = residency
        pool = self._pool(holder_id, asset)
        spec = self.assets.get(asset)
        for lot in lots:
            if lot.quantity_minor < 0 or lot.price_kzt < 0:
                raise ValueError(f"a lot needs a non-negative quantity and price, got {lot}")
            pool.add(lot.quantity_minor, tiyn_per_minor(lot.price_kzt, spec), lot.acquired_at)

    def add_purchase(self, holder_id: str, asset: str, quantity_minor: int, cost_kzt: int) -> None:
        """Register a purchase by its total cost in tiyn (e.g. the exchange's re-buy)."""
        if holder_id not in self._residency:
            raise ValueError(f"unknown holder {holder_id!r}: call add_lots first")
        if quantity_minor > 0:
            self._pool(holder_id, asset).add(quantity_minor, Fraction(cost_kzt, quantity_minor))

    def holding_minor(self, holder_id: str, asset: str) -> int:
        """Units of ``asset`` the lots still cover for ``holder_id``."""
        pool = self._pools.get((holder_id, asset))
        return pool.quantity_minor if pool is not None else 0

    def residency(self, holder_id: str) -> Residency:
        try:
            return self._residency[holder_id]
        except KeyError:
            raise ValueError(f"unknown holder {holder_id!r}: call add_lots first") from None

    def rate(self, residency: Residency) -> Decimal:
        rate = self.rates[residency]
        return D(rate.numerator) / D(rate.denominator)

    # -- sales -------------------------------------------------------------------------------
    def preview(
        self, holder_id: str, asset: str, quantity_minor: int, proceeds_kzt: int
    ) -> Realization:
        """The realization a sale would produce now, consuming nothing (a dry run)."""
        pool = self._pools.get((holder_id, asset))
        basis = pool.basis_of(quantity_minor) if pool is not None else (0, 1)
        return self._outcome(holder_id, basis, proceeds_kzt)

    def realize(  # noqa: PLR0917 — the signature the exchange and the issuer call positionally
        self,
        holder_id: str,
        asset: str,
        quantity_minor: int,
        proceeds_kzt: int,
        at_s: float,
        sale_id: str,
        *,
        withheld: bool = False,
    ) -> Realization:
        """Consume lots for a sale leg and record its gain and PIT.

        ``withheld`` says the exchange withheld the PIT at source (tax policy WITHHOLD).
        """
        key = (holder_id, sale_id, asset)
        done = self._realized.get(key)
        if done is not None:
            return done
        if quantity_minor <= 0 or proceeds_kzt < 0:
            raise ValueError(f"a sale needs a positive quantity and proceeds >= 0, got "
                             f"{quantity_minor} for {proceeds_kzt}")
        residency = self.residency(holder_id)  # an unknown holder raises before anything changes
        basis = self._pool(holder_id, asset).consume(quantity_minor)
        result = self._outcome(holder_id, basis, proceeds_kzt)
        self._realized[key] = result
        year = self.year_of(at_s)
        self._records.setdefault(holder_id, []).append(SaleRecord(
            sale_id=sale_id, asset=asset, quantity_minor=quantity_minor, proceeds_kzt=proceeds_kzt,
            basis_kzt=result.basis_kzt, gain_kzt=result.gain_kzt, pit_kzt=result.pit_kzt,
            withheld=withheld, at_s=at_s, year=year, vat_exempt=result.vat_exempt,
        ))
        totals = self._totals.get((year, residency))
        if totals is None:
            totals = self._totals[(year, residency)] = _Totals()
        totals.sales += 1
        totals.proceeds_kzt += proceeds_kzt
        totals.gain_kzt += result.gain_kzt
        if result.gain_kzt > 0:
            totals.gains_kzt += result.gain_kzt
        else:
            totals.losses_kzt -= result.gain_kzt
        totals.pit_due_kzt += result.pit_kzt
        if withheld:
            totals.pit_withheld_kzt += result.pit_kzt
        return result

    def realization(self, holder_id: str, sale_id: str, asset: str) -> Realization | None:
        return self._realized.get((holder_id, sale_id, asset))

    def forget_sale(self, holder_id: str, sale_id: str, assets: Iterable[str]) -> None:
        """Forget a sale's realizations and its lines in the holder's statement. The lots it consumed
        stay consumed and the authority totals keep it; a replay of it would realize again. For a
        long simulation that reads no statements (live services never call it)."""
        for asset in assets:
            self._realized.pop((holder_id, sale_id, asset), None)
        records = self._records.get(holder_id)
        if records:
            kept = [r for r in records if r.sale_id != sale_id]
            if not kept:
                del self._records[holder_id]
            elif len(kept) != len(records):
                self._records[holder_id] = kept

    def year_of(self, at_s: float) -> int:
        """The UTC calendar year of ``epoch_unix_s + at_s`` (the last year seen is cached)."""
        start_s, end_s, year = self._year_cache
        if start_s <= at_s < end_s:
            return year
        year = datetime.fromtimestamp(self.epoch_unix_s + at_s, tz=UTC).year
        start_s = datetime(year, 1, 1, tzinfo=UTC).timestamp() - self.epoch_unix_s
        end_s = datetime(year + 1, 1, 1, tzinfo=UTC).timestamp() - self.epoch_unix_s
        self._year_cache = (start_s, end_s, year)
        return year

    # -- reports -----------------------------------------------------------------------------
    def statement(self, holder_id: str, year: int | None = None) -> HolderStatement:
        """The holder's sales, gains and PIT for ``year`` (every year when None)."""
        records = tuple(r for r in self._records.get(holder_id, ())
                        if year is None or r.year == year)
        due = sum(r.pit_kzt for r in records)
        withheld = sum(r.pit_kzt for r in records if r.withheld)
        return HolderStatement(
            holder_id=holder_id, residency=self.residency(holder_id), year=year, sales=records,
            proceeds_kzt=sum(r.proceeds_kzt for r in records),
            basis_kzt=sum(r.basis_kzt for r in records),
            gains_kzt=sum(r.gain_kzt for r in records if r.gain_kzt > 0),
            losses_kzt=-sum(r.gain_kzt for r in records if r.gain_kzt < 0),
            pit_due_kzt=due, pit_withheld_kzt=withheld, pit_to_declare_kzt=due - withheld,
        )

    def authority_summary(
        self, year: int | None = None, compliance_rate: Decimal = _FULL_COMPLIANCE
    ) -> AuthoritySummary:
        """Everything due, withheld and (at ``compliance_rate``, 0..1) self-declared; the gap."""
        if not D(0) <= compliance_rate <= D(1):
            raise ValueError(f"compliance_rate must be within 0..1, got {compliance_rate}")
        sales = proceeds = gain = gains = losses = withheld = 0
        due_by_residency = dict.fromkeys(Residency, 0)
        for (y, residency), t in self._totals.items():
            if year is not None and y != year:
                continue
            sales += t.sales
            proceeds += t.proceeds_kzt
            gain += t.gain_kzt
            gains += t.gains_kzt
            losses += t.losses_kzt
            withheld += t.pit_withheld_kzt
            due_by_residency[residency] += t.pit_due_kzt
        to_declare = sum(due_by_residency.values()) - withheld
        declared = round_half_up(to_declare * Fraction(compliance_rate))
        return AuthoritySummary(
            year=year, sales=sales, proceeds_kzt=proceeds, realized_gain_kzt=gain,
            gains_kzt=gains, losses_kzt=losses,
            pit_due_by_residency_kzt=due_by_residency, pit_withheld_kzt=withheld,
            pit_to_self_declare_kzt=to_declare, pit_expected_declared_kzt=declared,
            tax_gap_kzt=to_declare - declared,
        )

    # -- internals ---------------------------------------------------------------------------
    def _pool(self, holder_id: str, asset: str) -> FifoPool | AveragePool:
        pool = self._pools.get((holder_id, asset))
        if pool is None:
            pool = self._pools[(holder_id, asset)] = new_pool(self.method)
        return pool

    def _outcome(self, holder_id: str, basis: Basis, proceeds_kzt: int) -> Realization:
        rate_num, rate_den = self._rate_ratios[self.residency(holder_id)]
        basis_kzt = _half_up(*basis)
        gain_kzt = proceeds_kzt - basis_kzt
        pit_kzt = _half_up(gain_kzt * rate_num, rate_den) if gain_kzt > 0 else 0
        return Realization(gain_kzt=gain_kzt, pit_kzt=pit_kzt, basis_kzt=basis_kzt,
                           vat_exempt=True, proceeds_kzt=proceeds_kzt)
