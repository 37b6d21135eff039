"""Hostile requests sent to live party services under load (issue 15, F1–F6), by the fault harnesses.

Each probe is what the independent probe of issue 15 tried, against real processes while payments
flow and services are being killed and restarted; each must get its 4xx (never a 5xx), and none
may move money (the harness checks the books at the end of the run):

- F2, no authentication: a price set unsigned, by the POS's role (403), with the body changed
  after signing (401); an advice forged by the POS; a merchant payout posted into a bank's inbox
  by a service that is not the payer's; a signed request sent twice; another ``Host`` name.
- F1, a refusal read as unavailability: a payment the issuer declines, then the same id with
  another body under another key: refused at the network, never approved.
- F3, checks that stall sales: the exchange's invariants read under load answer, clean.
- F4, disconnects mid-body: ten sockets that send half a body and close; the bank still answers
  ``/healthz`` at once.
- F6, spam: a burst on a rate-limited route (``/metrics``) is answered 429 with ``Retry-After``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from services.api.auth import Credentials, SigningAuth, sign_request
from services.api.parties import PartySeed
from services.contracts import FundingMode

__all__ = ["Probe", "run_probes"]

BURST = 400  # /metrics is limited to 10/s per caller (services/api/rate_limit.py)
BURST_SENDERS = 32


@dataclass(frozen=True)
class Probe:
    issue: str  # F1 … F6
    name: str
    status: int  # 0: no answer
    expected: tuple[int, ...]
    ok: bool
    detail: str = ""


def _send(client: httpx.Client, request: httpx.Request) -> httpx.Response | None:
    try:
        return client.send(request)
    except httpx.HTTPError:
        return None


def _forged(request: httpx.Request, body: bytes) -> httpx.Request:
    """``request`` (signed) with another body: what a man in the middle would send."""
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    return httpx.Request(request.method, request.url, headers=headers, content=body)


def _disconnects(url: str, n: int = 10) -> None:
    parts = urlsplit(url)
    for _ in range(n):
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=5) as s:
            s.sendall(b"POST /v1/inbox/bank-1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"a\":")


def run_probes(urls: dict[str, str], credentials: Credentials, seed: PartySeed, *, tag: str) -> list[Probe]:
    """Every probe once (``tag`` makes this round's ids its own); what each got."""
    out: list[Probe] = []
    as_ = {name: SigningAuth(credentials.principal(name)) for name in ("pos", "market", "operator", "exchange")}
    exchange, issuer, network, bank = urls["exchange"], urls["issuer"], urls["network"], urls["bank"]

    def check(issue: str, name: str, expected: tuple[int, ...], call: Callable[[], httpx.Response | None],
              also: Callable[[httpx.Response], str] = lambda _r: "") -> httpx.Response | None:
        try:
            r = call()
        except httpx.HTTPError as exc:  # no answer in time on a busy machine: a failed probe, not a crash
            out.append(Probe(issue, name, 0, expected, False, f"no answer: {exc!r}"))
            return None
        status = 0 if r is None else r.status_code
        problem = "" if r is None else also(r)
        out.append(Probe(issue, name, status, expected, status in expected and not problem,
                         problem or ("" if r is None else r.text[:300])))
        return r

    price = {"asset": "BTC", "price_kzt": "450000000000000"}
    card = next(h.card_id for h in seed.cardholders if h.funding_mode is FundingMode.PREFUNDED)
    merchant = seed.merchants[0].merchant_id
    with httpx.Client(timeout=30.0) as c:
        check("F2", "unsigned price", (401,), lambda: c.post(f"{exchange}/v1/prices", json=price))
        check("F2", "price signed by the POS role", (403,),
              lambda: c.post(f"{exchange}/v1/prices", json=price, auth=as_["pos"]))
        signed = c.build_request("POST", f"{exchange}/v1/prices", json={"asset": "BTC", "price_kzt": "45000000"})
        sign_request(signed, credentials.principal("market"))
        check("F2", "price body changed after signing", (401,),
              lambda: _send(c, _forged(signed, b'{"asset":"BTC","price_kzt":"450000000000000"}')))
        advice = {"request": {"auth_id": f"probe-{tag}-adv", "card_id": card, "merchant_id": merchant,
                              "acquirer_id": seed.merchants[0].acquirer_id, "amount": "9000000.00"}}
        check("F2", "advice forged by the POS", (403,), lambda: c.post(
            f"{issuer}/v1/advices", json=advice, auth=as_["pos"], headers={"Idempotency-Key": f"probe-{tag}-adv"}))
        payout = {"id": f"probe-{tag}-payout", "purpose": "merchant_payout", "payer": "acq-1",
                  "payee": f"merchant:{merchant}", "payer_bank": "bank-1", "payee_bank": "bank-1",
                  "amount": "1000000.00"}
        check("F2", "merchant payout posted by the exchange", (403,), lambda: c.post(
            f"{bank}/v1/inbox/bank-1", json=payout, auth=as_["exchange"],
            headers={"Idempotency-Key": f"probe-{tag}-payout"}))
        once = c.build_request("GET", f"{exchange}/v1/ledger/invariants")
        sign_request(once, credentials.principal("operator"))
        _send(c, once)
        check("F2", "a signed request sent twice", (401,), lambda: _send(c, _forged(once, b"")))
        check("F2", "another Host name", (400,), lambda: c.get(f"{network}/v1/ledger/halves", auth=as_["operator"],
                                                                headers={"Host": "evil.example"}))
        first = {"id": f"probe-{tag}-f1", "card_id": card, "merchant_id": merchant, "amount": "90000000.00",
                 "category": "food"}
        check("F1", "a payment the issuer declines", (200,), lambda: c.post(
            f"{network}/v1/payments", json=first, auth=as_["pos"], headers={"Idempotency-Key": f"probe-{tag}-k1"},
            timeout=60.0), also=lambda r: "approved" if r.json().get("approved") else "")

        def never_approved(r: httpx.Response) -> str:
            return "approved on a reused id" if r.status_code == 200 and r.json().get("approved") else ""

        check("F1", "the same id with another body and key", (409, 422), lambda: c.post(
            f"{network}/v1/payments", json={**first, "category": "retail"}, auth=as_["pos"],
            headers={"Idempotency-Key": f"probe-{tag}-k2"}, timeout=60.0), also=never_approved)
        check("F3", "the exchange's invariants under load", (200,), lambda: c.get(
            f"{exchange}/v1/ledger/invariants", auth=as_["operator"], timeout=60.0),
              also=lambda r: "" if r.json().get("ok") else f"violations: {r.text[:300]}")
        try:
            _disconnects(bank)
        except OSError as exc:
            out.append(Probe("F4", "ten mid-body disconnects", 0, (200,), False, f"could not connect: {exc!r}"))
        # Answered at all (within the client's timeout) is the check: how soon depends on the machine.
        check("F4", "healthz after ten mid-body disconnects", (200,), lambda: c.get(f"{bank}/healthz"))
        # The burst arrives at once (BURST_SENDERS connections): sent one after another, each answer
        # slowed by a busy machine would let the bucket refill, and the limit would never be reached.
        # Each sender has a client of its own: one pool shared by 32 threads handed a connection the
        # server had closed to a second thread ("Bad file descriptor").
        senders = threading.local()

        def metrics(_: int) -> httpx.Response:
            if not hasattr(senders, "client"):
                senders.client = httpx.Client(timeout=30.0)
                opened.append(senders.client)
            return senders.client.get(f"{network}/metrics")

        opened: list[httpx.Client] = []
        try:
            with ThreadPoolExecutor(BURST_SENDERS) as pool:
                answers = list(pool.map(metrics, range(BURST)))
        except httpx.HTTPError as exc:
            out.append(Probe("F6", "a burst of /metrics", 0, (429,), False, f"no answer: {exc!r}"))
            return out
        finally:
            for client in opened:
                client.close()
        limited = next((r for r in answers if r.status_code == 429), None)
        out.append(Probe("F6", "a burst of /metrics", limited.status_code if limited else answers[-1].status_code,
                         (429,), limited is not None and int(limited.headers.get("retry-after", "0")) >= 1
                         and not any(r.status_code >= 500 for r in answers)))
    return out
