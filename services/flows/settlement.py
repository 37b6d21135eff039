"""Settlement: at each window the network clears the acquirers' batches and nets positions; those
who owe pay the network, the network pays those it owes, and each acquirer pays its merchants
what they are owed (the merchant discount already kept).

Every payment is a message keyed by the window (``<window>:<party>:in`` / ``:out``,
``<window>:<acquirer>:<merchant>``), so settling a window again moves nothing new: each hop books
only what it lacks. Interchange earned by the issuer is booked at the issuer before its payment,
so it owes the network that much less.
"""

from __future__ import annotations

from typing import Protocol

from services.acquirer import merchant_party
from services.contracts import SettlementReport
from services.flows.topology import Topology
from services.messaging import PaymentMessage, Purpose
from services.network import WindowSummary

__all__ = ["SettlementPorts", "settle_window"]


class SettlementPorts(Protocol):
    async def close_window(self, window_id: str) -> WindowSummary:
        """The network clears every acquirer's open batch and closes the window."""
        ...

    async def book_interchange(self, window_id: str, amount_kzt: int) -> bool: ...

    async def pay(self, payer: str, msg: PaymentMessage) -> bool:
        """The payer books its half, then the message goes out; ``False``: refused or not delivered."""
        ...

    async def merchants_owed(self, acquirer_id: str) -> list[tuple[str, int]]: ...


async def settle_window(window_id: str, topology: Topology, ports: SettlementPorts) -> SettlementReport:
    """Close ``window_id`` and move its money; the report names the merchants credited."""
    cfg = topology.config
    network_id = cfg.network_id
    summary = await ports.close_window(window_id)
    interchange_kzt = summary.interchange_kzt.get(cfg.issuer_id, 0)
    if interchange_kzt > 0:
        await ports.book_interchange(window_id, interchange_kzt)
    for party, net in sorted(summary.net_kzt.items()):
        if net < 0 and party != network_id:
            await ports.pay(party, topology.message(f"{window_id}:{party}:in", Purpose.SETTLEMENT_IN, party,
                                                    network_id, -net, ref=window_id))
    for party, net in sorted(summary.net_kzt.items()):
        if net > 0 and party != network_id:
            await ports.pay(network_id, topology.message(f"{window_id}:{party}:out", Purpose.SETTLEMENT_OUT,
                                                         network_id, party, net, ref=window_id))
    credits: dict[str, int] = {}
    for acquirer_id in cfg.acquirer_ids:
        for merchant_id, owed_kzt in await ports.merchants_owed(acquirer_id):
            msg = topology.message(f"{window_id}:{acquirer_id}:{merchant_id}", Purpose.MERCHANT_PAYOUT,
                                   acquirer_id, merchant_party(merchant_id), owed_kzt, ref=merchant_id)
            if await ports.pay(acquirer_id, msg):
                credits[merchant_id] = credits.get(merchant_id, 0) + owed_kzt
    return SettlementReport(window_id, dict(summary.net_kzt), credits, summary.presentments)
