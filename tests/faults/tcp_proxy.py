"""A small fault-injecting TCP proxy for tests, loopback only: latency, dropped connections, duplicates.

Put it between a client and a service (or between two services) to see what the service does when
the network misbehaves. It listens on 127.0.0.1 and forwards to an upstream on the loopback
interface; any other address is refused, so a test can never point it at the outside world.

Two modes:

- **HTTP/1.1** (``http=True``, the default): the proxy reads whole requests and whole responses
  (``Content-Length`` or chunked bodies), so it can act per request. ``latency_s`` (+ up to
  ``jitter_s``) delays each request; ``drop_p`` drops it at one of three points: before it reaches
  the upstream (``request_lost``), after the upstream answered but before the client hears it
  (``response_lost``: done, but the client does not know), or halfway through the answer
  (``mid_response``); ``duplicate_p`` sends a complete request to the upstream a second time on the
  same connection and discards the second answer (recorded in :attr:`ProxyStats.duplicates`).
  With ``duplicate_first`` the copy goes first, so the client hears the answer to the *second*
  delivery, the one an idempotent service replays.
- **raw TCP** (``http=False``): bytes are pumped both ways; each chunk may be delayed, and with
  ``drop_p`` per chunk both connections are closed mid-stream.

:class:`Faults` can be swapped at any time (``proxy.faults = Faults(...)``); each request or
chunk reads the current one. :class:`ProxyThread` runs a proxy on its own event loop for
synchronous tests and harnesses.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal

__all__ = ["DROP_POINTS", "LOOPBACK_HOSTS", "DuplicateAnswer", "Faults", "HttpMessage", "ProxyStats",
           "ProxyThread", "TcpProxy", "read_http_message"]

LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
DropPoint = Literal["request_lost", "response_lost", "mid_response"]
DROP_POINTS: Final[tuple[DropPoint, ...]] = ("request_lost", "response_lost", "mid_response")
_STREAM_LIMIT: Final = 1 << 20  # the longest header block read at once
_CHUNK: Final = 65_536


@dataclass(frozen=True)
class Faults:
    latency_s: float = 0.0
    jitter_s: float = 0.0
    drop_p: float = 0.0
    drop_points: tuple[DropPoint, ...] = DROP_POINTS
    duplicate_p: float = 0.0
    duplicate_first: bool = False

    def __post_init__(self) -> None:
        for p in (self.drop_p, self.duplicate_p):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"a probability must be within [0, 1], got {p}")
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError("latency and jitter must not be negative")
        if not self.drop_points or not set(self.drop_points) <= set(DROP_POINTS):
            raise ValueError(f"drop points must be some of {DROP_POINTS}")


@dataclass(frozen=True, slots=True)
class DuplicateAnswer:
    """What the upstream answered to a duplicated request (the answer the client never saw)."""

    method: str
    path: str
    status: int
    replayed: bool  # Idempotent-Replayed: true
    body: bytes


@dataclass
class ProxyStats:
    connections: int = 0
    requests: int = 0  # HTTP requests read from clients (raw mode: 0)
    chunks: int = 0  # raw mode: chunks forwarded
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates: list[DuplicateAnswer] = field(default_factory=list)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(frozen=True, slots=True)
class HttpMessage:
    raw: bytes  # exactly the bytes read, head and body: forwarded verbatim
    start_line: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes  # the body as received (chunked framing included)

    @property
    def method(self) -> str:
        return self.start_line.split(" ", 1)[0]

    @property
    def path(self) -> str:
        parts = self.start_line.split(" ")
        return parts[1] if len(parts) > 1 else ""

    @property
    def status(self) -> int:
        parts = self.start_line.split(" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        out += size_line
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailers, up to the empty line
                line = await reader.readuntil(b"\r\n")
                out += line
                if line == b"\r\n":
                    return bytes(out)
        out += await reader.readexactly(size + 2)


async def read_http_message(reader: asyncio.StreamReader, *, response: bool,
                            request_method: str = "") -> HttpMessage | None:
    """One HTTP/1.1 request or response; None at a clean end of stream before any byte."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = head[:-4].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = lines[0]
    status = int(start.split(" ")[1]) if response and len(start.split(" ")) > 1 else 0
    if response and (request_method == "HEAD" or 100 <= status < 200 or status in (204, 304)):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif response:
        body = await reader.read()  # delimited by the end of the connection
    else:
        body = b""
    return HttpMessage(head + body, start, headers, body)


class _DroppedError(Exception):
    """A fault closed the connection on purpose."""


def _check_loopback(host: str) -> None:
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"the test proxy works on the loopback interface only, not {host!r}")


