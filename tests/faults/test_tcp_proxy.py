"""The fault-injecting proxy against a tiny local HTTP/1.1 server (and an echo server for raw TCP).

The server counts the requests it received per path and answers each with that count, so a test
can tell which delivery of a request the client heard.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from .tcp_proxy import Faults, ProxyThread, TcpProxy, read_http_message


class TinyServer:
    """HTTP/1.1 keep-alive; ``/chunked`` answers with a chunked body, everything else with a length."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while (req := await read_http_message(r, response=False)) is not None:
                self.seen[req.path] += 1
                self.bodies.append(req.body)
                count = str(self.seen[req.path]).encode()
                if req.path == "/chunked":
                    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + b"3\r\nn=:\r\n" + f"{len(count):x}\r\n".encode() + count + b"\r\n0\r\n\r\n")
                else:
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(count)).encode()
                            + b"\r\n\r\n" + count)
                await w.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


async def _parts() -> AsyncIterator[bytes]:
    for part in (b"part-1,", b"part-2"):
        yield part


@pytest.fixture
async def server() -> AsyncIterator[TinyServer]:
    s = TinyServer()
    await s.start()
    yield s
    await s.stop()


async def test_requests_pass_through_unchanged_on_one_connection(server: TinyServer) -> None:
    async with TcpProxy("127.0.0.1", server.port) as proxy, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{proxy.port}") as client:
        answers = [(await client.post("/a", content=b"x" * 70_000)).text for _ in range(5)]
        chunked = await client.post("/chunked", content=_parts())  # a chunked upload
    assert answers == ["1", "2", "3", "4", "5"]
    assert chunked.text == "n=:1"
    assert server.bodies[:5] == [b"x" * 70_000] * 5
    assert b"part-1," in server.bodies[5] and b"part-2" in server.bodies[5]  # framing kept verbatim
    assert proxy.stats.connections == 1 and proxy.stats.requests == 6 and proxy.stats.dropped_total == 0


async def test_latency_delays_every_request(server: TinyServer) -> None:
    async with TcpProxy("127.0.0.1", server.port, Faults(latency_s=0.05)) as proxy, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{proxy.port}") as client:
        t0 = time.monotonic()
        for _ in range(3):
            assert (await client.get("/a")).status_code == 200
        assert time.monotonic() - t0 >= 0.15  # a lower bound: each request waited its 50 ms


@pytest.mark.parametrize(("point", "delivered"), [("request_lost", 0), ("response_lost", 1), ("mid_response", 1)])
async def test_a_dropped_request_closes_the_connection(server: TinyServer, point: str, delivered: int) -> None:
    faults = Faults(drop_p=1.0, drop_points=(point,))  # type: ignore[arg-type]
    async with TcpProxy("127.0.0.1", server.port, faults) as proxy, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{proxy.port}") as client:
        with pytest.raises(httpx.TransportError):
            await client.get("/a")
        assert server.seen["/a"] == delivered  # lost on the way there, or done but unanswered
        proxy.faults = Faults()  # healed: the next request gets through on a new connection
        assert (await client.get("/a")).text == str(delivered + 1)
    assert proxy.stats.dropped == {point: 1}


@pytest.mark.parametrize(("first", "heard"), [(False, "1"), (True, "2")])
async def test_duplicates_reach_the_server_twice_and_one_answer_is_discarded(
        server: TinyServer, first: bool, heard: str) -> None:
    faults = Faults(duplicate_p=1.0, duplicate_first=first)
    async with TcpProxy("127.0.0.1", server.port, faults) as proxy, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{proxy.port}") as client:
        r = await client.post("/pay", content=b"{}")
        chunked = await client.post("/chunked", content=b"{}")
    assert r.text == heard  # the client hears exactly one answer: the first delivery's or the copy's
    assert server.seen == {"/pay": 2, "/chunked": 2}
    dup = proxy.stats.duplicates
    assert [(d.method, d.path, d.status) for d in dup] == [("POST", "/pay", 200), ("POST", "/chunked", 200)]
    assert dup[0].body == (b"2" if heard == "1" else b"1")  # the other delivery's answer
    assert chunked.text == ("n=:1" if heard == "1" else "n=:2")


async def test_probabilities_drop_and_duplicate_a_share_of_requests(server: TinyServer) -> None:
    faults = Faults(drop_p=0.2, duplicate_p=0.3)
    failed = 0
    async with TcpProxy("127.0.0.1", server.port, faults, seed=3) as proxy, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{proxy.port}") as client:
        for _ in range(200):
            try:
                await client.get("/a")
            except httpx.TransportError:
                failed += 1
    s = proxy.stats
    assert s.requests == 200 and failed == s.dropped_total
    assert 15 < s.dropped_total < 65 and 30 < len(s.duplicates) < 90  # 40 and 48 expected
    lost_before = s.dropped.get("request_lost", 0)
    assert server.seen["/a"] == 200 - lost_before + len(s.duplicates)


async def test_raw_mode_pumps_bytes_and_can_cut_the_stream() -> None:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(1024):
            w.write(data)
            await w.drain()
        w.close()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    try:
        async with TcpProxy("127.0.0.1", port, Faults(latency_s=0.01), http=False) as proxy:
            r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            w.write(b"hello, proxy")
            await w.drain()
            assert await r.readexactly(12) == b"hello, proxy"
            proxy.faults = Faults(drop_p=1.0)
            w.write(b"lost")
            await w.drain()
            assert await r.read() == b""  # the proxy closed the connection instead of forwarding
            w.close()
        assert proxy.stats.dropped == {"mid_stream": 1} and proxy.stats.chunks == 2
    finally:
        upstream.close()


def test_only_loopback_addresses_are_accepted() -> None:
    for host in ("10.0.0.1", "0.0.0.0", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            TcpProxy(host, 80)
        with pytest.raises(ValueError, match="loopback"):
            TcpProxy("127.0.0.1", 80, listen_host=host)
    with pytest.raises(ValueError, match="probability"):
        Faults(drop_p=1.5)


def test_proxy_thread_serves_synchronous_clients() -> None:
    async def serve() -> tuple[asyncio.Server, int]:
        async def ok(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while await read_http_message(r, response=False) is not None:
                w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await w.drain()
            w.close()
        srv = await asyncio.start_server(ok, "127.0.0.1", 0)
        return srv, srv.sockets[0].getsockname()[1]

    loop = asyncio.new_event_loop()
    srv, port = loop.run_until_complete(serve())
    runner = ProxyThread(TcpProxy("127.0.0.1", port))
    import threading  # noqa: PLC0415 — the upstream needs its own loop while the client blocks
    upstream = threading.Thread(target=loop.run_forever, daemon=True)
    upstream.start()
    try:
        with runner, httpx.Client(base_url=f"http://127.0.0.1:{runner.port}") as client:
            assert [client.get("/x").status_code for _ in range(3)] == [204, 204, 204]
        assert runner.proxy.stats.requests == 3
    finally:
        loop.call_soon_threadsafe(srv.close)
        loop.call_soon_threadsafe(loop.stop)
        upstream.join(timeout=5)
        loop.close()
