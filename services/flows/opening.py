"""Opening the parties: each party books its own side of the opening state, with the same ids in
both drivers, so the halves reconcile from the first transfer.

The banks book every opening deposit (``open:<party>`` / ``open:<card>``) and the bank side of each
card load; the issuer books its float and the card side of each load; the network and the
acquirers their floats and participants. :class:`services.chain.InProcessChain` opens a party at a
time as the population grows (and carries each card load as a message through its transport); the
live services open their own side from the seed at start-up. Both call these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from services.acquirer import Acquirer
from services.bank import Bank
from services.contracts import CardholderSpec, FundingMode, MerchantSpec
from services.errors import OpeningError
from services.exchange import Exchange
from services.flows.config import ChainConfig
from services.flows.topology import Topology, unique_cards
from services.issuer import CardResult, Issuer, TopUpRule
from services.network import Network

__all__ = [
    "open_banks",
    "open_card",
    "open_exchange",
    "open_issuer",
    "open_network",
    "top_up_rule",
]


def top_up_rule(config: ChainConfig, spec: CardholderSpec) -> TopUpRule | None:
    """A pre-funded card tops itself up when the chain has an auto top-up threshold."""
    if spec.funding_mode is FundingMode.PREFUNDED and config.top_up_below_kzt:
        return TopUpRule(config.top_up_below_kzt, config.top_up_to_kzt)
    return None


def open_card(issuer: Issuer, config: ChainConfig, spec: CardholderSpec) -> CardResult:
    """Open the card at the issuer (no tenge yet: that comes as a card-load message)."""
    return issuer.open_card(spec, top_up_rule(config, spec))


def open_issuer(issuer: Issuer, config: ChainConfig, cardholders: Iterable[CardholderSpec],
                topology: Topology) -> None:
    """The issuer's side: its float, every card, and the card side of each card load."""
    if config.issuer_float_kzt > 0:
        issuer.fund(f"open:{config.issuer_id}", config.issuer_float_kzt)
    for holder in unique_cards(cardholders):
        result = open_card(issuer, config, holder)
        if result not in (CardResult.OK, CardResult.EXISTS):
            raise OpeningError(f"card {holder.card_id}: {result.value}")
        if holder.card_balance_kzt > 0 and not issuer.handle(topology.card_load(holder)):
            raise OpeningError(f"card load of {holder.card_id} refused by the issuer's books")


def open_exchange(exchange: Exchange, prices_kzt: Mapping[str, Decimal],
                  cardholders: Iterable[CardholderSpec]) -> None:
    """The exchange's side: opening mid prices and every holder's wallets with their lots."""
    for asset, price in prices_kzt.items():
        exchange.set_mid_price(asset, price)
    for holder in cardholders:
        exchange.open_wallet(holder.holder_id, holder.residency, holder.holdings, holder.stablecoin_minor)


def open_network(network: Network, acquirers: Mapping[str, Acquirer], config: ChainConfig,
                 merchants: Iterable[MerchantSpec]) -> None:
    """The network's and the acquirers' side: floats, participants, and each merchant at its acquirer."""
    if config.network_float_kzt > 0:
        network.fund(f"open:{config.network_id}", config.network_float_kzt)
    for acquirer in acquirers.values():
        network.open_participant(acquirer.id)
        if config.acquirer_float_kzt > 0:
            acquirer.fund(f"open:{acquirer.id}", config.acquirer_float_kzt)
    network.open_participant(config.issuer_id)
    for merchant in merchants:
        serving = acquirers.get(merchant.acquirer_id)
        if serving is None:
            raise OpeningError(f"merchant {merchant.merchant_id}: unknown acquirer {merchant.acquirer_id!r}")
        serving.open_merchant(merchant.merchant_id)


def open_banks(banks: Mapping[str, Bank], topology: Topology, cardholders: Iterable[CardholderSpec]) -> int:
    """Every customer's account, the opening deposits and the bank side of each card load.
    Returns the tenge deposited from outside (what the banks' reserves must add up to)."""
    for party, bank_id in topology.bank_of.items():
        banks[bank_id].open_account(party)
    deposited = 0
    cards = unique_cards(cardholders)
    deposits = [(f"open:{party}", party, amount) for party, amount in topology.opening_floats()]
    deposits += [(f"open:{h.card_id}", topology.add_holder(h.holder_id), h.card_balance_kzt)
                 for h in cards if h.card_balance_kzt > 0]
    for deposit_id, party, amount in deposits:
        if not banks[topology.bank_of[party]].deposit(deposit_id, party, amount).ok:
            raise OpeningError(f"opening deposit {deposit_id} refused")
        deposited += amount
    for holder in cards:
        if holder.card_balance_kzt > 0:
            msg = topology.card_load(holder)
            if not banks[msg.payer_bank].book(msg).ok:
                raise OpeningError(f"card load {msg.id} refused by {msg.payer_bank}")
    return deposited
