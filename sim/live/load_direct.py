"""``ccsim load``'s direct payments: a share of the payments to CryptoCity zone merchants go to the
exchange's direct rail instead of the card network (docs/model-direct-rail.md).

For each such payment the POS (played by the load generator, signed as the ``pos`` principal) asks
the exchange to quote the invoice (``POST /v1/direct/quotes``), then accepts the quote at once
(``POST /v1/direct/payments``): the holder's confirmation on the phone is not simulated live — the
load measures the exchange's two calls. A decline the rail's fallback policy sends to the card
(:func:`services.flows.direct.falls_back`: the exchange unavailable, every asset halted) is then sent
to the network as the card payment it would have been (``POST /v1/payments``, the planned auth id),
through :func:`services.flows.direct.fall_back` itself.

Which payments go direct follows the simulation: the rng stream ``direct.choice`` for each payment to
a zone merchant, then ``direct.asset`` (crypto by the holder's priority, or the tenge stablecoin),
as :class:`sim.components.direct.DirectPath` draws them, so ``ccsim load`` and ``ccsim run`` of one
scenario and seed send the same payments direct (with the scenario's own ``direct.share``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from services.contracts import AuthorizationResponse, ReasonCode
from services.exchange import Invoice
from services.flows.direct import DirectDecline, DirectOutcome, FallbackPolicy, fall_back

__all__ = ["DIRECT", "DirectAnswer", "DirectTarget", "decline_of_answer", "invoice_body", "send_direct"]

DIRECT: Final = "direct"  # PlannedPayment.rail of a direct payment


@dataclass(frozen=True)
class DirectTarget:
    """Where direct payments go: the exchange's base URL, and the network's POS endpoint for the
    card a declined payment falls back to."""

    exchange_url: str
    card_url: str
    fallback: FallbackPolicy = FallbackPolicy.FAIL


def invoice_body(invoice: Invoice) -> dict[str, Any]:
    from services.money import DEFAULT_ASSETS, format_amount  # noqa: PLC0415 — KZT's formatting only

    return {"invoice_id": invoice.invoice_id, "holder_id": invoice.holder_id, "merchant_id": invoice.merchant_id,
            "amount": format_amount(invoice.amount_kzt, DEFAULT_ASSETS[0]),
            "asset_priority": list(invoice.asset_priority)}


def decline_of_answer(status: int, body: Any) -> DirectDecline:
    """The decline an exchange's refusal stands for: its reason (a 422), ``refused`` for what it does
    not know (a 404), ``exchange_unavailable`` for no answer, a 5xx or a 429."""
    if status == 0 or status >= 500 or status == 429:
        return DirectDecline.EXCHANGE_UNAVAILABLE
    if status == 404:
        return DirectDecline.REFUSED
    errors = body.get("errors") if isinstance(body, dict) else None
    reason = errors[0].get("reason") if isinstance(errors, list) and errors and isinstance(errors[0], dict) else ""
    try:
        return DirectDecline(str(reason))
    except ValueError:
        return DirectDecline.REFUSED


Post = Any  # (url, body, key) -> (status, json body); status 0: no answer


class _PosCard:
    """The card port of the fallback: the planned card payment, sent to the network."""

    def __init__(self, post: Post, url: str, body: dict[str, Any], key: str) -> None:
        self.post, self.url, self.body, self.key = post, url, body, key
        self.status = 0

    async def pay_by_card(self, invoice: Invoice) -> AuthorizationResponse:
        self.status, answer = await self.post(self.url, self.body, self.key)
        if self.status == 0:
            raise aiohttp.ClientConnectionError("the network did not answer the card payment")
        code = answer.get("code") if isinstance(answer, dict) and 200 <= self.status < 300 else None
        try:
            return AuthorizationResponse(str(self.body["id"]), ReasonCode(str(code)))
        except ValueError:
            return AuthorizationResponse(str(self.body["id"]), ReasonCode.INVALID_TRANSACTION)


@dataclass(frozen=True, slots=True)
class DirectAnswer:
    """What became of one direct payment at the POS."""

    outcome: str  # 'paid' | 'declined' | 'card' (fell back to the card)
    reason: str  # '00' when paid; the decline; the card's ISO 8583 code after a fallback
    approved: bool
    status: int  # the last HTTP status (0: no answer)


async def send_direct(session: aiohttp.ClientSession, target: DirectTarget, invoice: Invoice,
                      card_body: dict[str, Any], card_key: str, *, sign: Any) -> DirectAnswer:
    """Quote, accept and, when the policy says so, fall back to the card. A card payment that gets
    no answer raises (the sample counts it unanswered, as any card payment)."""

    async def post(url: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Idempotency-Key": key, "Content-Type": "application/json",
                   **(sign(url, raw, key) if sign is not None else {})}
        try:
            async with session.post(url, data=raw, headers=headers) as resp:
                content = await resp.read()
                try:
                    return resp.status, json.loads(content) if content else {}
                except ValueError:
                    return resp.status, {}
        except (TimeoutError, aiohttp.ClientError):
            return 0, {}

    base = target.exchange_url.rstrip("/")
    status, answer = await post(f"{base}/v1/direct/quotes", invoice_body(invoice), f"q-{invoice.invoice_id}")
    if status == 201:
        status, answer = await post(f"{base}/v1/direct/payments", {"invoice_id": invoice.invoice_id},
                                    f"p-{invoice.invoice_id}")
    if status in (200, 201):
        return DirectAnswer("paid", "00", True, status)
    decline = decline_of_answer(status, answer)
    card = _PosCard(post, target.card_url, card_body, card_key)
    outcome = await fall_back(DirectOutcome(invoice.invoice_id, decline), invoice, target.fallback, card)
    if outcome.card is not None:
        return DirectAnswer("card", outcome.card.code.value, outcome.card.approved, card.status)
    return DirectAnswer("declined", decline.value, False, status)
