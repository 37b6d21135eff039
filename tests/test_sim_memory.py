"""Bounded books: a run's memory does not grow with its payments, and its results do not change.

* The same scenario and seed run with every book kept (``keep_books=True``) and with bounded books
  (the default of ``ccsim run``), flushing as often as possible, write the same ``summary.json`` and
  the same rows in every table of ``results.db`` (``transfers`` compared in journal order: party,
  seq). The scenario is built to
  pass through every path that keeps or forgets state: stand-ins and advices, orphaned sales
  re-bought, a bank outage delaying deliveries, reversals, refunds, chargebacks, holds never
  presented that expire, auto top-ups, several settlement windows.
* A bounded world twice as long keeps about as much: its journals double, what stays resident does
  not; at the end only pending holds stay on the ledgers and no sale is remembered.
* A streaming ledger and an ordinary one, driven by the same random commands, give the same results,
  the same journal (through the sink), and the same invariant verdicts, clean or corrupted.
* The chain keeps a payment's ids idempotent while it may replay them, and keeps a payment whose
  message is undelivered open so a retry repairs it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_flows import holder, make_chain, req

from services.chain import InProcessChain
from services.clock import FixedClock
from services.contracts import FundingMode, ReasonCode
from services.ledger import (
    Account,
    AccountFlags,
    InMemoryLedger,
    PendingState,
    Transfer,
    TransferFlags,
    TransferResult,
)
from sim.results import ResultsWriter
from sim.runner import simulate
from sim.scenario import Scenario
from sim.scenario_load import parse_scenario
from sim.world import World

BUSY = """\
name: busy
duration_s: {duration}
warmup_s: 300
population:
  cardholders: {{count: 400, funding_modes: {{jit: 0.7, prefunded: 0.2, stablecoin: 0.1}}}}
  merchants: {{count: 40}}
arrivals: {{rate_per_s: 0.8, hourly_profile: [{flat}]}}
services:
  issuer: {{capacity: 4, service_time: {{dist: lognormal, mean_ms: 300, cv: 1.0}}}}
  exchange: {{capacity: 2, service_time: {{dist: lognormal, mean_ms: 600, cv: 1.0}}, timeout_ms: 1500, retries: 1}}
  bank:
    capacity: 4
    service_time: {{dist: lognormal, mean_ms: 80, cv: 0.7}}
    timeout_ms: 800
    retries: 1
    outages: [{{start_s: 2000, duration_s: 600}}]
network: {{deadline_ms: 1500}}
issuer: {{hold_expiry_s: 1200, orphan_policy: rebuy, top_up_below_kzt: "20000", top_up_to_kzt: "150000"}}
clearing: {{delay_min_s: 60, delay_max_s: 900, capture_rate: 0.85, reversal_rate: 0.05, expiry_check_s: 300}}
disputes: {{refund_rate: 0.1, refund_delay_s: 600, chargeback_rate: 0.05, chargeback_delay_s: 900}}
settlement: {{every_s: 1200}}
slos: ["auth_latency_ms.p99 < 100000"]
"""
WALL_CLOCK_KEYS = {"wall_s", "started_at", "payments_per_wall_s"}


def _busy(duration_s: int) -> tuple[Scenario, str]:
    text = BUSY.format(duration=duration_s, flat=", ".join(["1.0"] * 24))
    return parse_scenario(yaml.safe_load(text)), text


def _results(run_dir: Path) -> tuple[dict[str, Any], dict[str, list[tuple[Any, ...]]]]:
    """summary.json without its wall-clock fields, and every table's rows in a defined order."""
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    for key in WALL_CLOCK_KEYS:
        summary.pop(key)
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with sqlite3.connect(run_dir / "results.db") as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for name in names:
            cols = [r[1] for r in db.execute(f'PRAGMA table_info("{name}")')
                    if (name, r[1]) not in {("runs", "wall_s"), ("runs", "summary_json")}]
            order = "party, seq" if name == "transfers" else "rowid"
            columns = ", ".join(f'"{c}"' for c in cols)
            tables[name] = db.execute(f'SELECT {columns} FROM "{name}" ORDER BY {order}').fetchall()
        stored = json.loads(db.execute("SELECT summary_json FROM runs").fetchone()[0])
    assert {k: v for k, v in stored.items() if k not in WALL_CLOCK_KEYS} == summary
    return summary, tables


