"""The AIFC exchange: custodial wallets, market sells for tenge, stablecoin redemption, re-buys.

The issuer asks the exchange to sell "enough of the holder's crypto to net X tenge" (a
:class:`~services.contracts.SellOrder`). The exchange walks the holder's asset priority, prices each
leg on that asset's order book, withholds PIT if the tax policy says so, and books the whole sale
as ONE linked batch on its own ledger: crypto wallet → market makers, the fee and the withheld PIT
out of the market makers' tenge, and the net payout out of the exchange's bank account. The bank's
side of the payout (exchange's bank → issuer's bank) is booked by the banks, keyed by the sale id.

Every command is idempotent by its id; a refusal books nothing, consumes no tax lot and no book
depth, and is not remembered (a retry with the same id may succeed once the cause has gone).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from services.clock import Clock
from services.contracts import Holding, Lot, Residency, SaleLeg, SaleResult, SellOrder, TaxPolicy
from services.exchange import accounts as acc
from services.exchange.config import ExchangeConfig, SaleReason
from services.exchange.order_book import OrderBook, Quote, fee_for_gross, gross_for_net
from services.exchange.quotes import expired, expires_at
from services.frozen import quick_init
from services.ids import Step, transfer_id
from services.ledger import (
    LedgerRepository,
    Transfer,
    TransferFlags,
    TransferResult,
    Violation,
    linked,
)
from services.money import AssetRegistry, D, convert_ceil, convert_floor
from services.tax import CIT_RATES, TaxBook

__all__ = ["Exchange", "PlannedLeg", "SaleQuote"]

_MAX_ROUNDS = 64  # withholding rounds per leg; each shrinks the shortfall about fivefold
_ONE = D(1)
_LINK = TransferFlags.LINKED
_ZERO = D(0)


@quick_init
@dataclass(frozen=True, slots=True)
class PlannedLeg:
    """One asset's part of a planned sale: the book quote and the PIT withheld from it."""

    quote: Quote
    pit_withheld_kzt: int

    @property
    def net_kzt(self) -> int:
        return self.quote.net_kzt - self.pit_withheld_kzt


@dataclass(frozen=True, slots=True)
class SaleQuote:
    """A priced sale, firm until ``expires_at_s`` while the books it was priced on do not move."""

    order_id: str
    legs: tuple[PlannedLeg, ...]
    net_kzt: int
    quoted_at_s: float
    expires_at_s: float


