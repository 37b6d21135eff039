"""The bank check's checker must catch what it claims to: each broken history here is reported."""

from __future__ import annotations

from .history import JournalEntry, Op, check_history

ACCOUNTS = ["a", "b", "c"]
FUND = 100


def good() -> tuple[list[Op], list[JournalEntry], dict[str, int]]:
    ops = [
        Op(0, "transfer", 0.0, 1.0, "ok", transfer_id="t1", debit="a", credit="b", amount_minor=30),
        Op(1, "transfer", 0.5, 1.5, "fail", status=422, transfer_id="t2", debit="c", credit="a",
           amount_minor=500),
        Op(2, "transfer", 1.2, 9.0, "unknown", attempts=7, transfer_id="t3", debit="b", credit="c",
           amount_minor=10),
        Op(3, "read", 2.0, 2.1, "ok", balances_minor=(70, 130, 100)),  # t1 in, t3 not yet
        Op(3, "read", 3.0, 3.1, "ok", balances_minor=(70, 120, 110)),  # t3 in
        Op(4, "read", 3.0, 3.1, "fail", detail="ConnectError"),
    ]
    journal = [JournalEntry("t1", "a", "b", 30), JournalEntry("t3", "b", "c", 10)]
    return ops, journal, {"a": 70, "b": 120, "c": 110}


def test_a_sound_history_passes() -> None:
    ops, journal, final = good()
    report = check_history(ops, ACCOUNTS, FUND, journal, final)
    assert report.problems == []
    assert (report.transfers_ok, report.transfers_rejected, report.transfers_unknown) == (1, 1, 1)
    assert (report.reads_checked, report.reads_failed, report.unknown_applied) == (2, 1, 1)
    assert report.transfers_found_done == 0


def test_a_retry_answered_exists_counts_as_found_done() -> None:
    ops, journal, final = good()
    ops[0] = Op(0, "transfer", 0.0, 1.0, "ok", attempts=2, status=200, transfer_id="t1", debit="a",
                credit="b", amount_minor=30)
    report = check_history(ops, ACCOUNTS, FUND, journal, final)
    assert report.ok and (report.transfers_retried, report.transfers_found_done) == (1, 1)


def test_each_kind_of_damage_is_reported() -> None:
    ops, journal, final = good()
    cases = {
        "wrong_totals": ([*ops, Op(5, "read", 4.0, 4.1, "ok", balances_minor=(70, 120, 111))], journal, final),
        "negatives": ([*ops, Op(5, "read", 0.1, 0.2, "ok", balances_minor=(-1, 201, 100))], journal, final),
        "stale_or_impossible_reads": (  # t1 was acknowledged at 1.0; a read from 2.0 must show it
            [*ops, Op(5, "read", 2.0, 2.1, "ok", balances_minor=(100, 100, 100))], journal, final),
        "missing_acknowledged": (ops, journal[1:], {"a": 100, "b": 90, "c": 110}),
        "rejected_but_applied": (ops, [*journal, JournalEntry("t2", "c", "a", 500)],
                                 {"a": 570, "b": 120, "c": -390}),
        "duplicate_effects": (ops, [*journal, JournalEntry("t1", "a", "b", 30)], {"a": 40, "b": 150, "c": 110}),
        "foreign_transfers": (ops, [*journal, JournalEntry("x9", "a", "c", 5)], {"a": 65, "b": 120, "c": 115}),
        "final_balance_mismatches": (ops, journal, {"a": 70, "b": 121, "c": 109}),
        "unexpected_answers": ([*ops, Op(6, "transfer", 5.0, 5.1, "fail", status=409, transfer_id="t4",
                                         debit="a", credit="b", amount_minor=1)], journal, final),
    }
    for counter, (o, j, f) in cases.items():
        report = check_history(o, ACCOUNTS, FUND, j, f)
        assert getattr(report, counter) > 0, (counter, report)
        assert not report.ok and report.problems, counter
