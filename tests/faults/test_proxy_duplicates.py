"""Duplicated requests through the proxy against the ledger service: answered from the idempotency
store, never applied twice (issue 8, "a duplicated-request proxy run").

The service runs under uvicorn; the proxy in front of it delivers every POST twice. Three phases:
the copy after the original, the copy before it (so the client hears the replay), and four
concurrent clients with half the requests duplicated and some answers lost on the way back (the
client retries with the same key). Afterwards the journal holds each acknowledged transfer once,
the ledger never even evaluated a second delivery (its ``exists`` counter is 0: every repeat was
answered by the idempotency store), and the invariants hold. Figures go to
``tests/artifacts/proxy_duplicates_<db>.json``.
"""

from __future__ import annotations

import json
import random
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import require_postgres

from services.ledger.sql import SqlLedger
from services.money import format_amount

from .bank_check import ARTIFACTS, KZT, BankCheckConfig, setup_accounts
from .service import ServiceProcess
from .tcp_proxy import Faults, ProxyThread, TcpProxy

CFG = BankCheckConfig(accounts=6, funding_minor=10_000_000)
WALLETS = [f"acct-{i:02d}" for i in range(CFG.accounts)]


class Client:
    """Sends transfers through the proxy, retrying with the same key until one is answered."""

    def __init__(self, base_url: str, name: str, seed: int) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10.0)
        self.name = name
        self.rng = random.Random(seed)
        self.acked: dict[str, tuple[str, str, int]] = {}
        self.answers: list[tuple[int, bool]] = []  # (status, replayed) of the answer finally heard
        self.lost = 0  # answers that never arrived (the request was retried)

    def transfer(self, n: int) -> None:
        debit, credit = self.rng.sample(WALLETS, 2)
        amount = self.rng.randint(1, 100_000)  # never overdraws: every transfer is accepted
        tid = f"{self.name}-{n}"
        body = {"transfers": [{"id": tid, "debit_account_id": debit, "credit_account_id": credit,
                               "amount": format_amount(amount, KZT), "asset": "KZT"}]}
        for _ in range(50):
            try:
                r = self.http.post("/v1/transfers", json=body, headers={"Idempotency-Key": f"k-{tid}"})
            except httpx.TransportError:
                self.lost += 1
                continue
            assert r.status_code in (200, 201), r.text
            self.answers.append((r.status_code, r.headers.get("Idempotent-Replayed") == "true"))
            self.acked[tid] = (debit, credit, amount)
            return
        raise AssertionError(f"{tid}: no answer in 50 attempts")


def _ledger_results(base_url: str) -> tuple[int, int]:
    """How many transfers the ledger ran (``ok``) and found already done (``exists``)."""
    text = httpx.get(f"{base_url}/metrics").text
    counts: dict[str, int] = {}
    for m in re.finditer(r'^ccsim_ledger_transfer_results_total\{([^}]*)\} (\S+)$', text, re.M):
        result = re.search(r'result="([a-z_]+)"', m[1])
        if result:
            counts[result[1]] = int(float(m[2]))
    return counts.get("ok", 0), counts.get("exists", 0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_duplicated_requests_have_one_effect(backend: str, tmp_path: Path) -> None:
    prefix = f"dup_{uuid.uuid4().hex[:10]}_" if backend == "postgresql" else ""
    url = require_postgres() if backend == "postgresql" else f"sqlite:///{tmp_path / 'bank.db'}"
    env = {"CCSIM_PARTY": "bank", "CCSIM_DATABASE_URL": url, "CCSIM_TABLE_PREFIX": prefix}
    clients: list[Client] = []
    proxy = TcpProxy("127.0.0.1", 1)  # replaced once the service has its port
    try:
        with ServiceProcess(env, tmp_path / "service.log") as service:
            service.start()
            setup_accounts(service.base_url, CFG)
            proxy = TcpProxy("127.0.0.1", service.port, Faults(duplicate_p=1.0), seed=11)
            with ProxyThread(proxy) as runner:
                base = f"http://127.0.0.1:{runner.port}"
                after = Client(base, "after", 1)
                for n in range(25):
                    after.transfer(n)
                runner.settle()  # the last copy, sent after its answer was relayed, is done too
                dup_after = list(proxy.stats.duplicates)
                proxy.faults = Faults(duplicate_p=1.0, duplicate_first=True)
                first = Client(base, "first", 2)
                for n in range(25):
                    first.transfer(n)
                runner.settle()
                dup_first = proxy.stats.duplicates[len(dup_after):]
                proxy.faults = Faults(duplicate_p=0.5, drop_p=0.15, drop_points=("response_lost",))
                mixed = [Client(base, f"mixed{i}", 10 + i) for i in range(4)]
                threads = [threading.Thread(target=lambda c=c: [c.transfer(n) for n in range(20)]) for c in mixed]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                runner.settle()
                clients = [after, first, *mixed]
            ok_count, exists_count = _ledger_results(service.base_url)
    finally:
        for c in clients:
            c.http.close()
    # The copy after the original: replayed from the store. The copy first: the client hears the replay.
    assert [(d.status, d.replayed) for d in dup_after] == [(201, True)] * 25
    assert after.answers == [(201, False)] * 25
    assert [(d.status, d.replayed) for d in dup_first] == [(201, False)] * 25
    assert first.answers == [(201, True)] * 25
    dup_posts = [d for d in proxy.stats.duplicates if d.method == "POST"]
    mixed_lost = sum(c.lost for c in clients)
    assert mixed_lost > 0 and len(dup_posts) > 50
    acked = {tid: move for c in clients for tid, move in c.acked.items()}
    assert len(acked) == 130
    with SqlLedger(url, table_prefix=prefix) as ledger:
        journal = [t for t in ledger.journal() if not t.id.startswith("fund-")]
        final = {a.id: a.credit_balance for a in ledger.accounts() if a.id in WALLETS}
        violations = ledger.check_invariants()
        if prefix:
            ledger.drop_tables()
            from services.api.idempotency import IdempotencyStore  # noqa: PLC0415
            keys = IdempotencyStore(url, table_prefix=prefix)
            keys.drop_table()
            keys.close()
    expected = dict.fromkeys(WALLETS, CFG.funding_minor)
    for debit, credit, amount in acked.values():
        expected[debit] -= amount
        expected[credit] += amount
    replayed_dups = sum(d.replayed for d in dup_posts)
    replayed_answers = sum(r for c in clients for _, r in c.answers)  # the client heard a replay
    summary: dict[str, Any] = {
        "database": backend, "transfers_acknowledged": len(acked), "journal_transfers": len(journal),
        "duplicates_delivered": len(dup_posts), "repeat_deliveries": len(dup_posts) + mixed_lost,
        "duplicates_replayed_by_store": replayed_dups,
        "client_answers_replayed": replayed_answers, "answers_lost_and_retried": mixed_lost,
        "ledger_results_ok": ok_count, "ledger_results_exists": exists_count,
        "double_effects": len(journal) - len(acked), "invariant_violations": len(violations),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"proxy_duplicates_{backend}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(summary)
    assert sorted(t.id for t in journal) == sorted(acked)  # each acknowledged transfer once, nothing else
    assert final == expected
    assert violations == []
    # Every second delivery was answered by the idempotency store: the ledger ran each transfer once
    # (the funding batch's 6 and the 130) and never saw a repeat.
    assert (ok_count, exists_count) == (CFG.accounts + 130, 0)
