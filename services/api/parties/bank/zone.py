"""The last hop of a conversion's tenge: from a zone merchant's bank to the merchant's own books.

On the card rail a merchant keeps no books in the model, so the bank service ends a payout at the
merchant's bank (``merchant:`` is answered in-process). A CryptoCity zone merchant keeps books (its
wallets at the exchange, its conversions); they live in the exchange service
(``services.api.parties.exchange.direct_service``), so the merchant's bank passes a ``conversion``
message on to ``POST {exchange}/v1/inbox/merchant:<id>`` there, signed as the bank service and
keyed by the message id like every hop. A payout of the card rail to the same merchant still ends
at its bank.
"""

from __future__ import annotations

from services.acquirer import merchant_party
from services.api.parties.base import PartyContext
from services.api.transport_http import idempotency_key, message_to_json
from services.messaging import Handler, PaymentMessage, Purpose

__all__ = ["zone_merchant_receivers"]


def zone_merchant_receivers(ctx: PartyContext) -> dict[str, Handler]:
    """The in-process receiver of each zone merchant of the seed (``merchant:<id>``)."""
    return {merchant_party(m.merchant_id): _receiver(ctx, merchant_party(m.merchant_id))
            for m in ctx.seed.merchants if m.cryptocity}


def _receiver(ctx: PartyContext, receiver: str) -> Handler:
    def receive(msg: PaymentMessage) -> bool:
        if msg.purpose is not Purpose.CONVERSION:
            return True  # a card payout: the merchant keeps no books of it
        answer = ctx.transport.post(ctx.url("exchange"), f"/v1/inbox/{receiver}", message_to_json(msg, ctx.assets),
                                    key=idempotency_key("msg", receiver, msg.id))
        return answer is not None and answer.status_code == 200

    return receive
