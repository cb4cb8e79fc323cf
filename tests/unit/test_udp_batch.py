"""The UDP listener's two loops (C recvmmsg/sendmmsg, and Python) on real loopback sockets.

Both must behave the same: a query whose bytes after the ID are in the ready table, before its
"valid until", is answered from it with the query's own ID, without calling the resolver;
every other datagram goes to ``handle`` with the client's address as ``recvfrom`` gives it;
each answer goes back to the address its query came from. The C loop is built by
``pip install`` when a compiler is there: CI must have it (the test fails there if it is
missing); elsewhere its tests are skipped with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mifdns.aio import listener
from mifdns.aio.listener import UdpListener

pytestmark = pytest.mark.asyncio

ENGINES = ["c", "python"]


def need(engine: str) -> None:
    if engine == "c" and listener._udpbatch is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the C UDP loop (mifdns/aio/_udpbatch.c) was not built in CI")
        warnings.warn("SKIPPED: mifdns.aio._udpbatch is not built (no C compiler?)")
        pytest.skip("mifdns.aio._udpbatch is not built")


def query(n: int, qid: int) -> bytes:
    name = b"".join(bytes([len(p)]) + p for p in (b"q%d" % n, b"example")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + b"\0\x01\0\x01"


class Core:
    """Stands in for the resolver: a ready table, and ``handle`` for everything else."""

    def __init__(self) -> None:
        self.table: dict[bytes, tuple[bytes, float]] = {}
        self.asked: list[tuple[bytes, Any, float, int | None]] = []
        self.counted = 0
        self.batches = 0
        self.tables_given = 0
        self.monitoring = False

    def ready(self, max_udp: int | None) -> dict[bytes, tuple[bytes, float]] | None:
        self.tables_given += 1
        return None if self.monitoring else self.table

    def count_ready(self, n: int) -> None:
        self.counted += n

    def handle(self, data: bytes, client: Any, now: float, max_udp: int | None) -> bytes | None:
        self.asked.append((data, client, now, max_udp))
        if data.startswith(b"\xde\xad"):
            raise RuntimeError("a bug in the resolver")
        if b"\x04hold" in data or len(data) < 12:
            return None
        return data[:2] + b"slow:" + data[2:]

    def after_batch(self) -> None:
        self.batches += 1


async def make(engine: str, core: Core, address: str = "127.0.0.1", batch: int = 64
               ) -> UdpListener:
    need(engine)
    udp = UdpListener(asyncio.get_running_loop(), address, 0, core.handle, core.after_batch,
                      batch=batch, ready=core.ready, count_ready=core.count_ready,
                      engine=engine)
    udp.start()
    udp.port = udp.sock.getsockname()[1]
    return udp


async def recv_all(sock: socket.socket, n: int, timeout: float = 2.0) -> list[bytes]:
    loop = asyncio.get_running_loop()
    out = []
    while len(out) < n:
        out.append(await asyncio.wait_for(loop.sock_recv(sock, 70000), timeout))
    return out


def client(family: int = socket.AF_INET, address: str = "127.0.0.1") -> socket.socket:
    c = socket.socket(family, socket.SOCK_DGRAM)
    c.bind((address, 0))
    c.setblocking(False)
    return c


@contextlib.asynccontextmanager
async def served(engine: str, core: Core, address: str = "127.0.0.1"
                 ) -> AsyncIterator[tuple[UdpListener, socket.socket]]:
    """A listener on ``address`` in front of ``core``, and a client socket; both closed after."""
    udp = await make(engine, core, address=address)
    c = client(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
    try:
        yield udp, c
    finally:
        c.close()
        udp.close()


@pytest.mark.parametrize("engine", ENGINES)
async def test_ready_answers_carry_the_query_id_and_skip_the_resolver(engine):
    core = Core()
    far = time.monotonic() + 3600
    for n in range(10):
        core.table[query(n, 0)[2:]] = (b"READY%d" % n, far)
    async with served(engine, core) as (udp, c):
        for i in range(40):
            c.sendto(query(i % 10, 1000 + i), ("127.0.0.1", udp.port))
        got = await recv_all(c, 40)
        assert sorted(got) == sorted(struct.pack("!H", 1000 + i) + b"READY%d" % (i % 10)
                                     for i in range(40))
        assert core.asked == []
        assert core.counted == 40 == udp.counters["replayed"]
        assert udp.counters["received"] == 40 == udp.counters["sent"]
        assert core.tables_given == core.batches  # the table is asked for once per batch


@pytest.mark.parametrize("engine", ENGINES)
async def test_the_rest_goes_to_the_resolver_with_the_clients_address(engine):
    core = Core()
    now = time.monotonic()
    core.table[query(1, 0)[2:]] = (b"STALE", now - 1)  # its "valid until" has passed
    async with served(engine, core) as (udp, c):
        c.sendto(query(1, 7), ("127.0.0.1", udp.port))  # stale: asked
        c.sendto(query(2, 8), ("127.0.0.1", udp.port))  # not in the table: asked
        c.sendto(b"\x01\x02\x03", ("127.0.0.1", udp.port))  # too short for the table: asked
        c.sendto(b"", ("127.0.0.1", udp.port))  # empty: asked
        got = await recv_all(c, 2)
        assert sorted(got) == sorted([query(1, 7)[:2] + b"slow:" + query(1, 7)[2:],
                                      query(2, 8)[:2] + b"slow:" + query(2, 8)[2:]])
        await asyncio.sleep(0.05)
        datas = [a[0] for a in core.asked]
        assert datas == [query(1, 7), query(2, 8), b"\x01\x02\x03", b""]
        for _, cl, t, cap in core.asked:
            lst, addr = cl
            assert lst is udp and addr == c.getsockname()  # as recvfrom gives it
            assert cap == udp.max_udp and abs(t - now) < 1
        assert core.counted == 0 and udp.counters["replayed"] == 0
        assert udp.counters["received"] == 4 and udp.counters["sent"] == 2


@pytest.mark.parametrize("engine", ENGINES)
async def test_no_table_while_monitoring_means_every_query_is_asked(engine):
    core = Core()
    core.monitoring = True
    core.table[query(1, 0)[2:]] = (b"READY", time.monotonic() + 60)
    async with served(engine, core) as (udp, c):
        c.sendto(query(1, 5), ("127.0.0.1", udp.port))
        (got,) = await recv_all(c, 1)
        assert got.startswith(query(1, 5)[:2] + b"slow:")
        assert core.counted == 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_crashing_resolver_costs_one_answer_not_the_batch(engine, caplog):
    core = Core()
    async with served(engine, core) as (udp, c):
        c.sendto(b"\xde\xad" + query(1, 0)[2:], ("127.0.0.1", udp.port))
        c.sendto(query(2, 9), ("127.0.0.1", udp.port))
        (got,) = await recv_all(c, 1)
        assert got[:2] == b"\x00\x09"
        assert "crashed the handler" in caplog.text
        assert len(core.asked) == 2


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_batch_larger_than_one_system_call_reads_is_honoured(engine):
    core = Core()
    far = time.monotonic() + 3600
    core.table[query(0, 0)[2:]] = (b"R", far)
    udp = await make(engine, core, batch=400)
    loop = asyncio.get_running_loop()
    loop.remove_reader(udp.sock.fileno())  # queue everything first, then one wake-up
    c = client()
    try:  # room for all the answers at once (a reply's kernel bookkeeping is ~1 KiB)
        c.setsockopt(socket.SOL_SOCKET, 33, 2 << 20)  # SO_RCVBUFFORCE
    except OSError:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 << 20)
    try:
        for i in range(300):
            c.sendto(query(0, i), ("127.0.0.1", udp.port))
        await asyncio.sleep(0.1)
        (udp._readable_c if engine == "c" else udp._readable)()
        assert udp.counters["received"] == 300 and core.batches == 1
        got = await recv_all(c, 300)
        assert sorted(g[:2] for g in got) == sorted(struct.pack("!H", i) for i in range(300))
    finally:
        c.close()
        udp.sock.close()


@pytest.mark.parametrize("engine", ENGINES)
async def test_ipv6_clients_get_their_answers_and_a_recvfrom_address(engine):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    core = Core()
    core.table[query(1, 0)[2:]] = (b"SIX", time.monotonic() + 60)
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no ::1 here: {exc}")
    async with served(engine, core, "::1") as (udp, c):
        c.sendto(query(1, 3), ("::1", udp.port))
        c.sendto(query(2, 4), ("::1", udp.port))
        got = await recv_all(c, 2)
        assert b"\x00\x03SIX" in got
        (_, (_, addr), _, _), = core.asked
        assert addr == c.getsockname()  # (host, port, flowinfo, scope_id)
        assert len(addr) == 4


@pytest.mark.parametrize("engine", ENGINES)
async def test_large_datagrams_arrive_whole(engine):
    core = Core()
    async with served(engine, core) as (udp, c):
        big = query(1, 0x4242) + b"\xab" * 60000
        c.sendto(big, ("127.0.0.1", udp.port))
        (got,) = await recv_all(c, 1)
        assert got == big[:2] + b"slow:" + big[2:]
        assert core.asked[0][0] == big


async def test_a_second_listener_on_the_same_address_is_refused():
    """Before, both bound (SO_REUSEADDR) and the second took a share of the queries until it
    failed on TCP: a second daemon started by mistake lost clients' queries."""
    core = Core()
    udp = await make("python", core)
    other = UdpListener(asyncio.get_running_loop(), "127.0.0.1", udp.port, core.handle,
                        core.after_batch)
    try:
        with pytest.raises(OSError) as exc:
            other.start()
        assert exc.value.errno == errno.EADDRINUSE
    finally:
        other.sock.close()
        udp.close()


async def test_the_c_loop_is_refused_when_it_is_not_built(monkeypatch):
    monkeypatch.setattr(listener, "_udpbatch", None)
    with pytest.raises(ValueError, match="not built"):
        UdpListener(asyncio.get_running_loop(), "127.0.0.1", 0, Core().handle, lambda: None,
                    engine="c")
    udp = UdpListener(asyncio.get_running_loop(), "127.0.0.1", 0, Core().handle, lambda: None)
    assert udp.engine == "python"
    udp.sock.close()