class Exchange:
    """One exchange over its own ledger. Not thread-safe: one simulation or service drives it."""

    def __init__(
        self, ledger: LedgerRepository, assets: AssetRegistry, clock: Clock,
        config: ExchangeConfig, tax: TaxBook, *, corporate_tax: TaxBook | None = None,
    ) -> None:
        self.ledger = ledger
        self.assets = assets
        self.clock = clock
        self.config = config
        self.tax = tax  # individuals: PIT (seed §2.1.2, §2.2)
        # Legal entities (the zone merchants' wallets): their gains count toward CIT, never withheld.
        self.corporate_tax = corporate_tax or TaxBook(tax.method, CIT_RATES, assets=assets)
        self._corporate: set[str] = set()
        self._kzt = assets.get("KZT")
        self._stable = assets.get(config.stablecoin_code)
        self._books = {code: OrderBook(assets.get(code), cfg, self._kzt)
                       for code, cfg in config.books.items()}
        self._withhold = config.tax_policy is TaxPolicy.WITHHOLD
        self._halted: set[str] = set()
        self._holders: set[str] = set()
        self._wallet_ids: dict[str, list[str]] = {
            code: [] for code in [*self._books, self._stable.code]}
        self._sales: dict[str, SaleResult] = {}
        self._rebuys: dict[str, SaleResult] = {}
        self._rebought: dict[str, str] = {}  # sale id -> rebuy id
        # Running totals that check_invariants compares with the ledger (cheap to keep per call).
        self._inventory_minor: dict[str, int] = dict.fromkeys(self._wallet_ids, 0)
        self._bank_kzt = config.house_kzt_minor
        self._fees_kzt = 0
        self._withheld_kzt = 0
        self._open_house()

    # -- set-up ------------------------------------------------------------------------------
    def _open_house(self) -> None:
        house = acc.house_accounts(list(self._books), self._stable.code)
        results = self.ledger.create_accounts(house)
        bad = [r for r in results if r.name not in ("OK", "EXISTS")]
        if bad:
            raise RuntimeError(f"exchange could not open its house accounts: {bad}")
        if self.config.house_kzt_minor:
            self._book_or_fail([Transfer("fund:bank:KZT", acc.BANK_KZT, acc.EQUITY_KZT,
                                         self.config.house_kzt_minor, "KZT", code="fund")])

    def open_wallet(
        self, holder_id: str, residency: Residency, holdings: tuple[Holding, ...] = (),
        stablecoin_minor: int = 0, *, corporate: bool = False,
    ) -> None:
        """Open the holder's wallets and deposit their holdings (custody → wallet). Idempotent.
        ``corporate``: a legal entity's wallets (a zone merchant), taxed in :attr:`corporate_tax`."""
        if holder_id in self._holders:
            return
        if corporate:
            self._corporate.add(holder_id)
        deposits: dict[str, int] = {}
        for holding in holdings:
            self.assets.get(holding.asset)  # an unknown asset is a programmer error: raises
            deposits[holding.asset] = deposits.get(holding.asset, 0) + sum(
                lot.quantity_minor for lot in holding.lots)
        if stablecoin_minor:
            deposits[self._stable.code] = deposits.get(self._stable.code, 0) + stablecoin_minor
        codes = list(dict.fromkeys([*self._wallet_ids, *deposits]))
        new_assets = [c for c in codes if c not in self._wallet_ids]
        # An asset held but not traded here (no book) still needs its custody account.
        opening = [a for c in new_assets for a in acc.asset_accounts(c)]
        wallets = [acc.wallet_account(holder_id, c) for c in codes]
        opening += wallets
        results = self.ledger.create_accounts(opening)
        if any(r.name not in ("OK", "EXISTS") for r in results):
            raise RuntimeError(f"could not open wallets for {holder_id}: {results}")
        transfers = [
            Transfer(f"deposit:{holder_id}:{code}", acc.custody(code), acc.wallet(holder_id, code),
                     amount, code, code="deposit")
            for code, amount in deposits.items() if amount > 0
        ]
        if transfers:
            self._book_or_fail(linked(transfers))
        tax = self.tax_of(holder_id)
        tax.register_holder(holder_id, residency)
        for holding in holdings:
            if holding.asset != self._stable.code:
                tax.add_lots(holder_id, residency, holding.asset, holding.lots)
        for code, wallet in zip(codes, wallets, strict=True):
            self._wallet_ids.setdefault(code, []).append(wallet.id)  # the account's own id string
            self._inventory_minor.setdefault(code, 0)
        self._holders.add(holder_id)

    def deposit(self, deposit_id: str, holder_id: str, asset: str, quantity_minor: int,
                price_kzt: Decimal | None) -> TransferResult:
        """Crypto (or the stablecoin) arriving in a holder's wallet from outside: custody → wallet,
        keyed ``deposit:<deposit_id>``. A crypto deposit carries its cost basis, a tax lot acquired
        now (the stablecoin has no lots). The ledger's result says what happened: ``OK``,
        ``EXISTS`` (a replay: nothing new), ``CREDIT_ACCOUNT_NOT_FOUND`` (no wallet in that asset),
        or an ``EXISTS_WITH_DIFFERENT_*`` for an id used before with other fields."""
        t = Transfer(f"deposit:{deposit_id}", acc.custody(asset), acc.wallet(holder_id, asset), quantity_minor,
                     asset, code="deposit", user_data=holder_id)
        result = self.ledger.create_transfers([t])[0]
        if result is TransferResult.OK and price_kzt is not None:
            residency = self.tax.residency(holder_id)
            self.tax.add_lots(holder_id, residency, asset, [Lot(quantity_minor, price_kzt, self.clock.now())])
        return result

    def top_up_kzt(self, transfer_id: str, amount_kzt: int) -> bool:
        """The house adds tenge to its bank account (pre-funding); idempotent by ``transfer_id``."""
        result = self.ledger.create_transfers([Transfer(transfer_id, acc.BANK_KZT, acc.EQUITY_KZT,
                                                        amount_kzt, "KZT", code="fund")])[0]
        if result is TransferResult.OK:
            self._bank_kzt += amount_kzt
        return result.ok

    # -- market ------------------------------------------------------------------------------
    def set_mid_price(self, asset: str, price_kzt: Decimal) -> None:
        self._book(asset).set_mid(price_kzt)

    def mid_price(self, asset: str) -> Decimal:
        if asset == self._stable.code:
            return _ONE
        mid = self._book(asset).mid
        if mid is None:
            raise ValueError(f"no mid price set for {asset}")
        return mid

    def book(self, asset: str) -> OrderBook:
        return self._book(asset)

    def replenish(self, elapsed_s: float) -> None:
        """Market makers restore book depth for ``elapsed_s`` seconds of sim or wall time."""
        for book in self._books.values():
            book.replenish(elapsed_s)

    def set_halted(self, asset: str, halted: bool) -> None:
        if asset not in self._books and asset != self._stable.code:
            raise ValueError(f"unknown asset {asset!r} for a trading halt")
        if halted:
            self._halted.add(asset)
        else:
            self._halted.discard(asset)

    def is_halted(self, asset: str) -> bool:
        return asset in self._halted

    def tax_of(self, holder_id: str) -> TaxBook:
        """The tax book of a wallet's owner: PIT for individuals, CIT for a zone merchant."""
        return self.corporate_tax if holder_id in self._corporate else self.tax

    def has_wallet(self, holder_id: str) -> bool:
        return holder_id in self._holders

    # -- selling -----------------------------------------------------------------------------
    def quote(self, order: SellOrder) -> SaleQuote | SaleReason:
        """Price ``order`` now without executing it (nothing booked, no depth, no lot consumed)."""
        return self._plan(order, self.clock.now())

    def sell(self, order: SellOrder, *, quote: SaleQuote | None = None) -> SaleResult:
        """Sell enough crypto, in ``order.asset_priority``, to net ``order.net_kzt`` tenge.

        With ``quote`` (from :meth:`quote`), the sale executes at the quoted prices if the quote has
        not expired and its books have not moved; a moved book re-prices under the slippage cap;
        an expired quote is refused. A replay of a sold ``order.id`` returns the first result.
        """
        done = self._sales.get(order.id)
        if done is not None:
            return done
        now = self.clock.now()
        plan: SaleQuote | SaleReason
        if quote is not None:
            if quote.order_id != order.id:
                raise ValueError(f"quote for {quote.order_id!r} presented with order {order.id!r}")
            if expired(quote.expires_at_s, now):
                return _refused(order, SaleReason.QUOTE_EXPIRED)
            plan = quote if self._still_firm(order, quote) else self._plan(order, now)
        else:
            plan = self._plan(order, now)
        if isinstance(plan, SaleReason):
            return _refused(order, plan)
        return self._execute(order, plan, now)

    def _plan(self, order: SellOrder, now: float) -> SaleQuote | SaleReason:
        if order.net_kzt <= 0:
            return SaleReason.INVALID_AMOUNT
        priority = tuple(dict.fromkeys(order.asset_priority))
        if any(asset not in self._books for asset in priority):
            return SaleReason.UNKNOWN_ASSET
        if order.holder_id not in self._holders:
            return SaleReason.UNKNOWN_HOLDER
        cap_bps = order.max_slippage_bps or self.config.max_slippage_bps
        remaining = order.net_kzt
        legs: list[PlannedLeg] = []
        halted = False
        for asset in priority:
            if remaining <= 0:
                break
            if asset in self._halted:
                halted = True
                continue
            held = self._available(order.holder_id, asset)
            if held <= 0:
                continue
            leg = self._plan_leg(order.holder_id, asset, remaining, held)
            if isinstance(leg, SaleReason):
                return leg
            if leg is None:
                continue  # dust: worth less than the fee
            if not leg.quote.within_slippage(cap_bps):
                return SaleReason.SLIPPAGE_CAP
            legs.append(leg)
            remaining -= leg.net_kzt
        if remaining > 0:
            return SaleReason.HALTED if halted else SaleReason.INSUFFICIENT_CRYPTO
        return SaleQuote(order.id, tuple(legs), sum(leg.net_kzt for leg in legs), now,
                         expires_at(now, order.quote_ttl_s, self.config.quote_ttl_s))

    def _plan_leg(
        self, holder_id: str, asset: str, need_kzt: int, held: int
    ) -> PlannedLeg | SaleReason | None:
        """The leg that nets ``need_kzt`` after fee (and withheld PIT), or the whole wallet."""
        book, fee_bps = self._books[asset], self.config.taker_fee_bps
        target = need_kzt
        for _ in range(_MAX_ROUNDS):
            quote = book.quote_sell_for_net(target, fee_bps)
            whole = isinstance(quote, SaleReason) or quote.quantity_minor >= held
            if whole:
                if quote is SaleReason.NO_PRICE:
                    return quote
                quote = book.quote_sell_quantity(held, fee_bps)
                if isinstance(quote, SaleReason):
                    return quote
            assert not isinstance(quote, SaleReason)
            pit = 0
            if self._withhold and holder_id not in self._corporate:
                preview = self.tax.preview(holder_id, asset, quote.quantity_minor, quote.gross_kzt)
                pit = preview.pit_kzt
            leg = PlannedLeg(quote, pit)
            if whole:
                return leg if leg.net_kzt > 0 else None
            if leg.net_kzt >= need_kzt:
                return leg
            target += need_kzt - leg.net_kzt
        raise RuntimeError(f"withholding did not converge for {holder_id}/{asset} at {need_kzt}")

    def _still_firm(self, order: SellOrder, quote: SaleQuote) -> bool:
        """The quoted legs can still execute as quoted: books, wallets and the PIT to withhold (a
        sale of the same holder's lots in between changes the PIT, from zero too)."""
        withhold = self._withhold and order.holder_id not in self._corporate
        for leg in quote.legs:
            q = leg.quote
            if q.asset in self._halted or not self._books[q.asset].can_execute(q):
                return False
            if self._available(order.holder_id, q.asset) < q.quantity_minor:
                return False
            if withhold and leg.pit_withheld_kzt != self.tax.preview(
                    order.holder_id, q.asset, q.quantity_minor, q.gross_kzt).pit_kzt:
                return False
        return True

    def _execute(self, order: SellOrder, plan: SaleQuote, now: float) -> SaleResult:
        if plan.net_kzt > self._bank_available():
            return _refused(order, SaleReason.EXCHANGE_SHORT_OF_KZT)
        transfers: list[Transfer] = []
        for leg in plan.legs:
            q, tid, auth = leg.quote, f"{order.id}:{leg.quote.asset}", order.auth_id
            transfers.append(Transfer(f"{tid}:sell", acc.wallet(order.holder_id, q.asset),
                                      acc.mm(q.asset), q.quantity_minor, q.asset, code="sale",
                                      user_data=auth, flags=_LINK))
            if q.fee_kzt:
                transfers.append(Transfer(f"{tid}:fee", acc.MM_KZT, acc.FEES_KZT, q.fee_kzt, "KZT",
                                          code="fee", user_data=auth, flags=_LINK))
            if leg.pit_withheld_kzt:
                transfers.append(Transfer(f"{tid}:pit", acc.MM_KZT, acc.TAX_WITHHELD_KZT,
                                          leg.pit_withheld_kzt, "KZT", code="pit", user_data=auth,
                                          flags=_LINK))
        transfers.append(Transfer(transfer_id(order.id, Step.PAYOUT), acc.MM_KZT, acc.BANK_KZT, plan.net_kzt,
                                  "KZT", code="payout", user_data=order.auth_id))
        refusal = self._book_batch(transfers)
        if refusal is not None:
            return _refused(order, refusal)
        legs: list[SaleLeg] = []
        withhold = self._withhold and order.holder_id not in self._corporate
        tax = self.corporate_tax if order.holder_id in self._corporate else self.tax
        for leg in plan.legs:
            q = leg.quote
            if not self._books[q.asset].execute(q):
                raise RuntimeError(f"book {q.asset} moved between pricing and executing {order.id}")
            realized = tax.realize(order.holder_id, q.asset, q.quantity_minor, q.gross_kzt,
                                   now, order.id, withheld=withhold)
            if withhold and realized.pit_kzt != leg.pit_withheld_kzt:
                raise RuntimeError(f"PIT realized for {order.id} differs from the PIT withheld")
            legs.append(SaleLeg(q.asset, q.quantity_minor, q.gross_kzt, q.fee_kzt, q.avg_price_kzt,
                                q.slippage_bps, realized.gain_kzt,
                                realized.pit_kzt if tax is self.tax else 0))  # a merchant's: CIT, later
            self._inventory_minor[q.asset] += q.quantity_minor
            self._fees_kzt += q.fee_kzt
            self._withheld_kzt += leg.pit_withheld_kzt
        self._bank_kzt -= plan.net_kzt
        result = SaleResult(order.id, order.auth_id, order.holder_id, True, legs=tuple(legs),
                            net_kzt=plan.net_kzt)
        self._sales[order.id] = result
        return result

    # -- stablecoin --------------------------------------------------------------------------
    def redeem_stablecoin(self, order: SellOrder) -> SaleResult:
        """Redeem the tenge stablecoin 1:1 for tenge, minus ``stablecoin_fee_bps``; no tax event."""
        done = self._sales.get(order.id)
        if done is not None:
            return done
        code = self._stable.code
        if order.net_kzt <= 0:
            return _refused(order, SaleReason.INVALID_AMOUNT)
        if order.holder_id not in self._holders:
            return _refused(order, SaleReason.UNKNOWN_HOLDER)
        if code in self._halted:
            return _refused(order, SaleReason.HALTED)
        fee_bps = self.config.stablecoin_fee_bps
        gross_needed = gross_for_net(order.net_kzt, fee_bps)
        quantity = convert_ceil(gross_needed, self._kzt, _ONE, self._stable)
        gross = convert_floor(quantity, self._stable, _ONE, self._kzt)
        fee = fee_for_gross(gross, fee_bps)
        net = gross - fee
        if self._available(order.holder_id, code) < quantity:
            return _refused(order, SaleReason.INSUFFICIENT_CRYPTO)
        if net > self._bank_available():
            return _refused(order, SaleReason.EXCHANGE_SHORT_OF_KZT)
        tid = f"{order.id}:{code}"
        transfers = [Transfer(f"{tid}:redeem", acc.wallet(order.holder_id, code),
                              acc.redeemed(code), quantity, code, code="redeem",
                              user_data=order.auth_id, flags=_LINK)]
        if fee:
            transfers.append(Transfer(f"{tid}:fee", acc.REDEEMER_KZT, acc.FEES_KZT, fee, "KZT",
                                      code="fee", user_data=order.auth_id, flags=_LINK))
        transfers.append(Transfer(transfer_id(order.id, Step.PAYOUT), acc.REDEEMER_KZT, acc.BANK_KZT, net, "KZT",
                                  code="payout", user_data=order.auth_id))
        refusal = self._book_batch(transfers)
        if refusal is not None:
            return _refused(order, refusal)
        self._inventory_minor[code] += quantity
        self._fees_kzt += fee
        self._bank_kzt -= net
        leg = SaleLeg(code, quantity, gross, fee, _ONE, _ZERO)
        result = SaleResult(order.id, order.auth_id, order.holder_id, True, legs=(leg,),
                            net_kzt=net)
        self._sales[order.id] = result
        return result

    # -- orphaned sales ----------------------------------------------------------------------
    def rebuy(self, sale: SaleResult, rebuy_id: str) -> SaleResult:
        """Orphaned-sale policy REBUY: put the sold quantities back into the holder's wallets.

        The issuer returns the sale's net proceeds into ``bank:KZT``; the house buys the same
        quantities from the market makers at the current mid (the ask side is not modelled) and
        keeps the difference in ``house_pnl:KZT``. Each re-bought quantity becomes a new tax lot
        at its re-buy cost; the original sale's realization stands. Idempotent by ``rebuy_id``.
        """
        done = self._rebuys.get(rebuy_id)
        if done is not None:
            return done
        original = self._sales.get(sale.id)
        if original is None:
            return _refused_rebuy(sale, rebuy_id, SaleReason.UNKNOWN_SALE)
        if sale.id in self._rebought:
            return _refused_rebuy(sale, rebuy_id, SaleReason.ALREADY_REBOUGHT)
        costs: list[tuple[SaleLeg, Decimal, int]] = []
        for leg in original.legs:
            if leg.asset in self._halted:
                return _refused_rebuy(sale, rebuy_id, SaleReason.HALTED)
            price = self.mid_price(leg.asset)
            costs.append((leg, price, convert_floor(leg.quantity_minor, self.assets.get(leg.asset),
                                                    price, self._kzt)))
        transfers = []
        if original.net_kzt:
            transfers.append(Transfer(transfer_id(rebuy_id, Step.RETURN), acc.BANK_KZT, acc.HOUSE_PNL_KZT,
                                      original.net_kzt, "KZT", code="rebuy",
                                      user_data=original.auth_id))
        for leg, _, cost in costs:
            stable = leg.asset == self._stable.code
            source = acc.redeemed(leg.asset) if stable else acc.mm(leg.asset)
            transfers.append(Transfer(f"{rebuy_id}:{leg.asset}:buy", source,
                                      acc.wallet(original.holder_id, leg.asset), leg.quantity_minor,
                                      leg.asset, code="rebuy", user_data=original.auth_id))
            if cost:
                transfers.append(Transfer(f"{rebuy_id}:{leg.asset}:cost", acc.HOUSE_PNL_KZT,
                                          acc.REDEEMER_KZT if stable else acc.MM_KZT, cost, "KZT",
                                          code="rebuy", user_data=original.auth_id))
        self._book_or_fail(linked(transfers))
        legs = []
        for leg, price, cost in costs:
            self._inventory_minor[leg.asset] -= leg.quantity_minor
            if leg.asset != self._stable.code:
                self.tax.add_purchase(original.holder_id, leg.asset, leg.quantity_minor, cost)
            legs.append(SaleLeg(leg.asset, leg.quantity_minor, cost, 0, price, _ZERO))
        self._bank_kzt += original.net_kzt
        result = SaleResult(rebuy_id, original.auth_id, original.holder_id, True, legs=tuple(legs),
                            net_kzt=original.net_kzt)
        self._rebuys[rebuy_id] = result
        self._rebought[sale.id] = rebuy_id
        return result

    # -- queries -----------------------------------------------------------------------------
    def sales(self) -> list[SaleResult]:
        """Every successful sale and redemption, in the order they were booked."""
        return list(self._sales.values())

    def rebuys(self) -> list[SaleResult]:
        return list(self._rebuys.values())

    def sale(self, sale_id: str) -> SaleResult | None:
        return self._sales.get(sale_id)

    def forget_sale(self, sale_id: str) -> None:
        """Forget a sale, its re-buy and their tax realizations; the books, the lots and the tax
        totals keep their effect. Afterwards a replay of the order is priced as a new one, so only a
        caller that can no longer replay it may forget it (a long simulation; live services never do)."""
        sale = self._sales.pop(sale_id, None)
        rebuy_id = self._rebought.pop(sale_id, None)
        if rebuy_id is not None:
            self._rebuys.pop(rebuy_id, None)
        if sale is not None:
            self.tax.forget_sale(sale.holder_id, sale_id, [leg.asset for leg in sale.legs])

    def wallet_balance(self, holder_id: str, asset: str) -> int:
        account = self.ledger.account(acc.wallet(holder_id, asset))
        return account.credit_balance if account is not None else 0

    def bank_balance_kzt(self) -> int:
        account = self.ledger.account(acc.BANK_KZT)
        assert account is not None
        return account.debit_balance

    def check_invariants(self) -> list[Violation]:
        """The ledger's invariants, plus: custody backs every wallet and the house inventory."""
        violations = list(self.ledger.check_invariants())
        for code, wallet_ids in self._wallet_ids.items():
            held = self._balance(acc.custody(code), debit=True)
            in_wallets = sum(self._balance(w, debit=False) for w in wallet_ids)
            house_id = acc.redeemed(code) if code == self._stable.code else acc.mm(code)
            house = self._balance(house_id, debit=False)
            # Direct payments' fees and PIT withheld in crypto (services.exchange.direct).
            kept = self._balance(acc.fees(code), debit=False) + self._balance(acc.tax_withheld(code), debit=False)
            if held != in_wallets + house + kept:
                violations.append(Violation(
                    "custody_backs_wallets", code,
                    f"custody {held} != wallets {in_wallets} + house {house} + fees and tax withheld {kept}"))
            expected = self._inventory_minor.get(code, 0)
            if house != expected:
                violations.append(Violation(
                    "house_inventory_matches_sales", code,
                    f"ledger {house} != sold - rebought {expected}"))
        for account_id, expected, debit in (
            (acc.BANK_KZT, self._bank_kzt, True),
            (acc.FEES_KZT, self._fees_kzt, False),
            (acc.TAX_WITHHELD_KZT, self._withheld_kzt, False),
        ):
            booked = self._balance(account_id, debit=debit)
            if booked != expected:
                violations.append(Violation("house_accounts_match_sales", account_id,
                                            f"ledger {booked} != sales {expected}"))
        return violations

    # -- internals ---------------------------------------------------------------------------
    def _book(self, asset: str) -> OrderBook:
        book = self._books.get(asset)
        if book is None:
            raise ValueError(f"no order book for {asset!r}; books: {sorted(self._books)}")
        return book

    def _available(self, holder_id: str, asset: str) -> int:
        account = self.ledger.account(acc.wallet(holder_id, asset))
        return account.available_credit_balance if account is not None else 0

    def _bank_available(self) -> int:
        account = self.ledger.account(acc.BANK_KZT)
        assert account is not None, "house accounts are opened in __init__"
        return account.available_debit_balance

    def _balance(self, account_id: str, *, debit: bool) -> int:
        account = self.ledger.account(account_id)
        if account is None:
            return 0
        return account.debit_balance if debit else account.credit_balance

    def _book_batch(self, transfers: list[Transfer]) -> SaleReason | None:
        """Book one chain (every transfer but the last carries ``LINKED``, set when it is built:
        cheaper than :func:`linked` on this hot path). A refusal the exchange can explain is
        returned; anything else is a fault."""
        results = self.ledger.create_transfers(transfers)
        if all(r is TransferResult.OK for r in results):
            return None
        cause = next(r for r in results if r is not TransferResult.LINKED_EVENT_FAILED)
        if cause is TransferResult.EXCEEDS_DEBITS:
            return SaleReason.EXCHANGE_SHORT_OF_KZT
        if cause is TransferResult.EXCEEDS_CREDITS:
            return SaleReason.INSUFFICIENT_CRYPTO
        raise RuntimeError(f"exchange ledger refused a batch: {cause.name} ({transfers[0].id})")

    def _book_or_fail(self, transfers: list[Transfer]) -> None:
        results = self.ledger.create_transfers(transfers)
        if not all(r.ok for r in results):
            names = [r.name for r in results]
            raise RuntimeError(f"exchange ledger refused {transfers[0].id}: {names}")


def _refused(order: SellOrder, reason: SaleReason) -> SaleResult:
    return SaleResult(order.id, order.auth_id, order.holder_id, False, reason=reason)


def _refused_rebuy(sale: SaleResult, rebuy_id: str, reason: SaleReason) -> SaleResult:
    return SaleResult(rebuy_id, sale.auth_id, sale.holder_id, False, reason=reason)
