"""The card network (scheme): clears presentment batches and nets positions per settlement window.

The network's ledger:

* ``position:{participant}:KZT`` — per issuer and acquirer: a debit balance is what the participant
  owes the network in the open window, a credit balance what the network owes it;
* ``fee_income:KZT`` — scheme fees; ``bank:KZT`` — the network's money at its settlement bank
  (mirrors its deposit there); ``equity:KZT`` — its opening float.

Each capture of amount P books: issuer owes P - interchange, acquirer is owed P - interchange -
scheme fee, the network earns the scheme fee. A refund or chargeback R books the issuer owed R and
the acquirer owing R. At the window's close the net positions (network's fee income included) sum
to zero by construction, and the money moves: participants that owe pay first, then the network
pays those it owes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.clock import Clock
from services.contracts import AuthorizationRequest, AuthorizationResponse, ReasonCode
from services.ids import Step, transfer_id
from services.ledger import Account, AccountFlags, InMemoryLedger, LedgerRepository, Transfer, TransferResult
from services.messaging import PaymentMessage, Purpose, book_half
from services.money import AssetRegistry
from services.network.fees import FeeSchedule
from services.network.presentment import Leg, Presentment, linked_legs

__all__ = ["BANK", "FEE_INCOME", "Network", "WindowSummary", "position_account"]

BANK = "bank:KZT"
FEE_INCOME = "fee_income:KZT"
EQUITY = "equity:KZT"
_KZT = "KZT"


def position_account(participant: str) -> str:
    return f"position:{participant}:KZT"


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """One closed settlement window: net per participant (positive: receives), the network's own
    fee income among them, and what each issuer earned in interchange."""

    window_id: str
    net_kzt: dict[str, int]
    interchange_kzt: dict[str, int]
    presentments: int


class _Window:
    __slots__ = ("interchange", "net", "presentments")

    def __init__(self) -> None:
        self.net: dict[str, int] = {}
        self.interchange: dict[str, int] = {}
        self.presentments = 0


class Network:
    """One card network's books. Presentments are cleared into the open window."""

    def __init__(
        self,
        network_id: str,
        fees: FeeSchedule,
        clock: Clock,
        assets: AssetRegistry | None = None,
        *,
        stand_in_enabled: bool = True,
        stand_in_limit_kzt: int = 0,
        ledger: LedgerRepository | None = None,
    ) -> None:
        self.id = network_id
        self.fees = fees
        self.stand_in_enabled = stand_in_enabled
        self.stand_in_limit_kzt = stand_in_limit_kzt
        self._stand_ins: dict[str, AuthorizationResponse] = {}
        self._stand_in_count = 0  # decisions ever taken (approval codes count on; some may be forgotten)
        # Live services pass a SqlLedger; simulations and tests get an in-memory one.
        self.ledger: LedgerRepository = ledger if ledger is not None else InMemoryLedger(
            assets, clock, name=network_id)
        self.ledger.create_accounts(
            [
                Account(BANK, _KZT, network_id, "bank", AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS),
                Account(FEE_INCOME, _KZT, network_id, "income"),
                Account(EQUITY, _KZT, network_id, "equity"),
            ]
        )
        self._participants: set[str] = set()
        self._open = _Window()
        self._closed: dict[str, WindowSummary] = {}

    def fund(self, deposit_id: str, amount_kzt: int) -> bool:
        t = Transfer(f"{deposit_id}:float", BANK, EQUITY, amount_kzt, _KZT, code="float")
        return self.ledger.create_transfers([t])[0].ok

    def open_participant(self, participant: str) -> None:
        if participant in self._participants:
            return
        self.ledger.create_accounts([Account(position_account(participant), _KZT, participant, "position")])
        self._participants.add(participant)

    # -- deadline fallback -------------------------------------------------------------------
    def stand_in(self, req: AuthorizationRequest) -> AuthorizationResponse:
        """The issuer did not answer in time: approve up to the stand-in limit, else decline 91.
        One decision per authorization; asking again returns it."""
        known = self._stand_ins.get(req.auth_id)
        if known is not None:
            return known
        if self.stand_in_enabled and 0 < req.amount_kzt <= self.stand_in_limit_kzt:
            response = AuthorizationResponse(
                req.auth_id, ReasonCode.APPROVED, f"S{self._stand_in_count + 1:05d}", stand_in=True
            )
        else:
            response = AuthorizationResponse(req.auth_id, ReasonCode.ISSUER_UNAVAILABLE, stand_in=True)
        self._stand_ins[req.auth_id] = response
        self._stand_in_count += 1
        return response

    def stand_ins(self) -> int:
        """Stand-in decisions taken so far."""
        return self._stand_in_count

    def forget_stand_in(self, auth_id: str) -> None:
        """Forget the decision for ``auth_id`` (asking again would decide anew). For a long
        simulation once the authorization is over; live services never call it."""
        self._stand_ins.pop(auth_id, None)

    # -- clearing ----------------------------------------------------------------------------
    def clear(self, batch: Sequence[Presentment]) -> int:
        """Book a presentment batch into the open window; replays book nothing.

        Returns how many presentments were new. Each is its own linked chain (a bad one fails
        alone).
        """
        transfers: list[Transfer] = []
        starts: list[tuple[int, Presentment]] = []
        for p in batch:
            self.open_participant(p.issuer_id)
            self.open_participant(p.acquirer_id)
            starts.append((len(transfers), p))
            transfers.extend(self._transfers(p))
        results = self.ledger.create_transfers(transfers)
        new = 0
        window = self._open
        for start, p in starts:
            result = results[start]
            if result is TransferResult.EXISTS:
                continue
            if result is not TransferResult.OK:
                raise AssertionError(f"network refused presentment {p.id}: {result.name}")
            new += 1
            window.presentments += 1
            net = window.net
            if p.is_capture:
                interchange = self.fees.interchange_kzt(p.amount_kzt)
                scheme = self.fees.scheme_fee_kzt(p.amount_kzt)
                net[p.issuer_id] = net.get(p.issuer_id, 0) - (p.amount_kzt - interchange)
                net[p.acquirer_id] = net.get(p.acquirer_id, 0) + p.amount_kzt - interchange - scheme
                net[self.id] = net.get(self.id, 0) + scheme
                window.interchange[p.issuer_id] = window.interchange.get(p.issuer_id, 0) + interchange
            else:
                net[p.issuer_id] = net.get(p.issuer_id, 0) + p.amount_kzt
                net[p.acquirer_id] = net.get(p.acquirer_id, 0) - p.amount_kzt
        return new

    def _transfers(self, p: Presentment) -> list[Transfer]:
        issuer, acquirer = position_account(p.issuer_id), position_account(p.acquirer_id)
        if not p.is_capture:
            return linked_legs([(transfer_id(p.id, Step.PRESENT), acquirer, issuer, p.amount_kzt, p.kind.value)], p.id)
        legs: list[Leg] = [(transfer_id(p.id, Step.PRESENT), issuer, acquirer, p.amount_kzt, p.kind.value)]
        interchange = self.fees.interchange_kzt(p.amount_kzt)
        scheme = self.fees.scheme_fee_kzt(p.amount_kzt)
        if interchange:
            legs.append((f"{p.id}:ic", acquirer, issuer, interchange, "interchange"))
        if scheme:
            legs.append((f"{p.id}:sf", acquirer, FEE_INCOME, scheme, "scheme_fee"))
        return linked_legs(legs, p.id)

    def close_window(self, window_id: str) -> WindowSummary:
        """Close the open window; closing the same id again returns the first summary."""
        closed = self._closed.get(window_id)
        if closed is not None:
            return closed
        window, self._open = self._open, _Window()
        summary = WindowSummary(
            window_id,
            {p: n for p, n in window.net.items() if n},
            dict(window.interchange),
            window.presentments,
        )
        self._closed[window_id] = summary
        return summary

    def windows(self) -> list[WindowSummary]:
        return list(self._closed.values())

    # -- money -------------------------------------------------------------------------------
    def handle(self, msg: PaymentMessage) -> bool:
        """A participant's settlement payment has arrived at the network's bank."""
        if msg.purpose is not Purpose.SETTLEMENT_IN:
            return False
        return book_half(self.ledger, transfer_id(msg.id, Step.RECV), BANK, position_account(msg.payer), msg)

    def book_payment(self, msg: PaymentMessage) -> bool:
        """The network's half of paying a participant it owes."""
        if msg.purpose is not Purpose.SETTLEMENT_OUT:
            return False
        return book_half(self.ledger, transfer_id(msg.id, Step.PAY), position_account(msg.payee), BANK, msg)

    def bank_kzt(self) -> int:
        acc = self.ledger.account(BANK)
        return 0 if acc is None else acc.debit_balance

    def fee_income_kzt(self) -> int:
        acc = self.ledger.account(FEE_INCOME)
        return 0 if acc is None else acc.credit_balance