def test_bounded_books_give_the_same_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Flush after every closed authorization and in small slices, so that any id dropped while a
    # replay of it can still come would be booked twice (and the results would differ).
    monkeypatch.setattr("services.chain.FLUSH_EVERY", 1)
    monkeypatch.setattr("services.chain.CLEAR_SLICE", 7)
    monkeypatch.setattr("sim.world.OPEN_FLUSH_EVERY", 16)
    scenario, text = _busy(5400)
    kept = simulate(scenario, text, 1, tmp_path / "kept", keep_books=True)
    bounded = simulate(scenario, text, 1, tmp_path / "bounded", keep_books=False)
    assert kept.exit_code == bounded.exit_code == 0, kept.problems + bounded.problems
    kept_summary, kept_tables = _results(tmp_path / "kept")
    bounded_summary, bounded_tables = _results(tmp_path / "bounded")
    assert bounded_summary == kept_summary
    assert bounded_tables.keys() == kept_tables.keys()
    for name, rows in kept_tables.items():
        assert bounded_tables[name] == rows, name
    # The run went through every path that keeps or forgets state.
    payments, clearing = kept_summary["payments"], kept_summary["clearing"]
    assert payments["stand_in"] > 100 and payments["orphaned_sales"] > 100 and payments["advices_applied"] > 100
    assert min(clearing["reversals"], clearing["refunds"], clearing["chargebacks"]) > 20
    assert clearing["settlement_windows"] >= 4
    codes = {code for _, _, _, _, _, _, _, code, *_ in kept_tables["transfers"]}
    assert {"rebuy", "hold", "capture", "refund", "chargeback", "settlement_in", "merchant_payout"} <= codes
    flags = {row[8] for row in kept_tables["transfers"]}
    assert int(TransferFlags.EXPIRE_PENDING) in flags  # never-presented holds expired during the run
    assert any(row[2].startswith("topup:") for row in kept_tables["transfers"])  # auto top-ups
    delayed = [row for row in kept_tables["legs"] if row[1] == "bank" and row[2] > 500.0]
    assert delayed  # the bank outage held payments up


def _bounded_world(duration_s: int) -> World:
    scenario, _ = _busy(duration_s)
    writer = ResultsWriter(Path(":memory:"))
    world = World(scenario, 1, writer, bounded=True)
    world.run()
    world.chain.flush_journals()
    writer.close()
    return world


def _ledgers(world: World) -> list[InMemoryLedger]:
    chain = world.chain
    ledgers = [chain.exchange_ledger, chain.issuer.ledger, chain.network.ledger,
               *(a.ledger for a in chain.acquirers.values()), *(b.ledger for b in chain.banks.values())]
    assert all(isinstance(ledger, InMemoryLedger) for ledger in ledgers)
    return ledgers  # type: ignore[return-value]


def test_a_bounded_world_keeps_what_is_in_flight_not_the_history() -> None:
    short, long = _bounded_world(2700), _bounded_world(5400)
    sizes = {}
    for name, world in (("short", short), ("long", long)):
        ledgers = _ledgers(world)
        for ledger in ledgers:
            # Every payment is over or waits only for clearing: only pending holds stay.
            assert ledger.resident == sum(1 for _ in ledger.pending_transfers()), ledger.name
        chain = world.chain
        assert chain.exchange.sales() == []
        assert all(not chain.tax.statement(h.holder_id).sales for h in world.population.cardholders)
        assert chain.issuer.auths  # approvals whose capture or refund is still to come
        sizes[name] = (sum(len(ledger) for ledger in ledgers), sum(ledger.resident for ledger in ledgers),
                       len(chain.issuer.auths))
    (journal_s, resident_s, auths_s), (journal_l, resident_l, auths_l) = sizes["short"], sizes["long"]
    assert journal_l > 1.8 * journal_s  # twice the payments, twice the journal …
    assert resident_l < 1.3 * resident_s + 50  # … about the same in memory
    assert auths_l < 1.3 * auths_s + 50
    assert resident_l < journal_l / 50


