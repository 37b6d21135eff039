"""Idempotency keys claimed in memory (``IdempotencyStore(local_claims=True)``, the party services):
the same semantics as the durable claim, with only a success written to the table."""

from __future__ import annotations

from pathlib import Path

from services.api.idempotency import ClaimState, IdempotencyStore


def test_local_claims_keep_the_semantics_and_write_only_successes(tmp_path: Path) -> None:
    store = IdempotencyStore(f"sqlite:///{tmp_path / 'party.db'}", local_claims=True)
    try:
        assert store.claim("k1", "h1").state is ClaimState.STARTED
        assert store.claim("k1", "h1").state is ClaimState.IN_FLIGHT  # the same request, still running
        assert store.claim("k1", "h2").state is ClaimState.MISMATCH
        assert store.count() == 0  # a claim writes nothing
        store.finish("k1", 201, b'{"ok":true}', "application/json")
        assert store.count() == 1
        replay = store.claim("k1", "h1")
        assert (replay.state, replay.status, replay.body) == (ClaimState.REPLAY, 201, b'{"ok":true}')
        assert store.claim("k1", "h2").state is ClaimState.MISMATCH

        assert store.claim("k2", "h1").state is ClaimState.STARTED
        store.release("k2")  # a rejection or a fault: the key is free, nothing was written
        assert store.count() == 1
        assert store.claim("k2", "h1").state is ClaimState.STARTED
    finally:
        store.close()


def test_a_local_store_honours_a_durable_claim_in_its_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'party.db'}"
    durable, local = IdempotencyStore(url), IdempotencyStore(url, local_claims=True)
    try:
        assert durable.claim("k", "h").state is ClaimState.STARTED  # a row in_flight, within its lease
        assert local.claim("k", "h").state is ClaimState.IN_FLIGHT
        durable.finish("k", 200, b"{}", "application/json")
        assert local.claim("k", "h").state is ClaimState.REPLAY
    finally:
        durable.close()
        local.close()
