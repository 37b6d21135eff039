"""The exchange service: its domain objects behind the routes."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from services.api.fields import amount_in
from services.api.idempotency import answer_in
from services.api.outbox import PENDING, Outbox, Relay
from services.api.parties.base import (
    PartyContext,
    open_ledger,
    problem,
)
from services.api.parties.durable import StatefulService, SwitchLedger
from services.api.parties.exchange.schemas import (
    DepositIn,
    DepositOut,
    HaltIn,
    PriceIn,
    QuoteLegOut,
    QuoteOut,
    TaxStatementOut,
    WalletIn,
    WalletOut,
)
from services.api.parties.schemas import PricesOut, SaleOut, SellOrderIn, price_in
from services.api.problems import FieldError, ProblemError
from services.contracts import Lot, Residency, SaleResult, SellOrder
from services.exchange import Exchange, SaleQuote
from services.exchange import accounts as acc
from services.exchange.config import SaleReason
from services.flows.opening import open_exchange
from services.ids import Step, transfer_id
from services.ledger import TransferResult
from services.ledger.engine import Staging
from services.ledger.sql import SqlLedger, TransactionHook
from services.messaging import PaymentMessage, Purpose
from services.tax import TaxBook


def stage_payout_message(outbox: Outbox, sale_id: str,
                         message: Callable[[int], PaymentMessage]) -> TransactionHook:
    """A hook that stages ``message(net)`` in ``outbox`` in the transaction that writes the sale's
    payout transfer (of ``net`` tenge); nothing when the sale paid nothing out. The tenge of a card
    sale (its proceeds to the issuer) and of a merchant's conversion leave the exchange this way."""
    payout_id = transfer_id(sale_id, Step.PAYOUT)

    def hook(conn: Any, staging: Staging) -> None:
        payout = staging.transfers.get(payout_id)
        if payout is not None and payout.amount > 0:
            msg = message(payout.amount)
            outbox.stage_message(conn, msg.payer_bank, msg)

    return hook


