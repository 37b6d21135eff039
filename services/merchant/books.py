"""The zone merchants' books: each merchant books its half of every direct-rail message.

On the card rail a merchant keeps no books in the model (its bank's credit ends the chain). On the
direct rail it holds crypto between receipt and conversion and bears its price, so it books:

- ``{invoice}:recv`` — a direct payment received: its wallet at the exchange ← sales (in the asset);
  ``{invoice}:fee`` — the exchange's direct fee out of it;
- ``{refund}:pay`` — crypto given back for a refund;
- ``{conversion}:sold`` — crypto sold at the exchange; ``{conversion}:recv`` — the tenge of that
  sale arriving in its bank account (the payee's half of the ``conversion`` message).

One ledger (``merchants``) holds every zone merchant's accounts; each transfer stays within one
merchant's accounts, so each merchant's books balance on their own (a simplification of one ledger
per merchant that changes no figure). The merchant's wallet account mirrors its wallet at the
exchange: the integrity check compares the two (``services.flows.integrity``).
"""

from __future__ import annotations

from services.clock import Clock
from services.ids import Step, transfer_id
from services.ledger import (
    Account,
    AccountFlags,
    InMemoryLedger,
    LedgerRepository,
    Transfer,
    TransferFlags,
    TransferResult,
)
from services.messaging import PaymentMessage, Purpose
from services.money import AssetRegistry

__all__ = ["MerchantBooks", "wallet_account_id"]

_CNED = AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS  # an asset of the merchant's: never below zero
_LINK = TransferFlags.LINKED


def wallet_account_id(merchant_id: str, asset: str) -> str:
    return f"{merchant_id}:wallet:{asset}"


def _acct(merchant_id: str, kind: str, asset: str) -> str:
    return f"{merchant_id}:{kind}:{asset}"


class MerchantBooks:
    """The zone merchants' ledger (see the module docstring)."""

    def __init__(self, assets: AssetRegistry, clock: Clock, name: str = "merchants",
                 ledger: LedgerRepository | None = None) -> None:
        # ``ledger``: the live exchange service's database ledger (services.api.parties.exchange)
        self.ledger: LedgerRepository = ledger if ledger is not None else InMemoryLedger(assets, clock, name=name)
        self.name = name
        self._open: set[tuple[str, str]] = set()  # (merchant, asset) with accounts
        self.merchants: set[str] = set()

    def open_merchant(self, merchant_id: str) -> None:
        if merchant_id in self.merchants:
            return
        self._accounts(merchant_id, "KZT", ("bank", "conversions"))
        self.merchants.add(merchant_id)

    def _accounts(self, merchant_id: str, asset: str, kinds: tuple[str, ...]) -> None:
        if (merchant_id, asset + kinds[0]) in self._open:
            return
        accounts = [Account(_acct(merchant_id, kind, asset), asset, owner=merchant_id, kind=kind,
                            flags=_CNED if kind in ("wallet", "bank") else AccountFlags.NONE) for kind in kinds]
        results = self.ledger.create_accounts(accounts)
        if any(r.name not in ("OK", "EXISTS") for r in results):
            raise RuntimeError(f"merchant {merchant_id}: could not open its {asset} accounts: {results}")
        self._open.add((merchant_id, asset + kinds[0]))

    def _crypto(self, merchant_id: str, asset: str) -> None:
        self._accounts(merchant_id, asset, ("wallet", "sales", "fees", "refunds", "sold"))

    def _book(self, transfers: list[Transfer]) -> bool:
        return all(r in (TransferResult.OK, TransferResult.EXISTS) for r in self.ledger.create_transfers(transfers))

    # -- the merchant's halves ----------------------------------------------------------------
    def book_receipt(self, invoice_id: str, merchant_id: str, asset: str, quantity_minor: int, fee_minor: int) -> bool:
        """A direct payment of ``quantity_minor`` received, the exchange's fee taken out of it."""
        self._crypto(merchant_id, asset)
        wallet = wallet_account_id(merchant_id, asset)
        transfers = [Transfer(transfer_id(invoice_id, Step.RECV), wallet, _acct(merchant_id, "sales", asset),
                              quantity_minor, asset, code=Purpose.DIRECT_PAYMENT.value, user_data=invoice_id,
                              flags=_LINK if fee_minor else TransferFlags.NONE)]
        if fee_minor:
            transfers.append(Transfer(f"{invoice_id}:fee", _acct(merchant_id, "fees", asset), wallet, fee_minor,
                                      asset, code="direct_fee", user_data=invoice_id))
        return self._book(transfers)

    def book_refund(self, refund_id: str, merchant_id: str, asset: str, quantity_minor: int) -> bool:
        self._crypto(merchant_id, asset)
        return self._book([Transfer(transfer_id(refund_id, Step.PAY), _acct(merchant_id, "refunds", asset),
                                    wallet_account_id(merchant_id, asset), quantity_minor, asset,
                                    code=Purpose.DIRECT_REFUND.value, user_data=refund_id)])

    def book_sold(self, conversion_id: str, merchant_id: str, asset: str, quantity_minor: int) -> bool:
        """Crypto the exchange sold (or redeemed) for the merchant; its tenge comes as a message."""
        self._crypto(merchant_id, asset)
        return self._book([Transfer(f"{conversion_id}:sold", _acct(merchant_id, "sold", asset),
                                    wallet_account_id(merchant_id, asset), quantity_minor, asset,
                                    code="conversion_sold", user_data=conversion_id)])

    def handle(self, msg: PaymentMessage) -> bool:
        """A message to a zone merchant: the tenge of a conversion is booked; anything else (a card
        payout) needs no books of the merchant's. ``False``: the books refused it."""
        if msg.purpose is not Purpose.CONVERSION:
            return True
        merchant_id = msg.payee.removeprefix("merchant:")
        if merchant_id not in self.merchants:
            return False
        return self._book([Transfer(transfer_id(msg.id, Step.RECV), _acct(merchant_id, "bank", "KZT"),
                                    _acct(merchant_id, "conversions", "KZT"), msg.amount_kzt, "KZT",
                                    code=Purpose.CONVERSION.value, user_data=msg.id)])

    # -- readings -------------------------------------------------------------------------------
    def wallet_minor(self, merchant_id: str, asset: str) -> int:
        account = self.ledger.account(wallet_account_id(merchant_id, asset))
        return 0 if account is None else account.debit_balance

    def bank_kzt(self, merchant_id: str) -> int:
        account = self.ledger.account(_acct(merchant_id, "bank", "KZT"))
        return 0 if account is None else account.debit_balance

    def wallets(self) -> list[tuple[str, str, int]]:
        """(merchant, asset, balance) of every wallet account the books hold."""
        return [(a.owner, a.asset, a.debit_balance) for a in self.ledger.accounts() if a.kind == "wallet"]
