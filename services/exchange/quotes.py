"""The exchange's quotes and their time-to-live: one rule for both rails.

A card sale (:class:`~services.exchange.exchange.SaleQuote`) and a direct payment
(:class:`~services.exchange.direct.PaymentQuote`) are priced at a moment of the clock and are firm
until ``expires_at_s``; executing either after that is refused with ``quote_expired``. A quote asks
for its own time-to-live (the issuer's ``quote_ttl_s``, the direct rail's), or gets the exchange's.
"""

from __future__ import annotations

__all__ = ["expired", "expires_at"]


def expires_at(now_s: float, ttl_s: float, default_ttl_s: float) -> float:
    """When a quote made at ``now_s`` stops being firm: ``ttl_s`` if given (> 0), else the default."""
    return now_s + (ttl_s if ttl_s > 0 else default_ttl_s)


def expired(expires_at_s: float, now_s: float) -> bool:
    """A quote presented at ``now_s`` is refused after its expiry (at it, it still stands)."""
    return now_s > expires_at_s
