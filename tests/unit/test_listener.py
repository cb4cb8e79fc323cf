"""The client-facing listeners on real loopback sockets, with a fake resolver behind them.

The fake ``handle`` answers a query at once (like a cache hit) unless its name starts with
``slow``: those are answered later through ``TcpClient.send``, the way the daemon's flush
answers a miss. No namespaces, no root: 127.0.0.1 and a port the kernel picks.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import dns.message
import pytest
import pytest_asyncio

from mifdns.aio import listener as listener_mod
from mifdns.aio import tcp_listener
from mifdns.aio.listener import UdpListener, listen_error
from mifdns.aio.tcp_listener import TcpClient, TcpServer
from mifdns.config import ListenAddr

pytestmark = pytest.mark.asyncio


def query(name: str = "www.example", qid: int = 1) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = qid
    return q.to_wire()


def answer(data: bytes) -> bytes:
    """A reply to ``data``: the query with QR set."""
    return data[:2] + bytes([data[2] | 0x80]) + data[3:]


def frame(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


class FakeResolver:
    def __init__(self) -> None:
        self.held: list[tuple[Any, bytes]] = []  # (client, query) answered later
        self.seen: list[bytes] = []
        self.batches = 0

    def handle(self, data: bytes, client: Any, now: float, max_udp: int | None) -> bytes | None:
        self.seen.append(data)
        if b"\x04slow" in data:
            self.held.append((client, data))
            return None
        if b"\x05crash" in data:
            raise RuntimeError("a bug in the resolver")
        return answer(data)

    def after_batch(self) -> None:
        self.batches += 1

    def release(self, n: int | None = None) -> None:
        """Answer the held queries (the daemon's flush)."""
        todo, self.held = self.held[:n], self.held[n:] if n is not None else []
        for client, data in todo:
            client.send(answer(data))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def tcp() -> AsyncIterator[tuple[TcpServer, FakeResolver]]:
    res = FakeResolver()
    srv = TcpServer(
        asyncio.get_running_loop(),
        "127.0.0.1",
        free_port(),
        res.handle,
        res.after_batch,
        max_clients=4,
        max_inflight=3,
        idle_timeout=0.5,
    )
    await srv.start()
    yield srv, res
    await srv.close()


async def connect(srv: TcpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", srv.port)


async def read_reply(reader: asyncio.StreamReader, timeout: float = 2.0) -> dns.message.Message:
    size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))[0]
    return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(size), timeout))


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(65536), timeout) == b""
    except ConnectionResetError:
        return True


