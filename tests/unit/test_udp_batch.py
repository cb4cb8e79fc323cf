"""The UDP listener's two loops (C recvmmsg/sendmmsg, and Python) on real loopback sockets.

Both must behave the same: a query whose bytes after the ID are in the ready table, before its
"valid until" (or aged past it, core/memo.py), is answered from it with the query's own ID,
without calling the resolver;
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

import dns.message
import dns.rdatatype
import pytest

from mifdns.aio import listener
from mifdns.aio.listener import UdpListener
from mifdns.core.memo import AGING_HORIZON

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


async def make(engine: str, core: Core, address: str = "127.0.0.1", batch: int = 64) -> UdpListener:
    need(engine)
    udp = UdpListener(
        asyncio.get_running_loop(),
        address,
        0,
        core.handle,
        core.after_batch,
        batch=batch,
        ready=core.ready,
        count_ready=core.count_ready,
        engine=engine,
    )
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
async def served(
    engine: str, core: Core, address: str = "127.0.0.1"
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
        assert sorted(got) == sorted(
            struct.pack("!H", 1000 + i) + b"READY%d" % (i % 10) for i in range(40)
        )
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
        assert sorted(got) == sorted(
            [
                query(1, 7)[:2] + b"slow:" + query(1, 7)[2:],
                query(2, 8)[:2] + b"slow:" + query(2, 8)[2:],
            ]
        )
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
        ((_, (_, addr), _, _),) = core.asked
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
    other = UdpListener(
        asyncio.get_running_loop(), "127.0.0.1", udp.port, core.handle, core.after_batch
    )
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
        UdpListener(
            asyncio.get_running_loop(), "127.0.0.1", 0, Core().handle, lambda: None, engine="c"
        )
    udp = UdpListener(asyncio.get_running_loop(), "127.0.0.1", 0, Core().handle, lambda: None)
    assert udp.engine == "python"
    udp.sock.close()


# ---------------------------------------------------------------- aging (the C loop only)
def aging_entry(
    tail: bytes,
    now: float,
    *,
    stored: float,
    expires: float,
    offsets: tuple[int, ...],
    values: tuple[int, ...],
) -> tuple:
    """A ready-table entry past its "valid until", with how to age it (core/memo.py)."""
    return (tail, now - 0.5, stored, expires, offsets, values)


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_entry_past_its_until_is_aged_by_either_loop_without_the_resolver(engine):
    core = Core()
    now = time.monotonic()
    # a 14-byte "reply after the ID" with two 32-bit numbers at message offsets 4 and 10
    tail = b"AB" + (100).to_bytes(4, "big") + b"CD" + (7).to_bytes(4, "big") + b"EF"
    key = query(1, 0)[2:]
    core.table[key] = aging_entry(
        tail, now, stored=now - 10.25, expires=now + 50, offsets=(4, 10), values=(100, 7)
    )
    async with served(engine, core) as (udp, c):
        c.sendto(query(1, 0x0A0B), ("127.0.0.1", udp.port))
        (got,) = await recv_all(c, 1)
        # 10 s elapsed: 100 -> 90, 7 -> 0 (never below zero); the rest untouched
        assert got == b"\x0a\x0b" + b"AB" + (90).to_bytes(4, "big") + b"CD" + bytes(4) + b"EF"
        assert core.asked == [] and core.counted == 1
        assert udp.counters["replayed"] == 1 == udp.counters["aged"]
        fresh, until, *rest = core.table[key]  # stored back: the next second replays it
        assert fresh == got[2:] and until == pytest.approx(now - 10.25 + 11)
        assert rest == [now - 10.25, now + 50, (4, 10), (100, 7)]
        c.sendto(query(1, 0x0C0D), ("127.0.0.1", udp.port))
        (again,) = await recv_all(c, 1)
        assert again == b"\x0c\x0d" + fresh and udp.counters["aged"] == 1


@pytest.mark.parametrize("engine", ENGINES)
async def test_aging_never_serves_past_expiry_nor_writes_outside_the_reply(engine):
    core = Core()
    now = time.monotonic()
    tail = b"\x00" * 10
    good: dict[str, Any] = {"stored": now - 1, "expires": now + 60, "offsets": (2,), "values": (5,)}
    cases: dict[int, dict[str, Any]] = {
        1: {**good, "expires": now - 0.1},  # expired: the resolver decides
        2: {**good, "offsets": (10,)},  # 8 + 4 > 10 bytes: outside
        3: {**good, "offsets": (1,)},  # inside the ID: outside the stored reply
        4: {**good, "offsets": (2, 4), "values": (5,)},  # lengths differ
        5: {**good, "offsets": (1 << 80,)},  # not a C long
        6: {**good, "values": ("5",)},  # not an int
        7: {**good, "stored": int(now)},  # not a float
        8: {**good, "offsets": (8,), "values": (1 << 40,)},  # not a TTL
        9: {**good, "values": (-1,)},  # not a TTL
        10: {**good, "stored": now - 2.0**33},  # longer ago than any TTL lasts
    }
    for n, kw in cases.items():
        core.table[query(n, 0)[2:]] = aging_entry(tail, now, **kw)
    async with served(engine, core) as (udp, c):
        core.table[query(11, 0)[2:]] = aging_entry(tail, now, **good)  # the one that ages
        for n in range(1, 12):
            c.sendto(query(n, n), ("127.0.0.1", udp.port))
        got = await recv_all(c, 11)
        assert sorted(d[2:7] for d in got if d[2:7] == b"slow:") == [b"slow:"] * 10
        assert len(core.asked) == 10 and udp.counters["aged"] == 1
        (aged,) = [d for d in got if d[:2] == b"\x00\x0b"]
        assert aged == b"\x00\x0b" + (4).to_bytes(4, "big") + bytes(6)  # 5 - 1 s"


async def test_the_c_loop_ages_exactly_as_the_resolver_renders_again():
    """The resolver's memo offers a single-partition hit with how to age it; at any later
    instant, the C loop's aged reply is byte for byte what the resolver itself renders."""
    need("c")
    from mifdns.aio import _udpbatch

    from .coredriver import Driver, spec

    def world() -> Driver:
        d = Driver([spec("wifi", "wlan0")])
        d.worlds["wifi"].records = {
            "www.example.com": {"A": ["203.0.113.80"]},
            "mx.example.com": {"MX": ["10 www.example.com."]},
        }
        d.worlds["wifi"].ttl = int(3 * AGING_HORIZON)
        d.worlds["wifi"].soa_min = int(10 * AGING_HORIZON)  # the NXDOMAIN outlives the rest
        return d

    cdrv, pydrv = world(), world()  # the same history: one replays in C, one renders
    t0 = cdrv.now
    queries = [
        dns.message.make_query(n, t, use_edns=0)
        for n, t in (
            ("www.example.com", "A"),
            ("WWW.Example.COM", "A"),
            ("mx.example.com", "MX"),
            ("nx.example.com", "A"),
        )
    ]
    table = cdrv.resolver.ready_table(65494)  # a listener's table is filled from now on
    for d in (cdrv, pydrv):
        for q in queries:
            d.query(q.question[0].name.to_text(), dns.rdatatype.to_text(q.question[0].rdtype))
            d.resolver.handle_query(q.to_wire(), "c", t0, 65494)  # memoized
    assert len(table) == 4 and all(len(v) == 6 for v in table.values())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as srv, client() as c:
        srv.bind(("127.0.0.1", 0))
        srv.setblocking(False)
        h = AGING_HORIZON
        for elapsed in (0.4, 1.0, 2.7, h - 0.1, h + 7, 2 * h + 6.9, 3 * h, 3 * h + 15):
            now = t0 + elapsed
            asked: list[bytes] = []

            def slow(
                data: bytes, addr: Any, now: float = now, asked: list[bytes] = asked
            ) -> bytes | None:
                asked.append(data)
                return cdrv.resolver.handle_query(data, "c", now, 65494)

            for q in queries:
                c.sendto(q.to_wire(), srv.getsockname())
            await asyncio.sleep(0.02)
            got, *_ = _udpbatch.serve(srv.fileno(), socket.AF_INET, table, now, slow, 64)
            assert got == len(queries)
            for q in queries:
                want = pydrv.resolver.handle_query(q.to_wire(), "c", now, 65494)
                assert want is not None or elapsed >= 3 * h
                reply = c.recv(4096) if want is not None else None
                assert reply == want, (elapsed, q.question[0])
            if elapsed < h or elapsed == 2 * h + 6.9:  # aged in C, the resolver not asked
                assert asked == [], elapsed
            elif elapsed == h + 7:  # past the horizon: the resolver looks again (and memoizes)
                assert len(asked) == len(queries)
            else:  # past the TTL of the positive answers: the resolver decides
                assert len(asked) >= 3, elapsed
