"""The miss lane (mifdns/aio/_lane.c, mifdns/core/lane.py) on real sockets in namespaces.

The lane forwards a plain query's first UDP attempt in C and answers a plain reply (NOERROR,
A/AAAA of the question's name, TTL 0) there; everything else is handed to the resolver. These
tests check that a client cannot tell: the lane's replies are the resolver's byte for byte
(MIFDNS_MISS_LANE=0 turns it off), the handed-over cases behave as without it (cache, failover,
TCP, spoofed replies), and its routing is the resolver's (two PvDs with the same server
address on two links: each name reaches only its own PvD's server).
"""

from __future__ import annotations

import asyncio
from typing import Any

import dns.flags
import dns.message
import pytest
import yaml
from splitdns_helpers import (
    addrs,
    client_log,
    config,
    corp_pvd,
    many_a,
    names_seen,
    rcode,
    settle,
    truncated,
    udp_socket,
    wifi_pvd,
)

from mifdns.harness.topology import Topology

pytestmark = [pytest.mark.netns, pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def _lane_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIFDNS_MISS_LANE", "1")  # the default, whatever the caller's env says


ZERO = {  # the referee's miss test: answers with TTL 0 (nothing to cache)
    **{f"a{i}.corp.example": {"A": [f"10.8.1.{i}"], "AAAA": [f"fd00:8::1:{i}"]} for i in range(8)},
    "big.corp.example": {"A": many_a("10.9.1", 60)},  # ~1 KB: over 512 and 600
}

# (name, type, make_query keywords, CD): what a client may send that the lane takes
CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("a1.corp.example", "A", {"use_edns": False}, False),
    ("A2.Corp.EXAMPLE", "A", {"use_edns": 0, "payload": 4096}, False),  # letter case kept
    ("a3.corp.example", "A", {"use_edns": 0, "payload": 1232, "want_dnssec": True}, False),
    ("a4.corp.example", "AAAA", {"use_edns": 0, "payload": 1232}, False),
    ("a5.corp.example", "A", {"use_edns": 0, "payload": 1232}, True),
    ("big.corp.example", "A", {"use_edns": False}, False),  # TC at 512
    ("big.corp.example", "A", {"use_edns": 0, "payload": 600}, False),  # TC at 600, with OPT
    ("big.corp.example", "A", {"use_edns": 0, "payload": 4096}, False),  # whole
]


def _wire(name: str, rdtype: str, kw: dict[str, Any], cd: bool, qid: int) -> bytes:
    q = dns.message.make_query(name, rdtype, **kw)
    q.id = qid
    if cd:
        q.flags |= dns.flags.CD
    return q.to_wire()


def _ask_raw(topology: Topology, d: Any, data: bytes) -> bytes:
    s = udp_socket(topology.host, timeout=3)
    try:
        s.sendto(data, (d.server, d.port))
        reply, _ = s.recvfrom(65535)
        return reply
    finally:
        s.close()


def _lane(d: Any) -> dict[str, Any]:
    st = d.ctl("status")
    return {**(st["udp_lane"] or {}), **{k: v for k, v in st["counters"].items() if "lane" in k}}


