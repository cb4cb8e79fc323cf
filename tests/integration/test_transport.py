"""Upstream and client transport on real sockets in network namespaces: truncation and TCP,
failover between a PvD's servers, the SERVFAIL deadline, query ID / source port randomness,
and replies that must not be accepted (wrong ID, wrong source, wrong question).

Every test runs twice: with the miss lane (the default: a plain query's first UDP attempt is
sent and matched in C, aio/_lane.c) and without it (MIFDNS_MISS_LANE=0: the resolver's own
attempts, aio/upstream.py). Failover, late answers, ICMP errors and spoofing must not depend
on which one sent the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import pytest
from splitdns_helpers import (
    CORP_ZONE,
    PUBLIC_ZONE,
    STUB,
    addrs,
    client_log,
    config,
    corp_pvd,
    counter,
    edes,
    frame,
    many_a,
    names_seen,
    rcode,
    recv_frame,
    settle,
    start_nsd,
    tcp_connect,
    truncated,
    udp_socket,
    wait_for,
    wifi_pvd,
)

from mifdns.harness import netns
from mifdns.harness.fakeupstream import FakeUpstream
from mifdns.harness.topology import Topology

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]


@pytest.fixture(autouse=True, params=["lane", "nolane"])
def _miss_lane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIFDNS_MISS_LANE", "1" if request.param == "lane" else "0")


TWO_SERVERS = ["192.0.2.53/24", "192.0.2.54/24", "2001:db8:1::53/64"]
BIG = many_a("10.9.1", 60)  # ~1 KB: more than 512, less than 1232
HUGE = many_a("10.9.2", 120)  # ~2 KB: more than the 1232 mifdns advertises upstream


@pytest.fixture
def vpn_and_wifi(topology: Topology):
    return (topology.add_network("corp", "corp0", server_addrs=TWO_SERVERS),
            topology.add_network("wifi", "wlan0"))  # fmt: skip


class RecordingUpstream(FakeUpstream):
    """A FakeUpstream that also keeps every query's raw bytes (for IDs and EDNS)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.raw: list[tuple[bytes, str, Any]] = []

    async def _replies(self, data, transport, src, iface):  # type: ignore[no-untyped-def]
        self.raw.append((data, transport, src))
        return await super()._replies(data, transport, src, iface)


async def _timed(coro):
    t0 = time.monotonic()
    result = await coro
    return result, time.monotonic() - t0


