"""Every bound holds under a flood, shows in ``ctl status``, and service goes on.

Each test floods one bound of a running daemon from the test bed's host namespace (bounded in
count and time: a few thousand queries, a few seconds), reads the bound's counter and setting in
``ctl status`` (``limits``: the setting and ``hits``), checks that what was turned away was
turned away the documented way (SERVFAIL at once, a refused connection, a query that waits, a
dropped datagram that is counted) and that a normal query is then answered over UDP and TCP.
"""

from __future__ import annotations

import asyncio
import socket
import time

import dns.message
import pytest
from splitdns_helpers import (
    STUB,
    addrs,
    frame,
    rcode,
    recv_frame,
    start_corp,
    still_serving,
    tcp_connect,
    udp_socket,
)

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]


def _query(name: str, qid: int = 0x1234) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = qid
    return q.to_wire()


def _udp_flood(
    ns: str, payloads: list[bytes], quiet: float = 0.5, limit: float = 10.0
) -> tuple[int, list[dns.message.Message]]:
    """Send every payload from one socket as fast as it goes (a send the kernel refuses is
    skipped); collect the replies until none came for ``quiet`` seconds. (sent, replies)."""
    replies = []
    with udp_socket(ns) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setblocking(False)
        sent = 0
        for p in payloads:
            try:
                s.sendto(p, STUB)
                sent += 1
            except BlockingIOError:
                pass
        s.settimeout(quiet)
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                replies.append(dns.message.from_wire(s.recv(65535)))
            except TimeoutError:
                break
    return sent, replies


async def test_inflight_limit_answers_servfail_at_once_and_service_continues(
    topology, corp_net, upstream_factory, mifdns_factory
):
    up, d = await start_corp(topology, corp_net, upstream_factory, mifdns_factory,
                          limits={"max_inflight": 8})  # fmt: skip
    up.set(delay=0.4)  # the first 8 stay in flight while the flood arrives
    names = [f"n{i}.corp.example" for i in range(300)]
    t0 = time.monotonic()
    sent, replies = await asyncio.to_thread(
        _udp_flood, topology.host, [_query(n, i) for i, n in enumerate(names)], 1.5
    )
    assert sent == 300 and len(replies) == 300  # every query got an answer
    codes = [rcode(r) for r in replies]
    assert codes.count("NXDOMAIN") >= 8 and codes.count("SERVFAIL") >= 250, codes
    assert time.monotonic() - t0 < 5
    st = d.ctl("status")
    assert st["limits"]["max_inflight"] == 8
    assert st["limits"]["hits"]["inflight"] >= 250
    assert st["counters"]["limit_inflight"] == st["limits"]["hits"]["inflight"]
    assert st["inflight"] <= 8
    up.set(delay=0.0)
    await still_serving(d)


async def test_udp_ingress_flood_is_counted_datagram_for_datagram_and_service_continues(
    topology, corp_net, upstream_factory, mifdns_factory
):
    _, d = await start_corp(topology, corp_net, upstream_factory, mifdns_factory,
                          limits={"ingress_batch": 8, "ingress_queue_bytes": 262144})  # fmt: skip
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]  # cached: the flood hits
    before = d.ctl("status")["counters"]
    flood = [_query("www.corp.example", i & 0xFFFF) for i in range(40_000)]
    sent, replies = await asyncio.to_thread(_udp_flood, topology.host, flood, 1.0)
    assert sent > 10_000 and replies
    after = d.ctl("status")
    c = after["counters"]
    received = c["udp_received"] - before["udp_received"]
    dropped = c["udp_ingress_drops"] - before["udp_ingress_drops"]
    # every datagram that left the client was either handled or dropped at our queue, counted
    assert received + dropped == sent, (received, dropped, sent)
    assert after["limits"]["ingress_batch"] == 8
    # the queue is the configured one (root: SO_RCVBUFFORCE), so a flood overflows it sooner
    assert after["limits"]["ingress_queue_granted"] == 262144
    assert dropped > 0
    assert after["limits"]["hits"]["ingress_drops"] == c["udp_ingress_drops"]
    await still_serving(d)