@pytest.mark.parametrize("trust_ad", [False, True])
async def test_the_lane_answers_plain_misses_as_the_resolver_would_byte_for_byte(
    topology, upstream_factory, mifdns_factory, monkeypatch, trust_ad
):
    corp = topology.add_network("corp", "corp0")
    up = await upstream_factory(corp, ZERO, ttl=0, ad=True)  # AD set: the trust rule applies
    cfg = config(corp_pvd(trust_ad=trust_ad))
    replies: dict[str, list[bytes]] = {}
    for mode in ("1", "0"):
        monkeypatch.setenv("MIFDNS_MISS_LANE", mode)
        d = await mifdns_factory(topology, cfg)
        await settle(up)
        before = _lane(d)
        got = []
        for i, (name, rdtype, kw, cd) in enumerate(CASES):
            got.append(
                await asyncio.to_thread(
                    _ask_raw, topology, d, _wire(name, rdtype, kw, cd, 4242 + i)
                )
            )
        after = _lane(d)
        if mode == "1":
            assert after["lanes"] == ["corp"]
            assert after["answered"] - before.get("answered", 0) == len(CASES), after
            assert after["lane_answered"] - before.get("lane_answered", 0) == len(CASES)
            assert after["lane_adopted"] == before.get("lane_adopted", 0)
        else:
            assert d.ctl("status")["udp_lane"] is None
        replies[mode] = got
        assert await d.stop() in (0, None)
    for case, with_lane, without in zip(CASES, replies["1"], replies["0"]):
        assert with_lane == without, case
    # and they say what the cases promise (so that "equal" is not "equally wrong")
    msgs = [dns.message.from_wire(r) for r in replies["1"]]
    assert msgs[1].question[0].name.to_text() == "A2.Corp.EXAMPLE."
    assert addrs(msgs[0]) == ["10.8.1.1"] and addrs(msgs[3], "AAAA") == ["fd00:8::1:4"]
    assert [truncated(m) for m in msgs[5:]] == [True, True, False]
    assert all(m.answer[0].ttl == 0 for m in msgs if m.answer)
    ad = [bool(m.flags & dns.flags.AD) for m in msgs]
    # AD only from a PvD that trusts it, and only to a client that asked with AD or DO
    assert ad[2] is trust_ad and not any(ad[:2]) and not ad[3]
    assert len(client_log(up)) == 2 * len(CASES)  # nothing cached: every one went upstream


async def test_what_is_not_plain_is_the_resolvers_cache_failover_tcp_and_spoofs(
    topology, upstream_factory, mifdns_factory
):
    corp = topology.add_network("corp", "corp0", server_addrs=["192.0.2.53/24", "192.0.2.54/24"])
    zone = {**ZERO, "huge.corp.example": {"A": many_a("10.9.2", 120)}}
    first = await upstream_factory(corp, zone, listen=["192.0.2.53"], ttl=0)
    second = await upstream_factory(corp, zone, listen=["192.0.2.54"], ttl=0)
    d = await mifdns_factory(topology, config(corp_pvd(servers=["192.0.2.53", "192.0.2.54"])))
    await settle(first, second)
    assert _lane(d)["lanes"] == ["corp"]

    # records to cache: handed over, stored, the second query is a hit
    first.ttl = 300
    for _ in range(2):
        r = await d.aquery("a1.corp.example")
        assert addrs(r) == ["10.8.1.1"] and r.answer[0].ttl > 0
    assert names_seen(first) == ["a1.corp.example."]
    first.ttl = 0

    # NXDOMAIN: the resolver's
    assert rcode(await d.aquery("nope.corp.example")) == "NXDOMAIN"

    # over 1232 bytes: the server truncates, the resolver asks again over TCP
    r = await d.aquery("huge.corp.example", payload=4096)
    assert not truncated(r) and len(addrs(r)) == 120
    assert [s.transport for s in client_log(first) if s.qname == "huge.corp.example."] == [
        "udp", "tcp"]  # fmt: skip

    # a reply with another question first, then the real one: the first is ignored
    first.wrong_question = first.spoof_first = True
    assert addrs(await d.aquery("a2.corp.example")) == ["10.8.1.2"]
    first.wrong_question = first.spoof_first = False
    assert _lane(d)["ignored"] >= 1

    # the first server is silent: the lane's attempt times out into the resolver, which asks
    # the second (one per-server timeout)
    first.drop = True
    t0 = asyncio.get_running_loop().time()
    assert addrs(await d.aquery("a4.corp.example", timeout=5)) == ["10.8.1.4"]
    took = asyncio.get_running_loop().time() - t0
    assert 0.6 < took < 2.5, took
    lane = _lane(d)
    assert lane["lane_timeouts"] >= 1 and lane["expired"] >= 1
    assert lane["lane_adopted"] >= 4 and lane["pending"] == 0
    assert "a4.corp.example." in names_seen(second)
    first.drop = False

    # SERVFAIL from the server the lane asks now: the resolver asks the other one
    second.servfail = True
    assert addrs(await d.aquery("a3.corp.example")) == ["10.8.1.3"]
    assert "a3.corp.example." in names_seen(first)