class TcpProxy:
    """Listens on 127.0.0.1 (``listen_port`` 0: any free port) and forwards to the upstream."""

    def __init__(self, upstream_host: str, upstream_port: int, faults: Faults | None = None, *,
                 http: bool = True, listen_host: str = "127.0.0.1", listen_port: int = 0,
                 seed: int = 0) -> None:
        _check_loopback(upstream_host)
        _check_loopback(listen_host)
        self.upstream = (upstream_host, upstream_port)
        self.listen = (listen_host, listen_port)
        self.faults = faults or Faults()
        self.http = http
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0  # HTTP exchanges (a request, its answer, its duplicate) under way
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._on_connect, *self.listen, limit=_STREAM_LIMIT)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop listening; let open exchanges finish (a client that left ends its connection, a
        duplicate in flight completes) for up to ``grace_s``, then cancel what is left."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until no HTTP exchange is under way: a duplicate sent after the answer the client
        already heard is done too (its answer is in :attr:`stats`)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.in_flight:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self.in_flight} exchanges still under way after {timeout_s} s")
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- connections -------------------------------------------------------------------------
    async def _on_connect(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # so that stop() can cancel the connections still open
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.stats.connections += 1
        up_w: asyncio.StreamWriter | None = None
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream, limit=_STREAM_LIMIT)
            if self.http:
                await self._http(client_r, client_w, up_r, up_w)
            else:
                await self._raw(client_r, client_w, up_r, up_w)
        except (_DroppedError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a fault, or a peer that went away (a killed upstream): close both sides
        except asyncio.CancelledError:
            pass  # stop(): end quietly (3.11's stream callback logs a cancelled handler as an error)
        finally:
            for w in (client_w, up_w):
                if w is not None:
                    w.close()

    async def _http(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                    up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> None:
        while True:
            request = await read_http_message(client_r, response=False)
            if request is None:
                return
            self.stats.requests += 1
            self.in_flight += 1
            try:
                if not await self._exchange(request, client_w, up_r, up_w):
                    return
            finally:
                self.in_flight -= 1

    async def _exchange(self, request: HttpMessage, client_w: asyncio.StreamWriter,
                        up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> bool:
        """One request through the faults; False when the connection is to be closed."""
        f = self.faults
        await self._delay(f)
        drop = self._rng.choice(f.drop_points) if self._rng.random() < f.drop_p else None
        duplicate = drop is None and self._rng.random() < f.duplicate_p
        if drop == "request_lost":
            raise self._drop(drop)
        if duplicate and f.duplicate_first:
            await self._duplicate(request, up_r, up_w)
        up_w.write(request.raw)
        await up_w.drain()
        answer = await read_http_message(up_r, response=True, request_method=request.method)
        if answer is None:
            return False  # the upstream closed the connection: so does the proxy
        if drop == "response_lost":
            raise self._drop(drop)
        if drop == "mid_response":
            client_w.write(answer.raw[:len(answer.raw) // 2])
            await client_w.drain()
            raise self._drop(drop)
        client_w.write(answer.raw)
        await client_w.drain()
        if duplicate and not f.duplicate_first:
            await self._duplicate(request, up_r, up_w)
        return "close" not in answer.headers.get("connection", "").lower()

    async def _duplicate(self, request: HttpMessage, up_r: asyncio.StreamReader,
                         up_w: asyncio.StreamWriter) -> None:
        """Deliver ``request`` once more on the same connection; keep its answer from the client."""
        up_w.write(request.raw)
        await up_w.drain()
        answer = await read_http_message(up_r, response=True, request_method=request.method)
        if answer is None:
            raise _DroppedError("the upstream closed during a duplicate")
        self.stats.duplicates.append(DuplicateAnswer(
            request.method, request.path, answer.status,
            answer.headers.get("idempotent-replayed", "").lower() == "true", answer.body))

    async def _raw(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                   up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> None:
        pumps = [asyncio.create_task(self._pump(client_r, up_w)),
                 asyncio.create_task(self._pump(up_r, client_w))]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # a drop ends both directions
            await asyncio.gather(*pumps)
        finally:
            for t in pumps:
                t.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while chunk := await src.read(_CHUNK):
            f = self.faults
            await self._delay(f)
            if self._rng.random() < f.drop_p:
                raise self._drop("mid_stream")
            self.stats.chunks += 1
            dst.write(chunk)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()  # half-close: the other direction may still be talking

    async def _delay(self, f: Faults) -> None:
        if f.latency_s or f.jitter_s:
            await asyncio.sleep(f.latency_s + self._rng.uniform(0.0, f.jitter_s))

    def _drop(self, point: str) -> _DroppedError:
        self.stats.dropped[point] = self.stats.dropped.get(point, 0) + 1
        return _DroppedError(point)


class ProxyThread:
    """A :class:`TcpProxy` on its own event loop in a daemon thread, for synchronous code."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self.proxy.port

    def settle(self, timeout_s: float = 10.0) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.settle(timeout_s), self._loop).result(timeout_s + 1)

    def start(self) -> int:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> ProxyThread:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