async def settle(cond: Any, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


# -- TCP -----------------------------------------------------------------------------------------
async def test_pipelined_queries_split_across_reads_are_all_answered(tcp):
    srv, _res = tcp
    reader, writer = await connect(srv)
    data = b"".join(frame(query(f"n{i}.example", qid=i)) for i in range(3))
    for i in range(0, len(data), 7):  # a frame arrives in pieces, and pieces span frames
        writer.write(data[i : i + 7])
        await writer.drain()
        await asyncio.sleep(0.001)
    ids = sorted([(await read_reply(reader)).id for _ in range(3)])
    assert ids == [0, 1, 2]
    writer.close()


async def test_answers_go_out_as_they_complete_out_of_order(tcp):
    srv, res = tcp
    reader, writer = await connect(srv)
    writer.write(frame(query("slow.example", qid=7)) + frame(query("fast.example", qid=8)))
    assert (await read_reply(reader)).id == 8  # the hit does not wait for the miss
    await settle(lambda: res.held)
    res.release()
    assert (await read_reply(reader)).id == 7
    writer.close()


async def test_connection_at_its_inflight_cap_waits_and_loses_no_query(tcp):
    srv, res = tcp  # max_inflight=3
    reader, writer = await connect(srv)
    writer.write(b"".join(frame(query("slow.example", qid=i)) for i in range(10)))
    await settle(lambda: len(res.held) == 3)
    await asyncio.sleep(0.05)
    assert len(res.held) == 3 and srv.counters["inflight_limit"] >= 1  # the 4th waits
    got: list[int] = []
    while len(got) < 10:
        await settle(lambda: res.held)
        assert len(res.held) <= 3
        n = len(res.held)
        res.release()
        got += [(await read_reply(reader)).id for _ in range(n)]
    assert sorted(got) == list(range(10))
    writer.close()


async def test_half_closed_connection_gets_its_answers_then_is_closed(tcp):
    srv, res = tcp
    reader, writer = await connect(srv)
    writer.write(frame(query("slow.example", qid=1)) + frame(query("www.example", qid=2)))
    writer.write_eof()  # RFC 7766 6.2.3: the client may half-close after its queries
    assert (await read_reply(reader)).id == 2
    await settle(lambda: res.held)
    res.release()
    assert (await read_reply(reader)).id == 1
    assert await closed_by_server(reader)
    await settle(lambda: not srv.clients)


async def test_idle_connection_is_closed_after_the_idle_timeout(tcp):
    srv, _res = tcp  # idle_timeout=0.5
    reader, writer = await connect(srv)
    writer.write(b"\x00")  # half a length prefix, then silence
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await closed_by_server(reader)
    assert 0.4 < loop.time() - t0 < 1.5
    assert srv.counters["idle_closed"] == 1 and not srv.clients


async def test_traffic_keeps_a_connection_open_past_the_idle_timeout(tcp):
    srv, _res = tcp
    reader, writer = await connect(srv)
    for i in range(8):  # 1.2 s of traffic, a query every 0.15 s
        writer.write(frame(query(qid=i)))
        assert (await read_reply(reader)).id == i
        await asyncio.sleep(0.15)
    assert srv.counters["idle_closed"] == 0
    writer.close()


async def test_a_frame_trickling_in_does_not_keep_a_connection_open(tcp):
    """Slowloris (RFC 7766 section 10): a byte of a frame every 0.2 s is not activity; only a
    whole query or an answer is, so the idle timeout (0.5 s) still closes the connection."""
    srv, _res = tcp
    reader, writer = await connect(srv)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    data = frame(query(qid=3))
    for i in range(len(data) - 1):
        writer.write(data[i : i + 1])
        await asyncio.sleep(0.2)
        if reader.at_eof() or srv.counters["idle_closed"]:
            break
    assert await closed_by_server(reader)
    assert loop.time() - t0 < 1.5 and srv.counters["idle_closed"] == 1


async def test_at_the_cap_a_new_connection_takes_the_idlest_slot_and_busy_ones_stay(tcp):
    """RFC 7766 section 6.2.3: under pressure idle connections may be closed. Connections that
    only hold a slot make room for new ones; one with a query in flight is never closed, and
    when all are busy a new connection is refused."""
    srv, res = tcp  # max_clients=4
    busy = await connect(srv)
    busy[1].write(frame(query("slow.example", qid=9)))
    await settle(lambda: res.held)
    idle = [await connect(srv) for _ in range(3)]
    fresh = [await connect(srv) for _ in range(3)]
    await settle(lambda: srv.counters["evicted"] == 3)
    for reader, _w in idle:  # the idlest went, oldest first
        assert await closed_by_server(reader)
    for reader, writer in fresh:
        writer.write(frame(query(qid=5)))
        assert (await read_reply(reader)).id == 5
    res.release()
    assert (await read_reply(busy[0])).id == 9  # its query was answered, not cut off
    assert srv.counters["refused_limit"] == 0
    # every slot busy: a new connection is refused
    for _r, w in fresh:
        w.write(frame(query("slow.example", qid=1)))
    busy[1].write(frame(query("slow.example", qid=2)))
    await settle(lambda: len(res.held) == 4)
    reader, writer = await connect(srv)
    assert await closed_by_server(reader)
    assert srv.counters["refused_limit"] == 1 and len(srv.clients) == 4
    res.release()
    for _r, w in [busy, *fresh]:
        w.close()


async def test_frame_too_short_for_a_dns_header_closes_the_connection(tcp):
    srv, _res = tcp
    reader, writer = await connect(srv)
    writer.write(b"\x00\x05hello")
    assert await closed_by_server(reader)
    assert srv.counters["oversize"] == 1


async def test_responses_sent_as_queries_are_dropped_not_held(tcp):
    srv, _res = tcp
    reader, writer = await connect(srv)
    writer.write(frame(answer(query(qid=3))) + frame(query(qid=4)))
    assert (await read_reply(reader)).id == 4
    assert srv.counters["responses_dropped"] == 1
    writer.write_eof()
    assert await closed_by_server(reader)  # nothing in flight: closed at once


async def test_a_crashing_query_does_not_stop_the_connection(tcp):
    srv, _res = tcp
    reader, writer = await connect(srv)
    writer.write(frame(query("crash.example", qid=1)) + frame(query(qid=2)))
    assert (await read_reply(reader)).id == 2
    writer.close()


async def test_client_that_does_not_read_is_not_read_either(tcp, monkeypatch):
    monkeypatch.setattr(tcp_listener, "OUT_HIGH", 4096)
    monkeypatch.setattr(tcp_listener, "OUT_LOW", 1024)
    srv, _res = tcp
    srv.idle_timeout = 5.0  # nothing moves while both sides wait: not idle for this test
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", srv.port))
    await settle(lambda: srv.clients)
    next(iter(srv.clients)).sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.setblocking(False)
    q = frame(query(qid=9)) * 50
    sent = blocked = 0
    pending = q
    while blocked < 20:  # send queries, never reading an answer, until the server stops reading
        try:
            n = sock.send(pending)
            sent += n
            pending = pending[n:] or q
            blocked = 0
        except BlockingIOError:
            blocked += 1
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
    flen = len(frame(query(qid=9)))
    sent -= sent % flen  # a frame cut short is never answered; an answer is as long as its query
    client = next(iter(srv.clients))
    assert srv.counters["write_blocked"] >= 1 and srv.counters["read_paused"] >= 1
    assert not client.reading  # back-pressure: it waits for the client to read
    assert client.out is not None and len(client.out) <= 4096 + 100  # + one answer
    got = 0
    sock.setblocking(True)
    sock.settimeout(2)
    loop = asyncio.get_running_loop()
    while got < sent:  # every query sent is answered once the client reads
        chunk = await loop.run_in_executor(None, sock.recv, 65536)
        assert chunk, (got, sent, srv.counters)
        got += len(chunk)
    assert got == sent
    sock.close()


async def test_stop_accepting_keeps_open_connections_answered(tcp):
    srv, _res = tcp
    reader, writer = await connect(srv)
    assert srv.server is not None
    srv.server.close()
    with pytest.raises(OSError):
        await connect(srv)
    writer.write(frame(query(qid=6)))
    assert (await read_reply(reader)).id == 6
    writer.close()


async def test_answer_for_a_reset_connection_is_dropped_quietly(tcp):
    srv, res = tcp
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(frame(query("slow.example", qid=1)))
    await settle(lambda: res.held)
    client = res.held[0][0]
    assert isinstance(client, TcpClient)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset, not a half-close: nobody is there to answer
    await settle(lambda: not srv.clients)
    res.release()  # no exception, nothing sent
    assert client.closed


# -- UDP -----------------------------------------------------------------------------------------
async def test_udp_hits_are_answered_in_one_batch_and_the_outbox_drained_once():
    res = FakeResolver()
    loop = asyncio.get_running_loop()
    udp = UdpListener(loop, "127.0.0.1", free_port(), res.handle, res.after_batch, batch=64)
    udp.start()
    try:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.setblocking(False)
        for i in range(20):
            c.sendto(query(qid=i), ("127.0.0.1", udp.port))
        got: list[int] = []
        while len(got) < 20:
            data = await asyncio.wait_for(loop.sock_recv(c, 4096), 2)
            got.append(dns.message.from_wire(data).id)
        assert sorted(got) == list(range(20))
        assert res.batches <= 3  # drained in batches, not one wake-up per datagram
        assert udp.counters["received"] == 20 and udp.counters["sent"] == 20
        c.close()
    finally:
        udp.close()


async def test_udp_miss_is_answered_later_through_send():
    res = FakeResolver()
    loop = asyncio.get_running_loop()
    udp = UdpListener(loop, "127.0.0.1", free_port(), res.handle, res.after_batch)
    udp.start()
    try:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.setblocking(False)
        c.sendto(query("slow.example", qid=3), ("127.0.0.1", udp.port))
        await settle(lambda: res.held)
        (listener_, addr), data = res.held[0]
        listener_.send(answer(data), addr)  # what the daemon's flush does
        reply = await asyncio.wait_for(loop.sock_recv(c, 4096), 2)
        assert dns.message.from_wire(reply).id == 3
        c.close()
    finally:
        udp.close()


ENGINES = ["python"] + (["c"] if listener_mod._udpbatch is not None else [])


@pytest.mark.parametrize("engine", ENGINES)
async def test_wildcard_udp_replies_leave_from_the_address_the_query_was_sent_to(engine):
    """Listening on 0.0.0.0, a query to 127.0.0.5 from 127.0.0.1 is answered from 127.0.0.5:
    left to routing the kernel would answer from 127.0.0.1, and a client that checks the
    source (a connected socket, most stub resolvers) would drop the reply. Hits from the ready
    table, immediate answers and later ones (a miss, through ``send``) all do."""
    res = FakeResolver()
    loop = asyncio.get_running_loop()
    port = free_port()
    hit = query("ready.example", qid=0)
    ready = {hit[2:]: (answer(hit)[2:], float("inf"))}
    udp = UdpListener(
        loop,
        "0.0.0.0",
        port,
        res.handle,
        res.after_batch,
        engine=engine,
        ready=lambda cap: ready,
        count_ready=lambda n: None,
    )
    udp.start()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        c.bind(("127.0.0.1", 0))
        c.setblocking(False)
        asked = ("127.0.0.5", port)
        c.sendto(query("now.example", qid=1), asked)
        c.sendto(query("ready.example", qid=2), asked)
        c.sendto(query("slow.example", qid=3), asked)
        await settle(lambda: res.held)
        (client, data) = res.held[0]
        client[0].send(answer(data), *client[1:])  # what the daemon's flush does
        got = {}
        for _ in range(3):
            reply, source = await asyncio.wait_for(loop.sock_recvfrom(c, 4096), 2)
            got[dns.message.from_wire(reply).id] = source
        assert got == {1: asked, 2: asked, 3: asked}
        assert udp.counters["sent"] == 3 and udp.counters["send_errors"] == 0
    finally:
        c.close()
        udp.close()


async def test_a_listener_on_one_address_keeps_plain_clients():
    """Only wildcard listeners carry a reply source: the common case stays a 2-tuple."""
    res = FakeResolver()
    loop = asyncio.get_running_loop()
    udp = UdpListener(loop, "127.0.0.1", free_port(), res.handle, res.after_batch)
    assert not udp.pktinfo
    udp.start()
    try:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.sendto(query("slow.example", qid=3), ("127.0.0.1", udp.port))
        await settle(lambda: res.held)
        assert len(res.held[0][0]) == 2
        c.close()
    finally:
        udp.close()


@pytest.mark.parametrize("listen, err, says", [
    ("127.0.0.53:53", errno.EADDRINUSE, "systemd-resolved's stub listens on 127.0.0.53:53"),
    ("192.0.2.77:53", errno.EADDRNOTAVAIL, "no interface of this host has that address"),
    ("127.0.0.1:53", errno.EACCES, "port 53 needs root or CAP_NET_BIND_SERVICE"),
    ("[fe80::1]:53", errno.EINVAL, "needs its interface: write [fe80::1%IFNAME]:53"),
    ("[fe80::1%eth0]:53", errno.EINVAL, "fe80::1 is not an address of interface eth0"),
    ("127.0.0.1:53", errno.ENOBUFS, os.strerror(errno.ENOBUFS)),
])  # fmt: skip
async def test_a_listen_address_that_cannot_be_bound_is_explained(listen, err, says):
    exc = OSError(err, os.strerror(err))
    assert says in listen_error(ListenAddr.parse(listen), exc)
