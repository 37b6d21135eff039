"""What every party service starts from: the chain's configuration and the population, as one file.

``ccsim serve`` turns a scenario into a :class:`PartySeed` (``sim/live/serve.py``) and writes it as
JSON into the data directory; each party process reads the same file (``CCSIM_SEED_FILE``), so
all of them agree on who exists and which bank each party uses, without asking each other at
start-up. The services never import the simulation: this module is the whole contract.

Each party books only its own side of the opening state, with the same ids
:class:`services.chain.InProcessChain` uses, so the halves reconcile: the bank service books every
opening deposit and the bank side of each card load; the issuer books its float and the card side
of each load; the network and the acquirers their floats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Final

from pydantic import TypeAdapter

from services.acquirer import Acquirer, merchant_party
from services.bank import Bank
from services.chain import ChainConfig
from services.contracts import CardholderSpec, FundingMode, MerchantSpec
from services.exchange import Exchange
from services.issuer import CardResult, Issuer, TopUpRule
from services.messaging import PaymentMessage, Purpose
from services.money import DEFAULT_ASSETS, Asset, AssetRegistry
from services.network import Network

__all__ = ["PartySeed", "Topology", "holder_party", "read_seed", "write_seed"]

SEED_VERSION: Final = 1


def holder_party(holder_id: str) -> str:
    """A cardholder as a bank customer and message payer (the card's linked account)."""
    return f"holder:{holder_id}"


@dataclass(frozen=True)
class PartySeed:
    """The chain's knobs, the assets, the opening prices and the population of one live run."""

    config: ChainConfig = field(default_factory=ChainConfig)
    assets: tuple[Asset, ...] = DEFAULT_ASSETS
    prices_kzt: dict[str, Decimal] = field(default_factory=dict)  # mid price per traded asset
    cardholders: tuple[CardholderSpec, ...] = ()
    merchants: tuple[MerchantSpec, ...] = ()
    deadline_ms: int = 10_000  # how long the network waits for the issuer before it stands in
    version: int = SEED_VERSION

    def registry(self) -> AssetRegistry:
        return AssetRegistry(self.assets)


_ADAPTER: Final = TypeAdapter(PartySeed)


def write_seed(seed: PartySeed, path: Path) -> None:
    """Write ``seed`` as JSON (Decimals as strings, so no price passes through a float)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(_ADAPTER.dump_json(seed, indent=1))
    tmp.replace(path)


def read_seed(path: Path) -> PartySeed:
    seed = _ADAPTER.validate_json(path.read_bytes())
    if seed.version != SEED_VERSION:
        raise ValueError(f"{path}: seed version {seed.version}, this build reads {SEED_VERSION}")
    return seed


def seed_json(seed: PartySeed) -> str:
    """The seed as canonical JSON text (tests compare seeds with it)."""
    return json.dumps(json.loads(_ADAPTER.dump_json(seed)), sort_keys=True)


class Topology:
    """Which bank each party uses, exactly as :class:`~services.chain.InProcessChain` assigns them:
    exchange, issuer, network and the acquirers round-robin over the banks, cardholders at the
    issuer's bank, merchants round-robin in the order they are listed."""

    def __init__(self, seed: PartySeed) -> None:
        cfg = seed.config
        self.config = cfg
        self.bank_ids = [f"bank-{i + 1}" for i in range(cfg.bank_count)]
        self.bank_of: dict[str, str] = {}
        parties = [cfg.exchange_id, cfg.issuer_id, cfg.network_id, *cfg.acquirer_ids]
        for i, party in enumerate(parties):
            self.bank_of[party] = self.bank_ids[i % len(self.bank_ids)]
        for holder in seed.cardholders:
            self.bank_of.setdefault(holder_party(holder.holder_id), self.bank_of[cfg.issuer_id])
        seen: set[str] = set()
        for merchant in seed.merchants:
            if merchant.merchant_id in seen:
                continue
            self.bank_of[merchant_party(merchant.merchant_id)] = self.bank_ids[len(seen) % len(self.bank_ids)]
            seen.add(merchant.merchant_id)

    def message(  # noqa: PLR0917 — one positional field per message field, in their order
        self, message_id: str, purpose: Purpose, payer: str, payee: str, amount_kzt: int, ref: str = "",
    ) -> PaymentMessage:
        return PaymentMessage(message_id, purpose, payer, payee, self.bank_of[payer], self.bank_of[payee],
                              amount_kzt, ref)

    def opening_deposits(self, seed: PartySeed) -> list[tuple[str, str, int]]:
        """(deposit id, party, tiyn) of every opening balance, as the chain deposits them."""
        cfg = seed.config
        out = [(f"open:{party}", party, amount) for party, amount in (
            (cfg.exchange_id, cfg.exchange_config().house_kzt_minor),
            (cfg.issuer_id, cfg.issuer_float_kzt),
            (cfg.network_id, cfg.network_float_kzt),
            *((a, cfg.acquirer_float_kzt) for a in cfg.acquirer_ids),
        ) if amount > 0]
        out += [(f"open:{h.card_id}", holder_party(h.holder_id), h.card_balance_kzt)
                for h in _unique_cards(seed) if h.card_balance_kzt > 0]
        return out

    def card_load(self, holder: CardholderSpec) -> PaymentMessage:
        return self.message(f"load:{holder.card_id}", Purpose.CARD_LOAD, holder_party(holder.holder_id),
                            self.config.issuer_id, holder.card_balance_kzt, ref=holder.card_id)


def _unique_cards(seed: PartySeed) -> list[CardholderSpec]:
    seen: set[str] = set()
    out = []
    for h in seed.cardholders:
        if h.card_id not in seen:
            seen.add(h.card_id)
            out.append(h)
    return out


# -- each party books its own side of the opening state ----------------------------------------


def seed_issuer(issuer: Issuer, seed: PartySeed, topology: Topology) -> None:
    cfg = seed.config
    if cfg.issuer_float_kzt > 0:
        issuer.fund(f"open:{cfg.issuer_id}", cfg.issuer_float_kzt)
    for holder in _unique_cards(seed):
        rule = None
        if holder.funding_mode is FundingMode.PREFUNDED and cfg.top_up_below_kzt:
            rule = TopUpRule(cfg.top_up_below_kzt, cfg.top_up_to_kzt)
        result = issuer.open_card(holder, rule)
        if result not in (CardResult.OK, CardResult.EXISTS):
            raise ValueError(f"seed: card {holder.card_id}: {result.value}")
        if holder.card_balance_kzt > 0 and not issuer.handle(topology.card_load(holder)):
            raise RuntimeError(f"seed: card load of {holder.card_id} refused by the issuer's books")


def seed_exchange(exchange: Exchange, seed: PartySeed) -> None:
    for asset, price in seed.prices_kzt.items():
        exchange.set_mid_price(asset, price)
    for holder in seed.cardholders:
        exchange.open_wallet(holder.holder_id, holder.residency, holder.holdings, holder.stablecoin_minor)


def seed_network(network: Network, acquirers: dict[str, Acquirer], seed: PartySeed) -> None:
    cfg = seed.config
    if cfg.network_float_kzt > 0:
        network.fund(f"open:{cfg.network_id}", cfg.network_float_kzt)
    for acquirer in acquirers.values():
        network.open_participant(acquirer.id)
        if cfg.acquirer_float_kzt > 0:
            acquirer.fund(f"open:{acquirer.id}", cfg.acquirer_float_kzt)
    network.open_participant(cfg.issuer_id)
    for merchant in seed.merchants:
        serving = acquirers.get(merchant.acquirer_id)
        if serving is None:
            raise ValueError(f"seed: merchant {merchant.merchant_id}: unknown acquirer {merchant.acquirer_id!r}")
        serving.open_merchant(merchant.merchant_id)


def seed_banks(banks: dict[str, Bank], seed: PartySeed, topology: Topology) -> int:
    """Open every customer's account, book the opening deposits and the bank side of each card
    load. Returns the tenge deposited from outside (what the banks' reserves must add up to)."""
    for party, bank_id in topology.bank_of.items():
        banks[bank_id].open_account(party)
    deposited = 0
    for deposit_id, party, amount in topology.opening_deposits(seed):
        if not banks[topology.bank_of[party]].deposit(deposit_id, party, amount).ok:
            raise RuntimeError(f"seed: opening deposit {deposit_id} refused")
        deposited += amount
    for holder in _unique_cards(seed):
        if holder.card_balance_kzt > 0:
            msg = topology.card_load(holder)
            if not banks[msg.payer_bank].book(msg).ok:
                raise RuntimeError(f"seed: card load {msg.id} refused by {msg.payer_bank}")
    return deposited
