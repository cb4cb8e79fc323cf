"""core/lane.py: which queries the miss lane may take, and the resolver taking back its attempts.

The C side is tested on real sockets (tests/integration/test_miss_lane.py); here, the policy
and the adoption, with the in-memory driver.
"""

from __future__ import annotations

import dns.message

from mifdns.core import lane, render, wire
from mifdns.core.pvd import CaptiveState, Dns64Spec
from mifdns.core.resolver import Reply, Send

from .coredriver import Driver, answers, spec


def _two() -> Driver:
    d = Driver(
        [
            spec("corp", "corp0", domains=["~corp.example"]),
            spec("wifi", "wlan0", servers=("192.0.2.53", "192.0.2.54"), default_route=True),
        ]
    )
    d.worlds["corp"].records = {"www.corp.example": {"A": ["10.8.0.80"]}}
    d.worlds["wifi"].records = {"www.corp.example": {"A": ["203.0.113.66"]}}
    return d


def _walk(t: lane.Table, name: str) -> int:
    """The C walk (_lane.c lane_try), in Python: the first suffix in ``routes`` wins."""
    key = wire.text_to_qname(name).lower()
    pos = 0
    while key[pos]:
        got = t.routes.get(key[pos:])
        if got is not None:
            return got
        pos += key[pos] + 1
    return t.default


def _pvd_of(t: lane.Table, k: int) -> str | None:
    return t.lanes[k].pvd if k >= 0 else None


def test_the_table_routes_as_the_resolver_and_keeps_local_names_out() -> None:
    d = _two()
    t = lane.table(d.resolver, d.now)
    assert t is not None
    assert sorted(ln.pvd for ln in t.lanes) == ["corp", "wifi"]
    for name, pvd in [
        ("www.corp.example", "corp"),
        ("corp.example", "corp"),
        ("WWW.Corp.Example", "corp"),
        ("xcorp.example", "wifi"),
        ("example.net", "wifi"),
        ("1.0.0.10.in-addr.arpa", None),  # RFC 6303: answered locally
        ("localhost", None),
        ("ipv4only.arpa", None),
    ]:
        assert _pvd_of(t, _walk(t, name)) == pvd, name
        decision = d.resolver.router.route(wire.text_to_qname(name).lower())
        want = decision.candidates[0].pvd if decision.local is None else None
        assert want == pvd, name  # the walk is the resolver's own
    # every suffix of the router's table is in the lane's, nothing else
    assert set(t.routes) == {s for s, _ in d.resolver.router.table.suffixes()}


def test_no_lane_where_the_resolver_must_look_at_each_query() -> None:
    d = _two()
    d.resolver.monitoring = True
    assert lane.table(d.resolver, d.now) is None
    d.resolver.monitoring = False

    # a tie (two PvDs claim the name): the resolver asks both
    tie = Driver(
        [
            spec("corp", "corp0", domains=["~corp.example"]),
            spec("lab", "eth1", domains=["~corp.example"]),
        ]
    )
    t = lane.table(tie.resolver, tie.now)
    assert t is None or _walk(t, "www.corp.example") == -1

    # captive: its answers are kept apart (kind captive)
    d.apply(d.registry.set_captive("corp", CaptiveState.CAPTIVE))
    t = lane.table(d.resolver, d.now)
    assert t is not None and _walk(t, "www.corp.example") == -1
    d.apply(d.registry.set_captive("corp", CaptiveState.OPEN))

    # a portal seen before: its answers are checked for the portal's addresses
    d.resolver.set_portal_addresses("corp", ("192.0.2.80",))
    t = lane.table(d.resolver, d.now)
    assert t is not None and _walk(t, "www.corp.example") == -1
    d.resolver.set_portal_addresses("corp", ())
    t = lane.table(d.resolver, d.now)
    assert t is not None and _pvd_of(t, _walk(t, "www.corp.example")) == "corp"


