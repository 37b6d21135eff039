"""``ccsim load``: an open-loop load generator that plays the POS terminals against ``ccsim serve``.

Open loop (design §4): every payment has a scheduled send time drawn from the scenario's arrival
process, and it is sent at that time whether or not earlier payments have been answered. Nothing
waits for an answer before sending the next request, so a slow service cannot slow the arrivals
down and hide its own slowness (coordinated omission). Two consequences are measured, not hidden:

- **latency is measured from the scheduled send time**, not from when the request left: a request
  that had to wait for a connection (``--max-in-flight`` reached) or for a busy event loop carries
  that wait in its latency, as a real terminal's customer would;
- **late sends are counted**: a request that left more than ``late_threshold_ms`` after its
  scheduled time is reported (``load.late_sends``), with the distribution of the send lag.

The schedule is the simulation's own: :func:`plan_payments` draws arrival times, cardholders,
merchants and amounts from the same named rng streams, in the same order, as
:class:`sim.components.arrivals.Arrivals`, so a live run and a simulated run of one scenario and
seed see the same payments. The HTTP client is aiohttp (httpx collapses at 64 concurrent requests
on this machine, design §5), and ``ccsim load`` runs in its own process.

Request (``POST {target}/v1/payments``, ``Idempotency-Key: <auth_id>``, signed as the ``pos``
principal of the credentials file ``ccsim serve`` wrote, :mod:`services.api.auth`)::

    {"id": "a17", "card_id": "c4", "merchant_id": "m2", "amount": "12500.00", "category": "grocery"}

(``services/api/parties/network.py``'s ``PaymentIn``). Answer: ``{"id", "code", "approved",
"stand_in", "approval_code", "merchant_id", "acquirer_id"}``.

**Per-leg times.** The answer's ``Server-Timing`` header lists every service hop the payment
caused (:mod:`services.api.timing`: ``network``, ``network.issuer``, ``network.issuer.exchange``, …,
each with its inclusive ``dur``). :func:`leg_times_ms` turns it into one time per leg: each
service's own time (its hops' ``dur`` less their callees', summed over its hops), and the
``acquirer`` leg — what the POS waited beyond the answering service's own ``dur``: the connection,
the request's parsing and its wait for the service's event loop, the acquirer's front end of the
simulated chain. The legs of a payment add up to its answer time measured at the POS (from the
send, not the schedule), so never to more than its latency. They feed ``legs`` in the results and
:mod:`sim.live.calibrate`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from services.api.auth import load_credentials, sign_headers
from services.api.timing import SERVER_TIMING, TimingEntry, parse_server_timing, self_times_ms
from services.exchange import Invoice
from services.money import DEFAULT_ASSETS, format_amount
from sim.components.arrivals import ArrivalSchedule
from sim.components.population import build_population
from sim.distributions import BlockSampler, amount_sampler
from sim.live.load_direct import DIRECT, DirectTarget, send_direct
from sim.rng import Streams
from sim.scenario import Scenario

__all__ = ["FRONT_END_LEG", "LATE_THRESHOLD_MS", "LoadOutcome", "PlannedPayment", "Sample", "Signer",
           "leg_times_ms", "payment_body", "plan_payments", "pos_signer", "run_open_loop"]

LATE_THRESHOLD_MS: Final = 10.0  # a send later than this after its scheduled time is a late send
START_LEAD_S: Final = 0.2  # the schedule starts this long after the generator is ready
LOAD_KEEP_ALIVE_S: Final = 15.0  # idle connections close before the services' (sim.live.serve)
PLAN_MAX: Final = 2_000_000  # a limit on everything: the whole schedule is held in memory
FRONT_END_LEG: Final = "acquirer"  # the POS's wait beyond the answering service's own time
_KZT = DEFAULT_ASSETS[0]
SERVE_CREDENTIALS: Final = Path("data/live/credentials.json")  # ccsim serve's default --data-dir
Signer = Callable[[str, bytes, str], Mapping[str, str]]  # (url, body, Idempotency-Key) → headers


def pos_signer(path: Path | None = None) -> Signer | None:
    """Sign as the ``pos`` principal of ``path`` (default: ``$CCSIM_CREDENTIALS_FILE``, else ccsim
    serve's default data directory); ``None`` when there is no such file. Raises
    :class:`services.api.auth.AuthError` for a file that cannot be used."""
    if path is None:
        env = os.environ.get("CCSIM_CREDENTIALS_FILE")
        path = Path(env) if env else SERVE_CREDENTIALS
        if not path.exists():
            return None
    principal = load_credentials(path).principal("pos")

    def sign(url: str, body: bytes, key: str) -> Mapping[str, str]:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return sign_headers(principal, "POST", parts.netloc, target, body, idempotency_key=key)

    return sign


@dataclass(frozen=True, slots=True)
class PlannedPayment:
    """One payment of the schedule; ``t_s`` is its send time relative to the start of the load."""

    payment_id: int
    t_s: float
    card_id: str
    merchant_id: str
    acquirer_id: str
    amount_kzt_minor: int
    category: str
    funding_mode: str
    residency: str
    rail: str = "card"  # or "direct" (sim.live.load_direct): to the exchange's direct rail
    holder_id: str = ""
    asset_priority: tuple[str, ...] = ()  # a direct payment's: the holder's, or the stablecoin

    @property
    def auth_id(self) -> str:
        return f"a{self.payment_id}"

    @property
    def invoice(self) -> Invoice:
        """A direct payment's invoice (its id ``d<n>``, as the simulation's)."""
        return Invoice(f"d{self.payment_id}", self.holder_id, self.merchant_id, self.amount_kzt_minor,
                       self.asset_priority)


@dataclass(slots=True)
class Sample:
    """What happened to one planned payment. Times are seconds since the load started."""

    payment: PlannedPayment
    sent_s: float = math.nan
    done_s: float = math.nan
    status: int = 0  # HTTP status; 0 when no answer came
    approved: bool = False
    reason: str = ""  # ISO 8583 code from the answer, or http_<status> / timeout / connect_error
    stand_in: bool = False
    legs_ms: dict[str, float] = field(default_factory=dict)  # per leg, from Server-Timing (leg_times_ms)
    direct: str = ""  # a direct payment: 'paid', 'declined' or 'card' (it fell back to the card)

    @property
    def latency_ms(self) -> float:
        """From the SCHEDULED send time to the answer (no coordinated omission)."""
        return (self.done_s - self.payment.t_s) * 1000.0

    @property
    def send_lag_ms(self) -> float:
        return (self.sent_s - self.payment.t_s) * 1000.0


@dataclass
class LoadOutcome:
    samples: list[Sample]
    wall_s: float
    max_in_flight: int
    late_threshold_ms: float
    in_flight_peak: int


def plan_payments(scenario: Scenario, seed: int, duration_s: float, from_s: float = 0.0,
                  direct_share: float | None = None) -> list[PlannedPayment]:
    """The payments arriving in ``[from_s, from_s + duration_s)`` of the scenario's day.

    Mirrors :meth:`sim.components.arrivals.Arrivals._run` draw for draw (same streams, same order),
    so the payments are the simulation's; ``t_s`` is shifted to start at 0. A payment to a zone
    merchant goes direct with probability ``direct_share`` (default: the scenario's
    ``direct.share``), drawn as :class:`sim.components.direct.DirectPath` draws it.
    """
    streams = Streams(seed)
    population = build_population(scenario, streams)
    share = scenario.direct.share if direct_share is None else direct_share
    choose = BlockSampler(streams["direct.choice"], lambda g, n: g.random(n))
    pick_asset = BlockSampler(streams["direct.asset"], lambda g, n: g.random(n))
    stable_share, stable_code = scenario.direct.assets.stablecoin, scenario.exchange.stablecoin_asset
    schedule = ArrivalSchedule(scenario.arrivals, streams["arrivals"])
    cards = population.cardholders
    merchants = population.merchants
    by_cat = population.merchants_by_category
    pick_card = BlockSampler(streams["arrivals.cardholder"], lambda g, n: g.integers(0, len(cards), n))
    cats = list(scenario.population.merchants.categories.items())
    names = [name for name, _ in cats]
    weights = np.asarray([c.weight for _, c in cats], dtype=float)
    p = weights / weights.sum()
    pick_category = BlockSampler(streams["arrivals.category"], lambda g, n: g.choice(len(p), n, p=p))
    pick_merchant = BlockSampler(streams["arrivals.merchant"], lambda g, n: g.random(n))
    amounts = [amount_sampler(c.amount, streams[f"amounts.{name}"]) for name, c in cats]
    until_s = min(scenario.duration_s, from_s + duration_s)
    out: list[PlannedPayment] = []
    pid = 0
    t = schedule.next_after(0.0, until_s)
    while t < until_s:
        ci = int(pick_card())
        k = int(pick_category())
        pool = by_cat[names[k]]
        merchant = merchants[pool[int(pick_merchant() * len(pool))]]
        amount = amounts[k]()
        holder = cards[ci]
        direct = share > 0 and merchant.cryptocity and choose() < share
        priority = ((stable_code,) if pick_asset() < stable_share else holder.asset_priority) if direct else ()
        if t >= from_s:
            out.append(PlannedPayment(pid, t - from_s, holder.card_id, merchant.merchant_id, merchant.acquirer_id,
                                      amount, merchant.category, holder.funding_mode.value,
                                      holder.residency.value, "direct" if direct else "card", holder.holder_id,
                                      priority))
            if len(out) > PLAN_MAX:
                raise ValueError(f"the load would send more than {PLAN_MAX:,} payments: shorten --duration-s")
        pid += 1
        t = schedule.next_after(t, until_s)
    return out


def payment_body(p: PlannedPayment) -> dict[str, str]:
    """The POS terminal's request, the network service's ``PaymentIn`` (``id`` is the auth id end to
    end; the merchant's acquirer is the network's to look up)."""
    return {"id": p.auth_id, "card_id": p.card_id, "merchant_id": p.merchant_id,
            "amount": format_amount(p.amount_kzt_minor, _KZT), "category": p.category}


def leg_times_ms(entries: Iterable[TimingEntry], answer_ms: float) -> dict[str, float]:
    """Per leg, the time of one payment: each service's own time (:func:`services.api.timing.self_times_ms`)
    and :data:`FRONT_END_LEG`, ``answer_ms`` (send to answer, at the POS) less the root hops'
    ``dur``. Empty when the answer carried no timings."""
    entries = list(entries)
    if not entries:
        return {}
    legs = self_times_ms(entries)
    roots_ms = sum(e.dur_ms for e in entries if "." not in e.name)
    legs[FRONT_END_LEG] = legs.get(FRONT_END_LEG, 0.0) + max(0.0, answer_ms - roots_ms)
    return legs


def _read_answer(sample: Sample, status: int, raw: bytes) -> None:
    sample.status = status
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    if 200 <= status < 300:
        sample.approved = body.get("approved") is True or code == "00"
        sample.reason = str(code) if isinstance(code, str) and code else ("00" if sample.approved else "??")
        sample.stand_in = body.get("stand_in") is True
    else:
        sample.reason = f"http_{status}"


async def run_open_loop(
    url: str, plan: Sequence[PlannedPayment], *, max_in_flight: int = 256, timeout_s: float = 30.0,
    late_threshold_ms: float = LATE_THRESHOLD_MS, body_of: Callable[[PlannedPayment], dict[str, Any]] = payment_body,
    sign: Signer | None = None, direct: DirectTarget | None = None,
) -> LoadOutcome:
    """POST each planned payment to ``url`` at its scheduled time; every answer is a :class:`Sample`.

    The scheduler never awaits a response: each payment is its own task, created at its time. At
    most ``max_in_flight`` requests are on the wire at once; a payment that finds them all busy
    waits (and its latency, counted from its scheduled time, shows the wait). ``sign`` adds each
    request's credentials (:func:`pos_signer`), over the exact bytes sent. A planned direct payment
    goes to ``direct`` (:func:`sim.live.load_direct.send_direct`: quote, accept, maybe the card).
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(max_in_flight)
    samples = [Sample(p) for p in plan]
    in_flight = [0, 0]  # now, peak
    connector = aiohttp.TCPConnector(limit=max_in_flight, limit_per_host=max_in_flight, ttl_dns_cache=300,
                                     keepalive_timeout=LOAD_KEEP_ALIVE_S)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = loop.time() + START_LEAD_S

        async def send(sample: Sample) -> None:
            p = sample.payment
            async with gate:
                sample.sent_s = loop.time() - t0
                in_flight[0] += 1
                in_flight[1] = max(in_flight[1], in_flight[0])
                try:
                    if p.rail == DIRECT and direct is not None:
                        answer = await send_direct(session, direct, p.invoice, body_of(p), p.auth_id, sign=sign)
                        sample.status, sample.approved, sample.reason = answer.status, answer.approved, answer.reason
                        sample.direct = answer.outcome
                        return
                    body = json.dumps(body_of(p), separators=(",", ":")).encode()
                    headers = {"Idempotency-Key": p.auth_id, "Content-Type": "application/json",
                               **(sign(url, body, p.auth_id) if sign is not None else {})}
                    async with session.post(url, data=body, headers=headers) as resp:
                        raw = await resp.read()
                        answered_s = loop.time() - t0
                        _read_answer(sample, resp.status, raw)
                        sample.legs_ms = leg_times_ms(parse_server_timing(resp.headers.getall(SERVER_TIMING, [])),
                                                      (answered_s - sample.sent_s) * 1000.0)
                except TimeoutError:
                    sample.reason = "timeout"
                except aiohttp.ClientConnectionError:
                    sample.reason = "connect_error"
                except aiohttp.ClientError:
                    sample.reason = "http_error"
                finally:
                    sample.done_s = loop.time() - t0
                    in_flight[0] -= 1

        tasks: list[asyncio.Task[None]] = []
        for sample in samples:
            delay_s = t0 + sample.payment.t_s - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            tasks.append(loop.create_task(send(sample)))
        await asyncio.gather(*tasks)
        wall_s = loop.time() - t0
    return LoadOutcome(samples, wall_s, max_in_flight, late_threshold_ms, in_flight[1])
