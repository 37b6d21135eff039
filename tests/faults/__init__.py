"""Fault injection: the bank check over a killed ledger service, a fault-injecting TCP proxy, and
their tests (docs/reliability.md). ``python -m tests.faults.bank_check`` runs the long bank check."""
