"""The whole Crypto Card chain in one process: :class:`InProcessChain` implements
:class:`services.contracts.PaymentChain` over one ledger per party (design.md §3).

Every ``_kzt`` amount is ``int`` minor units (tiyn); every ``_bps`` is basis points (1/10,000);
every ``_s`` is seconds of the injected clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from itertools import chain as chained

from services import ids
from services.acquirer import Acquirer, merchant_party
from services.bank import Bank
from services.bounded_books import FLUSH_EVERY, BoundedBooks, JournalExport
from services.chain_direct import DirectRail
from services.chain_ports import LocalOrphanPorts, LocalPorts
from services.clock import Clock
from services.contracts import (
    AuthorizationRequest,
    AuthorizationResponse,
    CardholderSpec,
    ClearingResult,
    FundingMode,
    MerchantSpec,
    ReasonCode,
    ReconciliationBreak,
    SaleReason,
    SaleResult,
    Screening,
    SellOrder,
    SettlementReport,
)
from services.errors import FlowError, OpeningError
from services.exchange import Exchange, ExchangeConfig, SaleQuote
from services.flows import (
    DEFAULT_TIER_LIMITS_KZT,
    ChainConfig,
    OrphanOutcome,
    Topology,
    apply_advice,
    orphaned_sale,
    run_now,
    sell,
    sell_and_pay,
    settle_window,
    tenge_conserved,
)
from services.flows import finalize as finalize_flow
from services.flows.clearing import Resolution, present
from services.flows.opening import open_card
from services.issuer import AuthState, CardResult, CardStatus, ClearingCode, Issuer
from services.ledger import InMemoryLedger, Transfer, Violation
from services.messaging import InProcessTransport, PaymentMessage, Purpose
from services.money import AssetRegistry
from services.network import Network, PresentmentKind, WindowSummary
from services.reconciliation import Half, bank_halves, exchange_halves, merchant_halves, party_halves, reconcile
from services.tax import AuthoritySummary, TaxBook

__all__ = ["CLEAR_SLICE", "DEFAULT_TIER_LIMITS_KZT", "ChainConfig", "InProcessChain"]

CLEAR_SLICE = 4_096  # presentments the network clears at a time when the books are bounded


class InProcessChain:
    """All parties in one process, each with its own in-memory ledger; money between them moves as
    messages over an :class:`InProcessTransport` (which tests can tell to lose or duplicate them).

    Parties are spread over ``bank_count`` banks round-robin (exchange, issuer, network, the
    acquirers, then each merchant); cardholders bank at the issuer's bank (the card's linked
    account). Every step is O(1) in the number of past payments except :meth:`settle` (linear in
    the window's presentments) and the integrity checks (linear in the journals).

    Memory: by default every journal, authorization and sale is kept. A long simulation opts in to
    bounded books (:meth:`stream_journals`, :meth:`close_authorization`, :meth:`retire`;
    :mod:`services.bounded_books` says why what it forgets cannot be asked for again).
    """

    def __init__(self, config: ChainConfig, clock: Clock, assets: AssetRegistry | None = None) -> None:
        self.config = config
        self.clock = clock
        self.assets = assets or AssetRegistry()
        self.transport = InProcessTransport()
        self.topology = Topology(config)
        self.banks: dict[str, Bank] = {}
        for i in range(config.bank_count):
            bank = Bank(f"bank-{i + 1}", clock, self.transport, self.assets)
            self.banks[bank.id] = bank
            self.transport.register(bank.id, bank.handle)
        self.bank_of = self.topology.bank_of  # party → its bank, shared with the topology
        fees = config.fee_schedule()
        exchange_config = config.exchange_config()
        self.tax = TaxBook(method=config.cost_basis, assets=self.assets)
        self.exchange_ledger = InMemoryLedger(self.assets, clock, name=config.exchange_id)
        self.exchange = Exchange(self.exchange_ledger, self.assets, clock, exchange_config, self.tax)
        tradable = exchange_config.books.__contains__
        self.issuer = Issuer(config.issuer_config(), clock, self.assets, tradable=tradable)
        self.network = Network(
            config.network_id,
            fees,
            clock,
            self.assets,
            stand_in_enabled=config.stand_in_enabled,
            stand_in_limit_kzt=config.stand_in_limit_kzt,
        )
        self.acquirers = {a: Acquirer(a, fees, clock, self.assets) for a in config.acquirer_ids}
        self.merchants: dict[str, MerchantSpec] = {}
        self._undelivered: dict[str, PaymentMessage] = {}
        self._rebuy_sales: dict[str, SaleResult] = {}
        self._quotes: dict[str, SaleQuote | SaleReason] = {}  # order id -> the exchange's quote
        self._orphans: set[str] = set()
        self._settled: dict[str, SettlementReport] = {}
        self._deposits_kzt = 0  # tenge that entered the modelled system from outside
        self.orphan_outcomes: Counter[OrphanOutcome] = Counter()
        self._top_ups: list[str] = []  # auto top-up orders of the command being run
        self._ports = LocalPorts(self)
        self.direct = DirectRail(self)  # CryptoCity's direct rail (services.chain_direct)
        self.settlement_failures: list[str] = []
        self._bounded: BoundedBooks | None = None  # stream_journals(): bounded books
        self._open_parties(exchange_config)

    # -- set-up ------------------------------------------------------------------------------
    def _open_parties(self, exchange_config: ExchangeConfig) -> None:
        cfg = self.config
        for party in self.topology.parties():
            self.banks[self.bank_of[party]].open_account(party)
        self.transport.register(cfg.exchange_id, self._exchange_receives)
        self.transport.register(cfg.issuer_id, self.issuer.handle)
        self.transport.register(cfg.network_id, self.network.handle)
        for acquirer in self.acquirers.values():
            self.transport.register(acquirer.id, acquirer.handle)
            self.network.open_participant(acquirer.id)
        self.network.open_participant(cfg.issuer_id)
        # Opening balances: each party's own tenge at its bank, mirrored in its own books (the
        # exchange books its own from its configuration).
        funds: dict[str, Callable[[str, int], bool]] = {cfg.issuer_id: self.issuer.fund,
                                                         cfg.network_id: self.network.fund}
        funds.update({a.id: a.fund for a in self.acquirers.values()})
        for party, amount_kzt in self.topology.opening_floats():
            self._deposit(party, amount_kzt)
            fund = funds.get(party)
            if fund is not None:
                fund(f"open:{party}", amount_kzt)

    def _deposit(self, party: str, amount_kzt: int) -> None:
        result = self.banks[self.bank_of[party]].deposit(f"open:{party}", party, amount_kzt)
        if not result.ok:
            raise OpeningError(f"opening deposit for {party} refused: {result.name}")
        self._deposits_kzt += amount_kzt

    def open_cardholder(self, spec: CardholderSpec) -> None:
        """Open the card at the issuer, the wallets at the exchange and the linked bank account;
        put ``card_balance_kzt`` on the card. A bad spec raises before anything is written."""
        for holding in spec.holdings:
            if holding.asset not in self.assets:
                raise ValueError(f"cardholder {spec.holder_id}: unknown asset {holding.asset!r}")
        result = open_card(self.issuer, self.config, spec)
        if result is CardResult.EXISTS:
            return
        if result is not CardResult.OK:
            raise ValueError(f"card {spec.card_id}: {result.value}")
        self.exchange.open_wallet(spec.holder_id, spec.residency, spec.holdings, spec.stablecoin_minor)
        self.direct.open_holder(spec)
        holder = f"holder:{spec.holder_id}"
        if holder not in self.bank_of:
            self.banks[self.bank_of[self.topology.add_holder(spec.holder_id)]].open_account(holder)
            self.transport.register(holder, _no_books)
        if spec.card_balance_kzt > 0:
            bank = self.banks[self.bank_of[holder]]
            if not bank.deposit(f"open:{spec.card_id}", holder, spec.card_balance_kzt).ok:
                raise OpeningError(f"opening deposit for card {spec.card_id} refused")
            self._deposits_kzt += spec.card_balance_kzt
            self._send(self.topology.card_load(spec))

    def open_merchant(self, spec: MerchantSpec) -> None:
        acquirer = self.acquirers.get(spec.acquirer_id)
        if acquirer is None:
            raise ValueError(f"merchant {spec.merchant_id}: unknown acquirer {spec.acquirer_id!r}")
        if spec.merchant_id in self.merchants:
            return
        acquirer.open_merchant(spec.merchant_id)
        self.topology.add_merchant(spec.merchant_id)
        party = merchant_party(spec.merchant_id)
        self.banks[self.bank_of[party]].open_account(party)
        if spec.cryptocity:  # a zone merchant: wallets at the exchange and books of its own
            self.direct.open_merchant(spec)
        self.transport.register(party, self.direct.books.handle if spec.cryptocity else _no_books)
        self.merchants[spec.merchant_id] = spec

    def set_card_status(self, card_id: str, status: CardStatus) -> CardResult:
        return self.issuer.set_status(card_id, status)

    def set_mid_price(self, asset: str, price_kzt: Decimal) -> None:
        self.exchange.set_mid_price(asset, price_kzt)

    def replenish_books(self, elapsed_s: float) -> None:
        self.exchange.replenish(elapsed_s)

    def set_halted(self, asset: str, halted: bool) -> None:
        self.exchange.set_halted(asset, halted)

    # -- authorization legs ------------------------------------------------------------------
    def screen(self, req: AuthorizationRequest) -> Screening:
        bounded = self._bounded
        if bounded is not None:
            bounded.touch(req.auth_id)
        route = self._route_error(req)
        if route is not None:
            return Screening(req.auth_id, decline=route)
        screening = self.issuer.screen(req)
        if bounded is not None and screening.sell is not None:
            bounded.ordered(req.auth_id, screening.sell.id)
        return screening

    def quote(self, order: SellOrder) -> None:
        """The exchange prices a JIT card's order now (:meth:`Exchange.quote`); the :meth:`sell` that
        follows executes at that price while the books have not moved, and is refused
        (``quote_expired``, declined 05) once the quote's time-to-live has run out. A stablecoin
        redemption is 1:1 and needs no quote."""
        card = self.issuer.card_of_sale(order.id)
        if card is None or card.funding_mode is FundingMode.STABLECOIN:
            return
        if self._bounded is not None:
            self._bounded.ordered(order.auth_id, order.id)  # forgotten with the payment
        self._quotes[order.id] = self.exchange.quote(order)

    def drop_quote(self, order_id: str) -> None:
        self._quotes.pop(order_id, None)

    def sell(self, order: SellOrder) -> SaleResult:
        """The exchange sells (or, for a stablecoin card, redeems) for the issuer's order, at its
        quote when :meth:`quote` priced it."""
        return run_now(sell(order, self._ports))

    def pay_proceeds(self, sale: SaleResult) -> bool:
        """Move a sale's tenge exchange → banks → issuer → card, keyed by the sale id. ``True``
        once every hop has booked it; safe to call again (a retry books only what is missing)."""
        if self._bounded is not None:
            self._bounded.touch(sale.auth_id)
        if not sale.ok or sale.net_kzt <= 0 or self.issuer.card_of_sale(sale.id) is None:
            return False
        cfg = self.config
        return self._send(self.topology.message(sale.id, Purpose.PROCEEDS, cfg.exchange_id, cfg.issuer_id,
                                                sale.net_kzt, ref=sale.auth_id))

    def finalize(self, req: AuthorizationRequest, sale: SaleResult | None) -> AuthorizationResponse:
        if self._bounded is not None:
            self._bounded.touch(req.auth_id)
        response = run_now(finalize_flow(req, sale, self._ports))
        self._forget_top_ups()
        return response

    def authorize(self, req: AuthorizationRequest) -> AuthorizationResponse:
        screening = self.screen(req)
        sale = None
        if screening.decline is None and screening.sell is not None:
            sale = run_now(sell_and_pay(screening.sell, self._ports))
        return self.finalize(req, sale)

    def top_up(self, card_id: str, net_kzt: int, top_up_id: str) -> SaleResult:
        """Pre-fund a card: sell crypto now for ``net_kzt`` of tenge on the card."""
        if card_id not in self.issuer.cards:
            raise ValueError(f"unknown card {card_id!r}")
        return run_now(sell_and_pay(self.issuer.sell_order(card_id, top_up_id, net_kzt), self._ports))

    def _forget_top_ups(self) -> None:
        """Bounded books: an auto top-up paid in the command that ordered it is never replayed."""
        top_ups = self._top_ups
        if not top_ups:
            return
        if self._bounded is not None:
            for order_id in top_ups:
                if order_id not in self._undelivered:
                    self._forget_sale(order_id)
        top_ups.clear()

    def _route_error(self, req: AuthorizationRequest) -> ReasonCode | None:
        merchant = self.merchants.get(req.merchant_id)
        if merchant is None or merchant.acquirer_id != req.acquirer_id:
            return ReasonCode.INVALID_TRANSACTION
        return None

    # -- deadline, stand-in, orphans ---------------------------------------------------------
    def stand_in(self, req: AuthorizationRequest) -> AuthorizationResponse:
        if self._bounded is not None:
            self._bounded.touch(req.auth_id)
        return self.network.stand_in(req)

    def apply_advice(self, req: AuthorizationRequest, response: AuthorizationResponse) -> bool:
        """The issuer applies the network's stand-in decision once (:func:`services.flows.apply_advice`)."""
        if self._bounded is not None:
            self._bounded.touch(req.auth_id)
        return run_now(apply_advice(req, response, self._ports))

    def orphaned_sale(self, req: AuthorizationRequest, sale: SaleResult) -> None:
        """A sale that finished after the deadline (:func:`services.flows.orphaned_sale`)."""
        if self._bounded is not None:
            self._bounded.touch(req.auth_id)
        run_now(orphaned_sale(req.auth_id, sale.id, self.config.orphan_policy, LocalOrphanPorts(self, sale)))

    @property
    def orphans_kept(self) -> int:
        """Orphaned sales whose tenge stayed on the card with no approved payment behind it."""
        return self.orphan_outcomes[OrphanOutcome.KEPT]

    @property
    def orphans_rebought(self) -> int:
        return self.orphan_outcomes[OrphanOutcome.REBOUGHT]

    @property
    def orphans_funded(self) -> int:
        """Orphaned sales whose tenge paid for a stand-in approval."""
        return self.orphan_outcomes[OrphanOutcome.FUNDED_APPROVAL]

    def _exchange_receives(self, msg: PaymentMessage) -> bool:
        sale = self._rebuy_sales.get(msg.id)
        if msg.purpose is not Purpose.REBUY or sale is None:
            return False
        return self.exchange.rebuy(sale, msg.id).ok

    # -- after authorization -----------------------------------------------------------------
    def capture(self, auth_id: str, amount_kzt: int) -> ClearingResult:
        resolution = self._clear(PresentmentKind.CAPTURE, auth_id, amount_kzt)
        if not resolution.ok:
            return ClearingResult(auth_id, False, resolution.code.value)
        return ClearingResult(auth_id, True, captured_kzt=amount_kzt, released_kzt=resolution.released_kzt)

    def increment(self, auth_id: str, extra_kzt: int) -> ClearingResult:
        """Incremental authorization: raise the hold by ``extra_kzt`` (selling first if JIT)."""
        if self._bounded is not None:
            self._bounded.touch(auth_id)
        shortfall = self.issuer.increment_shortfall(auth_id, extra_kzt)
        auth = self.issuer.auths.get(auth_id)
        if shortfall and auth is not None:
            card = self.issuer.cards.get(auth.card_id)
            if card is not None and card.funding_mode is not FundingMode.PREFUNDED:
                order = self.issuer.sell_order(card.card_id, f"{auth_id}:inc{auth.increments + 1}:sale", shortfall,
                                               auth_id)
                run_now(sell_and_pay(order, self._ports))
        code = self.issuer.increment(auth_id, extra_kzt)
        if code is not ClearingCode.OK or auth is None:
            return ClearingResult(auth_id, False, code.value)
        return ClearingResult(auth_id, True)

    def reverse(self, auth_id: str) -> ClearingResult:
        code, released = self.issuer.reverse(auth_id)
        if code is not ClearingCode.OK:
            return ClearingResult(auth_id, False, code.value)
        return ClearingResult(auth_id, True, released_kzt=released)

    def refund(self, auth_id: str, amount_kzt: int) -> ClearingResult:
        return self._give_back(auth_id, amount_kzt, PresentmentKind.REFUND)

    def chargeback(self, auth_id: str, amount_kzt: int) -> ClearingResult:
        return self._give_back(auth_id, amount_kzt, PresentmentKind.CHARGEBACK)

    def _give_back(self, auth_id: str, amount_kzt: int, kind: PresentmentKind) -> ClearingResult:
        resolution = self._clear(kind, auth_id, amount_kzt)
        if not resolution.ok:
            return ClearingResult(auth_id, False, resolution.code.value)
        auth = self.issuer.auths[auth_id]
        return ClearingResult(auth_id, True, captured_kzt=auth.captured_kzt - auth.returned_kzt)

    def _clear(self, kind: PresentmentKind, auth_id: str, amount_kzt: int) -> Resolution:
        resolution, presentment = run_now(present(kind, auth_id, amount_kzt, self.issuer.id, self._ports))
        if resolution.ok and presentment is None:
            raise FlowError(f"acquirer {resolution.acquirer_id} refused presentment {resolution.presentment_id}")
        return resolution

    def expire_holds(self) -> int:
        return self.issuer.expire_holds()

    def settle(self, window_id: str) -> SettlementReport:
        """Close a settlement window: the network clears the acquirers' batches and nets positions;
        those who owe pay the network, the network pays those it owes, acquirers pay merchants.
        Settling the same window id again returns the first report and moves nothing."""
        known = self._settled.get(window_id)
        if known is not None:
            return known
        report = run_now(settle_window(window_id, self.topology, self._ports))
        self._settled[window_id] = report
        return report

    def _close_window(self, window_id: str) -> WindowSummary:
        for acquirer in self.acquirers.values():
            batch = acquirer.submit_batch()
            if self._bounded is None:
                self.network.clear(batch)
                continue
            # Bounded books: a window can hold hours of captures. Each presentment is its own
            # chain, so clearing them in slices books the same journal; it leaves between slices.
            for start in range(0, len(batch), CLEAR_SLICE):
                self.network.clear(batch[start:start + CLEAR_SLICE])
                self.flush_journals()
        return self.network.close_window(window_id)

    def _pay(self, payer: str, msg: PaymentMessage) -> bool:
        """The payer books its half, then the message goes out; a refusal is recorded."""
        if payer == self.issuer.id:
            booked = self.issuer.book_payment(msg)
        elif payer == self.network.id:
            booked = self.network.book_payment(msg)
        else:
            booked = self.acquirers[payer].book_payment(msg)
        if not booked:
            self.settlement_failures.append(msg.id)
            return False
        return self._send(msg)

    # -- messaging ---------------------------------------------------------------------------
    def _send(self, msg: PaymentMessage) -> bool:
        ok = self.transport.send(msg.payer_bank, msg)
        if ok:
            self._undelivered.pop(msg.id, None)
        else:
            self._undelivered[msg.id] = msg
        return ok

    def undelivered(self) -> list[str]:
        """Ids of messages not (yet) acknowledged end to end."""
        return list(self._undelivered)

    def retry_undelivered(self) -> int:
        """Send every unacknowledged message again (each hop books only what it lacks); returns
        how many are still undelivered."""
        for msg in list(self._undelivered.values()):
            self._send(msg)
        return len(self._undelivered)

    # -- liquidity readings ------------------------------------------------------------------
    def exchange_kzt_cash(self) -> int:
        return self.exchange.bank_balance_kzt()

    def issuer_funding_kzt(self) -> int:
        return self.issuer.funding_kzt()

    def stand_in_exposure_kzt(self) -> int:
        return self.issuer.exposure_kzt()

    def card_balance_kzt(self, card_id: str) -> int:
        return self.issuer.available_kzt(card_id)

    def tax_summary(self, year: int | None = None) -> AuthoritySummary:
        return self.tax.authority_summary(year, self.config.tax_compliance_rate)

    def auth_state(self, auth_id: str) -> AuthState | None:
        auth = self.issuer.auths.get(auth_id)
        return None if auth is None else auth.state

    # -- integrity ---------------------------------------------------------------------------
    def check_invariants(self) -> dict[str, list[Violation]]:
        """Each party's ledger invariants, plus the system's: with nothing in flight, the banks'
        reserves add up to the tenge that entered from outside."""
        self.flush_journals()
        out: dict[str, list[Violation]] = {
            self.config.exchange_id: self.exchange.check_invariants(),
            self.issuer.id: self.issuer.ledger.check_invariants(),
            self.network.id: self.network.ledger.check_invariants(),
        }
        for acquirer in self.acquirers.values():
            out[acquirer.id] = acquirer.ledger.check_invariants()
        for bank in self.banks.values():
            out[bank.id] = bank.ledger.check_invariants()
        out[self.direct.books.name] = self.direct.check_invariants()
        system: list[Violation] = []
        if not self._undelivered:
            system = tenge_conserved(sum(bank.reserve_kzt() for bank in self.banks.values()), self._deposits_kzt)
        out["system"] = system
        return out

    def halves(self) -> Iterator[Half]:
        """Every party's halves from its journal (not available once the journals are streamed)."""
        yield from exchange_halves(self.config.exchange_id, self.exchange_ledger.journal())
        yield from party_halves(self.issuer.id, "issuer", self.issuer.ledger.journal())
        yield from party_halves(self.network.id, "network", self.network.ledger.journal())
        for acquirer in self.acquirers.values():
            yield from party_halves(acquirer.id, "acquirer", acquirer.ledger.journal())
        for bank in self.banks.values():
            yield from bank_halves(bank.id, bank.ledger.journal())
        yield from self.direct.halves()

    def reconcile(self) -> list[ReconciliationBreak]:
        in_transit = set(
            chained.from_iterable((p.id for p in acquirer.open_batch()) for acquirer in self.acquirers.values())
        )
        if self._bounded is not None:
            self.flush_journals()
            return self._bounded.messages.breaks(in_transit)
        return reconcile(self.halves(), in_transit)

    # -- bounded books (opt-in: a long simulation) -------------------------------------------------
    def stream_journals(self, export: JournalExport) -> None:
        """From now on every party's journal goes to ``export`` in batches and leaves memory, and
        the caller tells the chain when a payment is over (:meth:`close_authorization`,
        :meth:`retire`) so that its state can go too (:mod:`services.bounded_books`). The integrity
        checks and the reconciliation keep their verdicts; :meth:`halves` and the ledgers'
        ``journal()`` are no longer available. Irreversible."""
        if self._bounded is not None:
            raise RuntimeError("the chain already streams its journals")
        bounded = self._bounded = BoundedBooks(export)
        for party, ledger, halves in self._journals():
            if not isinstance(ledger, InMemoryLedger):
                raise TypeError(f"{party}: only in-memory ledgers stream their journals")
            ledger.stream_journal(bounded.sink(party, halves), bounded.retention_key)

    def flush_journals(self) -> None:
        """Stream what every party committed since the last flush, drop what is no longer
        retained, and let go of the messages now booked on every side. A no-op by default."""
        bounded = self._bounded
        if bounded is None:
            return
        released = bounded.take_released()
        for _, ledger, _ in self._journals():
            assert isinstance(ledger, InMemoryLedger)
            ledger.flush_journal(released)
        bounded.messages.settle()

    def close_authorization(self, auth_id: str) -> None:
        """Bounded books: the authorization leg of ``auth_id`` is over (answered, the issuer done,
        any delivery that waited for the banks made). Its sales and stand-in decision are forgotten
        and its transfers may leave the ledgers; captures, reversals and refunds still work. A
        payment with a proceeds or re-buy message still undelivered stays open. A no-op by default."""
        bounded = self._bounded
        if bounded is None:
            return
        sales = bounded.sales_of.get(auth_id, ())
        undelivered = self._undelivered
        if undelivered and any(s in undelivered or ids.rebuy_id(s) in undelivered for s in sales):
            return  # a retry may send it again: its ids must stay idempotent
        bounded.sales_of.pop(auth_id, None)
        for sale_id in sales:
            self._forget_sale(sale_id)
        self.network.forget_stand_in(auth_id)
        if auth_id in bounded.live:
            bounded.live.discard(auth_id)
            bounded.released.append(auth_id)
            bounded.closed += 1
            if bounded.closed >= FLUSH_EVERY:
                self.flush_journals()

    def retire(self, auth_id: str) -> None:
        """Bounded books: nothing will touch ``auth_id`` again; the issuer forgets it too (its holds
        stay on the ledger while pending). Closes the authorization first. A no-op by default."""
        bounded = self._bounded
        if bounded is None:
            return
        self.close_authorization(auth_id)
        if auth_id not in bounded.sales_of:  # not kept open for an undelivered message
            self.issuer.forget_authorization(auth_id)

    def _forget_sale(self, sale_id: str) -> None:
        self.exchange.forget_sale(sale_id)
        self.issuer.forget_sale(sale_id)
        self._orphans.discard(sale_id)
        self._rebuy_sales.pop(ids.rebuy_id(sale_id), None)
        self._quotes.pop(sale_id, None)

    def _journals(self) -> Iterator[tuple[str, object, Callable[[str, Iterable[Transfer]], Iterator[Half]]]]:
        """(party, ledger, halves of a journal) for every party's books, in the journals' order."""
        yield self.config.exchange_id, self.exchange_ledger, exchange_halves
        yield self.issuer.id, self.issuer.ledger, _role_halves("issuer")
        yield self.network.id, self.network.ledger, _role_halves("network")
        for acquirer in self.acquirers.values():
            yield acquirer.id, acquirer.ledger, _role_halves("acquirer")
        for bank in self.banks.values():
            yield bank.id, bank.ledger, bank_halves
        yield self.direct.books.name, self.direct.books.ledger, merchant_halves


def _role_halves(role: str) -> Callable[[str, Iterable[Transfer]], Iterator[Half]]:
    def halves(party: str, journal: Iterable[Transfer]) -> Iterator[Half]:
        return party_halves(party, role, journal)

    return halves


def _no_books(msg: PaymentMessage) -> bool:
    """Merchants and cardholders keep no books in the model: their bank's credit ends the chain."""
    return True