class ExchangeService(StatefulService):
    """The exchange domain behind the routes: the lock, the clocked book depth and the outbox."""

    def __init__(self, ctx: PartyContext, outbox: Outbox, relay: Relay) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.relay = relay
        cfg = ctx.seed.config
        self.sql_ledger = open_ledger(ctx, cfg.exchange_id)
        self.ledger = SwitchLedger(self.sql_ledger)
        self.stable = cfg.exchange_config().stablecoin_code
        self._replenished_at_s = 0.0
        self.durable, self.seed_digest, self.assets = ctx.durable, ctx.seed_digest, ctx.assets
        ctx.durable.on_rebuild(self._start)
        self._start()
        self.sales_total = ctx.metrics.counter("exchange_sales", "Sell orders, by outcome", ("outcome",))

    # -- state -------------------------------------------------------------------------------
    snapshot_state_extra = ("_replenished_at_s",)  # _seed may set it to the value it had

    def _build(self) -> None:
        """Fresh domain objects on the switch ledger; this service is the command target."""
        cfg = self.ctx.seed.config
        self.tax = TaxBook(method=cfg.cost_basis, assets=self.ctx.assets)
        self.exchange = Exchange(self.ledger, self.ctx.assets, self.ctx.clock, cfg.exchange_config(), self.tax)
        # holder -> the fields its wallet was opened with (by the seed or through the API)
        self._opened: dict[str, tuple[Residency, tuple[Any, ...], int]] = {}
        self.ctx.durable.register("service", self)

    def _seed(self) -> None:
        open_exchange(self.exchange, self.ctx.seed.prices_kzt, self.ctx.seed.cardholders)
        for holder in self.ctx.seed.cardholders:
            self._opened[holder.holder_id] = (holder.residency, tuple(holder.holdings), holder.stablecoin_minor)
        self._replenished_at_s = self.ctx.clock.now()

    def _ledger_pairs(self) -> list[tuple[SwitchLedger, SqlLedger]]:
        return [(self.ledger, self.sql_ledger)]

    # -- market ------------------------------------------------------------------------------
    def _replenish(self) -> None:
        """Market makers restore depth for the wall time since the last call (under the lock)."""
        now = self.ctx.clock.now()
        elapsed_s = now - self._replenished_at_s
        if elapsed_s > 0:
            self.exchange.replenish(elapsed_s)
            self._replenished_at_s = now

    def _check_order(self, order: SellOrderIn) -> None:
        errors = [FieldError(field=f"asset_priority[{i}]", reason="no order book for this asset")
                  for i, a in enumerate(order.asset_priority)
                  if a != self.stable and a not in self.exchange.config.books]
        if errors:
            raise ProblemError(422, "an asset in the priority list is not traded here", errors)

    def quote(self, body: SellOrderIn) -> QuoteOut:
        self._check_order(body)
        order = body.to_order(self.ctx.assets)

        self._precheck(order)
        got = self.ctx.command(self._quote, order)
        if isinstance(got, SaleReason):
            raise _refused(got)
        fmt = self.ctx.assets.format
        return QuoteOut(order_id=got.order_id, net=fmt(got.net_kzt, "KZT"), quoted_at_s=got.quoted_at_s,
                        expires_at_s=got.expires_at_s, legs=[QuoteLegOut(
                            asset=leg.quote.asset, quantity=fmt(leg.quote.quantity_minor, leg.quote.asset),
                            gross=fmt(leg.quote.gross_kzt, "KZT"), fee=fmt(leg.quote.fee_kzt, "KZT"),
                            pit_withheld=fmt(leg.pit_withheld_kzt, "KZT"),
                            avg_price_kzt=str(leg.quote.avg_price_kzt), slippage_bps=str(leg.quote.slippage_bps),
                        ) for leg in got.legs])

    def _precheck(self, order: SellOrder) -> None:
        """Refuse, before any command, an order no depth could fill (unknown holder, not enough
        crypto, no price, halted): such a refusal changes nothing, the order book's clock included."""
        plan = self.ctx.locked(self.exchange.quote, order)
        if isinstance(plan, SaleReason) and plan in _REFUSED_WHATEVER_THE_DEPTH:
            raise _refused(plan)

    def _quote(self, order: SellOrder) -> SaleQuote | SaleReason:
        self._replenish()
        return self.exchange.quote(order)

    def _sell(self, order: SellOrder) -> tuple[bool, SaleResult]:
        known = self.exchange.sale(order.id)
        if known is not None:
            return False, known
        self._replenish()
        with self.ledger.also_in_transaction(self._proceeds_hook(order.id, order.auth_id)):
            if order.asset_priority == (self.stable,):
                return True, self.exchange.redeem_stablecoin(order)
            return True, self.exchange.sell(order)

    def sell(self, body: SellOrderIn) -> tuple[int, SaleOut]:
        """Execute (or replay) the sale, then pay the proceeds out; a refusal is a 422 problem."""
        self._check_order(body)
        order = body.to_order(self.ctx.assets)

        if self.ctx.locked(self.exchange.sale, order.id) is None:
            self._precheck(order)
        new, sale = self.ctx.command(self._sell, order)
        if not sale.ok:
            self.sales_total.labels(self.ctx.settings.party, sale.reason).inc()
            raise _refused(SaleReason(sale.reason))
        if new:
            self.sales_total.labels(self.ctx.settings.party, "ok").inc()
        status = 201 if new else 200

        def answer(delivered: bool) -> tuple[int, SaleOut]:
            return status, SaleOut.of(sale, self.ctx.assets, delivered=delivered)

        return answer(self._pay_proceeds(sale, answer))

    def _proceeds(self, sale_id: str, auth_id: str, net_kzt: int) -> PaymentMessage:
        cfg = self.ctx.seed.config
        return self.ctx.topology.message(sale_id, Purpose.PROCEEDS, cfg.exchange_id, cfg.issuer_id, net_kzt,
                                         ref=auth_id)

    def _proceeds_hook(self, sale_id: str, auth_id: str) -> TransactionHook:
        """Stage the proceeds message in the transaction that writes the sale's payout transfer."""
        return stage_payout_message(self.outbox, sale_id, lambda net: self._proceeds(sale_id, auth_id, net))

    def _pay_proceeds(self, sale: SaleResult, answer: Callable[[bool], Any] | None = None) -> bool:
        """Try to deliver the sale's outbox row now (outside the domain lock: it may take a
        while); the relay keeps trying if this fails. ``True`` when nothing is owed any more.

        The sale's answer (``answer(delivered)``, the request's result) is known once the send
        is: its ``done`` row commits with the row's mark, one write transaction for both
        (:func:`services.api.idempotency.answer_hook`)."""
        if sale.net_kzt <= 0 or self.outbox.state(sale.id) != PENDING:
            return True
        msg = self._proceeds(sale.id, sale.auth_id, sale.net_kzt)
        with self.outbox.sending_in_line(msg.id):
            ok = self.ctx.transport.send(msg.payer_bank, msg)
            with answer_in(self.ctx.keys, answer(ok) if answer is not None else None) as also:
                self.outbox.mark(msg.id, delivered=ok, also=also)
        return ok

    def undelivered(self) -> list[str]:
        return self.outbox.undelivered()

    # -- wallets -----------------------------------------------------------------------------
    def _has_wallet(self, holder_id: str) -> bool:
        return self.ledger.account(acc.wallet(holder_id, self.stable)) is not None

    def _units(self, text: str, asset: str, field: str) -> int:
        return amount_in(text, self.ctx.assets.get(asset), field)

    def _asset(self, code: str, field: str) -> None:
        if code not in self.ctx.assets:
            raise ProblemError(422, f"unknown asset {code}", [FieldError(field=field, reason="unknown asset")])

    def open_wallet(self, body: WalletIn) -> tuple[int, WalletOut]:
        from services.contracts import Holding  # noqa: PLC0415 — a dataclass the schema maps into

        holdings = []
        for i, h in enumerate(body.holdings):
            self._asset(h.asset, f"holdings[{i}].asset")
            if h.asset == self.stable:
                raise ProblemError(422, "the stablecoin is not held in lots; use the stablecoin field",
                                   [FieldError(field=f"holdings[{i}].asset", reason="stablecoin")])
            if h.asset not in self.exchange.config.books:
                raise ProblemError(422, f"{h.asset} is not traded here: no holdings of it",
                                   [FieldError(field=f"holdings[{i}].asset", reason="no order book for this asset")])
            lots = tuple(Lot(self._units(lot.quantity, h.asset, f"holdings[{i}].lots[{j}].quantity"),
                             price_in(lot.price_kzt, f"holdings[{i}].lots[{j}].price_kzt"), float(lot.acquired_at_s))
                         for j, lot in enumerate(h.lots))
            holdings.append(Holding(h.asset, lots))
        stable = self._units(body.stablecoin, self.stable, "stablecoin") if body.stablecoin else 0

        status = self.ctx.command(self._open_wallet, body.holder_id, Residency(body.residency), tuple(holdings),
                                  stable, refused=lambda status: status != 201)
        if status == 409:
            raise ProblemError(409, f"a wallet for {body.holder_id} exists with other residency or holdings",
                               [FieldError(field="holder_id", reason="exists with different fields")])
        return status, self.wallet(body.holder_id)

    def _open_wallet(self, holder_id: str, residency: Residency, holdings: tuple[Any, ...], stable: int) -> int:
        if self._has_wallet(holder_id):
            return 200 if self._opened.get(holder_id) == (residency, holdings, stable) else 409
        self.exchange.open_wallet(holder_id, residency, holdings, stable)
        self._opened[holder_id] = (residency, holdings, stable)
        return 201

    def wallet(self, holder_id: str) -> WalletOut:
        if not self._has_wallet(holder_id):
            raise problem(404, f"no wallet for {holder_id}", "holder_id", "not found")
        balances = {}
        for code in self.ctx.assets.codes():
            account = self.ledger.account(acc.wallet(holder_id, code))
            if account is not None:
                balances[code] = self.ctx.assets.format(account.available_credit_balance, code)
        return WalletOut(holder_id=holder_id, balances=balances)

    def deposit(self, body: DepositIn) -> tuple[int, DepositOut]:
        self._asset(body.asset, "asset")
        quantity = self._units(body.quantity, body.asset, "quantity")
        crypto = body.asset != self.stable
        if crypto and body.price_kzt is None:
            raise ProblemError(422, "a crypto deposit needs its cost basis", [FieldError(field="price_kzt",
                                                                                      reason="required")])
        price = price_in(body.price_kzt, "price_kzt") if body.price_kzt is not None else None
        wallet_id = acc.wallet(body.holder_id, body.asset)
        result = self.ctx.command(self._deposit, body.id, body.holder_id, body.asset, quantity,
                                  price if crypto else None, refused=lambda result: result is not TransferResult.OK)
        if result in (TransferResult.DEBIT_ACCOUNT_NOT_FOUND, TransferResult.CREDIT_ACCOUNT_NOT_FOUND):
            raise ProblemError(404, f"no {body.asset} wallet for {body.holder_id}",
                               [FieldError(field="holder_id", reason="no wallet for this asset")])
        if not result.ok:
            raise ProblemError(409, f"deposit {body.id}: {result.name.lower()}",
                               [FieldError(field="id", reason=result.name.lower())])
        status = 201 if result is TransferResult.OK else 200
        balance = self.ledger.account(wallet_id)
        return status, DepositOut(id=body.id, holder_id=body.holder_id, asset=body.asset, quantity=body.quantity,
                                  balance=self.ctx.assets.format(balance.available_credit_balance if balance else 0,
                                                                 body.asset))

    def _deposit(self, deposit_id: str, holder_id: str, asset: str, quantity: int,
                 price: Decimal | None) -> TransferResult:
        return self.exchange.deposit(deposit_id, holder_id, asset, quantity, price)

    # -- prices and halts --------------------------------------------------------------------
    def set_price(self, body: PriceIn) -> PricesOut:
        if body.asset not in self.exchange.config.books:
            raise problem(422, f"no order book for {body.asset}", "asset", "not traded")
        price = price_in(body.price_kzt)
        self.ctx.command(self._set_mid_price, body.asset, price)
        return self.prices()

    def prices(self) -> PricesOut:
        out: dict[str, str | None] = {}
        for code in self.exchange.config.books:
            mid = self.exchange.book(code).mid
            out[code] = None if mid is None else str(mid)
        halted = [code for code in (*self.exchange.config.books, self.stable) if self.exchange.is_halted(code)]
        return PricesOut(prices_kzt=out, halted=halted)

    def set_halt(self, body: HaltIn) -> HaltIn:
        if body.asset not in self.exchange.config.books and body.asset != self.stable:
            raise problem(422, f"{body.asset} is not traded here", "asset", "not traded")
        self.ctx.command(self._set_halted, body.asset, body.halted)
        return body

    def _set_mid_price(self, asset: str, price: Decimal) -> None:
        self.exchange.set_mid_price(asset, price)

    def _set_halted(self, asset: str, halted: bool) -> None:
        self.exchange.set_halted(asset, halted)

    # -- messages ----------------------------------------------------------------------------
    def receive(self, msg: PaymentMessage) -> bool:
        """A re-buy's tenge has arrived: buy the sold crypto back into the holder's wallets."""
        if msg.purpose is not Purpose.REBUY:
            raise ProblemError(422, "the exchange receives only re-buys", [FieldError(field="purpose",
                                                                                        reason="not received here")])

        return self.ctx.command(self._rebuy, msg, answers=True)  # the acknowledgement commits with it

    def _rebuy(self, msg: PaymentMessage) -> bool:
        sale = self.exchange.sale(msg.ref)
        if sale is None:
            raise ProblemError(404, f"a re-buy of sale {msg.ref!r}, which this exchange never made",
                               [FieldError(field="ref", reason="unknown sale")])
        if msg.amount_kzt != sale.net_kzt:
            raise ProblemError(422, f"a re-buy must return the sale's net {sale.net_kzt} minor units",
                               [FieldError(field="amount", reason="not the sale's net")])
        return self.exchange.rebuy(sale, msg.id).ok

    def tax_statement(self, holder_id: str) -> TaxStatementOut:
        def work() -> Any:
            try:
                return self.tax.statement(holder_id)
            except ValueError:
                return None

        st = self.ctx.locked(work)
        if st is None:
            raise problem(404, f"no tax records for {holder_id}", "holder_id", "not found")

        def fmt(minor: int) -> str:
            return ("-" if minor < 0 else "") + self.ctx.assets.format(abs(minor), "KZT")

        return TaxStatementOut(holder_id=holder_id, residency=st.residency.value, sales=len(st.sales),
                               proceeds=fmt(st.proceeds_kzt), basis=fmt(st.basis_kzt), gains=fmt(st.gains_kzt),
                               losses=fmt(st.losses_kzt), pit_due=fmt(st.pit_due_kzt),
                               pit_withheld=fmt(st.pit_withheld_kzt), pit_to_declare=fmt(st.pit_to_declare_kzt))


_REFUSED_WHATEVER_THE_DEPTH = frozenset({
    SaleReason.INVALID_AMOUNT, SaleReason.UNKNOWN_ASSET, SaleReason.UNKNOWN_HOLDER, SaleReason.NO_PRICE,
    SaleReason.HALTED, SaleReason.INSUFFICIENT_CRYPTO})


def _refused(reason: SaleReason) -> ProblemError:
    field = {SaleReason.INVALID_AMOUNT: "net", SaleReason.UNKNOWN_HOLDER: "holder_id"}.get(reason, "asset_priority")
    status = 404 if reason is SaleReason.UNKNOWN_HOLDER else 422
    return ProblemError(status, f"the exchange refused the sale: {reason.value}",
                        [FieldError(field=field, reason=reason.value)], slug="sale-refused")