# -- a streaming ledger against an ordinary one ------------------------------------------------
KEYS = ("k0", "k1", "k2")
ACCOUNTS = (("cash", AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS), ("a", AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
            ("b", AccountFlags.NONE), ("c", AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS))

Step = tuple[str, int, int, int]  # (command, a, b, amount)
STEPS = st.lists(st.tuples(
    st.sampled_from(["transfer", "hold", "post", "void", "replay", "flush", "release", "expire"]),
    st.integers(0, 3), st.integers(0, 3), st.integers(1, 500)), min_size=5, max_size=60)


class _Pair:
    """An ordinary ledger and a streaming one; live keys decide what the streaming one retains."""

    def __init__(self) -> None:
        self.clock = FixedClock(100.0)
        self.plain = InMemoryLedger(clock=self.clock, name="plain")
        self.streamed = InMemoryLedger(clock=self.clock, name="streamed")
        self.live = set(KEYS)
        self.released: list[str] = []
        self.sunk: list[Transfer] = []
        self.n = 0
        for ledger in (self.plain, self.streamed):
            ledger.create_accounts([Account(aid, "KZT", flags=flags) for aid, flags in ACCOUNTS])
            ledger.create_transfers([Transfer("k0:fund", "cash", "a", 10_000, "KZT")])
        self.streamed.stream_journal(self._sink, self._key)

    def _sink(self, seq: int, batch: list[Transfer]) -> None:
        assert seq == len(self.sunk)
        self.sunk.extend(batch)

    def _key(self, t: Transfer) -> str | None:
        key = t.id.partition(":")[0]
        return key if key in self.live else None

    def both(self, batch: list[Transfer]) -> None:
        assert self.streamed.create_transfers(batch) == self.plain.create_transfers(batch)

    def replayable(self) -> list[Transfer]:
        """Transfers the streaming ledger must still answer for: retained ones (and the outbox)."""
        return [t for t in self.plain.journal() if self.streamed.transfer(t.id) is not None]

    def step(self, command: str, a: int, b: int, amount: int) -> None:
        self.n += 1
        key = KEYS[a % len(KEYS)] if self._key_live(a) else "dead"
        debit, credit = ACCOUNTS[a][0], ACCOUNTS[b][0]
        holds = [t for t in self.plain.pending_transfers()]
        if command == "transfer":
            self.both([Transfer(f"{key}:t{self.n}", debit, credit, amount, "KZT")])
        elif command == "hold":
            self.both([Transfer(f"{key}:h{self.n}", debit, credit, amount, "KZT",
                                flags=TransferFlags.PENDING, timeout_s=10.0 * (amount % 7))])  # seconds
        elif command in ("post", "void") and holds:
            hold = holds[a % len(holds)]
            flag = TransferFlags.POST_PENDING if command == "post" else TransferFlags.VOID_PENDING
            self.both([Transfer(f"{hold.id}:{command}", "", "", amount if command == "post" else 0, "",
                                flags=flag, pending_id=hold.id)])
        elif command == "replay":
            known = self.replayable()
            if known:
                self.both([known[amount % len(known)]])
        elif command == "flush":
            self.streamed.flush_journal(self.released)
            self.released = []
        elif command == "release" and KEYS[a % len(KEYS)] in self.live:
            self.live.discard(KEYS[a % len(KEYS)])
            self.released.append(KEYS[a % len(KEYS)])
        elif command == "expire":
            self.clock.advance(1.0 * (amount % 40))  # seconds: the step's integer is not an amount here
            assert self.streamed.expire_pending() == self.plain.expire_pending()

    def _key_live(self, a: int) -> bool:
        return KEYS[a % len(KEYS)] in self.live

    def balances(self, ledger: InMemoryLedger) -> list[tuple[Any, ...]]:
        return sorted((x.id, x.debits_pending, x.debits_posted, x.credits_pending, x.credits_posted)
                      for x in ledger.accounts())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS, st.sampled_from(["none", "balance", "journal", "resolution"]))
def test_a_streaming_ledger_answers_and_checks_as_an_ordinary_one(steps: list[Step], corruption: str) -> None:
    pair = _Pair()
    for step in steps:
        pair.step(*step)
        assert pair.balances(pair.streamed) == pair.balances(pair.plain)
        assert len(pair.streamed) == len(pair.plain)
    assert pair.plain.check_invariants() == []
    assert pair.streamed.check_invariants() == []  # streams what is left
    assert pair.sunk == list(pair.plain.journal())
    # The same damage, done behind each ledger's back, is found by both checks.
    if corruption == "balance":
        for ledger in (pair.plain, pair.streamed):
            acc = ledger._accounts["b"]
            ledger._accounts["b"] = replace(acc, credits_posted=acc.credits_posted + 1)
    elif corruption == "journal":
        ghost = Transfer("ghost", "a", "b", 5, "KZT")
        for ledger in (pair.plain, pair.streamed):
            ledger._transfers["ghost"] = ghost
        pair.streamed._stream.outbox.append(ghost)  # type: ignore[union-attr]
    elif corruption == "resolution":
        resolved = [pid for pid, s in pair.plain._pending.items()
                    if s is not PendingState.PENDING and pair.streamed.transfer(pid) is not None]
        if not resolved:
            return
        hold = pair.plain.transfer(resolved[0])
        assert hold is not None
        again = Transfer("again", hold.debit_account_id, hold.credit_account_id, 0, hold.asset,
                         flags=TransferFlags.VOID_PENDING, pending_id=hold.id)
        for ledger in (pair.plain, pair.streamed):
            ledger._transfers["again"] = again
        pair.streamed._stream.outbox.append(again)  # type: ignore[union-attr]
    else:
        return
    found_plain = {v.invariant for v in pair.plain.check_invariants()}
    found_streamed = {v.invariant for v in pair.streamed.check_invariants()}
    assert found_plain and found_streamed == found_plain


