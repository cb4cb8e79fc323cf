"""Garbage in, from clients and from upstreams, never stops the service.

Each test throws one kind of hostile input at a running daemon (real sockets in the test bed's
host namespace) and then checks that a normal query is still answered, over UDP and TCP, and
that the daemon process is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
import threading
import time

import dns.message
import pytest
from splitdns_helpers import (
    CORP_ZONE,
    STUB,
    addrs,
    config,
    corp_pvd,
    frame,
    names_seen,
    rcode,
    recv_frame,
    start_corp,
    still_serving,
    tcp_connect,
    udp_socket,
    wifi_pvd,
)

from mifdns.harness import netns

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]


def _query(name: str = "www.corp.example", qid: int = 0x1234) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = qid
    return q.to_wire()


def _udp_exchange(
    ns: str, payloads: list[bytes], wait: float = 0.3, expect: int | None = None
) -> list[bytes]:
    """Send every payload from one socket; collect what comes back within ``wait`` (or until
    ``expect`` replies came)."""
    with udp_socket(ns) as s:
        for p in payloads:
            s.sendto(p, STUB)
        s.settimeout(wait)
        out: list[bytes] = []
        while expect is None or len(out) < expect:
            try:
                out.append(s.recv(65535))
            except TimeoutError:
                break
        return out


# -- UDP ------------------------------------------------------------------------------------------
async def test_random_bytes_over_udp_never_stop_the_service(
    topology, corp_net, upstream_factory, mifdns_factory
):
    _, d = await start_corp(topology, corp_net, upstream_factory, mifdns_factory)
    rng = random.Random(6418)
    junk = [bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 5, 12, 13, 40, 300, 1400])))
            for _ in range(500)]  # fmt: skip
    replies = await asyncio.to_thread(_udp_exchange, topology.host, junk, 0.5)
    for r in replies:  # whatever is answered is an answer (QR=1) to a query we sent
        assert len(r) >= 12 and r[2] & 0x80
    await still_serving(d)
    assert d.ctl("status")["counters"]["udp_received"] >= 500


async def test_malformed_queries_get_formerr_or_nothing(
    topology, corp_net, upstream_factory, mifdns_factory
):
    up, d = await start_corp(topology, corp_net, upstream_factory, mifdns_factory)
    good = _query(qid=0x0101)
    edns = dns.message.make_query("www.corp.example", "A", use_edns=0, id=0x0101).to_wire()
    hdr = bytearray(good[:12])
    loop_name = bytearray(hdr) + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # pointer to itself
    fwd_ptr = bytearray(hdr) + b"\x03www\xc0\x20" + b"\x00\x01\x00\x01"  # pointer forwards
    cases = {
        "empty": b"",
        "short header": good[:5],
        "header only": bytes(hdr),
        "cut in the name": good[:16],
        "cut in qtype": good[:-3],
        "qdcount 0": bytes(hdr[:4]) + b"\x00\x00" + bytes(hdr[6:]),
        "qdcount 2": bytes(hdr[:4]) + b"\x00\x02" + bytes(hdr[6:]) + good[12:],
        "compression loop in question": bytes(loop_name),
        "forward pointer": bytes(fwd_ptr),
        "label type 0x40": bytes(hdr) + b"\x41" + b"x" * 10 + b"\x00\x00\x01\x00\x01",
        "name over 255": bytes(hdr) + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
        "arcount lies": bytes(hdr[:10]) + b"\x00\x05" + good[12:],
        "OPT rdlength past the end": edns[:-2] + b"\x00\x08",
        "OPT options overrun": edns[:-2] + b"\x00\x05" + b"\x00\x0a\x00\x09\x00",
        "OPT not at the root": edns[:-11] + b"\x01x\x00" + edns[-10:],
        "two OPT records": edns[:10] + b"\x00\x02" + edns[12:] + edns[-11:],
        "response (QR=1)": bytes([good[0], good[1], good[2] | 0x80]) + good[3:],
    }
    for what, payload in cases.items():
        silent = what in ("empty", "short header", "response (QR=1)")
        replies = await asyncio.to_thread(
            _udp_exchange, topology.host, [payload], 0.2 if silent else 2.0, None if silent else 1
        )
        if silent:
            assert replies == [], what  # nothing to answer: never answer a response
            continue
        assert len(replies) == 1, what
        r = replies[0]
        assert r[:2] == payload[:2] and r[2] & 0x80, what  # our ID, QR set
        assert r[3] & 0x0F == 1, (what, r[3] & 0x0F)  # FORMERR
    await still_serving(d)
    assert set(names_seen(up)) == {"www.corp.example.", "intranet.corp.example."}


async def test_compression_loop_in_an_additional_record_is_formerr(
    topology, corp_net, upstream_factory, mifdns_factory
):
    _, d = await start_corp(topology, corp_net, upstream_factory, mifdns_factory)
    q = bytearray(_query(qid=0x2222))
    q[10:12] = b"\x00\x01"  # ARCOUNT 1: a record whose owner points at itself
    at = len(q)
    q += bytes([0xC0 | (at >> 8), at & 0xFF]) + struct.pack("!HHIH", 1, 1, 0, 4) + b"\x01" * 4
    (r,) = await asyncio.to_thread(_udp_exchange, topology.host, [bytes(q)], 2.0, 1)
    assert rcode(dns.message.from_wire(r, question_only=True)) == "FORMERR"
    await still_serving(d)


# -- TCP ------------------------------------------------------------------------------------------
async def test_huge_tcp_length_prefix_and_half_open_connections_do_not_block_anyone(
    topology, corp_net, upstream_factory, mifdns_factory
):
    _, d = await start_corp(topology, corp_net, upstream_factory, mifdns_factory,
                          limits={"tcp_idle_timeout": 1.0})  # fmt: skip
    ns = topology.host

    def attack() -> list[socket.socket]:
        held = []
        s = tcp_connect(ns, STUB)  # 65535 announced, 10 bytes sent, then silence
        s.sendall(b"\xff\xff" + os.urandom(10))
        held.append(s)
        s = tcp_connect(ns, STUB)  # half a length prefix
        s.sendall(b"\x00")
        held.append(s)
        held.append(tcp_connect(ns, STUB))  # connected, nothing sent
        s = tcp_connect(ns, STUB)  # a frame too short to be a DNS message
        s.sendall(b"\x00\x05hello")
        held.append(s)
        s = tcp_connect(ns, STUB)  # garbage framed correctly
        s.sendall(frame(os.urandom(40)))
        held.append(s)
        s = tcp_connect(ns, STUB)  # responses (QR=1) framed correctly: never answered
        s.sendall(frame(b"\x12\x34\x80" + os.urandom(37)) + frame(_query()[:2] + b"\x81\x80"
                  + _query()[4:]))  # fmt: skip
        held.append(s)
        return held

    held = await asyncio.to_thread(attack)
    try:
        await still_serving(d)  # while the hostile connections are still open

        # a TCP client that sends a query and half-closes still gets its answer (RFC 7766)
        def half_close() -> dns.message.Message:
            with tcp_connect(ns, STUB) as s:
                s.sendall(frame(_query(qid=0x3333)))
                s.shutdown(socket.SHUT_WR)
                return dns.message.from_wire(recv_frame(s))

        r = await asyncio.to_thread(half_close)
        assert r.id == 0x3333 and addrs(r) == ["10.8.0.80"]

        # idle and stuck connections are closed by the server after the idle timeout (1 s)
        def closed_by_server(s: socket.socket) -> str:
            s.settimeout(3)
            try:
                while s.recv(4096):
                    pass
                return "closed"
            except ConnectionResetError:
                return "reset"
            except TimeoutError:
                return "still open"

        t0 = time.monotonic()
        results = await asyncio.to_thread(lambda: [closed_by_server(s) for s in held])
        assert "still open" not in results, results
        assert time.monotonic() - t0 < 2.5
    finally:
        for s in held:
            s.close()
    await still_serving(d)
    status = d.ctl("status")
    assert status["tcp_clients"] == 0


async def test_tcp_connection_flood_is_capped_and_service_recovers(
    topology, corp_net, upstream_factory, mifdns_factory
):
    """Connections that only hold a slot (slowloris: a byte of a length prefix each, more
    trickling in) are capped, and a client that asks a question over TCP meanwhile is served:
    it takes the slot of the connection idle the longest."""
    _, d = await start_corp(topology, corp_net, upstream_factory, mifdns_factory,
                          limits={"max_tcp_clients": 8})  # fmt: skip

    def flood() -> list[socket.socket]:
        conns = [tcp_connect(topology.host, STUB) for _ in range(20)]
        for s in conns:
            with contextlib.suppress(OSError):
                s.send(b"\x00")  # half a length prefix, never finished
        return conns

    held = await asyncio.to_thread(flood)
    try:
        assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]  # UDP unaffected
        for _ in range(3):  # while the flood holds every slot
            r = await d.aquery("intranet.corp.example", tcp=True)
            assert addrs(r) == ["10.8.0.81"]
        await asyncio.sleep(0.2)
        status = d.ctl("status")
        assert status["tcp_clients"] <= 8
        assert status["limits"]["hits"]["tcp_evicted"] >= 12
    finally:
        for s in held:
            s.close()
    await asyncio.sleep(0.2)
    await still_serving(d)


async def test_many_pipelined_queries_on_one_connection_are_all_answered(
    topology, corp_net, upstream_factory, mifdns_factory
):
    _, d = await start_corp(topology, corp_net, upstream_factory, mifdns_factory)
    names = [f"n{i}.corp.example" for i in range(100)] + ["www.corp.example"] * 100

    def pipeline() -> list[dns.message.Message]:
        with tcp_connect(topology.host, STUB, timeout=10) as s:
            s.sendall(b"".join(frame(_query(n, qid=i)) for i, n in enumerate(names)))
            return [dns.message.from_wire(recv_frame(s)) for _ in names]

    replies = await asyncio.to_thread(pipeline)
    assert sorted(r.id for r in replies) == list(range(len(names)))
    by_id = {r.id: r for r in replies}
    assert all(rcode(by_id[i]) == "NXDOMAIN" for i in range(100))
    assert all(addrs(by_id[i]) == ["10.8.0.80"] for i in range(100, 200))
    await still_serving(d)


# -- hostile upstreams ----------------------------------------------------------------------------
class _RawResponder:
    """A UDP 'server' in a namespace that answers every query with bytes made by ``make``
    (given the query), for upstream replies no real server would send."""

    def __init__(self, ns: str, addr: str, make) -> None:  # type: ignore[no-untyped-def]
        self.sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, 53))
        self.sock.settimeout(0.1)
        self.make = make
        self.seen = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, src = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.seen += 1
            for reply in self.make(data):
                try:
                    self.sock.sendto(reply, src)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def _answer_header(query: bytes, an: int = 1) -> bytes:
    qid = query[:2]
    return qid + b"\x81\x80" + b"\x00\x01" + struct.pack("!HHH", an, 0, 0)


def _question(query: bytes) -> bytes:
    end = 12
    while query[end]:
        end += query[end] + 1
    return query[12 : end + 5]


@pytest.mark.parametrize("garbage", [
    "answer pointer loop", "answer pointer forward", "rdlength past the end",
    "bad A length", "trailing junk", "header only",
])  # fmt: skip
async def test_malformed_upstream_reply_is_not_cached_and_next_server_answers(
    garbage, topology, upstream_factory, mifdns_factory
):
    corp = topology.add_network("corp", "corp0",
                                server_addrs=["192.0.2.53/24", "192.0.2.54/24"])  # fmt: skip

    def make(query: bytes) -> list[bytes]:
        q = _question(query)
        hdr = _answer_header(query)
        at = 12 + len(q)
        rr_a = struct.pack("!HHIH", 1, 1, 300, 4) + bytes([6, 6, 6, 6])
        if garbage == "answer pointer loop":
            return [hdr + q + bytes([0xC0 | at >> 8, at & 0xFF]) + rr_a]
        if garbage == "answer pointer forward":
            return [hdr + q + bytes([0xC0, at + 2]) + rr_a]
        if garbage == "rdlength past the end":
            return [hdr + q + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 400) + b"\x06" * 4]
        if garbage == "bad A length":
            return [hdr + q + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 3) + b"\x06" * 3]
        if garbage == "trailing junk":
            return [hdr + q + b"\xc0\x0c" + rr_a + b"\xde\xad"]
        return [hdr[:12]]

    bad = _RawResponder(corp.ns, "192.0.2.53", make)
    try:
        good = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.54"])
        d = await mifdns_factory(topology, config(corp_pvd(servers=["192.0.2.53", "192.0.2.54"])))
        r = await d.aquery("www.corp.example", timeout=5)
        assert addrs(r) == ["10.8.0.80"]  # never 6.6.6.6
        assert bad.seen >= 1 and good.saw("www.corp.example")
        assert [row["name"] for row in d.ctl("cache")] == ["www.corp.example."]
        await still_serving(d)
    finally:
        bad.close()


async def test_garbage_from_every_server_of_a_pvd_is_servfail_not_a_crash(
    topology, upstream_factory, mifdns_factory
):
    corp = topology.add_network("corp", "corp0")
    wifi = topology.add_network("wifi", "wlan0")
    rng = random.Random(8914)

    def make(query: bytes) -> list[bytes]:
        junk = [query[:2] + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
                for _ in range(3)]  # fmt: skip
        return junk + [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 50)))]

    bad = _RawResponder(corp.ns, "192.0.2.53", make)
    try:
        await upstream_factory(wifi, {"www.example.com": {"A": "203.0.113.1"}})
        d = await mifdns_factory(topology, config(corp_pvd(), wifi_pvd()))
        for i in range(20):
            r = await d.aquery(f"h{i}.corp.example", timeout=5)
            assert rcode(r) in ("SERVFAIL", "NXDOMAIN", "NOERROR")
            assert not any(rd.to_text() == "6.6.6.6" for rs in r.answer for rd in rs)
        assert addrs(await d.aquery("www.example.com")) == ["203.0.113.1"]
        assert d.proc.poll() is None and "Traceback" not in d.stderr()
    finally:
        bad.close()