# -- truncation ---------------------------------------------------------------------------------
async def test_truncated_upstream_answer_is_fetched_again_over_tcp_on_the_same_link(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, wifi = vpn_and_wifi
    up_corp = await upstream_factory(corp, CORP_ZONE, truncate_udp=True)
    up_wifi = await upstream_factory(wifi, CORP_ZONE)  # same address, must not be asked
    d = await mifdns_factory(topology, config(corp_pvd(), wifi_pvd()))
    await settle(up_corp, up_wifi)
    tcp_before = counter(d, "upstream_tcp_sent")
    r = await d.aquery("www.corp.example")
    assert addrs(r) == ["10.8.0.80"] and not truncated(r)
    assert [(s.transport, s.ns_iface, s.source[0]) for s in client_log(up_corp)] == [
        ("udp", "eth0", "192.0.2.10"), ("tcp", "eth0", "192.0.2.10"),
    ]  # fmt: skip
    assert names_seen(up_wifi) == []
    assert counter(d, "upstream_tcp_sent") == tcp_before + 1


async def test_answer_larger_than_512_is_truncated_for_a_plain_client_and_whole_over_tcp(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, _ = vpn_and_wifi
    up = await upstream_factory(corp, {"big.corp.example": {"A": BIG},
                                       "huge.corp.example": {"A": HUGE}})  # fmt: skip
    d = await mifdns_factory(topology, config(corp_pvd()))

    plain = await d.aquery("big.corp.example")  # no EDNS: 512 bytes at most
    assert truncated(plain) and len(plain.to_wire()) <= 512
    over_tcp = await d.aquery("big.corp.example", tcp=True)
    assert not truncated(over_tcp) and addrs(over_tcp) == sorted(BIG)
    edns = await d.aquery("big.corp.example", payload=4096)
    assert not truncated(edns) and addrs(edns) == sorted(BIG)
    small_edns = await d.aquery("big.corp.example", payload=700)  # says 700: gets TC
    assert truncated(small_edns)
    # one upstream exchange: the rest came from the cache, cut to each client's size
    assert [s.transport for s in client_log(up)] == ["udp"]

    # ~2 KB: the upstream truncates at mifdns's 1232, mifdns fetches it over TCP, and an
    # EDNS client that offers 4096 gets it whole over UDP
    whole = await d.aquery("huge.corp.example", payload=4096)
    assert not truncated(whole) and addrs(whole) == sorted(HUGE)
    assert [s.transport for s in client_log(up) if s.qname == "huge.corp.example."] == [
        "udp", "tcp"]  # fmt: skip
    assert truncated(await d.aquery("huge.corp.example", payload=1232))
    assert truncated(await d.aquery("huge.corp.example"))
    assert addrs(await d.aquery("huge.corp.example", tcp=True)) == sorted(HUGE)


async def test_real_nsd_truncation_is_followed_by_tcp(topology, tmp_path, mifdns_factory):
    corp = topology.add_network("corp", "corp0")
    zone = "$ORIGIN corp.example.\n$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 120\n"
    zone += "@ IN NS ns\nns IN A 10.8.0.53\n" + "".join(f"huge IN A {a}\n" for a in HUGE)
    start_nsd(topology, corp, tmp_path / "nsd", {"corp.example": zone})
    d = await mifdns_factory(topology, config(corp_pvd()))
    await asyncio.sleep(0.3)  # mifdns's start-up probes (NSD has no query log to watch)
    tcp_before = counter(d, "upstream_tcp_sent")
    whole = await d.aquery("huge.corp.example", payload=4096)
    assert rcode(whole) == "NOERROR" and not truncated(whole) and addrs(whole) == sorted(HUGE)
    assert counter(d, "upstream_tcp_sent") == tcp_before + 1


async def _corp_with_two_servers(topology, corp, upstream_factory, mifdns_factory, **top):
    """corp on 192.0.2.53 and .54, both answering until the test breaks one: (first, second, d)."""
    first = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.53"])
    second = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.54"])
    d = await mifdns_factory(
        topology, config(corp_pvd(servers=["192.0.2.53", "192.0.2.54"]), **top)
    )
    await settle(first, second)
    return first, second, d


# -- failover and deadlines -----------------------------------------------------------------------
async def test_failover_to_the_second_server_when_the_first_is_dead(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    dead, alive, d = await _corp_with_two_servers(
        topology, vpn_and_wifi[0], upstream_factory, mifdns_factory
    )
    dead.drop = True  # the first server dies (it was healthy: it is still tried first)

    r, took = await _timed(d.aquery("www.corp.example", timeout=5))
    assert addrs(r) == ["10.8.0.80"]
    assert 0.6 < took < 2.0  # one per-server timeout (0.8 s), then the second server
    assert names_seen(dead) == ["www.corp.example."]
    assert names_seen(alive) == ["www.corp.example."]
    health = next(p for p in d.ctl("pvds") if p["name"] == "corp")["server_health"]
    assert health["192.0.2.53"]["failures"] >= 1 and health["192.0.2.54"]["answers"] >= 1
    # the server is down for good: within a few questions it is no longer waited for
    took = []
    for i in range(4):
        r, t = await _timed(d.aquery(f"n{i}.corp.example", timeout=5))
        assert rcode(r) == "NXDOMAIN"
        took.append(t)
    assert sum(t > 0.6 for t in took) <= 1 and took[-1] < 0.3, took


async def test_server_without_a_dns_service_is_skipped_at_once_on_icmp_port_unreachable(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    gone, alive, d = await _corp_with_two_servers(
        topology, vpn_and_wifi[0], upstream_factory, mifdns_factory
    )
    await gone.stop()  # the host is up, nothing listens on port 53 any more
    before = counter(d, "upstream_icmp_errors")
    r, took = await _timed(d.aquery("www.corp.example"))
    assert addrs(r) == ["10.8.0.80"] and alive.saw("www.corp.example")
    assert took < 0.5  # not a 0.8 s timeout: the port unreachable ended the attempt
    assert counter(d, "upstream_icmp_errors") == before + 1


async def test_a_burst_sharing_ports_to_a_dead_server_fails_over_at_once_not_after_timeouts(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    """48 questions at once share a few ports to the first server, which has no DNS service:
    one port unreachable fails every attempt to that server on every port (the kernel
    rate-limits ICMP, so most ports never get one), and all move on to the second server."""
    gone, alive, d = await _corp_with_two_servers(
        topology, vpn_and_wifi[0], upstream_factory, mifdns_factory,
        upstream={"timeout": 3.0, "total_timeout": 6.0})  # fmt: skip
    await gone.stop()
    names = [f"burst{i}.corp.example" for i in range(48)]
    replies, took = await _timed(asyncio.to_thread(_burst, topology.host, names, 8.0))
    assert sorted(r.id for r in replies) == list(range(48))
    assert {rcode(r) for r in replies} == {"NXDOMAIN"}
    assert all(alive.saw(n) for n in names)
    assert took < 2.0, took  # a 3 s timeout per attempt otherwise
    assert counter(d, "upstream_icmp_errors") >= 1


async def test_servfail_from_the_first_server_moves_on_without_waiting(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, _ = vpn_and_wifi
    broken = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.53"])
    good = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.54"])
    d = await mifdns_factory(topology, config(corp_pvd(servers=["192.0.2.53", "192.0.2.54"])))
    await settle(broken, good)
    broken.servfail = True
    r, took = await _timed(d.aquery("www.corp.example"))
    assert addrs(r) == ["10.8.0.80"] and took < 0.5
    assert broken.saw("www.corp.example") and good.saw("www.corp.example")


async def test_a_server_slower_than_the_attempt_timeout_still_answers(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    """upstream.timeout is 0.8 s: the first attempt is given up and the question asked again
    on a fresh port, but the first attempt's answer, arriving after 0.9 s on its own port,
    is still taken (it used to meet a closed port and an ICMP port unreachable)."""
    corp, _ = vpn_and_wifi
    slow = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.53"])
    d = await mifdns_factory(topology, config(corp_pvd(servers=["192.0.2.53"])))
    await settle(slow)
    slow.delay = 0.9
    r, took = await _timed(d.aquery("www.corp.example", timeout=5))
    assert addrs(r) == ["10.8.0.80"]
    assert 0.9 <= took < 1.6  # the first answer, not a later attempt's (1.7 s and more)
    assert slow.count("www.corp.example") == 2  # asked again at 0.8 s, as before
    assert counter(d, "upstream_icmp_errors") == 0


async def test_a_server_that_rejects_edns_is_asked_again_without_it(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    """FORMERR without an OPT to a query with one: a server from before EDNS (RFC 6891
    section 7); the same server is asked again in plain DNS and its answer served."""
    corp, _ = vpn_and_wifi
    old = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.53"])
    d = await mifdns_factory(topology, config(corp_pvd(servers=["192.0.2.53"])))
    await settle(old)
    old.no_edns = True
    r, took = await _timed(d.aquery("www.corp.example", payload=1232))
    assert addrs(r) == ["10.8.0.80"] and took < 0.5
    assert old.count("www.corp.example") == 2
    assert r.edns == 0  # the client asked with EDNS and is answered with it
    # remembered per server: the next question goes out without EDNS at once, one query
    r = await d.aquery("intranet.corp.example", payload=1232)
    assert addrs(r) == ["10.8.0.81"] and old.count("intranet.corp.example") == 1
    corp_view = next(p for p in d.ctl("status")["pvds"] if p["name"] == "corp")
    health = corp_view["server_health"]["192.0.2.53"]
    assert 890 < health["no_edns_s"] <= 900


@pytest.mark.parametrize("trusted", [False, True])
async def test_ad_from_a_pvds_servers_reaches_clients_only_if_the_pvd_trusts_them(
    trusted, topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    """A server that claims AD=1 (validated or not): with trust_ad off (the default) no client
    sees AD, since mifdns validates nothing and glibc trusts AD from it (options trust-ad)."""
    corp, _ = vpn_and_wifi
    up = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.53"])
    d = await mifdns_factory(topology, config(corp_pvd(trust_ad=trusted)))
    await settle(up)
    up.ad = True
    q = dns.message.make_query("www.corp.example", "A", use_edns=0)
    q.flags |= dns.flags.AD
    r = await d.aquery("", message=q)
    assert addrs(r) == ["10.8.0.80"]
    assert bool(r.flags & dns.flags.AD) is trusted
    r = await d.aquery("www.corp.example", want_dnssec=True)
    assert bool(r.flags & dns.flags.AD) is trusted


async def test_servers_that_all_refuse_give_the_client_refused_at_once(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, _ = vpn_and_wifi
    a = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.53"])
    b = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.54"])
    d = await mifdns_factory(topology, config(corp_pvd(servers=["192.0.2.53", "192.0.2.54"])))
    await settle(a, b)
    a.refused = b.refused = True
    r, took = await _timed(d.aquery("www.corp.example", payload=1232))
    assert rcode(r) == "REFUSED" and took < 0.5
    [(code, text)] = edes(r)
    assert code == 22 and "192.0.2.53: REFUSED" in text and "192.0.2.54: REFUSED" in text
    b.refused = False  # a refusal is not cached: the next question is asked again
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]


async def test_all_servers_dead_gives_servfail_well_before_the_client_gives_up(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, _ = vpn_and_wifi
    a = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.53"], drop=True)
    b = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.54"], drop=True)
    d = await mifdns_factory(topology, config(corp_pvd(servers=["192.0.2.53", "192.0.2.54"])))
    r, took = await _timed(d.aquery("www.corp.example", timeout=6, payload=1232))
    assert rcode(r) == "SERVFAIL"
    assert took < 3.6  # upstream.total_timeout (3 s) and a margin; stub clients wait 5 s
    assert [c for c, _ in edes(r)] == [23]  # Network Error
    assert a.count("www.corp.example") >= 2 and b.count("www.corp.example") >= 1
    # nothing was cached: a server that comes back is asked again
    a.drop = False
    assert addrs(await d.aquery("www.corp.example", timeout=5)) == ["10.8.0.80"]


# -- randomness -----------------------------------------------------------------------------------
async def test_upstream_queries_use_random_ids_and_source_ports(
    topology, vpn_and_wifi, server_loop, mifdns_factory
):
    corp, _ = vpn_and_wifi
    up = RecordingUpstream(corp.ns, ["192.0.2.53"], zone=CORP_ZONE, name="corp")
    await server_loop.acall(up.start())
    try:
        d = await mifdns_factory(topology, config(corp_pvd()))
        n = 120
        for i in range(n):  # one after the other: the hardest case for a socket pool
            q = dns.message.make_query(f"n{i}.corp.example", "A")
            q.id = 4242  # the client's ID must never be what the upstream sees
            r = await d.aquery("", message=q)
            assert rcode(r) == "NXDOMAIN" and r.id == 4242
        raw = [
            (data, src)
            for data, _, src in up.raw
            if dns.message.from_wire(data).question[0].name.to_text().startswith("n")
        ]
        assert len(raw) == n
        ids = [int.from_bytes(data[:2], "big") for data, _ in raw]
        ports = [src[1] for _, src in raw]
        assert 4242 not in ids
        assert len(set(ids)) >= n - 3  # 16 random bits: a collision or two at most
        assert len(set(ports)) >= n * 3 // 4, sorted(ports)
        assert all(p >= 1024 for p in ports)
        # every query advertises EDNS with 1232 bytes (RFC 6891; DNS flag day 2020)
        msg = dns.message.from_wire(raw[0][0])
        assert msg.edns == 0 and msg.payload == 1232
    finally:
        await up.stop()


def _burst(ns: str, names: list[str], wait: float) -> list[dns.message.Message]:
    """Send a query for each name at once from one socket; collect the replies."""
    out = []
    with udp_socket(ns, timeout=wait) as s:
        for i, name in enumerate(names):
            q = dns.message.make_query(name, "A")
            q.id = i
            s.sendto(q.to_wire(), STUB)
        with contextlib.suppress(TimeoutError):
            while len(out) < len(names):
                out.append(dns.message.from_wire(s.recv(65535)))
    return out


@pytest.mark.parametrize("per_port", [16, 1])
async def test_queries_in_flight_together_share_a_port_up_to_the_limit_and_ports_close(
    topology, vpn_and_wifi, server_loop, mifdns_factory, per_port
):
    corp, _ = vpn_and_wifi
    up = RecordingUpstream(corp.ns, ["192.0.2.53"], zone=CORP_ZONE, name="corp")
    await server_loop.acall(up.start())
    try:
        d = await mifdns_factory(
            topology, config(corp_pvd(), upstream={"queries_per_port": per_port})
        )
        up.set(delay=0.3)  # all 64 are in flight at once
        names = [f"b{i}.corp.example" for i in range(64)]
        replies = await asyncio.to_thread(_burst, topology.host, names, 5.0)
        assert sorted(r.id for r in replies) == list(range(64))
        assert {rcode(r) for r in replies} == {"NXDOMAIN"}
        ports = [
            src[1]
            for data, _, src in up.raw
            if dns.message.from_wire(data).question[0].name.to_text().startswith("b")
        ]
        assert len(ports) == 64
        per = {p: ports.count(p) for p in set(ports)}
        assert max(per.values()) <= per_port, per
        if per_port > 1:  # shared under load: far fewer sockets than queries
            assert len(per) <= 64 // per_port + 4, per
        # a lone query after the burst gets a port no earlier query used: none stayed open
        up.set(delay=0)
        r = await d.aquery("lone.corp.example")
        assert rcode(r) == "NXDOMAIN"
        lone = [
            src[1]
            for data, _, src in up.raw
            if dns.message.from_wire(data).question[0].name.to_text() == "lone.corp.example."
        ]
        assert lone and lone[0] not in per
        await wait_for(lambda: counter(d, "upstream_udp_open") == 0, what="ports closed")
    finally:
        await up.stop()


# -- replies that must not count --------------------------------------------------------------
@pytest.mark.parametrize("spoil", ["wrong_id", "wrong_source", "wrong_question"])
async def test_spoofed_reply_is_not_accepted(
    spoil, topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, _ = vpn_and_wifi
    # the first server only ever sends a spoiled reply carrying a forged address
    forged = {"www.corp.example": {"A": "6.6.6.6"}}
    behaviour: dict[str, Any] = {spoil: True}
    if spoil == "wrong_source":
        behaviour[spoil] = "192.0.2.99"  # sent from another address of the same host
        topology.run(corp.ns, ["ip", "address", "add", "192.0.2.99/24", "dev", "eth0"])
    spoofer = await upstream_factory(corp, forged, listen=["192.0.2.53"])
    honest = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.54"])
    d = await mifdns_factory(topology, config(corp_pvd(servers=["192.0.2.53", "192.0.2.54"])))
    await settle(spoofer, honest)
    spoofer.set(**behaviour)  # from now on (it is first in line: its probes went well)
    before = counter(d, "ignored_replies") + counter(d, "upstream_stray")

    r = await d.aquery("www.corp.example", timeout=5)
    assert addrs(r) == ["10.8.0.80"]  # never 6.6.6.6
    assert spoofer.saw("www.corp.example") and honest.saw("www.corp.example")
    if spoil != "wrong_source":  # that one the kernel drops: the upstream socket is connected
        after = counter(d, "ignored_replies") + counter(d, "upstream_stray")
        assert after >= before + 1
    rows = d.ctl("cache")
    assert [(row["name"], row["pvd"]) for row in rows] == [("www.corp.example.", "corp")]
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]


async def test_a_spoofed_reply_ahead_of_the_real_one_does_not_win(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, _ = vpn_and_wifi
    up = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.53"])
    d = await mifdns_factory(topology, config(corp_pvd()))
    await settle(up)
    up.set(wrong_question=True, spoof_first=True)
    before = counter(d, "ignored_replies")
    r, took = await _timed(d.aquery("www.corp.example"))
    assert addrs(r) == ["10.8.0.80"] and r.question[0].name.to_text() == "www.corp.example."
    assert took < 0.5  # the real reply, right behind the spoofed one, is taken at once
    assert up.count("www.corp.example") == 1
    assert counter(d, "ignored_replies") == before + 1


# -- client TCP -----------------------------------------------------------------------------------
async def test_tcp_client_gets_pipelined_answers_as_they_complete(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, wifi = vpn_and_wifi
    await upstream_factory(corp, CORP_ZONE, delay=0.4)  # the VPN is slow
    await upstream_factory(wifi, PUBLIC_ZONE)
    await mifdns_factory(topology, config(corp_pvd(), wifi_pvd()))
    slow = dns.message.make_query("www.corp.example", "A")
    fast = dns.message.make_query("www.example.com", "A")
    local = dns.message.make_query("localhost", "A")

    def exchange():
        with tcp_connect(topology.host, ("127.0.0.53", 53)) as s:
            s.sendall(b"".join(frame(q.to_wire()) for q in (slow, fast, local)))
            return [dns.message.from_wire(recv_frame(s)) for _ in range(3)]

    replies = await asyncio.to_thread(exchange)
    assert [r.id for r in replies][-1] == slow.id  # out of order: the slow one last
    by_id = {r.id: r for r in replies}
    assert addrs(by_id[slow.id]) == ["10.8.0.80"]
    assert addrs(by_id[fast.id]) == ["203.0.113.1"]
    assert addrs(by_id[local.id]) == ["127.0.0.1"]


async def test_edns_version_1_gets_badvers_and_unknown_opcode_notimp(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, _ = vpn_and_wifi
    up = await upstream_factory(corp, CORP_ZONE)
    d = await mifdns_factory(topology, config(corp_pvd()))
    q = dns.message.make_query("www.corp.example", "A", use_edns=1)
    r = await d.aquery("", message=q)
    assert rcode(r) == "BADVERS" and r.edns == 0
    notify = dns.message.make_query("www.corp.example", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert rcode(await d.aquery("", message=notify)) == "NOTIMP"
    axfr = dns.message.make_query("corp.example", "AXFR")
    assert rcode(await d.aquery("", message=axfr, tcp=True)) == "REFUSED"
    assert names_seen(up) == []  # none of it went upstream


async def test_after_a_timeout_the_next_question_tries_the_answering_server_first(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory
):
    corp, _ = vpn_and_wifi
    first = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.53"])
    second = await upstream_factory(corp, CORP_ZONE, listen=["192.0.2.54"], delay=0.1)
    d = await mifdns_factory(topology, config(corp_pvd(servers=["192.0.2.53", "192.0.2.54"])))
    await settle(first, second)
    first.drop = True  # the fast primary dies; the secondary is slower, but it answers
    r, took = await _timed(d.aquery("www.corp.example", timeout=5))
    assert addrs(r) == ["10.8.0.80"] and 0.8 <= took < 1.5
    r, took = await _timed(d.aquery("intranet.corp.example", timeout=5))
    assert addrs(r) == ["10.8.0.81"]
    assert took < 0.5, f"waited {took:.2f}s on the server that just timed out"


# -- uvloop -----------------------------------------------------------------------------------
# `mifdns run` installs uvloop when it is importable (the "fast" extra) unless MIFDNS_UVLOOP=0.


async def test_daemon_on_uvloop_answers_over_udp_and_tcp(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory, monkeypatch
):
    pytest.importorskip("uvloop")
    monkeypatch.delenv("MIFDNS_UVLOOP", raising=False)
    corp, wifi = vpn_and_wifi
    await upstream_factory(corp, CORP_ZONE, truncate_udp=True)
    await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(topology, config(corp_pvd(), wifi_pvd(), netlink=False))
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]  # upstream TCP after TC
    assert addrs(await d.aquery("www.example.com", tcp=True)) == ["203.0.113.1"]
    assert addrs(await d.aquery("intranet.corp.example", tcp=True)) == ["10.8.0.81"]
    assert "Traceback" not in d.stderr()


async def test_pvds_attach_through_netlink_on_uvloop(
    topology, vpn_and_wifi, upstream_factory, mifdns_factory, monkeypatch
):
    pytest.importorskip("uvloop")
    monkeypatch.delenv("MIFDNS_UVLOOP", raising=False)
    corp, wifi = vpn_and_wifi
    await upstream_factory(corp, CORP_ZONE)
    await upstream_factory(wifi, PUBLIC_ZONE)
    d = await mifdns_factory(topology, config(corp_pvd(), wifi_pvd()))
    assert {p["name"]: p["state"] for p in d.ctl("pvds")} == {
        "corp": "attached",
        "wifi": "attached",
    }
    assert addrs(await d.aquery("www.corp.example")) == ["10.8.0.80"]


async def test_wildcard_listener_answers_from_the_address_each_client_asked(
    topology, upstream_factory, mifdns_factory
):
    """Listening on 0.0.0.0:53 and [::]:53 on a host with two addresses per family on the LAN,
    a client on the LAN asks the second one (which routing would never pick as a source:
    IPv4's secondary, IPv6's deprecated address) through a connected socket, as stub
    resolvers do: the socket takes only replies from the address it asked. A miss (answered
    later) and a hit (at once) both reach it; RFC 1035 s4.2.1."""
    lan = topology.add_network(
        "lan",
        "lan0",
        host_addrs=["198.51.100.1/24", "198.51.100.2/24", "2001:db8:5::1/64"],
        server_addrs=["198.51.100.53/24", "2001:db8:5::53/64"],
    )
    netns.ip_batch(topology.host, ["address add 2001:db8:5::2/64 dev lan0 nodad preferred_lft 0"])
    up = await upstream_factory(lan, PUBLIC_ZONE)
    await mifdns_factory(
        topology,
        config(
            wifi_pvd(interface="lan0", servers=["198.51.100.53"]),
            listen=["0.0.0.0:53", "[::]:53"],
        ),
    )
    await settle(up)
    for family, server in ((socket.AF_INET, "198.51.100.2"), (socket.AF_INET6, "2001:db8:5::2")):
        s = netns.socket_in(lan.ns, family, socket.SOCK_DGRAM)
        try:
            s.settimeout(2)
            s.connect((server, 53))
            for qid in (1, 2):  # a miss, then a hit
                q = dns.message.make_query("www.example.com", "A")
                q.id = qid
                s.send(q.to_wire())
                r = dns.message.from_wire(s.recv(4096))
                assert r.id == qid and addrs(r) == ["203.0.113.1"], (server, qid)
        finally:
            s.close()