# -- the chain ---------------------------------------------------------------------------------
def _bounded_chain() -> tuple[InProcessChain, list[tuple[str, int, Transfer]]]:
    chain, _ = make_chain()
    exported: list[tuple[str, int, Transfer]] = []
    chain.stream_journals(lambda party, seq, batch: exported.extend((party, seq + i, t) for i, t in enumerate(batch)))
    chain.open_cardholder(holder("c1"))
    return chain, exported


def test_a_payment_stays_idempotent_until_its_authorization_is_closed() -> None:
    chain, exported = _bounded_chain()
    response = chain.authorize(req("a1", 20_000_00))
    assert response.approved
    sale = chain.exchange.sale("a1:sale")
    assert sale is not None
    chain.flush_journals()
    journal = len(exported)
    assert chain.pay_proceeds(sale)  # a replay after its transfers were streamed: answered, not booked
    chain.flush_journals()
    assert len(exported) == journal
    chain.close_authorization("a1")
    chain.flush_journals()
    assert chain.exchange.sale("a1:sale") is None  # forgotten …
    assert chain.capture("a1", 20_000_00).ok  # … but the authorization still clears
    chain.retire("a1")
    assert chain.auth_state("a1") is None
    chain.settle("w1")
    assert {p: v for p, v in chain.check_invariants().items() if v} == {}
    assert chain.reconcile() == []
    issuer = chain.issuer.ledger
    assert isinstance(issuer, InMemoryLedger) and issuer.resident == 0
    assert [seq for party, seq, _ in exported if party == "issuer"] == list(range(len(issuer)))


def test_a_payment_with_an_undelivered_message_stays_open_until_a_retry_repairs_it() -> None:
    chain, _ = _bounded_chain()
    chain.transport.drop(1)  # the sale's proceeds leave the exchange and are lost on the way
    response = chain.authorize(req("a1", 20_000_00))
    assert response.code is ReasonCode.ISSUER_UNAVAILABLE  # sold, but the tenge did not arrive
    assert chain.undelivered() == ["a1:sale"]
    chain.retire("a1")
    chain.flush_journals()
    assert chain.exchange.sale("a1:sale") is not None  # kept: the message may be sent again
    assert chain.reconcile() != []  # the half-booked message is a break …
    assert chain.retry_undelivered() == 0
    assert chain.reconcile() == []  # … until the retry books the missing halves, once
    assert {p: v for p, v in chain.check_invariants().items() if v} == {}
    chain.retire("a1")
    assert chain.exchange.sale("a1:sale") is None


def test_books_are_kept_unless_a_caller_opts_in() -> None:
    chain, _ = make_chain()
    chain.open_cardholder(replace(holder("c1"), funding_mode=FundingMode.JIT))
    assert chain.authorize(req("a1", 20_000_00)).approved
    chain.close_authorization("a1")
    chain.retire("a1")
    assert chain.exchange.sale("a1:sale") is not None
    assert chain.auth_state("a1") is not None
    assert len(list(chain.issuer.ledger.journal())) == len(chain.issuer.ledger)  # type: ignore[arg-type]
    chain.stream_journals(lambda *_: None)
    with pytest.raises(RuntimeError):
        chain.stream_journals(lambda *_: None)
    assert isinstance(chain.exchange_ledger, InMemoryLedger) and chain.exchange_ledger.streaming
    with pytest.raises(RuntimeError):
        list(chain.exchange_ledger.journal())


def test_a_dropped_id_books_as_new() -> None:
    # A dropped id books as new: exactly why only the owner decides what may be dropped.
    pair = _Pair()
    pair.live.discard("k1")
    batch = [Transfer("k1:x", "cash", "a", 5, "KZT")]
    assert pair.streamed.create_transfers(batch) == [TransferResult.OK]
    pair.streamed.flush_journal()
    assert pair.streamed.transfer("k1:x") is None
    assert pair.streamed.create_transfers(batch) == [TransferResult.OK]
