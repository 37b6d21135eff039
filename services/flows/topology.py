"""Who banks where, and the messages between parties: one assignment both drivers share.

Parties are spread over the banks round-robin (exchange, issuer, network, the acquirers), the
cardholders bank at the issuer's bank (the card's linked account) and the merchants round-robin in
the order they open. :class:`services.chain.InProcessChain` grows a topology as it opens the
population; the live services build the same one from their seed, so every message carries the
same banks in both drivers.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.acquirer import merchant_party
from services.contracts import CardholderSpec, MerchantSpec
from services.flows.config import ChainConfig
from services.messaging import PaymentMessage, Purpose

__all__ = ["Topology", "holder_party", "unique_cards"]


def holder_party(holder_id: str) -> str:
    """A cardholder as a bank customer and message payer (the card's linked account)."""
    return f"holder:{holder_id}"


def unique_cards(cardholders: Iterable[CardholderSpec]) -> list[CardholderSpec]:
    """Each card once, in the order first given (a card listed twice opens once)."""
    seen: set[str] = set()
    out = []
    for h in cardholders:
        if h.card_id not in seen:
            seen.add(h.card_id)
            out.append(h)
    return out


class Topology:
    """Which bank each party uses; :meth:`message` addresses a payment between two parties."""

    def __init__(self, config: ChainConfig, cardholders: Iterable[CardholderSpec] = (),
                 merchants: Iterable[MerchantSpec] = ()) -> None:
        self.config = config
        self.bank_ids = [f"bank-{i + 1}" for i in range(config.bank_count)]
        self.bank_of: dict[str, str] = {}
        self._merchants = 0
        for i, party in enumerate(self.parties()):
            self.bank_of[party] = self.bank_ids[i % len(self.bank_ids)]
        for holder in cardholders:
            self.add_holder(holder.holder_id)
        for merchant in merchants:
            self.add_merchant(merchant.merchant_id)

    def parties(self) -> list[str]:
        """The chain's own parties, in the order they are given banks."""
        cfg = self.config
        return [cfg.exchange_id, cfg.issuer_id, cfg.network_id, *cfg.acquirer_ids]

    def add_holder(self, holder_id: str) -> str:
        """The holder's party name; it banks at the issuer's bank. ``True`` news is not needed:
        adding a holder twice changes nothing."""
        party = holder_party(holder_id)
        self.bank_of.setdefault(party, self.bank_of[self.config.issuer_id])
        return party

    def add_merchant(self, merchant_id: str) -> bool:
        """Give a new merchant the next bank round-robin; ``False`` if it has one already."""
        party = merchant_party(merchant_id)
        if party in self.bank_of:
            return False
        self.bank_of[party] = self.bank_ids[self._merchants % len(self.bank_ids)]
        self._merchants += 1
        return True

    def message(  # noqa: PLR0917 — one positional field per message field, in their order
        self, message_id: str, purpose: Purpose, payer: str, payee: str, amount_kzt: int, ref: str = "",
    ) -> PaymentMessage:
        return PaymentMessage(message_id, purpose, payer, payee, self.bank_of[payer], self.bank_of[payee],
                              amount_kzt, ref)

    def opening_floats(self) -> list[tuple[str, int]]:
        """(party, tiyn) of every party's opening balance at its bank, in the order they are paid in."""
        cfg = self.config
        return [(party, amount) for party, amount in (
            (cfg.exchange_id, cfg.exchange_config().house_kzt_minor),
            (cfg.issuer_id, cfg.issuer_float_kzt),
            (cfg.network_id, cfg.network_float_kzt),
            *((a, cfg.acquirer_float_kzt) for a in cfg.acquirer_ids),
        ) if amount > 0]

    def card_load(self, holder: CardholderSpec) -> PaymentMessage:
        """The message that puts a card's opening tenge from the holder's account on the card."""
        return self.message(f"load:{holder.card_id}", Purpose.CARD_LOAD, holder_party(holder.holder_id),
                            self.config.issuer_id, holder.card_balance_kzt, ref=holder.card_id)
