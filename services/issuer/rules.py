"""Spending limits by KYC tier and the AML rules, per card, in O(1) amortized per authorization.

* Limits: per transaction, per day and per 30-day month (days and months are buckets of the
  clock's seconds: ``floor(now / 86,400)``; a calendar month would need a time zone the domain does
  not have). Approved amounts count; a later reversal does not give the room back (conservative).
* Velocity: more than ``aml_velocity_max_payments`` approvals of one card inside the window →
  ``65`` (exceeds frequency limit).
* Structuring: an amount "just under" the per-transaction limit (within the band) is near; after
  ``aml_structuring_max_near`` near approvals in the window, the next near one → ``59`` (suspected
  fraud). Splitting one large purchase into several just-below-limit ones is the classic pattern.
"""

from __future__ import annotations

from services.contracts import ReasonCode
from services.issuer.cards import IssuerConfig

__all__ = ["SpendTracker"]

_DAY_S = 86_400.0
_MONTH_S = 30 * _DAY_S
_BPS = 10_000


class _CardSpend:
    __slots__ = ("day", "day_kzt", "month", "month_kzt", "near", "recent")

    def __init__(self) -> None:
        self.day = -1
        self.day_kzt = 0
        self.month = -1
        self.month_kzt = 0
        # Lists, oldest first: at most a few dozen entries, and a tenth of a deque's memory per card.
        self.recent: list[float] = []  # approval times inside the velocity window
        self.near: list[float] = []  # near-limit approval times inside the structuring window


class SpendTracker:
    """What each card has spent, and the rule checks against it."""

    def __init__(self, config: IssuerConfig) -> None:
        self._config = config
        self._cards: dict[str, _CardSpend] = {}

    def check(self, card_id: str, tier: str, amount_kzt: int, now_s: float) -> ReasonCode | None:
        """The first rule that declines, or ``None``; reads only (:meth:`record` books)."""
        cfg = self._config
        per_txn, daily, monthly = cfg.tier_limits_kzt[tier]
        if amount_kzt > per_txn:
            return ReasonCode.EXCEEDS_AMOUNT_LIMIT
        spend = self._roll(card_id, now_s)
        if spend.day_kzt + amount_kzt > daily or spend.month_kzt + amount_kzt > monthly:
            return ReasonCode.EXCEEDS_AMOUNT_LIMIT
        if len(spend.recent) >= cfg.aml_velocity_max_payments:
            return ReasonCode.EXCEEDS_FREQUENCY_LIMIT
        if self._is_near(per_txn, amount_kzt) and len(spend.near) >= cfg.aml_structuring_max_near:
            return ReasonCode.SUSPECTED_FRAUD
        return None

    def record(self, card_id: str, tier: str, amount_kzt: int, now_s: float) -> None:
        spend = self._roll(card_id, now_s)
        spend.day_kzt += amount_kzt
        spend.month_kzt += amount_kzt
        spend.recent.append(now_s)
        if self._is_near(self._config.tier_limits_kzt[tier][0], amount_kzt):
            spend.near.append(now_s)

    def spent_kzt(self, card_id: str, now_s: float) -> tuple[int, int]:
        """(today, this month) for a card."""
        spend = self._roll(card_id, now_s)
        return spend.day_kzt, spend.month_kzt

    def _is_near(self, per_txn_kzt: int, amount_kzt: int) -> bool:
        return amount_kzt * _BPS >= per_txn_kzt * (_BPS - self._config.aml_structuring_band_bps)

    def _roll(self, card_id: str, now_s: float) -> _CardSpend:
        spend = self._cards.get(card_id)
        if spend is None:
            spend = self._cards[card_id] = _CardSpend()
        day = int(now_s // _DAY_S)
        if day != spend.day:
            spend.day, spend.day_kzt = day, 0
        month = int(now_s // _MONTH_S)
        if month != spend.month:
            spend.month, spend.month_kzt = month, 0
        cfg = self._config
        _expire(spend.recent, now_s - cfg.aml_velocity_window_s)
        _expire(spend.near, now_s - cfg.aml_structuring_window_s)
        return spend


def _expire(times: list[float], horizon: float) -> None:
    """Drop the times at or before ``horizon`` (they are in order, oldest first)."""
    gone = 0
    for t in times:
        if t > horizon:
            break
        gone += 1
    if gone:
        del times[:gone]
