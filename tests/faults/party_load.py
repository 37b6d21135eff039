"""The fault harness's open-loop load against the network service: payments, captures, windows.

Open loop, as ``ccsim load`` (:mod:`sim.live.load`): payments arrive as a Poisson process and each
is sent at its scheduled time whatever happened to the earlier ones, so a killed service cannot
slow the arrivals down and hide its own outage. Unlike ``ccsim load``, a POS terminal here does
what a real one does when it gets no answer: it sends the **same** request again with the **same**
``Idempotency-Key`` (after a lost connection, a timeout, a 5xx, or a 409 "still running"), until it
gets an answer or gives up. Every approved payment is then captured (``POST /v1/presentments``)
or, sometimes, reversed by the POS; a settlement window closes every few seconds. Captures and
windows are retried the same way.

Latency is measured from the **scheduled** send time (no coordinated omission). ``first_*`` is the
answer to the first attempt; the final answer may come after retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from services.api.auth import Credentials, sign_headers
from services.api.parties import PartySeed
from services.contracts import FundingMode
from services.money import DEFAULT_ASSETS, format_amount

__all__ = ["Answer", "LoadConfig", "OpenLoopLoad", "Payment", "Window", "classify"]

_KZT: Final = DEFAULT_ASSETS[0]
RETRY: Final = "retry"


# A capture answered 503 with one of these was recorded by the network first (an outbox row of
# its own): the issuer had not applied the stand-in advice yet, or did not answer.
_PRESENTMENT_RECORDED: Final = ("advice-pending", "issuer-unavailable")


@dataclass(frozen=True)
class LoadConfig:
    rate_per_s: float = 4.0
    seed: int = 8
    reverse_share: float = 0.05  # approved payments the POS reverses instead of capturing
    attempt_timeout_s: float = 20.0  # one payment or capture attempt (the network's deadline is shorter)
    give_up_s: float = 120.0  # after its scheduled time, a request is retried this long at most
    settle_every_s: float = 20.0  # 0: no windows during the run
    settle_timeout_s: float = 90.0
    max_in_flight: int = 256


@dataclass
class Payment:
    """One POS payment and what became of it; times are seconds since the load started."""

    pid: str
    t_s: float
    card_id: str
    merchant_id: str
    amount_minor: int
    needs_sale: bool  # a JIT card: the issuer must sell at the exchange
    end_action: str  # "capture" or "reverse"
    attempts: int = 0
    first_status: int = -1  # -1: not sent yet; 0: no HTTP answer
    first_latency_s: float = math.nan
    first_reason: str = ""
    status: int = -1
    done_s: float = math.nan
    outcome: str = ""  # approved | declined | stand_in_approved | stand_in_declined | refused | error
    code: str = ""
    replayed: bool = False  # the final answer came from the network's idempotency store
    clearing: str = ""  # captured | reversed | refused:<status>:<slug> | gave_up
    clearing_attempts: int = 0
    clearing_unknown_auth: int = 0  # 404 answers while a stand-in advice was still on its way
    # The network answered a capture 503 after recording it (_PRESENTMENT_RECORDED): its relay
    # completes the presentment, whether or not the presenter is still retrying.
    presentment_recorded: bool = False
    clearing_done_s: float = math.nan

    @property
    def approved(self) -> bool:
        return self.outcome in ("approved", "stand_in_approved")

    @property
    def answered(self) -> bool:
        return self.outcome not in ("", "error")

    @property
    def latency_s(self) -> float:
        return self.done_s - self.t_s


@dataclass
class Window:
    window_id: str
    t_s: float
    attempts: int = 0
    status: int = -1
    done_s: float = math.nan
    presentments: int = 0
    undelivered: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0: no HTTP answer (refused, reset, timeout)
    body: dict[str, Any]
    replayed: bool
    reason: str  # slug of a problem, or the transport error


def classify(answer: Answer) -> str:
    """``retry`` for what a terminal retries with the same key, else ``final``."""
    if answer.status == 0 or answer.status >= 500:
        return RETRY
    if answer.status == 409 and answer.reason == "idempotency-key-in-flight":
        return RETRY
    return "final"


@dataclass
class _Counters:
    in_flight: int = 0
    in_flight_peak: int = 0
    late_sends: int = 0
    retry_reasons: Counter[str] = field(default_factory=Counter)  # what made a terminal send again


@dataclass
class OpenLoopLoad:
    """Runs on its own event loop in a thread: ``start()``, later ``stop_arrivals()`` and ``join()``."""

    network_url: str
    seed: PartySeed
    cfg: LoadConfig
    payments: list[Payment] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    credentials: Credentials | None = None  # payments and presentments signed as the POS, windows as the operator
    t0: float = 0.0  # time.monotonic() when the load started
    counters: _Counters = field(default_factory=_Counters)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="party-load", daemon=True)
        self._stop: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._cards = [(h.card_id, h.funding_mode is FundingMode.JIT) for h in self.seed.cardholders]
        self._merchants = [m.merchant_id for m in self.seed.merchants]

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- control (from the harness's thread) --------------------------------------------------
    def start(self) -> float:
        self._thread.start()
        self._started.wait(30)
        return self.t0

    def stop_arrivals(self) -> None:
        if self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to stop
                self._loop.call_soon_threadsafe(self._stop.set)

    def request_window(self, window_id: str) -> Window:
        """Close a settlement window now (the harness aims a kill at it); its ``attempts`` turns 1
        when the request has been sent."""
        w = Window(window_id, self.now())

        def spawn() -> None:
            self.windows.append(w)
            assert self._session is not None
            self._tasks.append(asyncio.get_running_loop().create_task(self.settle(self._session, w)))

        self._loop.call_soon_threadsafe(spawn)
        return w

    def join(self, timeout_s: float) -> bool:
        """Wait for every payment, capture and window (retries included); True when all are done."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by the harness, never swallowed
            self.error = exc
        finally:
            self._loop.close()

    # -- the load ------------------------------------------------------------------------------
    async def _main(self) -> None:
        self._stop = asyncio.Event()
        rng = random.Random(self.cfg.seed)
        connector = aiohttp.TCPConnector(limit=self.cfg.max_in_flight, limit_per_host=self.cfg.max_in_flight)
        timeout = aiohttp.ClientTimeout(total=self.cfg.attempt_timeout_s)
        tasks = self._tasks
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self._session = session
            self.t0 = time.monotonic()
            self._started.set()
            if self.cfg.settle_every_s > 0:
                tasks.append(asyncio.create_task(self._windows(session)))
            t_s, n = 0.0, 0
            while not self._stop.is_set():
                t_s += rng.expovariate(self.cfg.rate_per_s)
                payment = self._plan(n, t_s, rng)
                n += 1
                delay_s = t_s - self.now()
                if delay_s > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), delay_s)
                        break  # stopped before this payment was due
                    except TimeoutError:
                        pass
                elif -delay_s * 1000.0 > 10.0:
                    self.counters.late_sends += 1
                self.payments.append(payment)
                tasks.append(asyncio.create_task(self._pay(session, payment, rng.random())))
            while pending := [t for t in tasks if not t.done()]:
                await asyncio.gather(*pending)

    def _plan(self, n: int, t_s: float, rng: random.Random) -> Payment:
        card_id, jit = self._cards[rng.randrange(len(self._cards))]
        merchant_id = self._merchants[rng.randrange(len(self._merchants))]
        u = rng.random()  # most payments small; some above the network's stand-in limit (50,000)
        if u < 0.80:
            amount = rng.randint(100_00, 20_000_00)
        elif u < 0.95:
            amount = rng.randint(20_000_00, 50_000_00)
        else:
            amount = rng.randint(50_000_01, 90_000_00)
        action = "reverse" if rng.random() < self.cfg.reverse_share else "capture"
        return Payment(f"p{n}", t_s, card_id, merchant_id, amount, jit, action)

    async def _post(self, session: aiohttp.ClientSession, path: str, body: dict[str, Any], key: str,
                    timeout_s: float | None = None) -> Answer:
        self.counters.in_flight += 1
        self.counters.in_flight_peak = max(self.counters.in_flight_peak, self.counters.in_flight)
        try:
            kwargs: dict[str, Any] = {}
            if timeout_s is not None:
                kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
            raw = json.dumps(body).encode()
            headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
            if self.credentials is not None:
                who = self.credentials.principal("operator" if path == "/v1/settlements" else "pos")
                headers.update(sign_headers(who, "POST", urlsplit(self.network_url).netloc, path, raw,
                                            idempotency_key=key))
            async with session.post(self.network_url + path, data=raw, headers=headers, **kwargs) as resp:
                raw = await resp.read()
                try:
                    parsed = json.loads(raw) if raw else {}
                except ValueError:
                    parsed = {}
                parsed = parsed if isinstance(parsed, dict) else {}
                reason = str(parsed.get("type", "")).rpartition(":")[2] if resp.status >= 400 else ""
                return Answer(resp.status, parsed, resp.headers.get("Idempotent-Replayed") == "true", reason)
        except TimeoutError:
            return Answer(0, {}, False, "timeout")
        except aiohttp.ClientError as exc:
            return Answer(0, {}, False, type(exc).__name__)
        finally:
            self.counters.in_flight -= 1

    @staticmethod
    def _backoff_s(attempt: int, u: float) -> float:
        return min(1.0, 0.05 * float(2 ** min(attempt, 6))) * (0.5 + u / 2)

    async def _pay(self, session: aiohttp.ClientSession, p: Payment, u: float) -> None:
        body = {"id": p.pid, "card_id": p.card_id, "merchant_id": p.merchant_id,
                "amount": format_amount(p.amount_minor, _KZT)}
        while True:
            p.attempts += 1
            answer = await self._post(session, "/v1/payments", body, f"pay-{p.pid}")
            if p.attempts == 1:
                p.first_status, p.first_latency_s, p.first_reason = answer.status, self.now() - p.t_s, answer.reason
            if classify(answer) != RETRY or self.now() - p.t_s > self.cfg.give_up_s:
                break
            self.counters.retry_reasons[f"payment {answer.status} {answer.reason}"] += 1
            await asyncio.sleep(self._backoff_s(p.attempts, u))
        p.status, p.done_s, p.replayed = answer.status, self.now(), answer.replayed
        if answer.status == 200:
            b = answer.body
            stand_in = b.get("stand_in") is True
            approved = b.get("approved") is True
            p.code = str(b.get("code", ""))
            p.outcome = ("stand_in_" if stand_in else "") + ("approved" if approved else "declined")
        elif classify(answer) == RETRY:
            p.outcome = "error"
            p.code = answer.reason or f"http_{answer.status}"
        else:
            p.outcome = "refused"
            p.code = f"{answer.status}:{answer.reason}"
        if p.approved:
            await asyncio.sleep(0.3 + 2.0 * u)
            await self._clear(session, p, u)

    async def _clear(self, session: aiohttp.ClientSession, p: Payment, u: float) -> None:
        if p.end_action == "capture":
            path, body, key, ok = ("/v1/presentments", {"kind": "capture", "auth_id": p.pid,
                                                        "amount": format_amount(p.amount_minor, _KZT)},
                                   f"cap-{p.pid}", 201)
        else:
            path, body, key, ok = f"/v1/payments/{p.pid}/reverse", {}, f"rev-{p.pid}", 200
        while True:
            p.clearing_attempts += 1
            answer = await self._post(session, path, body, key)
            unknown = answer.status == 404 and p.outcome == "stand_in_approved"  # the advice is on its way
            p.clearing_unknown_auth += unknown
            p.presentment_recorded |= (p.end_action == "capture" and answer.status == 503
                                       and answer.reason in _PRESENTMENT_RECORDED)
            if answer.status == ok:
                p.clearing = "captured" if ok == 201 else "reversed"
                break
            if (classify(answer) != RETRY and not unknown) or self.now() - p.t_s > self.cfg.give_up_s:
                p.clearing = ("gave_up" if classify(answer) == RETRY or unknown
                              else f"refused:{answer.status}:{answer.reason}")
                break
            self.counters.retry_reasons[f"{p.end_action} {answer.status} {answer.reason}"] += 1
            await asyncio.sleep(self._backoff_s(p.clearing_attempts, u))
        p.clearing_done_s = self.now()

    async def _windows(self, session: aiohttp.ClientSession) -> None:
        assert self._stop is not None
        k = 0
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self.cfg.settle_every_s)
                return
            except TimeoutError:
                pass
            k += 1
            w = Window(f"w{k}", self.now())
            self.windows.append(w)
            await self.settle(session, w)

    async def settle(self, session: aiohttp.ClientSession, w: Window) -> None:
        """Close window ``w`` (retried with its key until 201, or until the give-up time)."""
        while True:
            w.attempts += 1
            answer = await self._post(session, "/v1/settlements", {"window_id": w.window_id},
                                      f"settle-{w.window_id}", timeout_s=self.cfg.settle_timeout_s)
            if classify(answer) != RETRY or self.now() - w.t_s > self.cfg.give_up_s:
                break
            self.counters.retry_reasons[f"settlement {answer.status} {answer.reason}"] += 1
            await asyncio.sleep(self._backoff_s(w.attempts, 0.5))
        w.status, w.done_s = answer.status, self.now()
        if answer.status == 201:
            w.presentments = int(answer.body.get("presentments", 0))
            w.undelivered = len(answer.body.get("undelivered", []))