async def test_the_lane_routes_as_the_resolver_and_never_crosses_pvds(
    topology, upstream_factory, mifdns_factory
):
    # both PvDs' servers are 192.0.2.53, on two links: only the interface tells them apart
    corp = topology.add_network("corp", "corp0")
    wifi = topology.add_network("wifi", "wlan0")
    up_corp = await upstream_factory(corp, ZERO, ttl=0)
    wifi_zone = {
        **{f"a{i}.corp.example": {"A": ["203.0.113.66"]} for i in range(8)},
        **{f"w{i}.example.net": {"A": [f"198.51.100.{i}"]} for i in range(8)},
    }
    up_wifi = await upstream_factory(wifi, wifi_zone, ttl=0)
    d = await mifdns_factory(topology, config(corp_pvd(), wifi_pvd()))
    await settle(up_corp, up_wifi)
    assert sorted(_lane(d)["lanes"]) == ["corp", "wifi"]
    before = _lane(d)["answered"]
    for i in range(8):
        assert addrs(await d.aquery(f"a{i}.CORP.example")) == [f"10.8.1.{i}"]
        assert addrs(await d.aquery(f"w{i}.example.net")) == [f"198.51.100.{i}"]
    assert _lane(d)["answered"] - before == 16  # all of them through the lane
    assert all(n.endswith("corp.example.") for n in names_seen(up_corp))
    assert not any(n.endswith("corp.example.") for n in names_seen(up_wifi))
    # a name the resolver answers itself (RFC 6303 private reverse zone) is not forwarded
    r = await d.aquery("1.0.0.10.in-addr.arpa", "PTR")
    assert rcode(r) == "NXDOMAIN"
    assert not any("in-addr" in n for n in names_seen(up_corp) + names_seen(up_wifi))


async def test_a_pvd_that_detaches_mid_query_does_not_answer_it(
    topology, upstream_factory, mifdns_factory
):
    corp = topology.add_network("corp", "corp0")
    wifi = topology.add_network("wifi", "wlan0")
    up_corp = await upstream_factory(corp, ZERO, ttl=0)
    up_wifi = await upstream_factory(wifi, {"a1.corp.example": {"A": ["203.0.113.66"]}}, ttl=0)
    # corp claims corp.example but is not exclusive: once it is gone, the default route asks
    d = await mifdns_factory(topology, config(corp_pvd(), wifi_pvd()))
    await settle(up_corp, up_wifi)
    up_corp.delay = 0.6
    pending = asyncio.create_task(d.aquery("a1.corp.example", timeout=5))
    await asyncio.sleep(0.2)
    assert d.ctl("detach", "corp")["state"] == "detached"
    r = await pending
    # corp's late answer (10.8.1.1) must not be served: the query went to the new route
    assert addrs(r) == ["203.0.113.66"], r
    # corp's reply came after the detach: handed over, and the resolver asked the new route
    assert names_seen(up_corp) == ["a1.corp.example."]
    assert names_seen(up_wifi) == ["a1.corp.example."]
    lane = _lane(d)
    assert lane["handoffs"] >= 1 and lane["pending"] == 0


async def test_a_reload_changes_the_lanes_timeouts_too(topology, upstream_factory, mifdns_factory):
    """The lane is made with the upstream settings at start; a reload that shortens the
    timeouts must reach it, or its attempts keep the old deadline (here 2.5 s)."""
    corp = topology.add_network("corp", "corp0")
    up = await upstream_factory(corp, ZERO, ttl=0)
    cfg = config(corp_pvd(), upstream={"timeout": 2.5, "total_timeout": 3.0})
    d = await mifdns_factory(topology, cfg)
    await settle(up)
    assert addrs(await d.aquery("a1.corp.example")) == ["10.8.1.1"]
    short = dict(cfg, upstream={"timeout": 0.3, "total_timeout": 1.0})
    d.config_path.write_text(yaml.safe_dump(dict(short, control_socket=d.control_socket)))
    d.ctl("reload")
    up.drop = True
    before = _lane(d)
    t0 = asyncio.get_running_loop().time()
    r = await d.aquery("a2.corp.example", timeout=5)
    took = asyncio.get_running_loop().time() - t0
    assert rcode(r) == "SERVFAIL"
    assert took < 1.8, took  # the total timeout of 1 s, not the lane's old 2.5 s attempt
    after = _lane(d)
    assert after["forwarded"] == before["forwarded"] + 1  # it was the lane's attempt
    assert after["expired"] == before["expired"] + 1