def test_the_lanes_server_is_the_healthy_first_and_none_while_held_back() -> None:
    d = _two()
    wifi = d.registry.find("wifi")
    assert wifi is not None
    first, second = wifi.spec.servers
    t = lane.table(d.resolver, d.now)
    assert t is not None and t.lanes[t.default].server == first
    d.resolver.health.record("wifi", first, None, d.now)  # the first failed: the second leads
    t = lane.table(d.resolver, d.now)
    assert t is not None and t.lanes[t.default].server == second
    for s in (first, second):  # both held back (DEAD_AFTER failures): the resolver decides
        for _ in range(3):
            d.resolver.health.record("wifi", s, None, d.now)
    t = lane.table(d.resolver, d.now)
    assert t is None or t.default == -1


def test_flags_dns64_and_trust_ad() -> None:
    d = Driver(
        [
            spec("cell", "rmnet0", default_route=True, dns64=Dns64Spec(prefix="64:ff9b::/96")),
            spec("corp", "corp0", domains=["~corp.example"], trust_ad=True),
        ]
    )
    t = lane.table(d.resolver, d.now)
    assert t is not None
    cell = t.lanes[t.default]
    corp = t.lanes[_walk(t, "www.corp.example")]
    assert cell.flags & lane.NO_AAAA and cell.flags & lane.NO_PTR and not cell.flags & lane.TRUST_AD
    assert corp.flags == lane.TRUST_AD


def _handoff(d: Driver, name: str, ln: lane.Lane, txid: int):
    """A client's query and what the lane sent upstream for it (the resolver's query)."""
    q = dns.message.make_query(name, "A", use_edns=0)
    data = q.to_wire()
    key = wire.text_to_qname(name).lower()
    sent = render.build_query(txid, key, 1, udp_size=d.resolver.settings.edns_udp_size)
    return data, sent


def _corp_handoff(d: Driver, txid: int):
    """The lane www.corp.example takes, the client's query and what the lane sent for it."""
    t = lane.table(d.resolver, d.now)
    assert t is not None
    ln = t.lanes[_walk(t, "www.corp.example")]
    data, sent = _handoff(d, "www.corp.example", ln, txid)
    return ln, data, sent


def test_a_reply_to_store_is_adopted_cached_and_answered() -> None:
    d = _two()
    ln, data, sent = _corp_handoff(d, 777)
    reply = d.worlds["corp"].respond(sent, False)  # TTL 300: to cache
    assert reply is not None and reply[:2] == (777).to_bytes(2, "big")
    lane.adopt(d.resolver, ln, data, "c1", 65494, 777, d.now - 0.01, reply, d.now)
    out = [a for a in d.resolver.outbox if isinstance(a, Reply)]
    assert len(out) == 1 and out[0].client == "c1"
    assert answers(dns.message.from_wire(out[0].data)) == ["10.8.0.80"]
    assert [e["name"] for e in d.cache("corp")] == ["www.corp.example."]
    assert d.resolver.counters["lane_adopted"] == 1
    assert not d.resolver.inflight  # done and released


def test_a_reply_with_another_id_is_ignored_and_the_attempt_times_out_as_usual() -> None:
    d = _two()
    ln, data, sent = _corp_handoff(d, 777)
    reply = d.worlds["corp"].respond(sent, False)
    assert reply is not None
    forged = (778).to_bytes(2, "big") + reply[2:]
    lane.adopt(d.resolver, ln, data, "c1", 65494, 777, d.now, forged, d.now)
    assert not [a for a in d.resolver.outbox if isinstance(a, Reply)]
    assert d.resolver.counters["ignored_replies"] == 1
    d.pump()  # the timeout: asked again (corp has one server), the world answers
    assert [c for c, _ in d.replies] == ["c1"]


