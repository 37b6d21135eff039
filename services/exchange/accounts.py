"""The exchange's own books: account ids and the house accounts it opens at start.

Wallets are liabilities (the exchange owes the holder the crypto), custody is the asset they are
backed by. Market-maker accounts are the counterparty of the book; ``bank:KZT`` is the exchange's
tenge at its bank, an asset account that refuses to go below zero, which is how "the exchange is
short of tenge" shows up. See ``docs/model-exchange-and-tax.md`` for every account and its flows.
"""

from __future__ import annotations

from services.ledger import Account, AccountFlags

__all__ = [
    "BANK_KZT",
    "EQUITY_KZT",
    "FEES_KZT",
    "HOUSE_PNL_KZT",
    "MM_KZT",
    "REDEEMER_KZT",
    "TAX_WITHHELD_KZT",
    "asset_accounts",
    "custody",
    "direct_accounts",
    "fees",
    "house_accounts",
    "mm",
    "redeemed",
    "tax_withheld",
    "wallet",
    "wallet_account",
]

_DNEC = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
_CNED = AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS

MM_KZT = "mm:KZT"  # market makers' tenge: pays the gross of every sale, receives re-buy costs
FEES_KZT = "fees:KZT"  # taker and redemption fee income
BANK_KZT = "bank:KZT"  # the exchange's tenge at its bank; payouts leave from here
TAX_WITHHELD_KZT = "tax_withheld:KZT"  # PIT withheld at source, owed to the tax authority
EQUITY_KZT = "equity:KZT"  # the house's own funds: the initial bank balance and top-ups
HOUSE_PNL_KZT = "house_pnl:KZT"  # what re-buys of orphaned sales cost or earn the house
REDEEMER_KZT = "redeemer:KZT"  # tenge owed by the stablecoin's issuer for redeemed stablecoin


def wallet(holder_id: str, asset: str) -> str:
    return f"wallet:{holder_id}:{asset}"


def custody(asset: str) -> str:
    return f"custody:{asset}"


def mm(asset: str) -> str:
    return f"mm:{asset}"


def redeemed(asset: str) -> str:
    """Stablecoin taken in by redemptions, held until returned to its issuer."""
    return f"redeemed:{asset}"


def house_accounts(crypto: list[str], stablecoin: str) -> list[Account]:
    """Every account the exchange needs before its first wallet opens."""
    accounts = [
        Account(BANK_KZT, "KZT", owner="exchange", kind="bank", flags=_CNED),
        Account(EQUITY_KZT, "KZT", owner="exchange", kind="equity"),
        Account(MM_KZT, "KZT", owner="market_makers", kind="market_maker"),
        Account(FEES_KZT, "KZT", owner="exchange", kind="fees", flags=_DNEC),
        Account(TAX_WITHHELD_KZT, "KZT", owner="tax_authority", kind="tax_withheld", flags=_DNEC),
        Account(HOUSE_PNL_KZT, "KZT", owner="exchange", kind="house_pnl"),
        Account(REDEEMER_KZT, "KZT", owner="stablecoin_issuer", kind="redeemer"),
        Account(custody(stablecoin), stablecoin, owner="exchange", kind="custody", flags=_CNED),
        Account(redeemed(stablecoin), stablecoin, owner="exchange", kind="house_inventory"),
    ]
    for asset in crypto:
        accounts.extend(asset_accounts(asset))
    return accounts


def asset_accounts(asset: str) -> list[Account]:
    """Custody and the market makers' inventory of one crypto asset."""
    return [
        Account(custody(asset), asset, owner="exchange", kind="custody", flags=_CNED),
        Account(mm(asset), asset, owner="market_makers", kind="house_inventory"),
    ]


def wallet_account(holder_id: str, asset: str) -> Account:
    return Account(wallet(holder_id, asset), asset, owner=holder_id, kind="wallet", flags=_DNEC)


def fees(asset: str) -> str:
    """The exchange's fee income in ``asset`` (a direct payment's fee, taken from the merchant)."""
    return f"fees:{asset}"


def tax_withheld(asset: str) -> str:
    """PIT withheld in ``asset`` from a direct payer, owed to the tax authority (in tenge, once sold)."""
    return f"tax_withheld:{asset}"


def direct_accounts(asset: str) -> list[Account]:
    """The direct rail's house accounts in one asset (opened with the first zone merchant)."""
    return [
        Account(fees(asset), asset, owner="exchange", kind="fees", flags=_DNEC),
        Account(tax_withheld(asset), asset, owner="tax_authority", kind="tax_withheld", flags=_DNEC),
    ]
