"""Bounded books for a long simulation: the chain's journals leave memory as they are written, and
a payment's state is forgotten once nothing in the simulation can touch it.

By default :class:`~services.chain.InProcessChain` keeps everything: every party's whole journal,
every authorization, sale and tax realization (tests and tools read them back). A simulation of a
million payments opts in (:meth:`InProcessChain.stream_journals`): each party's ledger then streams
its journal in batches (:mod:`services.ledger.stream`), the checks run per batch, and the
simulation tells the chain when a payment is over, in two steps:

1. :meth:`InProcessChain.close_authorization` — the authorization leg is over: the POS has its
   answer, the issuer has finished, any proceeds or re-buy that waited for the banks have been
   delivered. Its sales (exchange, tax realizations, the issuer's sale → card map, orphan marks) and
   the network's stand-in decision are forgotten, and the ledgers may drop its transfers.
2. :meth:`InProcessChain.retire` — nothing will touch the authorization again (captured with no
   refund to come, reversed, refunded, charged back, declined, or never to be presented): the
   issuer forgets it too.

**Why dropping a transfer is safe.** A dropped id is no longer idempotent: booked again, it would be
booked twice. So a transfer is kept while its id may still be produced, and the ids the simulation
can produce are these:

* a payment's ids all begin with its authorization id (``a17:hold``, ``a17:sale:BTC:sell``,
  ``a17:sale:out``, ``a17:hold:post``, ``a17:refund:1:present``, ``a17:sale:rebuy:pay``…), and every
  command that books them is guarded by state the chain or a party keeps for as long as the command
  can come (the issuer's authorization state, the exchange's sale record, the network's stand-in
  record, the chain's orphan set). The one replay that reaches the ledgers is a sale's proceeds
  message sent again (an orphaned sale, or a delivery that waited for the banks): the banks and the
  issuer answer it from their journals. So a payment's ids are *live* — retained under the
  authorization id — from the chain's first command for it until step 1; every command of the
  authorization leg marks it live. After step 1 its commands (capture, reversal, refunds,
  chargebacks, hold expiry) each write new ids once, guarded by the issuer's authorization state,
  so their transfers are dropped as soon as they are streamed. A payment whose proceeds message is
  still undelivered (a retry could send it again) is never closed.
* settlement windows (``w0001:…``): :meth:`InProcessChain.settle` returns the first report for a
  window it has settled and books nothing; opening balances and card loads (``open:…``,
  ``load:…``, ``deposit:…``, ``fund:…``): each party and card is opened once; auto top-ups
  (``topup:{card}:{n}``): a new number per top-up, paid in the same command. None is ever replayed.

Pending holds are always kept (they can still be posted, voided or expire), whatever their key.

**Reconciliation.** Every streamed transfer's half (:mod:`services.reconciliation`) goes into a set
of open messages; a message booked on every side it needs, for one amount, is done and leaves (an
idempotent replay books nothing, so no further half can come for it). What is left at the end is
reconciled exactly as the whole journals would be: the same rules, the same in-transit presentments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain as chained

from services.contracts import ReconciliationBreak
from services.ledger import Transfer
from services.reconciliation import EXPECTED_SIDES, Half, reconcile

__all__ = ["FLUSH_EVERY", "BoundedBooks", "JournalExport", "OpenMessages"]

JournalExport = Callable[[str, int, list[Transfer]], None]
"""Receives each party's journal in commit order: (party, sequence number of the first, transfers)."""

FLUSH_EVERY = 2_048  # closed authorizations between two flushes of every journal


class OpenMessages:
    """Halves of messages not yet booked on every side (see the module docstring)."""

    __slots__ = ("_groups", "_touched")

    def __init__(self) -> None:
        self._groups: dict[str, list[Half]] = {}
        self._touched: dict[str, None] = {}

    def feed(self, halves: Iterable[Half]) -> None:
        groups, touched = self._groups, self._touched
        for half in halves:
            mid = half.message_id
            group = groups.get(mid)
            if group is None:
                groups[mid] = [half]
            else:
                group.append(half)
            touched[mid] = None

    def settle(self) -> None:
        """Let go of the messages fed since the last call that are now complete."""
        groups = self._groups
        for mid in self._touched:
            group = groups[mid]
            expected = EXPECTED_SIDES.get(group[0].purpose, frozenset())
            if len(group) >= len(expected) and not reconcile(group):
                del groups[mid]
        self._touched = {}

    def breaks(self, in_transit: Iterable[str]) -> list[ReconciliationBreak]:
        """The breaks among the messages still open (:func:`services.reconciliation.reconcile`)."""
        return reconcile(chained.from_iterable(self._groups.values()), set(in_transit))

    def __len__(self) -> int:
        return len(self._groups)


class BoundedBooks:
    """The chain's side of a bounded run: live authorizations, keys to release at the next flush,
    the sales of each live authorization, and the open messages."""

    __slots__ = ("closed", "export", "live", "messages", "released", "sales_of")

    def __init__(self, export: JournalExport) -> None:
        self.export = export
        self.live: set[str] = set()  # authorization ids whose transfers are retained
        self.released: list[str] = []  # no longer live since the last flush
        self.sales_of: dict[str, list[str]] = {}  # authorization id -> sale ids ordered for it
        self.messages = OpenMessages()
        self.closed = 0  # authorizations closed since the last flush

    def retention_key(self, t: Transfer) -> str | None:
        """The live authorization a transfer belongs to (its id's first segment), if any."""
        key = t.id.partition(":")[0]
        return key if key in self.live else None

    def touch(self, auth_id: str) -> None:
        if auth_id:
            self.live.add(auth_id)

    def ordered(self, auth_id: str, sale_id: str) -> None:
        if auth_id:
            sales = self.sales_of.get(auth_id)
            if sales is None:
                self.sales_of[auth_id] = [sale_id]
            elif sale_id not in sales:
                sales.append(sale_id)

    def take_released(self) -> list[str]:
        released, self.released = self.released, []
        self.closed = 0
        return released

    def sink(self, party: str, halves: Callable[[str, Iterable[Transfer]], Iterator[Half]]) -> Callable[
            [int, list[Transfer]], None]:
        """A ledger's journal sink: the batch goes to the export, its halves to the open messages."""
        export, messages = self.export, self.messages

        def receive(seq: int, batch: list[Transfer]) -> None:
            export(party, seq, batch)
            messages.feed(halves(party, batch))

        return receive