async def test_tcp_connection_and_pipelining_floods_are_capped_and_nothing_is_lost(
    topology, corp_net, upstream_factory, mifdns_factory
):
    up, d = await start_corp(
        topology,
        corp_net,
        upstream_factory,
        mifdns_factory,
        limits={"max_tcp_clients": 6, "max_tcp_queries_per_connection": 4},
    )
    up.set(delay=0.2)
    ns = topology.host

    def flood() -> tuple[list[list[int]], int]:
        conns = [tcp_connect(ns, STUB, timeout=5) for _ in range(16)]
        answered: list[list[int]] = []
        refused = 0
        for i, s in enumerate(conns):
            try:  # 12 distinct questions pipelined on each: 4 in flight, the rest wait
                s.sendall(b"".join(frame(_query(f"c{i}q{j}.corp.example", j)) for j in range(12)))
            except OSError:
                refused += 1
                conns[i] = None  # type: ignore[call-overload]
        for s in conns:
            if s is None:
                continue
            ids = []
            try:
                for _ in range(12):
                    ids.append(dns.message.from_wire(recv_frame(s)).id)
            except (OSError, ConnectionError):
                if not ids:
                    refused += 1
                    continue
            answered.append(sorted(ids))
            s.close()
        return answered, refused

    t0 = time.monotonic()
    answered, refused = await asyncio.to_thread(flood)
    assert len(answered) == 6 and refused == 10
    assert all(ids == list(range(12)) for ids in answered)  # pipelined queries wait, never lost
    assert time.monotonic() - t0 < 10
    st = d.ctl("status")
    assert st["limits"]["max_tcp_clients"] == 6
    assert st["limits"]["max_tcp_queries_per_connection"] == 4
    # the 10 connections past the cap each took the slot of an idle one (nothing asked yet)
    assert st["limits"]["hits"]["tcp_evicted"] + st["limits"]["hits"]["tcp_clients"] >= 10
    assert st["limits"]["hits"]["tcp_pipelined"] >= 6
    up.set(delay=0.0)
    await asyncio.sleep(0.2)
    assert d.ctl("status")["tcp_clients"] == 0
    await still_serving(d)


async def test_cache_entry_bound_evicts_and_counts(
    topology, corp_net, upstream_factory, mifdns_factory
):
    _, d = await start_corp(topology, corp_net, upstream_factory, mifdns_factory,
                          cache={"max_entries": 50})  # fmt: skip
    names = [f"e{i}.corp.example" for i in range(400)]
    _, replies = await asyncio.to_thread(
        _udp_flood, topology.host, [_query(n, i) for i, n in enumerate(names)], 1.0
    )
    assert len(replies) == 400 and {rcode(r) for r in replies} == {"NXDOMAIN"}
    st = d.ctl("status")
    assert st["cache"]["max_entries"] == 50 and st["cache"]["entries"] <= 50
    assert st["limits"]["hits"]["cache_evictions"] >= 350
    await still_serving(d)


async def test_upstream_tcp_limit_sheds_and_service_continues(
    topology, corp_net, upstream_factory, mifdns_factory
):
    up, d = await start_corp(topology, corp_net, upstream_factory, mifdns_factory,
                          limits={"max_upstream_tcp": 1})  # fmt: skip
    up.set(truncate_udp=True, delay=0.3)  # every answer needs TCP, and each one takes a while
    names = [f"t{i}.corp.example" for i in range(10)]
    _, replies = await asyncio.to_thread(
        _udp_flood, topology.host, [_query(n, i) for i, n in enumerate(names)], 4.0
    )
    assert len(replies) == 10  # answered (over TCP) or SERVFAIL, never silence
    assert {rcode(r) for r in replies} <= {"NXDOMAIN", "SERVFAIL"}
    st = d.ctl("status")
    assert st["limits"]["max_upstream_tcp"] == 1
    assert st["limits"]["hits"]["upstream_tcp"] >= 1
    up.set(truncate_udp=False, delay=0.0)
    await still_serving(d)