def _timed_out(d: Driver, name: str, address: str, client: str):
    """The lane's attempt for ``name`` (on wifi, the default route) timed out and was adopted:
    (the lane, the query it sent, the adopting transaction, the wifi PvD). The next server
    has been asked."""
    t = lane.table(d.resolver, d.now)
    assert t is not None
    ln = t.lanes[t.default]
    data, sent = _handoff(d, name, ln, 4242)
    d.worlds["wifi"].records[name] = {"A": [address]}
    sent_at = d.now
    d.now += d.resolver.settings.timeout
    txn = lane.adopt(d.resolver, ln, data, client, 65494, 4242, sent_at, None, d.now)
    wifi = d.registry.find("wifi")
    assert wifi is not None
    sends = [a for a in d.resolver.outbox if isinstance(a, Send)]
    assert [s.server for s in sends] == [wifi.spec.servers[1]]  # not the one that timed out
    return ln, sent, txn, wifi


def test_a_timeout_goes_to_the_next_server() -> None:
    d = _two()
    _, _, _, wifi = _timed_out(d, "www.corp.example.net", "198.51.100.7", "c2")
    health = d.resolver.health.stats("wifi", wifi.spec.servers[0])
    assert health.failures == 1
    d.pump()
    assert [c for c, _ in d.replies] == ["c2"]
    assert d.resolver.counters["lane_timeouts"] == 1


def test_a_late_answer_to_the_lanes_timed_out_attempt_completes_its_adopter() -> None:
    """The lane keeps a timed-out attempt until the total timeout; its server's answer then
    reaches the transaction that adopted it, as an answer to one of its own earlier attempts
    would (the second server's answer, after it, is ignored)."""
    d = _two()
    ln, sent, txn, _ = _timed_out(d, "late.example.net", "198.51.100.8", "c3")
    assert txn is not None and not txn.done
    late = d.worlds["wifi"].respond(sent, False)
    assert late is not None
    d.now += 0.1
    lane.late(d.resolver, txn, ln, late, d.now)
    assert txn.done
    d.pump()  # the second server's answer comes too, to a finished transaction
    got = [(c, answers(dns.message.from_wire(w))) for c, w in d.replies]
    assert got == [("c3", ["198.51.100.8"])]
    ignored = d.resolver.counters["ignored_replies"]
    lane.late(d.resolver, txn, ln, late, d.now)  # a duplicate: nobody waits for it
    lane.late(d.resolver, None, ln, late, d.now)  # its adopter unknown (pruned, restarted)
    assert d.resolver.counters["ignored_replies"] == ignored + 2


def test_after_a_detach_the_query_starts_again_on_the_new_route() -> None:
    d = _two()
    ln, data, sent = _corp_handoff(d, 99)
    late = d.worlds["corp"].respond(sent, False)
    d.apply(d.registry.admin_detach("corp"))
    queries = d.resolver.counters["queries"]
    lane.adopt(d.resolver, ln, data, "c3", 65494, 99, d.now, late, d.now)
    d.pump()
    assert [answers(dns.message.from_wire(b)) for c, b in d.replies if c == "c3"] == [
        ["203.0.113.66"]
    ]  # corp's late answer (10.8.0.80) was not served
    assert d.resolver.counters["queries"] == queries  # counted once (by the lane)
    assert d.cache("corp") == []


def test_absorb_books_counters_rtts_and_health() -> None:
    d = _two()
    t = lane.table(d.resolver, d.now)
    assert t is not None
    k = t.default
    drained = [(0, 0, (0,) * 12, 0.0) for _ in t.lanes]
    buckets = [0] * 12
    buckets[1] = 3
    drained[k] = (5, 3, tuple(buckets), 0.006)
    lane.absorb(d.resolver, t.lanes, drained, d.now)
    c = d.resolver.counters
    assert (c["queries"], c["cache_misses"], c["upstream_queries"]) == (5, 5, 5)
    assert (c["lane_forwarded"], c["lane_answered"]) == (5, 3)
    assert d.resolver.upstream_queries["wifi"] == 5
    h = d.resolver.stats.rtt_by_pvd["wifi"]
    assert h.count == 3 and h.buckets[1] == 3
    st = d.resolver.health.stats("wifi", t.lanes[k].server)
    assert st.answers == 1 and st.srtt is not None and abs(st.srtt - 0.002) < 1e-9
