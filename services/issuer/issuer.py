"""The card issuer: its books, the authorization pipeline and everything after authorization.

:class:`Issuer` is the issuer's books (:mod:`services.issuer.books`) with its steps:
authorization (:mod:`services.issuer.authorization`), clearing (:mod:`services.issuer.clearing`)
and the stand-in advice (:mod:`services.issuer.advice`).
"""

from __future__ import annotations

from services.issuer.advice import AdviceSteps
from services.issuer.authorization import AuthorizationSteps
from services.issuer.books import EQUITY, EXPOSURE, FUNDING, INTERCHANGE, SETTLEMENT
from services.issuer.clearing import ClearingCode

__all__ = ["EQUITY", "EXPOSURE", "FUNDING", "INTERCHANGE", "SETTLEMENT", "ClearingCode", "Issuer"]


class Issuer(AuthorizationSteps, AdviceSteps):
    """One card issuer's books, cards and authorizations, with every step. Not thread-safe (one driver)."""
